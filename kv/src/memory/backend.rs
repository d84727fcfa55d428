//! The memory backend: the recipes of [`crate::recipes`] over a [`MemoryKv`], its URL
//! and what it claims.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use super::store::MemoryKv;
use crate::recipes::KvBackend;
use distsync_core::capabilities::Capabilities;
use distsync_core::coordinator::Coordinator;
use distsync_core::error::{Error, Result};
use distsync_core::raw::locked;

pub use super::store::BACKEND;

/// The URL scheme of the memory backend: `memory://` (a fresh store) or
/// `memory://NAME` (the process-wide store `NAME`).
pub const SCHEME: &str = "memory";

/// The in-memory backend (`memory://`).
pub type MemoryBackend = KvBackend<MemoryKv>;

impl KvBackend<MemoryKv> {
    /// A fresh, empty in-memory store.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        KvBackend::with_kv(MemoryKv::new(), "", capabilities())
    }

    /// The process-wide in-memory store called `name` (`memory://<name>`): every
    /// backend made with the same name shares one store, so several coordinators in
    /// one process (say, two simulated services in a test) see each other's locks and
    /// queues. The store lives while a backend over it does; the next call after the
    /// last one is dropped starts an empty store.
    pub fn shared(name: &str) -> Self {
        static STORES: OnceLock<Mutex<HashMap<String, Weak<MemoryKv>>>> = OnceLock::new();
        let mut stores = locked(STORES.get_or_init(Default::default));
        stores.retain(|_, store| store.strong_count() > 0);
        let store = stores.get(name).and_then(Weak::upgrade).unwrap_or_else(|| {
            let store = Arc::new(MemoryKv::new());
            stores.insert(name.to_owned(), Arc::downgrade(&store));
            store
        });
        KvBackend::with_shared_kv(store, "", capabilities())
    }

    /// The backend a `memory://` URL names: `memory://` is a fresh store (as
    /// [`MemoryBackend::new`]); `memory://NAME` (a trailing `/` ignored) the
    /// process-wide store `NAME` (as [`MemoryBackend::shared`]). The scheme is
    /// case-insensitive. The one option is the shared `stale_claim=` (see
    /// [`KvBackend::with_stale_claim`]); no other shared key applies to a store in the
    /// process.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL of another scheme, without `://`, with a
    /// fragment, or with a query key other than `stale_claim` (or a `stale_claim`
    /// that is not a duration from
    /// [`MIN_STALE_CLAIM`](distsync_core::queue::MIN_STALE_CLAIM) to
    /// [`MAX_STALE_CLAIM`](distsync_core::queue::MAX_STALE_CLAIM)).
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = Error::invalid_url(url);
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid("expected memory:// or memory://NAME".to_owned()));
        };
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(invalid(format!(
                "scheme `{scheme}` is not `{SCHEME}` (expected memory:// or memory://NAME)"
            )));
        }
        let (name, options) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
        let stale_claim = match options.strip_prefix('?') {
            _ if options.contains('#') => {
                return Err(invalid(format!(
                    "the memory backend takes no fragment, found `{options}`"
                )));
            }
            Some(query) => stale_claim_of(query).map_err(invalid)?,
            None => None,
        };
        let name = name.trim_end_matches('/');
        let backend = if name.is_empty() {
            Self::new()
        } else {
            Self::shared(name)
        };
        Ok(match stale_claim {
            Some(bound) => backend.with_stale_claim(bound),
            None => backend,
        })
    }
}

/// The `stale_claim=` of a memory URL's `query`, the last one winning, read by the
/// grammar every store's URL shares; any other key is refused.
fn stale_claim_of(query: &str) -> std::result::Result<Option<Duration>, String> {
    use distsync_core::raw::{UrlGrammar, UrlOptions};

    let keys = query.split('&').filter(|pair| !pair.is_empty());
    if let Some(other) = keys
        .map(|pair| pair.split_once('=').map_or(pair, |(key, _)| key))
        .find(|key| *key != "stale_claim")
    {
        return Err(format!(
            "the memory backend takes one option, `stale_claim`, found `{other}`"
        ));
    }
    let grammar = UrlGrammar::new(&[], MIN_SESSION_TTL);
    Ok(UrlOptions::parse(query, &grammar, |_, _| Ok(false))?.stale_claim)
}

/// A [`Coordinator`] over the memory store a `memory://` URL names (see
/// [`MemoryBackend::from_url`]).
///
/// # Cancel safety
/// This method is cancel safe: it does no I/O.
///
/// # Errors
/// [`Error::InvalidUrl`], as [`MemoryBackend::from_url`].
pub async fn connect(url: &str) -> Result<Coordinator> {
    Ok(Coordinator::new(MemoryBackend::from_url(url)?))
}

/// The shortest session TTL the memory backend accepts: 100 ms.
///
/// The store keeps lease TTLs exactly (it does not round up to whole seconds as etcd
/// does) and the session renews every TTL/3, so a 100 ms session is renewed every
/// ~33 ms; shorter TTLs would expire under ordinary scheduling delays of a busy test
/// machine rather than because a holder stalled.
pub const MIN_SESSION_TTL: Duration = Duration::from_millis(100);

/// What the memory backend offers: every primitive and every STM level, through the
/// same recipes as etcd ([`crate::recipes`]), with etcd's guarantees, except that its
/// state lives in the process and so does not survive a restart.
///
/// - `fencing`: tokens are create revisions, which only grow;
/// - `fifo_waiters`: each waiter waits for its direct predecessor's key;
/// - `lost_notification`: a revoked or expired lease is seen by the next renewal,
///   and guards also watch their own key;
/// - `stalled_holder_expires`: leases not renewed within their TTL expire and
///   their keys are deleted;
/// - `linearizable`: one store behind one lock;
/// - `survives_restart`: no, the store is in-process;
/// - `survives_failover`: no, there is no replica to fail over to (the store lives and
///   dies with its process);
/// - `session_bound`: no, its URL takes no `max_session_ttl=` (a store that lives and
///   dies with its process never forgets a holder that outlives it);
/// - `caller_transactions`: no, the store is no database of the caller's;
/// - `max_value_size`: [`MAX_VALUE_SIZE`], 1 MiB.
pub fn capabilities() -> Capabilities {
    Capabilities::all(BACKEND, MIN_SESSION_TTL)
        .with_survives_restart(false)
        .with_survives_failover(false)
        .with_session_bound(false)
        .with_caller_transactions(false)
        .with_max_value_size(MAX_VALUE_SIZE)
}

/// The largest value the memory store takes from a caller: 1 MiB. The store itself
/// has no limit but the process's memory; it takes the etcd backend's figure, so that
/// a program tested on `memory://` is refused there what it would be refused on etcd.
/// It is not the smallest: the ZooKeeper backend takes at most 983,040 bytes (960 KiB,
/// 1 MiB less 64 KiB: ZooKeeper's default `jute.maxbuffer` is 0xfffff bytes, 1 MiB less
/// one, and a request carries paths and operations beside the value), and the NATS
/// backend, at the server's default `max_payload`, 1,044,480 bytes; a value near 1 MiB
/// that passes here can be refused there.
pub const MAX_VALUE_SIZE: usize = 1024 * 1024;

/// The memory backend in the facade's list of drivers: `memory://` URLs.
pub const DRIVER: distsync_core::Driver =
    distsync_core::Driver::new(BACKEND, &[SCHEME], connect_boxed, capabilities).with_url_forms(
        "memory://, memory://NAME
    in-process: one distsync process only (demos, tests); NAME shares one store per process",
    );

fn connect_boxed(url: &str) -> futures::future::BoxFuture<'_, Result<Coordinator>> {
    Box::pin(connect(url))
}

#[cfg(test)]
mod tests {
    use super::MemoryBackend;
    use distsync_core::Primitives;
    use distsync_core::{Coordinator, Error};

    #[tokio::test]
    async fn backends_with_one_name_share_a_store_and_others_do_not() {
        let a = Coordinator::new(MemoryBackend::shared("memory-mod-test"));
        let b = Coordinator::new(MemoryBackend::shared("memory-mod-test"));
        let other = Coordinator::new(MemoryBackend::shared("memory-mod-test-other"));
        a.queue("q").unwrap().enqueue("x").await.unwrap();
        assert_eq!(other.queue("q").unwrap().try_dequeue().await.unwrap(), None);
        assert_eq!(
            b.queue("q").unwrap().try_dequeue().await.unwrap().unwrap(),
            "x"
        );
        let session = a.session().await.unwrap();
        let _held = a.locker(&session, "l").unwrap().lock().await.unwrap();
        let session_b = b.session().await.unwrap();
        assert!(b
            .locker(&session_b, "l")
            .unwrap()
            .try_lock()
            .await
            .unwrap()
            .is_none());
    }

    /// Each memory store counts its lease ids from the same start, so a session of one
    /// store taken by another would be tied to the other's lease of the same id (a
    /// stranger's), and would neither keep nor end what it held.
    #[tokio::test]
    async fn a_session_of_another_store_is_refused_and_one_of_the_same_store_is_taken() {
        use std::num::NonZeroUsize;

        use distsync_core::{Backend, Name};

        let (one, other) = (MemoryBackend::new(), MemoryBackend::new());
        let session = one.session(Default::default()).await.unwrap();
        let stranger = other.session(Default::default()).await.unwrap();
        assert_eq!(session.id(), stranger.id(), "the ids the refusal protects");
        let name = || Name::new("l").unwrap();
        let two = NonZeroUsize::new(2).unwrap();
        let made = [
            ("lock", other.locker(&session, name()).err()),
            ("unfair lock", other.unfair_locker(&session, name()).err()),
            ("election", other.election(&session, name()).err()),
            ("rwlock", other.rwlock(&session, name()).err()),
            ("semaphore", other.semaphore(&session, name(), two).err()),
            (
                "double barrier",
                other.double_barrier(&session, name(), two).err(),
            ),
        ];
        for (kind, refused) in made {
            match refused {
                Some(Error::InvalidArgument(why)) => {
                    assert!(why.contains("another memory backend"), "{kind}: {why}");
                }
                other => panic!("{kind}: {other:?}"),
            }
        }
        let queue = other.queue(name()).unwrap();
        queue.enqueue("x").await.unwrap();
        assert!(matches!(
            queue.try_receive(&session).await,
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(
            queue.len().await.unwrap(),
            1,
            "the refused receive took nothing"
        );

        let (shared, twin) = (
            MemoryBackend::shared("memory-lease-test"),
            MemoryBackend::shared("memory-lease-test"),
        );
        let session = shared.session(Default::default()).await.unwrap();
        let held = twin.locker(&session, name()).unwrap().lock().await.unwrap();
        let other_session = shared.session(Default::default()).await.unwrap();
        let locker = shared.locker(&other_session, name()).unwrap();
        assert!(locker.try_lock().await.unwrap().is_none());
        held.unlock().await.unwrap();
        assert!(locker.try_lock().await.unwrap().is_some());
    }

    #[tokio::test]
    async fn urls_name_a_fresh_or_a_shared_store() {
        let cases = [
            ("memory://", None),
            ("MEMORY://", None),
            ("memory:///", None),
            ("memory://memory-url-test", Some("memory-url-test")),
            ("memory://memory-url-test/", Some("memory-url-test")),
            ("Memory://memory-url-test?", Some("memory-url-test")),
            ("memory://a/b", Some("a/b")),
        ];
        for (url, shared) in cases {
            let from_url = Coordinator::new(MemoryBackend::from_url(url).unwrap());
            from_url.queue("q").unwrap().enqueue("x").await.unwrap();
            let len = match shared {
                Some(name) => {
                    let twin = Coordinator::new(MemoryBackend::shared(name));
                    let queue = twin.queue("q").unwrap();
                    let len = queue.len().await.unwrap();
                    queue.try_dequeue().await.unwrap();
                    len
                }
                None => Coordinator::new(MemoryBackend::from_url(url).unwrap())
                    .queue("q")
                    .unwrap()
                    .len()
                    .await
                    .unwrap(),
            };
            assert_eq!(len, usize::from(shared.is_some()), "{url}");
        }
    }

    #[rstest::rstest]
    #[case::no_slashes("memory:")]
    #[case::no_scheme("memory")]
    #[case::empty("")]
    #[case::other_scheme("etcd://127.0.0.1:2379")]
    #[case::unknown_scheme("memorys://")]
    #[case::query("memory://?namespace=x")]
    #[case::shared_key_of_servers("memory://?timeout=1s")]
    #[case::stale_claim_below_the_floor("memory://?stale_claim=500ms")]
    #[case::stale_claim_above_the_ceiling("memory://?stale_claim=25h")]
    #[case::fragment("memory://name#fragment")]
    #[case::fragment_after_a_query("memory://?stale_claim=2s#x")]
    fn bad_urls_are_invalid_urls(#[case] url: &str) {
        match MemoryBackend::from_url(url) {
            Err(Error::InvalidUrl { url: given, reason }) => {
                assert_eq!(given, url);
                assert!(!reason.is_empty());
            }
            Err(other) => panic!("{url}: {other:?}"),
            Ok(_) => panic!("{url}: accepted"),
        }
    }

    #[test]
    fn stale_claim_is_the_one_option() {
        use std::time::Duration;

        let plain = MemoryBackend::from_url("memory://").unwrap();
        assert_eq!(plain.stale_claim(), distsync_core::queue::STALE_CLAIM);
        for url in [
            "memory://?stale_claim=3s",
            "memory://stale-test?stale_claim=3s",
        ] {
            let backend = MemoryBackend::from_url(url).unwrap();
            assert_eq!(backend.stale_claim(), Duration::from_secs(3), "{url}");
        }
    }
}
