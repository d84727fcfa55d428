//! The JetStream requests every primitive is built from, on the bucket's stream.
//!
//! A bucket `<b>` is the stream `KV_<b>` over the subjects `$KV.<b>.>`; a key is a
//! subject, its revision the stream sequence of its last message. Every write is a
//! plain request on the key's subject whose answer is JetStream's publish
//! acknowledgement, parsed here, so that a refused compare (`wrong last sequence`)
//! is an answer ([`Published::Refused`]), not an error. async-nats has no call for an
//! atomic batch (ADR-50) nor for a batched direct get (`multi_last`): both are sent
//! as the JetStream API requests they are.
//!
//! Every replica of a replicated bucket answers direct gets, and a follower may not
//! have applied what the leader acknowledged. So a [`Store`] keeps a read floor: the
//! highest stream sequence it wrote or saw (a publish acknowledgement, a compare
//! refused at a key's sequence, a listing's end, a watched message). Every read is a
//! batched direct get, whose end says the sequence its replica answered as of; an
//! answer below the floor is asked again (another replica, or this one later) until the
//! request timeout, then it is a transient error. So a client reads its own writes and
//! never reads older than it read before. (Server 2.12's design of a `min_last_seq` in
//! the request, for exactly this, is not in nats-server 2.15.1: the field is ignored.)
//! The floor does not make a read see another client's write acknowledged a moment
//! earlier; what depends on that (a waiter's view of the holders before it) reads after
//! writing its own key, whose sequence is above theirs. Watches ride an ordered
//! consumer, which delivers every message in order from the sequence asked, however far
//! behind its replica is: late, never wrong. Paged reads by sequence
//! (`src/scan.rs`: listings of more keys than one batched direct get returns, a queue's
//! head) carry no sequence to check, so they may come from a replica behind the floor:
//! what they serve is decided again by a compared write (a claim), or is a count, and
//! where a queue's head read ends, the stream's leader says whether a message follows.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::{DeliverPolicy, StreamErrorKind};
use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
use async_nats::jetstream::stream::{ConsumerErrorKind, Info as StreamInfo};
use async_nats::jetstream::ErrorCode;
use async_nats::{HeaderMap, StatusCode};
use bytes::Bytes;
use distsync_core::raw::CleanUp;
use distsync_core::{Error, Result};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::error::{consumer_error, get_stream_error, request_error};
use crate::BACKEND;

/// The header that makes a write conditional on the key's last sequence (0: absent).
pub(crate) const EXPECTED_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
/// The header that points [`EXPECTED_SEQ`] at another subject than the message's.
pub(crate) const EXPECTED_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";
/// A message's own time to live (`2s`).
pub(crate) const TTL: &str = "Nats-TTL";
/// The KV operation of a message: absent for a put, `DEL` or `PURGE`.
const OPERATION: &str = "KV-Operation";
/// Set on the delete marker JetStream writes when a message's TTL ends it.
const MARKER_REASON: &str = "Nats-Marker-Reason";
/// What a purge rolls up: the subject's earlier messages.
const ROLLUP: &str = "Nats-Rollup";
/// A direct get's answer: the message's subject and sequence.
const SUBJECT: &str = "Nats-Subject";
const SEQUENCE: &str = "Nats-Sequence";
/// A direct get's header carrying the time the stream stored the message (RFC 3339).
const TIME_STAMP: &str = "Nats-Time-Stamp";
/// The end of a batched direct get: the stream sequence the answer is as of (the
/// answering replica's last sequence when it read). Not
/// `Nats-Last-Sequence`, which is the last sequence among the messages returned.
const UP_TO_SEQUENCE: &str = "Nats-UpTo-Sequence";
/// How many answers a batched direct get left out.
const NUM_PENDING: &str = "Nats-Num-Pending";

/// JetStream's error code for a refused `Nats-Expected-Last-Subject-Sequence`.
pub(crate) const WRONG_LAST_SEQUENCE: u64 = 10071;

/// The key every bucket holds from its making on and never loses: a listing asks
/// for it too, so that its answer always ends with the sequence the replica was at.
/// Its first token is no [`Kind`](crate::keys::Kind)'s.
pub(crate) const ANCHOR: &str = "distsync";

/// The most keys one batched direct get returns: the server answers at most 1,024
/// (status 413 beyond), the [`ANCHOR`] among them. A listing with more is never a
/// partial answer a grant could be decided on, but read in pages ([`Store::list`]) or
/// refused ([`Store::list_at`]).
const MOST_LISTED: usize = 1_023;

/// What a listing at a sequence refused for its size says: more keys than one
/// batched direct get returns.
const TOO_MANY: &str = "more keys than one listing returns";

/// How long a listing waits for the next answer of a batch once it has started.
const BETWEEN_ANSWERS: Duration = Duration::from_secs(2);

/// What a message of the bucket says of its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// A value.
    Put,
    /// A tombstone: a delete, a purge or the marker of an expired TTL.
    Gone,
}

/// The last message of a key.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The key: the subject without `$KV.<bucket>.`.
    pub(crate) key: String,
    /// Its stream sequence: the key's revision.
    pub(crate) seq: u64,
    pub(crate) op: Op,
    pub(crate) value: Bytes,
    pub(crate) headers: Option<HeaderMap>,
}

impl Entry {
    /// The entry of `message`, the message of `key` at the stream sequence `seq`.
    fn of(key: String, seq: u64, message: async_nats::Message) -> Self {
        let gone = message.headers.as_ref().is_some_and(|headers| {
            let operation = headers.get(OPERATION).map(|value| value.as_str());
            headers.get(MARKER_REASON).is_some() || matches!(operation, Some("DEL" | "PURGE"))
        });
        Self {
            key,
            seq,
            op: if gone { Op::Gone } else { Op::Put },
            value: message.payload,
            headers: message.headers,
        }
    }

    /// Whether the key holds a value (not a tombstone).
    pub(crate) fn live(&self) -> bool {
        self.op == Op::Put
    }

    /// The time the stream stored the message, in µs since the Unix epoch, on the
    /// server's clock (the leader's, for a replicated stream); see `src/clock.rs`.
    ///
    /// # Errors
    /// [`Error::Backend`] for a message read without its time stamp, or with one that
    /// is not RFC 3339 or is before the epoch.
    pub(crate) fn stamp_us(&self) -> Result<u64> {
        let stamp = self.header(TIME_STAMP).ok_or_else(|| {
            Error::backend(
                BACKEND,
                format!("{} was read without its time stamp", self.key),
            )
        })?;
        chrono::DateTime::parse_from_rfc3339(stamp)
            .ok()
            .and_then(|time| u64::try_from(time.timestamp_micros()).ok())
            .ok_or_else(|| Error::backend(BACKEND, format!("a message's time stamp `{stamp}`")))
    }

    /// When the server ends the message by its TTL (`Nats-TTL`, as [`ttl_header`]
    /// writes it): its time stamp plus the TTL, in µs since the Unix epoch on the
    /// server's clock; `None` for a message without a TTL, or one read without its
    /// time stamp.
    pub(crate) fn ends_at_us(&self) -> Option<u64> {
        let ttl = self.header(TTL).and_then(parse_ttl_header)?;
        let ttl_us = u64::try_from(ttl.as_micros()).ok()?;
        self.stamp_us().ok()?.checked_add(ttl_us)
    }

    /// A header of the message, if it has it.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        header_of(self.headers.as_ref(), name)
    }
}

/// The header `name` among a message's `headers`, if it has it.
fn header_of<'h>(headers: Option<&'h HeaderMap>, name: &str) -> Option<&'h str> {
    headers?.get(name).map(|value| value.as_str())
}

/// The answer to a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Published {
    /// Stored at this sequence (for a batch: its last message's).
    Stored(u64),
    /// Refused by JetStream: a compare failed (`code` [`WRONG_LAST_SEQUENCE`]) or the
    /// stream refused the message; nothing was written.
    Refused { code: u64, description: String },
}

impl Published {
    /// The sequence, or `None` when a compare refused the write; any other refusal
    /// is an error.
    pub(crate) fn compared(self) -> Result<Option<u64>> {
        match self {
            Self::Stored(seq) => Ok(Some(seq)),
            Self::Refused { code, .. } if is_compare_refusal(code) => Ok(None),
            Self::Refused { code, description } => Err(Error::backend(
                BACKEND,
                format!("jetstream refused the write: {description} ({code})"),
            )),
        }
    }
}

/// Whether a refusal's code is a failed compare: a wrong last sequence, or a batch
/// refused because one of its compares failed.
fn is_compare_refusal(code: u64) -> bool {
    // 10164: a batch with two writes to one key, which a compare of ours never sends
    // but which is a conflict of the same kind.
    matches!(code, WRONG_LAST_SEQUENCE | 10164)
}

/// JetStream's acknowledgement of a publish.
#[derive(Deserialize)]
struct Ack {
    #[serde(default)]
    seq: u64,
    error: Option<ApiError>,
}

/// An error of the JetStream API.
#[derive(Deserialize, Debug)]
pub(crate) struct ApiError {
    /// Its HTTP-like status (404: not found, 503: no leader or quorum).
    #[serde(default)]
    pub(crate) code: u16,
    #[serde(default)]
    pub(crate) err_code: u64,
    #[serde(default)]
    pub(crate) description: String,
}

/// One message of a write: the key, its value and its headers.
pub(crate) struct Write {
    pub(crate) key: String,
    pub(crate) value: Bytes,
    pub(crate) headers: HeaderMap,
}

impl Write {
    /// A put of `value` to `key`, with no condition.
    pub(crate) fn put(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            headers: HeaderMap::new(),
        }
    }

    /// A purge of `key`: a tombstone that rolls up its history.
    pub(crate) fn purge(key: impl Into<String>) -> Self {
        let mut write = Self::put(key, Bytes::new());
        write.headers.insert(OPERATION, "PURGE");
        write.headers.insert(ROLLUP, "sub");
        write
    }

    /// Only if the key's last sequence is `seq` (0: the key has none or only a
    /// tombstone that expired).
    #[must_use]
    pub(crate) fn if_at(mut self, seq: u64) -> Self {
        self.headers.insert(EXPECTED_SEQ, seq.to_string().as_str());
        self
    }

    /// Only if the key `other`'s last sequence is `seq` (checked instead of the
    /// written key's).
    #[must_use]
    pub(crate) fn if_other_at(self, subject: &str, seq: u64) -> Self {
        self.if_at(seq).header(EXPECTED_SUBJECT, subject)
    }

    /// The message expires `ttl` after it is stored (whole seconds, at least one).
    #[must_use]
    pub(crate) fn ttl(mut self, ttl: Duration) -> Self {
        self.headers.insert(TTL, ttl_header(ttl).as_str());
        self
    }

    /// With the header `name: value`.
    #[must_use]
    pub(crate) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// A TTL as `Nats-TTL` takes it: whole seconds, rounded up, so that the server never
/// ends a key before the client-side deadline.
pub(crate) fn ttl_header(ttl: Duration) -> String {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    format!("{}s", seconds.max(1))
}

/// A `Nats-TTL` header's TTL: whole seconds, as [`ttl_header`] writes them (`<n>s`)
/// or bare; `None` for another form (`never`, another client's units).
fn parse_ttl_header(header: &str) -> Option<Duration> {
    let seconds = header.strip_suffix('s').unwrap_or(header);
    seconds.parse().ok().map(Duration::from_secs)
}

/// How a batched direct get ([`Store::batched_get`]) ended.
pub(crate) enum BatchEnd {
    /// Its end-of-batch message: how many matching messages it left out, and the
    /// stream sequence it was answered as of, when the server says.
    Done { pending: u64, up_to: Option<u64> },
    /// Status 404: nothing (more) matched.
    NotFound,
    /// Status 413: more keys matched than one batch answers.
    TooMany,
}

/// A drop of the client's connection, waited for beside a request's answers
/// ([`Store::drops`]).
type Drops<'a> = Pin<Box<Notified<'a>>>;

/// A client connection, and the notifications of its events: each connection made
/// (every watch ends then, see [`Store::watch`]) and each connection lost (every wait
/// for an answer ends then, see [`Store::within`]).
pub(crate) struct Connection {
    pub(crate) client: async_nats::Client,
    pub(crate) connected: Arc<Notify>,
    pub(crate) dropped: Arc<Notify>,
}

/// The bucket's stream, through one client connection.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: async_nats::jetstream::Context,
    /// `KV_<bucket>`.
    pub(crate) stream: String,
    /// `$KV.<bucket>.`: what precedes a key in its subject.
    prefix: String,
    pub(crate) request_timeout: Duration,
    /// The highest stream sequence this client wrote or saw: what every read asks a
    /// replica to have applied (see the module docs). Shared by the clones.
    floor: Arc<AtomicU64>,
    /// Notified each time the client (re)connects: every watch ends then (see
    /// [`Store::watch`]).
    connected: Arc<Notify>,
    /// Notified each time the client's connection drops: every wait for an answer ends
    /// then (see [`Store::within`]).
    dropped: Arc<Notify>,
    /// See [`Store::compares_lines`].
    compares_lines: bool,
}

impl Store {
    /// Whether a write compared with a whole line (a subject filter with a wildcard,
    /// [`crate::session::Compare::Line`]) is checked in one step with its storing:
    /// only on a server outside a JetStream cluster, which checks and stores each
    /// write of a stream in turn. In a cluster the stream's leader checks a compare
    /// before it proposes the write, and guards against writes still in flight only
    /// those to the compared subject itself (nats-server keeps the subjects of
    /// proposed compares and writes by name, and a filter is no key's name): a
    /// contender's key proposed but not yet stored escapes the check, and a create
    /// compared with the line would hold beside it (measured: two holders of one lock
    /// on a three-server cluster). So the lock's compares with the line are made only
    /// where this holds, and a cluster lists the line instead. A server that reports a
    /// cluster name counts as one.
    pub(crate) fn compares_lines(&self) -> bool {
        self.compares_lines
    }

    /// The bucket `bucket` through `connection`.
    pub(crate) fn new(connection: Connection, bucket: &str, request_timeout: Duration) -> Self {
        let Connection {
            client,
            connected,
            dropped,
        } = connection;
        let jetstream = async_nats::jetstream::new(client.clone());
        let compares_lines = client.server_info().cluster.is_none();
        Self {
            compares_lines,
            client,
            jetstream,
            stream: format!("KV_{bucket}"),
            prefix: format!("$KV.{bucket}."),
            request_timeout,
            floor: Arc::new(AtomicU64::new(0)),
            connected,
            dropped,
        }
    }

    /// The same bucket through another client connection, sharing this store's read
    /// floor: what one writes, a read through the other never reads older than.
    pub(crate) fn through(&self, connection: Connection) -> Self {
        Self {
            jetstream: async_nats::jetstream::new(connection.client.clone()),
            client: connection.client,
            connected: connection.connected,
            dropped: connection.dropped,
            ..self.clone()
        }
    }

    /// The next drop of the connection, from now on: taken before a request is sent,
    /// it ends the wait for the request's answers ([`Store::within`]).
    fn drops(&self) -> Drops<'_> {
        let mut drops = Box::pin(self.dropped.notified());
        drops.as_mut().enable();
        drops
    }

    /// The answer to a request, within the request timeout; see [`Store::within`].
    ///
    /// # Errors
    /// As [`Store::within`].
    pub(crate) async fn answer<T>(&self, request: impl Future<Output = T>) -> Result<T> {
        let mut drops = self.drops();
        Self::within(self.request_timeout, &mut drops, request).await
    }

    /// Runs `request` (which waits for an answer to a request sent after `drops` was
    /// taken) for at most `timeout`, and no longer than the connection lasts: NATS
    /// delivers nothing sent while a client was away, so an answer the drop cut off
    /// never comes, and the caller learns of it at once instead of at the timeout.
    ///
    /// # Errors
    /// [`Error::Connection`] (transient: a write may have been applied) when no answer
    /// came in time or the connection dropped first.
    async fn within<T>(
        timeout: Duration,
        drops: &mut Drops<'_>,
        request: impl Future<Output = T>,
    ) -> Result<T> {
        tokio::select! {
            biased;
            answer = tokio::time::timeout(timeout, request) => answer.map_err(|_| {
                Error::connection(
                    BACKEND,
                    format!("no answer from nats within the request timeout {timeout:?}"),
                )
            }),
            () = drops.as_mut() => Err(Error::connection(
                BACKEND,
                "the connection to nats dropped before the answer came",
            )),
        }
    }

    /// Drops the read floor: the stream was made again (a store that forgot, see
    /// `src/amnesia.rs`), and its sequences start again from 1.
    pub(crate) fn forget_floor(&self) {
        self.floor.store(0, Ordering::Relaxed);
    }

    /// Raises the read floor to `seq`, a sequence the stream is known to have reached.
    fn saw(&self, seq: u64) {
        self.floor.fetch_max(seq, Ordering::Relaxed);
    }

    /// What a publish was answered, the read floor raised by what it tells.
    fn acknowledged(&self, payload: &[u8]) -> Result<Published> {
        let published = parse_ack(payload)?;
        match &published {
            Published::Stored(seq) => self.saw(*seq),
            Published::Refused { code, description } if is_compare_refusal(*code) => {
                if let Some(seq) = refused_at(description) {
                    self.saw(seq);
                }
            }
            Published::Refused { .. } => {}
        }
        Ok(published)
    }

    /// The subject of `key`.
    pub(crate) fn subject(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The subjects every key of the bucket is published on.
    pub(crate) fn subjects(&self) -> String {
        format!("{}>", self.prefix)
    }

    /// The key of `subject`, if it is one of the bucket's.
    fn key_of<'s>(&self, subject: &'s str) -> Option<&'s str> {
        subject.strip_prefix(&self.prefix)
    }

    /// Sends one write and returns JetStream's answer.
    ///
    /// # Errors
    /// [`Error::Connection`] (transient) when no answer came in time or JetStream does
    /// not answer at all: the write may have been applied.
    pub(crate) async fn publish(&self, write: Write) -> Result<Published> {
        self.request(write, &mut self.drops()).await
    }

    /// Sends `write` as a request and returns JetStream's answer, waited for as
    /// [`Store::within`] says (`drops` taken before it is sent).
    async fn request(&self, write: Write, drops: &mut Drops<'_>) -> Result<Published> {
        let subject = self.subject(&write.key);
        let request = (self.client).request_with_headers(subject, write.headers, write.value);
        let answer = Self::within(self.request_timeout, drops, request).await?;
        self.acknowledged(&answer.map_err(request_error)?.payload)
    }

    /// Sends `writes` as one atomic batch: all of them are stored, or none is (a
    /// failed compare in any refuses the whole batch).
    ///
    /// # Errors
    /// As [`Store::publish`]; [`Error::InvalidArgument`] for an empty batch.
    pub(crate) async fn batch(&self, mut writes: Vec<Write>) -> Result<Published> {
        let count = writes.len();
        if count <= 1 {
            let write = writes
                .pop()
                .ok_or_else(|| Error::InvalidArgument("an empty batch".into()))?;
            return self.publish(write).await;
        }
        let id = distsync_core::raw::call_id();
        // Taken before the first message: a batch whose connection dropped midway is
        // never committed, and its commit's answer never comes.
        let mut drops = self.drops();
        for (n, mut write) in writes.into_iter().enumerate() {
            write.headers.insert("Nats-Batch-Id", id.as_str());
            write
                .headers
                .insert("Nats-Batch-Sequence", (n + 1).to_string().as_str());
            if n + 1 == count {
                write.headers.insert("Nats-Batch-Commit", "1");
                return self.request(write, &mut drops).await;
            }
            let subject = self.subject(&write.key);
            self.client
                .publish_with_headers(subject, write.headers, write.value)
                .await
                .map_err(|error| Error::connection(BACKEND, error))?;
        }
        Err(Error::InvalidArgument("an empty batch".into()))
    }

    /// The last message of `key`, tombstones included; `None` when it has none.
    ///
    /// A one-key listing, not a single direct get: only a listing says which stream
    /// sequence its replica answered as of, which the read floor needs.
    ///
    /// # Errors
    /// As [`Store::list`].
    pub(crate) async fn last(&self, key: &str) -> Result<Option<Entry>> {
        let (entries, _) = self.list(&[key.to_owned()]).await?;
        Ok(entries.into_iter().find(|entry| entry.key == key))
    }

    /// The last message of every key matching the subject `filters` (NATS wildcards,
    /// under the bucket's prefix), tombstones included, and the stream sequence they
    /// were read as of (at least the read floor): the listing is the bucket then.
    ///
    /// More keys than one batched direct get returns are read in pages instead
    /// ([`Store::scan`]): each key as it was at some moment of the walk, not all at
    /// one sequence.
    ///
    /// The entries come in no promised order (the server's, which
    /// [`clock::now_with`](crate::clock::now_with) disturbs as it takes the clock's
    /// entry out): a caller that needs one sorts them, as the queue's sweep does by
    /// sequence.
    ///
    /// # Errors
    /// The store's error; a transient [`Error::Connection`] when no replica reached
    /// the read floor within the request timeout.
    pub(crate) async fn list(&self, filters: &[String]) -> Result<(Vec<Entry>, u64)> {
        match self.floored(filters).await? {
            Some(listed) => Ok(listed),
            None => self.scan(filters).await,
        }
    }

    /// [`Store::list`] as of the stream sequence `up_to` (the latest with `None`): a
    /// key's last message at or below it. The bucket keeps one message per key
    /// ([`HISTORY`](crate::HISTORY)), so this is the latest listing without the keys written after
    /// `up_to`: a key rewritten since has no message left at `up_to` and is missing
    /// from the answer, which a caller must check against the key's current
    /// sequence. (JetStream's `up_to_seq` would give the same answer, but a replica
    /// behind `up_to` would answer it as if it were not, which nothing could tell.)
    ///
    /// # Errors
    /// As [`Store::list`]; [`Error::Backend`] for more keys than one batched direct
    /// get returns.
    pub(crate) async fn list_at(
        &self,
        filters: &[String],
        up_to: Option<u64>,
    ) -> Result<(Vec<Entry>, u64)> {
        let (mut entries, last) = self
            .floored(filters)
            .await?
            .ok_or_else(|| Error::backend(BACKEND, format!("{TOO_MANY} match {filters:?}")))?;
        let Some(up_to) = up_to else {
            return Ok((entries, last));
        };
        entries.retain(|entry| entry.seq <= up_to);
        Ok((entries, up_to))
    }

    /// One batched direct get of `filters` answered at or above the read floor, asked
    /// again while a replica behind it answers; `None` when more keys match than it
    /// returns. It asks for the bucket's [`ANCHOR`] too, so that it always matches a
    /// key and ends with the sequence it was answered as of.
    async fn floored(&self, filters: &[String]) -> Result<Option<(Vec<Entry>, u64)>> {
        let subjects: Vec<String> = (filters.iter().map(String::as_str))
            .chain([ANCHOR])
            .map(|filter| self.subject(filter))
            .collect();
        let request = serde_json::json!({ "multi_last": subjects, "batch": MOST_LISTED + 1 });
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let floor = self.floor.load(Ordering::Relaxed);
            let (mut entries, end) = self.batched_get(&request).await?;
            let answered = match end {
                // Not even the anchor: a replica far behind.
                BatchEnd::NotFound => None,
                BatchEnd::TooMany | BatchEnd::Done { pending: 1.., .. } => return Ok(None),
                BatchEnd::Done { up_to: None, .. } => {
                    let error = "a listing's end without its sequence";
                    return Err(Error::backend(BACKEND, error));
                }
                BatchEnd::Done {
                    up_to: Some(last), ..
                } => Some(last),
            };
            if let Some(last) = answered.filter(|last| *last >= floor) {
                self.saw(last);
                entries.retain(|entry| entry.key != ANCHOR);
                return Ok(Some((entries, last)));
            }
            // A replica behind the floor answered; direct gets go to any replica,
            // so asking again soon most likely reaches another, or this one later.
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(Error::connection(BACKEND, BelowFloor));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(FLOOR_PAUSE);
        }
    }

    /// Sends the batched direct get `request` and reads its answers to the batch's
    /// end: the messages, and how the batch ended. Each answer comes within
    /// [`BETWEEN_ANSWERS`] of the one before (the first within the request timeout),
    /// and none after the connection drops.
    ///
    /// # Errors
    /// A connection error when an answer does not come or JetStream does not
    /// answer; [`Error::Backend`] for another status than the batch's end, 404 or 413.
    pub(crate) async fn batched_get(
        &self,
        request: &serde_json::Value,
    ) -> Result<(Vec<Entry>, BatchEnd)> {
        let mut drops = self.drops();
        let inbox = self.client.new_inbox();
        let direct_get = format!("$JS.API.DIRECT.GET.{}", self.stream);
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|error| Error::connection(BACKEND, error))?;
        self.client
            .publish_with_reply(direct_get, inbox, request.to_string().into())
            .await
            .map_err(|error| Error::connection(BACKEND, error))?;
        let mut entries = Vec::new();
        let mut wait = self.request_timeout;
        loop {
            let Some(answer) = Self::within(wait, &mut drops, answers.next()).await? else {
                return Err(Error::connection(
                    BACKEND,
                    "a batched read's subscription ended",
                ));
            };
            wait = BETWEEN_ANSWERS.min(self.request_timeout);
            let end = match answer.status {
                Some(StatusCode::NOT_FOUND) => BatchEnd::NotFound,
                Some(status) if status.as_u16() == TOO_MANY_RESULTS => BatchEnd::TooMany,
                Some(StatusCode::NO_RESPONDERS) => {
                    return Err(Error::connection(BACKEND, "jetstream did not answer"));
                }
                Some(status) if status.is_success() && answer.payload.is_empty() => {
                    let header = |name| header_of(answer.headers.as_ref(), name)?.parse().ok();
                    BatchEnd::Done {
                        pending: header(NUM_PENDING).unwrap_or(0),
                        up_to: header(UP_TO_SEQUENCE),
                    }
                }
                Some(status) if !status.is_success() => {
                    return Err(Error::backend(
                        BACKEND,
                        format!("a batched read answered status {status}"),
                    ));
                }
                _ => {
                    entries.push(self.entry(answer)?);
                    continue;
                }
            };
            return Ok((entries, end));
        }
    }

    /// Writes the bucket's [`ANCHOR`] unless it is there.
    ///
    /// # Errors
    /// The store's error.
    pub(crate) async fn anchor(&self) -> Result<()> {
        self.publish(Write::put(ANCHOR, "").if_at(0))
            .await?
            .compared()
            .map(|_| ())
    }

    /// The bucket's stream's info, from its leader; `None` when the server has no such
    /// stream (a wiped server, a deleted bucket).
    ///
    /// # Errors
    /// The store's error.
    pub(crate) async fn find_stream_info(&self) -> Result<Option<StreamInfo>> {
        match self.answer(self.jetstream.get_stream(&self.stream)).await? {
            Ok(stream) => Ok(Some(stream.cached_info().clone())),
            Err(error) if stream_not_found(&error) => Ok(None),
            Err(error) => Err(get_stream_error(error)),
        }
    }

    /// The bucket's stream's info, from its leader.
    ///
    /// # Errors
    /// The store's error; [`Error::Backend`] when the server has no such stream.
    pub(crate) async fn stream_info(&self) -> Result<StreamInfo> {
        let missing = || {
            Error::backend(
                BACKEND,
                format!("the server has no stream `{}`", self.stream),
            )
        };
        self.find_stream_info().await?.ok_or_else(missing)
    }

    /// The stream's last sequence, from its leader (which raises the read floor).
    ///
    /// # Errors
    /// The store's error.
    pub(crate) async fn last_sequence(&self) -> Result<u64> {
        let info = self.stream_info().await?;
        self.saw(info.state.last_sequence);
        Ok(info.state.last_sequence)
    }

    /// Every message of the keys matching `filter` from the sequence `from` on, in
    /// order, through an ordered consumer (remade by the client after a gap), deleted
    /// when the [`Watch`] is dropped. The watch ends when the client reconnects: an
    /// ordered consumer notices a connection it lost only when its heartbeats stop
    /// coming (seconds), and a waiter that lists and watches again at once resumes as
    /// soon as the connection does.
    ///
    /// # Errors
    /// The store's error.
    pub(crate) async fn watch(&self, filter: &str, from: u64) -> Result<Watch> {
        let reconnected = Arc::clone(&self.connected).notified_owned();
        let stream = self
            .answer(self.jetstream.get_stream_no_info(&self.stream))
            .await?
            .map_err(get_stream_error)?;
        let name = format!("ds_{}", distsync_core::raw::call_id());
        let config = OrderedConfig {
            name: Some(name.clone()),
            filter_subject: self.subject(filter),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..OrderedConfig::default()
        };
        let consumer = self
            .answer(stream.create_consumer(config))
            .await?
            .map_err(consumer_error)?;
        let messages =
            self.answer(consumer.messages())
                .await?
                .map_err(|error| match error.kind() {
                    StreamErrorKind::TimedOut => Error::connection(BACKEND, error),
                    StreamErrorKind::Other => Error::backend(BACKEND, error),
                })?;
        let store = self.clone();
        let entries = messages.map(move |message| {
            // An ordered consumer's errors (a missed heartbeat, a consumer it could
            // not recreate) are the connection's: the waiter lists and watches again.
            let message = message.map_err(|error| Error::connection(BACKEND, error))?;
            let seq = message
                .info()
                .map_err(|error| Error::backend(BACKEND, error.to_string()))?
                .stream_sequence;
            store.saw(seq);
            let key = store.key_of(message.subject.as_str()).unwrap_or_default();
            Ok(Entry::of(key.to_owned(), seq, message.message))
        });
        Ok(Watch {
            entries: entries.take_until(reconnected).boxed(),
            stream,
            name,
        })
    }

    /// The entry a direct get answered.
    pub(crate) fn entry(&self, answer: async_nats::Message) -> Result<Entry> {
        let headers = answer.headers.as_ref();
        let (subject, seq) = (header_of(headers, SUBJECT), header_of(headers, SEQUENCE));
        let (Some(subject), Some(seq)) = (subject, seq) else {
            return Err(Error::backend(
                BACKEND,
                format!(
                    "a direct get answered without its subject and sequence (status {:?})",
                    answer.status
                ),
            ));
        };
        let seq = seq
            .parse()
            .map_err(|_| Error::backend(BACKEND, format!("a direct get's sequence `{seq}`")))?;
        let key = self.key_of(subject).unwrap_or_default().to_owned();
        Ok(Entry::of(key, seq, answer))
    }
}

/// The messages of a watch ([`Store::watch`]). Dropped, it deletes its consumer on
/// the server in the background, rather than leave it to the consumer's inactivity
/// threshold (30 s), which a busy lock would outrun: a stream takes a bounded number
/// of consumers.
pub(crate) struct Watch {
    entries: futures::stream::BoxStream<'static, Result<Entry>>,
    stream: async_nats::jetstream::stream::Stream<()>,
    name: String,
}

impl futures::Stream for Watch {
    type Item = Result<Entry>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.entries.poll_next_unpin(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let (stream, name) = (self.stream.clone(), std::mem::take(&mut self.name));
        CleanUp::new("deleting a watch's consumer", "it expires when inactive")
            .of(&name)
            .within(CONSUMER_INACTIVE)
            .spawn(move |clean_up| async move {
                let delete = || async {
                    match stream.delete_consumer(&name).await {
                        Ok(_) => Ok(()),
                        Err(error) if gone(&error) => Ok(()),
                        Err(error) => Err(consumer_error(error)),
                    }
                };
                clean_up.retry(delete).await
            });
    }
}

/// How long after its last use the server deletes a watch's consumer by itself: the
/// inactivity threshold the client gives an ordered consumer.
const CONSUMER_INACTIVE: Duration = Duration::from_secs(30);

/// Whether the server answered that the stream is not there.
fn stream_not_found(error: &GetStreamError) -> bool {
    matches!(
        error.kind(),
        GetStreamErrorKind::JetStream(api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND
    )
}

/// Whether the server answered that the consumer is not there (deleted already, or
/// expired).
fn gone(error: &async_nats::jetstream::stream::ConsumerError) -> bool {
    matches!(
        error.kind(),
        ConsumerErrorKind::JetStream(api) if api.error_code() == ErrorCode::CONSUMER_NOT_FOUND
    )
}

/// Why a read no replica answered at the read floor in time failed: a transient
/// [`Error::Connection`], as the replicas catch up; or a stream made again since this
/// client read it, whose sequences are below the floor until they pass it (see
/// [`crate::amnesia`]). Typed, so that the second can be told ([`below_floor`]).
#[derive(Debug)]
pub(crate) struct BelowFloor;

impl std::fmt::Display for BelowFloor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no replica has caught up with what this client wrote or saw yet")
    }
}

impl std::error::Error for BelowFloor {}

/// Whether `error` is a read that no replica answered at the read floor.
pub(crate) fn below_floor(error: &Error) -> bool {
    matches!(error, Error::Connection { source, .. } if source.is::<BelowFloor>())
}

/// A batched direct get's status for more matching keys than the server answers.
const TOO_MANY_RESULTS: u16 = 413;

/// The longest pause between two askings of a listing behind the read floor.
pub(crate) const FLOOR_PAUSE: Duration = Duration::from_millis(50);

/// The key's sequence a refused compare names (`wrong last sequence: 7`), if it does:
/// the stream had reached it.
fn refused_at(description: &str) -> Option<u64> {
    description
        .rsplit_once(':')
        .and_then(|(_, seq)| seq.trim().parse().ok())
}

/// A publish acknowledgement: the sequence, or the refusal.
fn parse_ack(payload: &[u8]) -> Result<Published> {
    let ack: Ack = serde_json::from_slice(payload).map_err(|error| {
        Error::backend(
            BACKEND,
            format!("an unreadable publish acknowledgement: {error}"),
        )
    })?;
    match ack.error {
        Some(error) => Ok(Published::Refused {
            code: error.err_code,
            description: error.description,
        }),
        None => Ok(Published::Stored(ack.seq)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_header(Duration::from_millis(1)), "1s");
        assert_eq!(ttl_header(Duration::from_secs(2)), "2s");
        assert_eq!(ttl_header(Duration::from_millis(2001)), "3s");
    }

    #[test]
    fn ttl_headers_read_back_as_written() {
        for ttl in [1, 20, 3600].map(Duration::from_secs) {
            assert_eq!(parse_ttl_header(&ttl_header(ttl)), Some(ttl));
        }
        assert_eq!(parse_ttl_header("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_ttl_header("never"), None);
        assert_eq!(parse_ttl_header("1m"), None);
    }

    #[test]
    fn acks_and_refusals_are_read() {
        assert_eq!(
            parse_ack(br#"{"stream":"KV_b","seq":7}"#).unwrap(),
            Published::Stored(7)
        );
        let refused = parse_ack(
            concat!(
                r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 7"},"#,
                r#""stream":"KV_b","seq":0}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(refused.clone().compared().unwrap(), None);
        assert!(matches!(refused, Published::Refused { code: 10071, .. }));
        assert!(parse_ack(b"nonsense").is_err());
    }

    /// A read answered below the client's floor is asked again, and ends in a
    /// transient error when the stream does not get there in time; once it does, the
    /// read is answered.
    #[tokio::test]
    async fn a_read_is_never_older_than_what_the_client_wrote_or_saw() {
        let Some(url) = distsync_conformance::server_url("DISTSYNC_NATS_URL") else {
            return;
        };
        let config: crate::NatsConfig = url.parse().unwrap();
        let config = config
            .with_bucket("read_floor")
            .unwrap()
            .with_request_timeout(Duration::from_secs(1));
        let backend = crate::backend_with_config(&config).await.unwrap();
        let store = &backend.shared.store;
        let written = store.publish(Write::put("k", "1")).await.unwrap();
        let Published::Stored(seq) = written else {
            panic!("{written:?}")
        };
        assert_eq!(store.floor.load(Ordering::Relaxed), seq);
        assert_eq!(store.last("k").await.unwrap().unwrap().value, "1");

        store.saw(seq + 1);
        for read in [
            store.last("k").await.map(|_| ()),
            store.list(&["k".to_owned()]).await.map(|_| ()),
        ] {
            let error = read.expect_err("a read below the floor was answered");
            assert!(error.is_transient(), "{error}");
        }

        let rewritten = store.publish(Write::put("k", "2")).await.unwrap();
        assert_eq!(rewritten, Published::Stored(seq + 1));
        assert_eq!(store.last("k").await.unwrap().unwrap().value, "2");
        let (listed, up_to) = store.list(&["k".to_owned()]).await.unwrap();
        assert!(up_to > seq);
        assert_eq!(listed.len(), 1);
    }

    #[test]
    fn a_refused_compare_names_the_sequence_it_was_refused_at() {
        assert_eq!(refused_at("wrong last sequence: 7"), Some(7));
        assert_eq!(refused_at("wrong last sequence"), None);
        assert_eq!(refused_at("wrong last sequence: x"), None);
    }
}
