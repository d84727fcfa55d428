//! STM and guarded writes on ZooKeeper: version checks and one `multi` per commit.
//!
//! An STM key `<name>` is the persistent node `<root>/stm/<name>` (keys.rs's layout,
//! so a purge of a prefix removes its keys); its data, and what a node with no data
//! is, are in docs/ZOOKEEPER.md, "STM, guarded writes, counters and latches". A key
//! `a/b` needs the node of `a`, which holds no key then.
//!
//! Every read records the node's data version, or that the node is missing. A commit
//! is one `multi`, applied wholly or not at all: a version check of each key read and
//! not written, a write of each key written conditioned on the version it had
//! (`setData` with that version, `create` where the node was missing, `delete` or an
//! empty `setData` for a deletion), and for a key read as missing a `create` and
//! `delete` of its node, which fails if the node appeared meanwhile. Any failed check
//! (`BadVersion`, `NodeExists`, `NoNode`, `NotEmpty`) is a conflict: nothing was
//! written and the engine retries the transaction. Ancestors a `create` needs are
//! made before the `multi` (they hold no key, so they change no value).
//!
//! | level | reads | commit checks |
//! |---|---|---|
//! | `SerializableSnapshot` | each new read is a `multiRead` that reads every key read before again; one that changed is a conflict, so the reads are one consistent state | the read set, and the keys written unchanged since that state (a `multiRead` just before the commit) |
//! | `Serializable` | as above | as above: ZooKeeper offers no weaker check that is cheaper |
//! | `RepeatableReads` | the latest value, cached | the read set, at the versions first read |
//! | `ReadCommitted` | the latest value, cached | none (a write still names the version a read just before the commit saw, so a racing write to the same key is retried rather than lost) |
//!
//! ZooKeeper has no reads at an old zxid, so the "snapshot" of the two serializable
//! levels is the state at the latest `multiRead` in which every key read so far still
//! had the value first seen: a transaction's reads are always of one state of the
//! store, and its commit applies only if that state still holds for what it read
//! (and for what it writes). `multiRead` needs ZooKeeper 3.6 or later. Re-reading
//! the read set on each new read costs a transaction of `n` keys `n` reads of the
//! first key: fine for the handful of keys a transaction usually touches, and the
//! price of a consistent view without snapshot reads.
//!
//! A guarded write ([`distsync_core::LockGuard::put_if_held`]) is a `multi` of a
//! check that the guard's node (its contender, write-lock or lease node) still exists
//! and the key's write: a node, once deleted (released, or its session expired), never
//! comes back under its name, so a holder that lost its hold writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::raw::Make;
use distsync_core::raw::{GuardedWrite, StmAttempt, StmEngine, StmRetry, Write};
use distsync_core::{Bytes, Error, Isolation, Name, Result};
use zookeeper_client as zk;

use crate::direct::{bounded, connected, parents, persistent, request, Direct};
use crate::keys::{self, Kind};
use crate::session::LeaseInner;
use crate::store::Shared;
use crate::BACKEND;

/// The first byte of a key's node data: what follows is the value.
const PRESENT: u8 = 0x01;

/// How many times a guarded write is tried again when another write to its key raced
/// it (nothing was written by the attempt that lost).
const GUARDED_ATTEMPTS: usize = 100;

/// What a read saw of a key's node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// No node.
    Missing,
    /// A node at data version `version`, with `children` children.
    Node { version: i32, children: i32 },
}

/// A key as read: its value and its node.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Read {
    value: Option<Bytes>,
    seen: Seen,
}

/// The value a node's data holds.
///
/// # Errors
/// [`Error::Backend`] for data that is not in the layout above.
pub(crate) fn decode(path: &str, data: Vec<u8>) -> Result<Option<Bytes>> {
    match data.split_first() {
        None => Ok(None),
        Some((&PRESENT, value)) => Ok(Some(Bytes::copy_from_slice(value))),
        Some(_) => Err(Error::backend(
            BACKEND,
            format!("{path} does not hold an stm value"),
        )),
    }
}

/// The node data of `value`.
fn encode(value: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(value.len() + 1);
    data.push(PRESENT);
    data.extend_from_slice(value);
    data
}

/// A key's node.
pub(crate) fn key_path(shared: &Shared, key: &Name) -> String {
    keys::path(shared.config.root(), Kind::Stm, key)
}

/// Reads `paths` in one `multiRead`: one state of the store.
async fn read_all(shared: &Shared, client: &zk::Client, paths: &[String]) -> Result<Vec<Read>> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = client.new_multi_reader();
    for path in paths {
        reader.add_get_data(path).map_err(crate::error::map)?;
    }
    let results = request(shared, reader.commit()).await?;
    if results.len() != paths.len() {
        return Err(Error::backend(
            BACKEND,
            format!(
                "a multiRead of {} nodes answered {}",
                paths.len(),
                results.len()
            ),
        ));
    }
    results
        .into_iter()
        .zip(paths)
        .map(|(result, path)| match result {
            zk::MultiReadResult::Data { data, stat } => Ok(Read {
                value: decode(path, data)?,
                seen: Seen::Node {
                    version: stat.version,
                    children: stat.num_children,
                },
            }),
            zk::MultiReadResult::Error {
                err: zk::Error::NoNode,
            } => Ok(Read {
                value: None,
                seen: Seen::Missing,
            }),
            zk::MultiReadResult::Error { err } => Err(crate::error::map(err)),
            other => Err(Error::backend(
                BACKEND,
                format!("a multiRead of data answered {other:?}"),
            )),
        })
        .collect()
}

/// [`read_all`] for a transaction's attempt, on the backend's client of no session,
/// sent once the client is connected (see [`connected`]). That client's session ending
/// under the read ends the attempt as a conflict ([`StmRetry`]): nothing read belongs to
/// the session, so the transaction starts again, through the next one.
async fn attempt_read(shared: &Shared, client: &zk::Client, paths: &[String]) -> Result<Vec<Read>> {
    connected(shared, client).await?;
    match read_all(shared, client, paths).await {
        Err(Error::SessionLost) => Err(StmRetry.into()),
        other => other,
    }
}

/// Whether a failed `multi` failed on a check (a conflict: nothing was written).
fn is_conflict(error: &zk::Error) -> bool {
    matches!(
        error,
        zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode | zk::Error::NotEmpty
    )
}

/// The operations that make `key_path`'s node what a write asks, given what the node
/// was when read: `setData` or `delete` at its version, or `create` where it was
/// missing (nothing to do for a deletion of a missing node, unless `keep_absent`).
fn add_write(
    writer: &mut zk::MultiWriter<'_>,
    path: &str,
    seen: Seen,
    value: Option<&Bytes>,
    keep_absent: bool,
) -> Result<()> {
    let options = persistent();
    let added = match (value, seen) {
        (Some(value), Seen::Node { version, .. }) => {
            writer.add_set_data(path, &encode(value), Some(version))
        }
        (Some(value), Seen::Missing) => writer.add_create(path, &encode(value), &options),
        // A node with children stays, emptied: it is their ancestor.
        (None, Seen::Node { version, children }) if children > 0 => {
            writer.add_set_data(path, &[], Some(version))
        }
        (None, Seen::Node { version, .. }) => writer.add_delete(path, Some(version)),
        (None, Seen::Missing) if keep_absent => add_absent(writer, path),
        (None, Seen::Missing) => Ok(()),
    };
    added.map_err(crate::error::map)
}

/// A check that `path` is still missing: create it and delete it again, which fails
/// with `NodeExists` if it appeared.
fn add_absent(writer: &mut zk::MultiWriter<'_>, path: &str) -> std::result::Result<(), zk::Error> {
    writer.add_create(path, &[], &persistent())?;
    writer.add_delete(path, None)
}

/// Runs `writer`'s `multi`: `Ok(true)` applied, `Ok(false)` a conflict.
async fn commit_multi(shared: &Shared, writer: &mut zk::MultiWriter<'_>) -> Result<bool> {
    match bounded(shared, writer.commit()).await? {
        Ok(_) => Ok(true),
        Err(zk::MultiWriteError::OperationFailed { source, .. }) if is_conflict(&source) => {
            Ok(false)
        }
        Err(error) => Err(crate::error::map(error.into())),
    }
}

/// The STM engine of one backend.
pub(crate) struct ZkStm {
    /// The backend's client for requests of no session, shared by every handle.
    direct: Arc<Direct>,
}

#[async_trait]
impl StmEngine for ZkStm {
    async fn begin(&self, isolation: Isolation, prefetch: &[Name]) -> Result<Box<dyn StmAttempt>> {
        let client = self.direct.client().await?;
        let mut attempt = ZkAttempt {
            shared: Arc::clone(&self.direct.shared),
            client,
            isolation,
            reads: Vec::new(),
            cache: HashMap::new(),
        };
        if !prefetch.is_empty() && isolation != Isolation::ReadCommitted {
            let paths: Vec<String> = prefetch
                .iter()
                .map(|key| key_path(&attempt.shared, key))
                .collect();
            let found = attempt_read(&attempt.shared, &attempt.client, &paths).await?;
            for (key, read) in prefetch.iter().zip(found) {
                if !attempt.cache.contains_key(key) {
                    attempt.reads.push(key.clone());
                    attempt.cache.insert(key.clone(), read);
                }
            }
        }
        Ok(Box::new(attempt))
    }
}

/// One attempt: its client, what it read.
struct ZkAttempt {
    shared: Arc<Shared>,
    client: zk::Client,
    isolation: Isolation,
    /// Keys read, in read order.
    reads: Vec<Name>,
    cache: HashMap<Name, Read>,
}

impl ZkAttempt {
    /// Whether reads must be of one state (the two serializable levels).
    fn consistent(&self) -> bool {
        matches!(
            self.isolation,
            Isolation::SerializableSnapshot | Isolation::Serializable
        )
    }

    /// Reads `extra` together with every key read so far, in one `multiRead`; a key
    /// read before whose value changed is a conflict ([`StmRetry`]). Otherwise the
    /// cache takes the nodes' latest versions (the values are the same), and the
    /// reads of `extra` are returned.
    async fn revalidate(&mut self, extra: &[Name]) -> Result<Vec<Read>> {
        let keys: Vec<Name> = self.reads.iter().chain(extra).cloned().collect();
        let paths: Vec<String> = keys.iter().map(|key| key_path(&self.shared, key)).collect();
        let mut found = attempt_read(&self.shared, &self.client, &paths).await?;
        let fresh = found.split_off(self.reads.len());
        for (key, now) in self.reads.iter().zip(found) {
            let Some(before) = self.cache.get_mut(key) else {
                continue;
            };
            if before.value != now.value {
                return Err(StmRetry.into());
            }
            before.seen = now.seen;
        }
        Ok(fresh)
    }
}

#[async_trait]
impl StmAttempt for ZkAttempt {
    async fn get(&mut self, key: &Name) -> Result<Option<Bytes>> {
        if let Some(read) = self.cache.get(key) {
            return Ok(read.value.clone());
        }
        let read = if self.consistent() && !self.reads.is_empty() {
            self.revalidate(std::slice::from_ref(key)).await?
        } else {
            attempt_read(&self.shared, &self.client, &[key_path(&self.shared, key)]).await?
        };
        let read = read
            .into_iter()
            .next()
            .ok_or_else(|| Error::backend(BACKEND, "a multiRead answered nothing"))?;
        let value = read.value.clone();
        self.reads.push(key.clone());
        self.cache.insert(key.clone(), read);
        Ok(value)
    }

    fn read_keys(&self) -> Vec<Name> {
        self.reads.clone()
    }

    async fn commit(self: Box<Self>, writes: Vec<Write>) -> Result<bool> {
        let mut this = *self;
        let written: BTreeMap<&Name, Option<&Bytes>> = writes
            .iter()
            .map(|(key, value)| (key, value.as_ref()))
            .collect();
        let checked = this.isolation != Isolation::ReadCommitted;
        if written.is_empty() && (this.consistent() || !checked) {
            // The reads were of one state (or nothing is checked): nothing to apply.
            return Ok(true);
        }
        // What each written key's node is now, and, for the serializable levels, the
        // read set again in the same state.
        let unread: Vec<Name> = written
            .keys()
            .filter(|key| !checked || !this.cache.contains_key(**key))
            .map(|key| (*key).clone())
            .collect();
        let fresh = if this.consistent() {
            match this.revalidate(&unread).await {
                Ok(fresh) => fresh,
                Err(error) if matches!(&error, Error::Backend { source, .. } if source.is::<StmRetry>()) => {
                    return Ok(false)
                }
                Err(error) => return Err(error),
            }
        } else {
            let paths: Vec<String> = unread
                .iter()
                .map(|key| key_path(&this.shared, key))
                .collect();
            read_all(&this.shared, &this.client, &paths).await?
        };
        let mut target: BTreeMap<Name, Seen> = unread
            .into_iter()
            .zip(fresh)
            .map(|(key, read)| (key, read.seen))
            .collect();
        if checked {
            for key in &this.reads {
                if let Some(read) = this.cache.get(key) {
                    target.entry(key.clone()).or_insert(read.seen);
                }
            }
        }
        // Nothing of the commit waits in the client's queue through an outage.
        connected(&this.shared, &this.client).await?;
        // Ancestors of the nodes a create needs.
        for (key, seen) in &target {
            let creates = *seen == Seen::Missing
                && (matches!(written.get(key), Some(Some(_)) | None)
                    || (checked && this.cache.contains_key(key)));
            if creates {
                parents(&this.shared, &this.client, &key_path(&this.shared, key)).await?;
            }
        }
        let mut writer = this.client.new_multi_writer();
        for (key, seen) in &target {
            let path = key_path(&this.shared, key);
            let was_read = checked && this.cache.contains_key(key);
            match written.get(key) {
                Some(value) => add_write(&mut writer, &path, *seen, *value, was_read)?,
                None => match seen {
                    Seen::Node { version, .. } => writer
                        .add_check_version(&path, *version)
                        .map_err(crate::error::map)?,
                    Seen::Missing => add_absent(&mut writer, &path).map_err(crate::error::map)?,
                },
            }
        }
        let applied = commit_multi(&this.shared, &mut writer).await?;
        if !applied {
            tracing::debug!(isolation = %this.isolation, "zookeeper stm commit conflicted");
        }
        Ok(applied)
    }
}

/// The guarded write of a guard whose hold is the node `node`.
pub(crate) struct ZkGuardedWrite {
    lease: Arc<LeaseInner>,
    node: String,
}

impl ZkGuardedWrite {
    /// The guarded write of the hold `node`, through the session `lease`.
    pub(crate) fn new(lease: &Arc<LeaseInner>, node: String) -> Arc<Self> {
        Arc::new(Self {
            lease: Arc::clone(lease),
            node,
        })
    }

    /// The hold's node, from the server's root: what a caller's own `multi` checks
    /// (see `src/hold_check.rs`).
    pub(crate) fn node(&self) -> &str {
        &self.node
    }
}

#[async_trait]
impl GuardedWrite for ZkGuardedWrite {
    async fn put_if_held_bytes(&self, key: &Name, value: Bytes) -> Result<bool> {
        let shared = &self.lease.shared;
        let client = self.lease.client()?;
        let path = key_path(shared, key);
        for _ in 0..GUARDED_ATTEMPTS {
            let seen = read_all(shared, &client, std::slice::from_ref(&path))
                .await?
                .pop()
                .map_or(Seen::Missing, |read| read.seen);
            if seen == Seen::Missing {
                parents(shared, &client, &path).await?;
            }
            let mut writer = client.new_multi_writer();
            // Version -1: the check passes whatever the node's version, if it exists.
            writer
                .add_check_version(&self.node, -1)
                .map_err(crate::error::map)?;
            add_write(&mut writer, &path, seen, Some(&value), false)?;
            match bounded(shared, writer.commit()).await? {
                Ok(_) => return Ok(true),
                Err(zk::MultiWriteError::OperationFailed {
                    index: 0,
                    source: zk::Error::NoNode,
                }) => return Ok(false),
                // The key changed between its read and the write: read it again.
                Err(zk::MultiWriteError::OperationFailed { source, .. })
                    if is_conflict(&source) => {}
                Err(error) => return Err(self.lease.error(error.into())),
            }
        }
        Err(Error::StmConflict {
            attempts: GUARDED_ATTEMPTS as u32,
        })
    }
}

impl Make<Arc<Direct>, ()> for ZkStm {
    fn make(direct: &Arc<Direct>, (): ()) -> Result<Self> {
        Ok(Self {
            direct: Arc::clone(direct),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_empty_nodes_are_no_key() {
        for value in [&b""[..], b"x", b"\x01\x02"] {
            assert_eq!(decode("/p", encode(value)).unwrap().as_deref(), Some(value));
        }
        assert_eq!(decode("/p", Vec::new()).unwrap(), None);
        assert!(decode("/p", b"\x02".to_vec()).is_err());
    }
}
