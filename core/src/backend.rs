//! The backend trait: what a store implements.

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::name::Name;
use crate::primitives::Primitives;
use crate::revocation::ReleaseRequest;
use crate::session::{Session, SessionId, SessionOptions};
use crate::snapshot::Snapshot;
use crate::status::StatusReport;

/// A coordination store: grants sessions, makes primitives ([`Primitives`]) and
/// answers the operators' reads and writes. Object-safe, so a backend can be chosen at
/// run time (`Arc<dyn Backend>`).
///
/// Sessions passed in must come from this backend ([`Error::InvalidArgument`]
/// otherwise).
#[async_trait]
pub trait Backend: Primitives + Send + Sync + 'static {
    /// Opens a session (a lease) kept alive in the background.
    ///
    /// An implementation checks `options` with
    /// [`Capabilities::check_session`](crate::Capabilities::check_session) before any I/O:
    /// raw callers reach this method without a [`crate::Coordinator`], and one shared check
    /// keeps every backend's answer the same.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a TTL below
    /// [`Capabilities::min_session_ttl`](crate::Capabilities::min_session_ttl) or a margin
    /// that leaves no room for a renewal, or the store's error.
    async fn session(&self, options: SessionOptions) -> Result<Session>;

    /// Ends a session from the store side, as an operator would (etcd: lease revoke).
    /// Everything held through it is released; its owner learns through `lost()`.
    async fn revoke_session(&self, id: SessionId) -> Result<()>;

    /// Breaks the lock `name` (see [`crate::broken`]): ends its holder's session in the
    /// store and returns the hold it ended, or `None` when nobody holds it.
    ///
    /// The default reads the holder from [`Backend::status_of`] and ends its session with
    /// [`Backend::revoke_session`], so a backend whose status records holders'
    /// sessions and whose revoke reaches another process's session needs nothing more.
    /// A backend with a per-hold way to end one hold overrides it, and says so in its
    /// docs.
    ///
    /// # Errors
    /// [`Error::Unsupported`] where the backend cannot list holders or cannot end
    /// another process's session; the store's error.
    ///
    /// # Cancel safety
    /// Not atomic: dropping the future after the holder was read may or may not have
    /// ended its session.
    async fn break_lock(&self, name: &Name) -> Result<Option<crate::broken::BrokenHold>> {
        let backend = self.capabilities().backend;
        if !self.capabilities().break_lock {
            return Err(Error::unsupported(backend, "breaking a lock"));
        }
        let report = self.status_of(name).await.map_err(|error| match error {
            Error::Unsupported { .. } => {
                Error::unsupported(backend, "breaking a lock (it cannot list who holds what)")
            }
            other => other,
        })?;
        let Some(hold) = crate::broken::BrokenHold::holder_in(&report, name)? else {
            return Ok(None);
        };
        self.revoke_session(hold.session).await?;
        Ok(Some(hold))
    }

    /// Asks the holder of the lock `name` to release it (see [`crate::revocation`]) and
    /// returns the hold asked, or `None` when nobody holds it (nothing is recorded).
    ///
    /// The default is the portable protocol: the holder's fencing token read from
    /// [`Backend::status_of`], raised into the lock's request counter
    /// ([`crate::revocation::request_by_counter`]); the guards a
    /// [`Coordinator`](crate::Coordinator) hands out watch that counter. A backend with a
    /// native protocol (ZooKeeper: Curator's `__REVOKE__`) overrides this and gives its
    /// lock guards their own watch.
    ///
    /// # Errors
    /// [`Error::Unsupported`] without
    /// [`Capabilities::release_request`](crate::Capabilities::release_request);
    /// [`Error::InvalidName`] for a name too long for its request counter; the
    /// store's error.
    ///
    /// # Cancel safety
    /// Dropped part-way, the request was made or it was not; repeating it is harmless.
    async fn request_release(&self, name: &Name) -> Result<Option<ReleaseRequest>> {
        if !self.capabilities().release_request {
            return Err(Error::unsupported(
                self.capabilities().backend,
                "release requests",
            ));
        }
        let counter = self.counter(crate::revocation::request_counter_name(name)?)?;
        let report = self.status_of(name).await?;
        crate::revocation::request_by_counter(&report, name, counter.as_ref()).await
    }

    /// Reads the durable state under this backend's namespace (queues, STM keys, held
    /// barriers) and lists its live holds, for [`crate::migrate::migrate`]. Reads only.
    ///
    /// # Errors
    /// [`Error::Unsupported`] where the backend cannot enumerate its state.
    async fn export(&self) -> Result<Snapshot> {
        Err(Error::unsupported(
            self.capabilities().backend,
            "export (migration)",
        ))
    }

    /// Who holds what: the live locks, elections, read-write locks and semaphores
    /// (holders, waiters in order, leaders), non-empty queues and held barriers whose
    /// names start with `prefix` (empty: all), under this backend's namespace. Reads
    /// only; see [`crate::status`] for what each store records.
    ///
    /// # Errors
    /// [`Error::Unsupported`] (the default) where the backend cannot list its
    /// state; the store's error.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    async fn status(&self, prefix: &str) -> Result<StatusReport> {
        let _ = prefix;
        Err(Error::unsupported(self.capabilities().backend, "status"))
    }

    /// As [`Backend::status`], with each hold's session time left
    /// ([`HoldStatus::expires_in`](crate::status::HoldStatus::expires_in)) also where
    /// reading it costs the store more than the report itself (a read per session on
    /// etcd, MySQL and memory, a reading of the server's clock on NATS). The operators'
    /// view, [`Coordinator::status`](crate::Coordinator::status), asks for it; the
    /// library's own reads of who holds what (groups, shards, hand-over, breaks) use
    /// [`Backend::status`] and do not pay for it. By default [`Backend::status`], for a
    /// backend whose report carries the time left at no extra cost, or not at all.
    ///
    /// # Errors
    /// As [`Backend::status`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    async fn status_with_time_left(&self, prefix: &str) -> Result<StatusReport> {
        self.status(prefix).await
    }

    /// Who holds and waits for the lock, read-write lock, election and semaphore named
    /// exactly `name`, under this backend's namespace: the report's lines of that name
    /// ([`StatusReport::line`]), which [`Backend::break_lock`],
    /// [`Backend::request_release`] and a leadership hand-over
    /// ([`crate::hand_over`]) read. Reads only.
    ///
    /// The default is [`Backend::status`] under the prefix `name` (whose report may
    /// also list names that start with `name`: readers take the lines named exactly
    /// `name`). A backend that reads one name's lines without listing the store
    /// overrides it: it then serves breaks, release requests and hand-overs where no
    /// listing is possible or cheap (Redis: the keys of one name share a hash slot).
    ///
    /// # Errors
    /// As [`Backend::status`].
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    async fn status_of(&self, name: &Name) -> Result<StatusReport> {
        self.status(name.as_str()).await
    }

    /// How many store entries (keys, rows) hold the state of primitives whose names
    /// are `prefix` or start with `prefix/`, under this backend's namespace: what
    /// [`Backend::purge_prefix`] would remove. Sessions are not counted (they belong to
    /// no name and expire on their own). Reads only.
    ///
    /// # Errors
    /// [`Error::Unsupported`] (the default) where the backend cannot list its
    /// state; the store's error.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    async fn count_prefix(&self, prefix: &Name) -> Result<u64> {
        let _ = prefix;
        Err(Error::unsupported(
            self.capabilities().backend,
            "counting a name prefix",
        ))
    }

    /// Removes the state of every primitive whose name is `prefix` or starts with
    /// `prefix/` (queue items, barriers, counters, STM keys, locks and their waiters),
    /// under this backend's namespace, and returns how many entries it removed. Meant
    /// for a throwaway prefix nobody uses any more (a test run's): a holder or waiter
    /// still working under it loses its hold. Nothing outside the prefix is touched,
    /// but for what the store ends on its own anyway: a backend whose clients end
    /// expired sessions themselves (PostgreSQL's sweep) may end those too.
    ///
    /// # Errors
    /// [`Error::Unsupported`] (the default) where the backend cannot enumerate
    /// its state; the store's error (some entries may be removed already).
    ///
    /// # Cancel safety
    /// Not atomic: dropping the future may leave part of the prefix removed; calling
    /// it again finishes the job.
    async fn purge_prefix(&self, prefix: &Name) -> Result<u64> {
        let _ = prefix;
        Err(Error::unsupported(
            self.capabilities().backend,
            "purging a name prefix",
        ))
    }
    /// The store's version and the settings its guarantees depend on, read from the
    /// server as `(name, value)` pairs (e.g. `redis_version`, `maxmemory-policy`;
    /// `server_version`, `synchronous_commit`; `etcd_version`, `cluster_size`): what
    /// the conformance runner prints beside the matrix. Reads only; a setting the
    /// server refuses to say is left out.
    ///
    /// # Errors
    /// [`Error::Unsupported`] (the default) where the backend reads none; the
    /// store's error.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    async fn describe_store(&self) -> Result<Vec<(String, String)>> {
        Err(Error::unsupported(
            self.capabilities().backend,
            "describing the store",
        ))
    }
}
