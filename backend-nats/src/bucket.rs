//! The bucket: made on first connect with the settings every primitive relies on,
//! and checked for them when it exists.
//!
//! A bucket is the stream `KV_<bucket>` over `$KV.<bucket>.>`. The settings:
//!
//! * `allow_msg_ttl`: per-key TTLs, which end a crashed holder's keys;
//! * `subject_delete_marker_ttl`: the marker JetStream writes when a TTL ends a key,
//!   which is what wakes the key's waiters (kept [`MARKER_TTL`]);
//! * `allow_atomic`: atomic batches, for guarded writes and a session's release;
//! * `allow_direct`: direct gets, for reads and listings;
//! * `allow_rollup_hdrs`: purges, for releases;
//! * `max_msgs_per_subject` = [`HISTORY`] (one): with more, rewritten keys' TTLs do
//!   not expire (see [`HISTORY`]).
//!
//! A bucket made by other tools (the `nats` CLI makes neither TTLs nor atomic batches
//! by default) lacks some of them; it is refused with
//! [`Error::InvalidArgument`] naming what is missing, never used half-working (a
//! `Nats-TTL` on a stream without `allow_msg_ttl` is refused per write, and a lock
//! without TTLs would never free a crashed holder's hold).

use std::time::Duration;

use distsync_core::raw::RetryPolicy;
use tokio::time::Instant;

use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use distsync_core::{Error, Result};

use crate::store::Store;
use crate::BACKEND;

/// The oldest server with everything this backend uses: per-message TTLs and delete
/// markers came with 2.11, atomic batches with 2.12.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 12);

/// How long a delete marker stays: the longest a waiter's watch may be away (a
/// reconnect) and still see the end of the key it waits for. A waiter lists again
/// after any break anyway.
pub const MARKER_TTL: Duration = Duration::from_secs(60);

/// Revisions kept per key: one. nats-server 2.15.1 does not expire the messages of
/// a key rewritten with `Nats-TTL` in a stream that keeps more than one per subject
/// (measured: a key created and renewed three times with a 2 s TTL still had its
/// four messages, and no delete marker, 8 s later; with one kept, its marker came
/// 2.0 s after the last renewal), so a crashed holder's keys would never end. A
/// watcher is delivered only the messages the stream still keeps: one that falls
/// behind skips a key's superseded values (see `src/election.rs` for how proclaims
/// are kept apart).
pub const HISTORY: i64 = 1;

/// Checks the server's version (from its `INFO`): [`Error::Unsupported`] below
/// [`MIN_SERVER_VERSION`] or without JetStream.
pub(crate) fn check_server(info: &async_nats::ServerInfo) -> Result<()> {
    if !info.jetstream {
        return Err(Error::unsupported(
            BACKEND,
            format!(
                "nats-server {} without JetStream (start it with `-js`)",
                info.version
            ),
        ));
    }
    let version = parse_version(&info.version);
    if version.is_none_or(|version| version < MIN_SERVER_VERSION) {
        let (major, minor) = MIN_SERVER_VERSION;
        return Err(Error::unsupported(
            BACKEND,
            format!(
                "nats-server {}: this backend needs {major}.{minor} or later (per-key TTLs \
                 and atomic batches)",
                info.version
            ),
        ));
    }
    Ok(())
}

/// `major.minor` of a version such as `2.15.1` or `2.12.0-beta.3`.
fn parse_version(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The configuration of a bucket this backend makes.
fn wanted(store: &Store, replicas: usize) -> Config {
    Config {
        name: store.stream.clone(),
        subjects: vec![store.subjects()],
        max_messages_per_subject: HISTORY,
        discard: DiscardPolicy::New,
        storage: StorageType::File,
        num_replicas: replicas,
        allow_direct: true,
        allow_rollup: true,
        allow_message_ttl: true,
        subject_delete_marker_ttl: Some(MARKER_TTL),
        allow_atomic_publish: true,
        ..Config::default()
    }
}

/// What `config` lacks of what this backend relies on (empty: nothing).
pub(crate) fn missing(store: &Store, config: &Config) -> Vec<&'static str> {
    let marker_ttl = config.subject_delete_marker_ttl;
    let has = [
        (
            config.subjects.contains(&store.subjects()),
            "the subjects `$KV.<bucket>.>`",
        ),
        (config.allow_message_ttl, "allow_msg_ttl"),
        (
            marker_ttl.is_some_and(|ttl| !ttl.is_zero()),
            "subject_delete_marker_ttl",
        ),
        (config.allow_atomic_publish, "allow_atomic"),
        (config.allow_direct, "allow_direct"),
        (config.allow_rollup, "allow_rollup_hdrs"),
        (!config.deny_purge, "purges (deny_purge is set)"),
        (
            config.max_messages_per_subject == HISTORY,
            "max_msgs_per_subject 1 (with more, keys' TTLs do not expire)",
        ),
        (
            config.max_age.is_zero(),
            "no max_age (it would end held keys)",
        ),
    ];
    has.into_iter()
        .filter(|(has, _)| !has)
        .map(|(_, what)| what)
        .collect()
}

/// Makes the bucket if it is missing, or checks it, and writes its anchor (a key every
/// listing asks for, see `src/store.rs`) unless it is there. Returns how many
/// replicas the bucket's stream has (an existing bucket keeps its own, whatever
/// `replicas` asks).
///
/// Every step is idempotent, and a transient failure is tried again until `deadline`
/// (the URL's `connect_timeout`): a cluster whose meta leader, or whose new stream's
/// leader, is still being elected answers "no responders" or 503 for a moment, which
/// is a store that is not ready yet, not one that is unreachable.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bucket that lacks a setting (see the module
/// docs); the store's error, the last transient one once `deadline` has passed.
pub(crate) async fn ensure(store: &Store, replicas: usize, deadline: Instant) -> Result<Made> {
    RetryPolicy::default()
        .idempotent_until("nats bucket", Some(deadline), None, || {
            ensure_once(store, replicas)
        })
        .await
}

/// What [`ensure`] found or made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Made {
    /// The stream's replicas.
    pub(crate) replicas: usize,
    /// When the stream was made, in ns since the Unix epoch: a stream made again (a
    /// wiped server, a deleted bucket) has another, which is how a client tells that
    /// the store forgot (see `src/amnesia.rs`).
    pub(crate) created: i128,
}

/// When the bucket's stream was made (see [`Made::created`]), `None` when the
/// server has no such stream.
///
/// # Errors
/// The store's error.
pub(crate) async fn created(store: &Store) -> Result<Option<i128>> {
    let info = store.find_stream_info().await?;
    Ok(info.map(|info| info.created.unix_timestamp_nanos()))
}

async fn ensure_once(store: &Store, replicas: usize) -> Result<Made> {
    let (config, created) = match store.find_stream_info().await? {
        Some(info) => (info.config, info.created),
        None => {
            tracing::debug!(stream = %store.stream, "making the bucket");
            let made = store
                .answer(
                    store
                        .jetstream
                        .get_or_create_stream(wanted(store, replicas)),
                )
                .await?
                .map_err(create_stream_error)?;
            let info = made.cached_info();
            (info.config.clone(), info.created)
        }
    };
    let missing = missing(store, &config);
    if !missing.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the nats bucket stream `{}` lacks what distsync needs: {}; use a bucket \
             distsync makes, or edit the stream",
            store.stream,
            missing.join(", ")
        )));
    }
    store.anchor().await?;
    Ok(Made {
        replicas: config.num_replicas,
        created: created.unix_timestamp_nanos(),
    })
}

/// Maps an error of making the bucket's stream: JetStream not answering, a timeout and
/// JetStream [`unavailable`](crate::error::unavailable) are [`Error::Connection`]
/// (transient); any other refusal is [`Error::Backend`].
fn create_stream_error(error: async_nats::jetstream::context::CreateStreamError) -> Error {
    use async_nats::jetstream::context::CreateStreamErrorKind;
    match error.kind() {
        CreateStreamErrorKind::JetStreamUnavailable | CreateStreamErrorKind::TimedOut => {
            Error::connection(BACKEND, error)
        }
        CreateStreamErrorKind::JetStream(api) if crate::error::unavailable(&api) => {
            Error::connection(BACKEND, error)
        }
        _ => Error::backend(BACKEND, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("v2.12.0-beta.3"), Some((2, 12)));
        assert!(parse_version("2.11.9").unwrap() < MIN_SERVER_VERSION);
        assert!(parse_version("3.0.0").unwrap() >= MIN_SERVER_VERSION);
        assert_eq!(parse_version("dev"), None);
    }

    #[test]
    fn an_old_server_or_one_without_jetstream_is_refused_with_a_typed_error() {
        let server = |version: &str, jetstream| async_nats::ServerInfo {
            version: version.to_owned(),
            jetstream,
            ..async_nats::ServerInfo::default()
        };
        assert!(check_server(&server("2.12.0", true)).is_ok());
        assert!(check_server(&server("2.15.1", true)).is_ok());
        for (version, jetstream) in [("2.11.9", true), ("2.9.25", true), ("2.15.1", false)] {
            match check_server(&server(version, jetstream)) {
                Err(Error::Unsupported { operation, .. }) => {
                    assert!(operation.contains(version), "{operation}")
                }
                other => panic!("{version}: {other:?}"),
            }
        }
    }
}
