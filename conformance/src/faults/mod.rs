//! Fault hooks: ways to break things from outside the client under test, as
//! DistributedLock's test strategies and object_store's integration module do.
//!
//! A [`crate::Harness`] holds one [`Faults`] as a trait object, and a case that needs a
//! hook names it in [`crate::Case::hooks`]; a hook the harness does not offer makes the
//! case `unsupported` with the hook's reason (a memory store cannot be shared with a
//! child process, a single server has no raft leader to kill, ...).
//!
//! Implementations:
//! - [`StoreFaults`]: only [`Faults::end_session`], through [`Backend::revoke_session`];
//! - [`MemoryFaults`]: the in-process memory store, whose
//!   [`distsync_kv::memory::MemoryKv::freeze_lease`] models a paused client;
//! - [`ServerFaults`]: a server reached by URL (etcd, Redis, PostgreSQL): holders in
//!   child processes ([`child`]), out-of-band session kills with the store's own command
//!   line tool, private servers to restart ([`private`]), and the three-member etcd
//!   cluster ([`cluster`]) or the three-server ZooKeeper ensemble ([`zk_ensemble`]);
//! - [`sentinel::SentinelFaults`] and [`redis_cluster::RedisClusterFaults`]: the Redis
//!   Sentinel group and the Redis Cluster of `scripts/servers.sh`, whose primary (the
//!   master of a lock's slot) a failover case kills (`faults/group.rs`: what they share).

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{Backend, Error, FencingToken, Name, Result, SessionId};
use futures::future::BoxFuture;

pub mod caller_transactions;
pub mod child;
pub mod cluster;
pub mod effects_worker;
pub mod go_peer;
mod group;
pub mod loop_disk;
pub mod mariadb_replica;
mod memory;
mod mysql_client;
mod nats;
pub mod nats_cluster;
pub mod postgres_standby;
pub mod private;
mod private_mariadb;
pub mod promoted_pair;
pub mod proxy;
pub mod redis_cluster;
pub mod sentinel;
mod server;
pub mod shards_member;
mod store;
mod tools;
pub mod zk_ensemble;

pub use caller_transactions::CallerTransactions;
pub use go_peer::{GoClient, GoPeer, GO_PEER_VAR};
pub use memory::MemoryFaults;
pub use nats_cluster::NATS_CLUSTER_VAR;
pub use promoted_pair::{run_promoted_failover, PromotedStore};
pub use proxy::PartitionMode;
pub use server::{ServerFaults, ETCD_CLUSTER_VAR};
pub use store::StoreKind;
pub use zk_ensemble::ZOOKEEPER_ENSEMBLE_VAR;

/// A fault hook a case may need (see [`crate::Case::hooks`]). `#[non_exhaustive]`: new
/// faults add hooks, and a [`Faults`] implementation answers the ones it does not know
/// with a reason (its match needs a wildcard arm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Hook {
    /// [`Faults::kill_session`]: the store ends a session out of band.
    KillSession,
    /// [`Faults::spawn_holder`] in a process of its own that can be SIGKILLed.
    ChildHolder,
    /// [`Faults::spawn_holder`] whose holder can be paused past its TTL (SIGSTOP, or
    /// a frozen lease in process).
    PausedHolder,
    /// [`Faults::private_server`]: a server of the same kind the case may restart.
    PrivateServer,
    /// [`Faults::cluster`]: a replicated store whose leader member can be killed.
    Cluster,
    /// [`Faults::cluster`] of a primary and a replica (Redis under Sentinel; in a Redis
    /// Cluster, the master serving the case's lock and its replica) whose replica can
    /// be paused ([`Cluster::pause_member`]) so that it lags, and whose clients can be
    /// made with other URL settings ([`Cluster::connect_with`]).
    Failover,
    /// [`Faults::second_client`]: an independent client of the same store.
    SecondClient,
    /// [`Faults::partitioned_client`]: a client whose traffic to the store can be
    /// silenced or reset.
    Partition,
    /// [`Faults::evicting_server`]: a private server configured to evict keys under
    /// memory pressure.
    EvictingServer,
    /// [`Faults::take_over_session`]: another session takes a live session's id in the
    /// store (what a restart that forgets sessions, then repeats an id, produces).
    SessionTakeover,
    /// Either [`Hook::ChildHolder`] or [`Hook::PausedHolder`]: a holder outside the
    /// client under test, whichever the store offers (a case that can use either
    /// declares this; each [`Faults::offers`] resolves it with [`any_external_holder`]).
    AnyExternalHolder,
    /// [`Faults::go_peer`]: etcd's own Go `concurrency` and `recipes` packages as
    /// clients of the same store.
    GoPeer,
    /// [`Faults::fresh_store`]: an empty store of the same kind, of the case's own
    /// (a private server, or a new in-process memory store), for cases that read a
    /// whole store (a migration's export) and must not see other cases' state.
    FreshStore,
    /// [`crate::Harness::caller_transactions`]: a database of the caller's beside the
    /// store, whose transactions take the library's calls (see [`CallerTransactions`]).
    CallerTransactions,
    /// [`Faults::power_loss_server`]: a private server whose store is on a disk that
    /// can lose power ([`PrivateServer::lose_power`]).
    PowerLoss,
}

impl Hook {
    /// What the hook does, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::KillSession => "an out-of-band session kill",
            Self::ChildHolder => "a holder in a child process",
            Self::PausedHolder => "a holder paused past its TTL",
            Self::PrivateServer => "a private server to restart",
            Self::Cluster => "a cluster member to kill",
            Self::Failover => "a primary to kill after its replica lagged",
            Self::SecondClient => "a second, independent client",
            Self::Partition => "a client that can be partitioned from the store",
            Self::EvictingServer => "a server that evicts keys",
            Self::SessionTakeover => "a session id taken over in the store",
            Self::AnyExternalHolder => {
                "a holder outside the client (a child process or a frozen lease)"
            }
            Self::GoPeer => "etcd's own Go recipes on the same store",
            Self::FreshStore => "an empty store of the case's own",
            Self::CallerTransactions => "a database of the caller's beside the store",
            Self::PowerLoss => "a private server whose disk loses power",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Why a store's hooks do not offer [`Hook::CallerTransactions`]: a database beside the
/// store is the harness's ([`crate::Harness::with_caller_transactions`]), whatever the
/// store.
pub(crate) const CALLER_TRANSACTIONS_FROM_HARNESS: &str =
    "a database of the caller's is given to the harness, not by the store's hooks";

/// [`Hook::AnyExternalHolder`] for `faults`: offered when [`Hook::ChildHolder`] or
/// [`Hook::PausedHolder`] is.
///
/// # Errors
/// Why neither is offered.
pub fn any_external_holder(faults: &(impl Faults + ?Sized)) -> std::result::Result<(), String> {
    faults
        .offers(Hook::ChildHolder)
        .or_else(|_| faults.offers(Hook::PausedHolder))
        .map_err(|reason| format!("{}: {reason}", Hook::AnyExternalHolder))
}

/// What an external holder holds. `#[non_exhaustive]`: a primitive held through a
/// session may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HoldKind {
    /// A lock ([`distsync_core::Locker::lock`]); its token is the grant's.
    Lock,
    /// An unfair lock ([`distsync_core::raw::Primitives::unfair_locker`]); its token is the
    /// grant's.
    UnfairLock,
    /// A lock taken with the lock-delay [`HOLDER_LOCK_DELAY`]
    /// ([`distsync_core::lock_delay::locker`]); its token is the grant's.
    DelayedLock,
    /// A leadership ([`distsync_core::Election`]'s `campaign`); its token is the term.
    Leadership,
    /// One permit of a semaphore of [`HOLDER_PERMITS`] permits
    /// ([`distsync_core::Semaphore::acquire`]); its token is the permit grant's.
    Permit,
    /// The first item of a queue, received with at-least-once delivery
    /// ([`distsync_core::Queue::receive`]) and never acknowledged; its "token" is the
    /// delivery's number (its redelivery count plus one: 1 on a first delivery).
    Delivery,
    /// A runner of the scheduled job `name` ([`child::JOB_INTERVAL`],
    /// [`child::JOB_AT_LEAST`], [`child::JOB_GRACE`]): it "holds" once it runs the
    /// job's loop (token 0); each occurrence it runs is read with
    /// [`ExternalHolder::next_job_event`]. Child processes only.
    JobRunner,
}

/// The lock-delay of a [`HoldKind::DelayedLock`] holder's lock (its contenders use the
/// same): longer than an external holder's session TTL, so that a grant that skipped
/// the delay shows in the time from a kill to the next grant.
pub const HOLDER_LOCK_DELAY: Duration = Duration::from_secs(5);

/// The permit count of the semaphore a [`HoldKind::Permit`] holder takes a permit of.
pub const HOLDER_PERMITS: NonZeroUsize = NonZeroUsize::new(2).unwrap();

/// What [`Faults::spawn_holder`] starts: a holder of `kind` on `name`, through a
/// session of `ttl`.
#[derive(Clone, Debug)]
pub struct HolderSpec {
    /// Lock, leadership or permit.
    pub kind: HoldKind,
    /// The lock's, election's or semaphore's name.
    pub name: Name,
    /// The TTL of the holder's session.
    pub ttl: Duration,
}

/// Connects to a store by URL: how [`ServerFaults`] reaches private servers, clusters
/// and second clients. Backend crates build one from their own `backend(url)` with
/// [`connector`]; the runner uses the facade's `distsync::connect`.
pub type Connect =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Arc<dyn Backend>>> + Send + Sync>;

/// A [`Connect`] from an async function of the URL, e.g.
/// `connector(|url| async move { distsync_redis::backend(&url).await })`.
pub fn connector<F, Fut, B>(connect: F) -> Connect
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<B>> + Send + 'static,
    B: Backend,
{
    Arc::new(move |url| {
        let connecting = connect(url);
        Box::pin(async move { Ok(Arc::new(connecting.await?) as Arc<dyn Backend>) })
    })
}

/// The hooks. Every method has a default: [`Faults::end_session`] revokes through
/// [`Backend::revoke_session`]; the others answer [`Error::Unsupported`], and
/// [`Faults::offers`] says which are really there.
///
/// Cancel-safety: every hook may be cancelled; a cancelled hook may or may not have
/// done its work (a session being killed may be gone), and what it started is not
/// leaked: a child process or private server being started is killed with the
/// dropped future.
#[async_trait]
pub trait Faults: Send + Sync + 'static {
    /// A short description for logs, e.g. `store-side revoke`.
    fn describe(&self) -> String {
        "store-side session revoke".to_owned()
    }

    /// `Ok` if `hook` is offered, otherwise why not (shown in the matrix).
    fn offers(&self, hook: Hook) -> std::result::Result<(), String> {
        Err(format!("{hook}: not offered by {}", self.describe()))
    }

    /// How these hooks reach a server of their kind by URL, if they do: a child holder
    /// of a test binary connects with it to the server its spec names (a private
    /// server's, for the cases that start one), not to the column's own server.
    fn connector(&self) -> Option<Connect> {
        None
    }

    /// The URL a child process started by these hooks connects to (the column's
    /// server), for the cases that start children of their own (a shards member,
    /// [`shards_member`]); `None` where the hooks start no child processes.
    fn child_url(&self) -> Option<&str> {
        None
    }

    /// Ends `session` from the store side, as an operator would (etcd: lease revoke).
    /// Its owner must learn through `lost()`, and everything it held is released.
    ///
    /// # Errors
    /// The store's error.
    async fn end_session(&self, backend: &dyn Backend, session: SessionId) -> Result<()> {
        backend.revoke_session(session).await
    }

    /// Ends `session` out of band, the store's own way and not through the library
    /// (etcd: `etcdctl lease revoke`; Redis: the session key deleted; PostgreSQL: the
    /// session's connections terminated). Returns how, for the report.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the tool's error.
    async fn kill_session(&self, backend: &dyn Backend, session: SessionId) -> Result<String> {
        let _ = session;
        Err(unsupported(backend, Hook::KillSession))
    }

    /// Starts a holder outside the client under test (a child process, or for the
    /// memory store an in-process session whose lease can be frozen) that takes what
    /// `spec` says and holds it; returns once it holds.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default.
    async fn spawn_holder(
        &self,
        backend: &dyn Backend,
        spec: &HolderSpec,
    ) -> Result<Box<dyn ExternalHolder>> {
        let _ = spec;
        Err(unsupported(backend, Hook::ChildHolder))
    }

    /// Starts a private server of the store's kind (on a free loopback port, with its
    /// data in a temporary directory), which a case may stop and start again without
    /// disturbing anyone else.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the server's start-up error.
    async fn private_server(&self, backend: &dyn Backend) -> Result<Box<dyn PrivateServer>> {
        Err(unsupported(backend, Hook::PrivateServer))
    }

    /// Starts a private server of the store's kind configured to evict keys under
    /// memory pressure (Redis `maxmemory-policy allkeys-lru`).
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default: a store that never evicts.
    async fn evicting_server(&self, backend: &dyn Backend) -> Result<EvictingServer> {
        Err(unsupported(backend, Hook::EvictingServer))
    }

    /// Makes the store hold, under `session`'s id, a session that is not it (a key
    /// or row of another owner), as a restart that forgot the session and then handed
    /// its id out again would; returns what was done.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default: a store that assigns and persists session
    /// ids, so that none can be handed out twice.
    async fn take_over_session(&self, backend: &dyn Backend, session: SessionId) -> Result<String> {
        let _ = session;
        Err(unsupported(backend, Hook::SessionTakeover))
    }

    /// The replicated cluster of the store's kind whose members a case may stop.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default.
    async fn cluster(&self, backend: &dyn Backend) -> Result<Box<dyn Cluster>> {
        Err(unsupported(backend, Hook::Cluster))
    }

    /// A second client of the same store, independent of `backend` (its own
    /// connections), for cross-client checks.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the connection error.
    async fn second_client(&self, backend: &dyn Backend) -> Result<Arc<dyn Backend>> {
        Err(unsupported(backend, Hook::SecondClient))
    }

    /// A client of the same store, independent of `backend`, whose traffic to the
    /// store goes through a switch the case controls (a TCP proxy in the harness, or
    /// for the memory store a gate in front of it): see [`Partitioned`].
    ///
    /// # Errors
    /// As [`Faults::partitioned_client_with`], which it calls with no settings.
    async fn partitioned_client(&self, backend: &dyn Backend) -> Result<Box<dyn Partitioned>> {
        self.partitioned_client_with(backend, "").await
    }

    /// [`Faults::partitioned_client`] whose URL also carries `settings`, URL query
    /// parameters every server backend takes (`timeout=1s&connect_timeout=1s`), so a
    /// case knows the bounds of the client it cuts off. The one to implement.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the connection error.
    async fn partitioned_client_with(
        &self,
        backend: &dyn Backend,
        settings: &str,
    ) -> Result<Box<dyn Partitioned>> {
        let _ = settings;
        Err(unsupported(backend, Hook::Partition))
    }

    /// etcd's own Go recipes beside a distsync client in Go's key layout, on the same
    /// store (see [`GoPeer`]).
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default: a store Go's packages do not run on.
    async fn go_peer(&self, backend: &dyn Backend) -> Result<GoPeer> {
        Err(unsupported(backend, Hook::GoPeer))
    }

    /// A private server of the store's kind whose store is on a disk that can lose
    /// power ([`PrivateServer::lose_power`]), at the store's default durability or,
    /// with `synchronous`, with every write synced before it is acknowledged (the
    /// setting each store documents for that, e.g. nats-server's `sync_interval:
    /// always`).
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the disk's or the server's start-up error.
    async fn power_loss_server(
        &self,
        backend: &dyn Backend,
        synchronous: bool,
    ) -> Result<Box<dyn PrivateServer>> {
        let _ = synchronous;
        Err(unsupported(backend, Hook::PowerLoss))
    }

    /// An empty store of the kind of `backend`, of the caller's own, with hooks of its
    /// own (a partitioned client of it, at least): see [`FreshStore`].
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the server's start-up or connection error.
    async fn fresh_store(&self, backend: &dyn Backend) -> Result<FreshStore> {
        Err(unsupported(backend, Hook::FreshStore))
    }
}

/// An empty store of a case's own (see [`Faults::fresh_store`]): a client of it and the
/// hooks that reach it. Dropping it stops a private server and removes its data.
pub struct FreshStore {
    backend: Arc<dyn Backend>,
    faults: Arc<dyn Faults>,
    /// What keeps the store alive: a private server (`None` for an in-process store,
    /// which lives as long as its clients).
    _server: Option<Box<dyn PrivateServer>>,
}

impl fmt::Debug for FreshStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreshStore")
            .field("backend", &self.backend.capabilities().backend)
            .field("faults", &self.faults.describe())
            .finish_non_exhaustive()
    }
}

impl FreshStore {
    /// A fresh store reached through `backend`, with `faults`, kept alive by `server`.
    pub fn new(
        backend: Arc<dyn Backend>,
        faults: Arc<dyn Faults>,
        server: Option<Box<dyn PrivateServer>>,
    ) -> Self {
        Self {
            backend,
            faults,
            _server: server,
        }
    }

    /// A client of the store.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The hooks that reach the store (a partitioned client of it).
    pub fn faults(&self) -> &Arc<dyn Faults> {
        &self.faults
    }
}

/// A client cut off from its store on demand (see [`Faults::partitioned_client`]).
/// Dropping it closes its connections.
pub trait Partitioned: Send + Sync {
    /// The client.
    fn backend(&self) -> Arc<dyn Backend>;

    /// Switches the partition: [`PartitionMode::Silent`] stops every byte (connections
    /// stay open), [`PartitionMode::Reset`] closes every connection and refuses new
    /// ones, [`PartitionMode::Forward`] heals.
    fn set(&self, mode: PartitionMode);
}

/// A holder running outside the client under test (see [`Faults::spawn_holder`]).
/// Dropping it kills a child process.
///
/// Cancel-safety: [`ExternalHolder::lost`] is cancel-safe (a `lost` line read is
/// remembered); a cancelled [`ExternalHolder::write`] may leave its answer unread,
/// to be skipped by the next call.
#[async_trait]
pub trait ExternalHolder: Send + Sync {
    /// The fencing token of the holder's grant (the term of a leadership).
    fn token(&self) -> FencingToken;

    /// Kills the holder (SIGKILL): it releases nothing itself.
    async fn kill(&mut self) -> Result<()>;

    /// Pauses the holder (SIGSTOP): it stops renewing its session.
    async fn pause(&mut self) -> Result<()>;

    /// Resumes a paused holder (SIGCONT).
    async fn resume(&mut self) -> Result<()>;

    /// What the holder is, for reports (`child process 1234`).
    fn describe(&self) -> String {
        "an external holder".to_owned()
    }

    /// A [`HoldKind::JobRunner`]'s next report of a run (cancel-safe up to a line
    /// being read).
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the runner's error (it exited).
    async fn next_job_event(&mut self) -> Result<child::JobEvent> {
        Err(Error::unsupported("conformance", "a job runner's events"))
    }

    /// Makes the holder write to the protected resource as if it still held: it
    /// answers with the token it writes with, without checking whether its lease is
    /// still alive (a holder woken from a pause does not know it slept).
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the holder's error.
    async fn write(&mut self) -> Result<FencingToken> {
        Err(Error::unsupported(
            "conformance",
            "an external holder's write",
        ))
    }

    /// What the holder's session has left of its lease by the holder's own clock
    /// (its client-side deadline, `Session::health`), or `None` when the holder
    /// cannot tell. The answer is read after the call starts, so the call's start
    /// plus the answer is never later than the holder's deadline.
    ///
    /// # Errors
    /// The holder's error (it exited).
    async fn lease_left(&mut self) -> Result<Option<Duration>> {
        Ok(None)
    }

    /// Releases what the holder holds (a lock or a permit; resigns a leadership), as
    /// a holder done with it would, and returns once the store has it back; the
    /// holder is then spent (drop it). What a contender that loops uses between its holds.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the holder's error (its release failed, or
    /// it exited).
    async fn release(&mut self) -> Result<()> {
        Err(Error::unsupported(
            "conformance",
            "an external holder's release",
        ))
    }

    /// Waits until the holder reports that its guard's `lost()` fired. Not bounded:
    /// wrap it in a timeout.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the holder's error (it exited).
    async fn lost(&mut self) -> Result<()> {
        Err(Error::unsupported(
            "conformance",
            "an external holder's lost()",
        ))
    }
}

/// A server of a case's own (see [`Faults::private_server`]). Dropping it stops the
/// server and removes its data.
///
/// Cancel-safety: a cancelled [`PrivateServer::stop`] or [`PrivateServer::start`]
/// leaves the server in either state; the next call (or the drop) settles it.
#[async_trait]
pub trait PrivateServer: Send + Sync {
    /// Its URL.
    fn url(&self) -> &str;

    /// A new backend connected to it.
    ///
    /// # Errors
    /// The connection error.
    async fn connect(&self) -> Result<Arc<dyn Backend>>;

    /// Stops the server (as an operator would: SIGTERM, or `pg_ctl stop -m fast`) and
    /// waits until it has exited.
    ///
    /// # Errors
    /// When it cannot be stopped.
    async fn stop(&mut self) -> Result<()>;

    /// Crashes the server: SIGKILL (etcd, Redis), or `pg_ctl stop -m immediate` for
    /// PostgreSQL (no shutdown checkpoint: what its WAL buffers held unwritten is lost
    /// and the next start runs crash recovery); waits until it has exited.
    ///
    /// # Errors
    /// When it cannot be stopped.
    async fn crash(&mut self) -> Result<()>;

    /// Starts it again on the same port and data, and waits until it answers.
    ///
    /// # Errors
    /// When it does not come up.
    async fn start(&mut self) -> Result<()>;

    /// Crashes the server (SIGKILL) and takes the power from its disk: what the server
    /// did not sync is gone, as after a power loss (see [`loop_disk`]); waits until it
    /// has exited. [`PrivateServer::start`] starts it again on what the disk kept.
    ///
    /// # Errors
    /// When the server's store is on no such disk, or the disk's tools fail.
    async fn lose_power(&mut self) -> Result<()> {
        Err(hook_error(
            "taking the power from the private server",
            "not offered by this server",
        ))
    }

    /// Removes the data of a stopped server, so that the next [`PrivateServer::start`]
    /// brings up a store that forgot everything at the same address (etcd: an empty
    /// data directory; PostgreSQL: a fresh `initdb`).
    ///
    /// # Errors
    /// When the server kind cannot be wiped, or removing its data fails.
    async fn wipe(&mut self) -> Result<()> {
        Err(hook_error(
            "wiping the private server",
            "not offered by this server",
        ))
    }

    /// A new backend connected to it with `query` (`key=value&...`) added to its URL,
    /// e.g. a bound on session TTLs; [`PrivateServer::connect`] for an empty one.
    ///
    /// # Errors
    /// The connection error.
    async fn connect_with(&self, query: &str) -> Result<Arc<dyn Backend>> {
        let _ = query;
        self.connect().await
    }

    /// How it is connected to by URL, for hooks of its own ([`ServerFaults::of_private`]:
    /// child-process holders and partitioned clients on it); `None` by default.
    fn connector(&self) -> Option<Connect> {
        None
    }
}

/// A private server that evicts keys (see [`Faults::evicting_server`]), reached
/// either with the store's default URL, which the backend must refuse, or with the
/// URL that opts in to eviction, which it must accept while declaring the guarantees
/// it then loses.
pub struct EvictingServer {
    /// The server, whose [`PrivateServer::connect`] uses the opted-in URL.
    pub server: Box<dyn PrivateServer>,
    /// The URL without the opt-in.
    pub strict_url: String,
    /// The eviction policy the server runs, as the backend should name it.
    pub policy: String,
    /// Connects by URL.
    pub connect: Connect,
}

impl fmt::Debug for EvictingServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvictingServer")
            .field("url", &self.server.url())
            .field("strict_url", &self.strict_url)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl EvictingServer {
    /// Connects with the URL that does not opt in to eviction.
    ///
    /// # Errors
    /// The backend's refusal (what the case expects).
    pub async fn connect_strict(&self) -> Result<Arc<dyn Backend>> {
        (self.connect)(self.strict_url.clone()).await
    }

    /// Connects with the URL that opts in to eviction.
    ///
    /// # Errors
    /// The connection error.
    pub async fn connect_opted_in(&self) -> Result<Arc<dyn Backend>> {
        self.server.connect().await
    }
}

/// A replicated cluster whose members can be stopped (see [`Faults::cluster`]).
///
/// Cancel-safety: a cancelled [`Cluster::stop_member`] or [`Cluster::start_member`]
/// may have done its work; call [`Cluster::start_member`] again to be sure a member
/// runs.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// The cluster's URL (every member).
    fn url(&self) -> &str;

    /// How many members it has.
    fn members(&self) -> usize;

    /// A new backend connected to it.
    ///
    /// # Errors
    /// The connection error.
    async fn connect(&self) -> Result<Arc<dyn Backend>>;

    /// The member (1-based) that leads, asking the members that answer; `None` while
    /// there is no leader.
    ///
    /// # Errors
    /// When no member can be asked.
    async fn leader(&self) -> Result<Option<usize>>;

    /// Stops member `member` (1-based).
    ///
    /// # Errors
    /// When it cannot be stopped.
    async fn stop_member(&self, member: usize) -> Result<()>;

    /// Starts member `member` again (a killed primary comes back as a replica).
    ///
    /// # Errors
    /// When it does not come up.
    async fn start_member(&self, member: usize) -> Result<()>;

    /// Kills member `member` with SIGKILL (its data stays for
    /// [`Cluster::start_member`]).
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; when it cannot be killed.
    async fn kill_member(&self, member: usize) -> Result<()> {
        let _ = member;
        Err(Error::unsupported(
            "conformance",
            "killing a cluster member",
        ))
    }

    /// Pauses member `member` (SIGSTOP): a replica stops applying what its primary
    /// sends, so it lags.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default.
    async fn pause_member(&self, member: usize) -> Result<()> {
        let _ = member;
        Err(Error::unsupported(
            "conformance",
            "pausing a cluster member",
        ))
    }

    /// Resumes a paused member (SIGCONT).
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default.
    async fn resume_member(&self, member: usize) -> Result<()> {
        let _ = member;
        Err(Error::unsupported(
            "conformance",
            "resuming a cluster member",
        ))
    }

    /// A new backend connected to the cluster with the URL query parameters `query`
    /// (`key=value&...`) set, replacing those of the cluster's URL.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default; the connection error.
    async fn connect_with(&self, query: &str) -> Result<Arc<dyn Backend>> {
        let _ = query;
        Err(Error::unsupported(
            "conformance",
            "connecting with other URL settings",
        ))
    }

    /// Aims the cluster at the shard serving the lock `lock`, for a store that spreads
    /// its keys over several primaries (a Redis Cluster): from then on
    /// [`Cluster::leader`] names the primary serving that lock, and
    /// [`Cluster::replica_of`], the kills and the pauses act on its shard. Default:
    /// nothing (one shard holds everything).
    fn focus(&mut self, lock: &Name) {
        let _ = lock;
    }

    /// Whether the keys of the primitives named `a` and `b` live on one shard, so
    /// that a fault of the shard [`Cluster::focus`] aims at hits both. Default: `true`
    /// (one shard holds everything).
    fn same_shard(&self, a: &Name, b: &Name) -> bool {
        let _ = (a, b);
        true
    }

    /// The replica of member `member` (the primary), the one to pause so that it lags.
    ///
    /// # Errors
    /// By default, the other member of a two-member cluster, and
    /// [`Error::Unsupported`] for a larger one.
    async fn replica_of(&self, member: usize) -> Result<usize> {
        match (self.members(), member) {
            (2, 1) => Ok(2),
            (2, 2) => Ok(1),
            _ => Err(Error::unsupported(
                "conformance",
                "finding a primary's replica",
            )),
        }
    }

    /// The `scripts/servers.sh` arguments that start member `member` again, for a
    /// case's clean-up in `Drop` when it ends early (no async hook can run there).
    /// Default: `None`, nothing to run (a cluster of the case's own).
    fn restart_args(&self, member: usize) -> Option<Vec<String>> {
        let _ = member;
        None
    }

    /// The `scripts/servers.sh` arguments that resume the paused member `member`, as
    /// [`Cluster::restart_args`]. Default: `None`.
    fn resume_args(&self, member: usize) -> Option<Vec<String>> {
        let _ = member;
        None
    }
}

/// The default fault hooks: only [`Faults::end_session`], through
/// [`Backend::revoke_session`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreFaults;

impl Faults for StoreFaults {}

/// [`Error::Unsupported`] for `hook` on `backend`.
pub(crate) fn unsupported(backend: &dyn Backend, hook: Hook) -> Error {
    Error::unsupported(
        backend.capabilities().backend,
        format!("fault hook: {hook}"),
    )
}

/// An error of a fault hook's own machinery (a process that would not start, a tool
/// that failed), as a [`Error::Backend`] of `fault hook`.
pub(crate) fn hook_error(doing: impl fmt::Display, error: impl fmt::Display) -> Error {
    Error::backend("fault hook", format!("{doing}: {error}"))
}

#[cfg(test)]
mod tests {
    use distsync_kv::memory::MemoryBackend;

    use super::*;

    #[tokio::test]
    async fn default_hooks_are_unsupported() {
        let backend = MemoryBackend::new();
        let spec = HolderSpec {
            kind: HoldKind::Leadership,
            name: Name::new("x").unwrap(),
            ttl: Duration::from_secs(1),
        };
        let faults = StoreFaults;
        for hook in [
            Hook::KillSession,
            Hook::ChildHolder,
            Hook::PausedHolder,
            Hook::PrivateServer,
            Hook::Cluster,
            Hook::SecondClient,
            Hook::Partition,
        ] {
            assert!(faults.offers(hook).is_err(), "{hook}");
        }
        assert!(matches!(
            faults.spawn_holder(&backend, &spec).await,
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            faults.private_server(&backend).await,
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            faults.cluster(&backend).await,
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            faults.kill_session(&backend, SessionId(1)).await,
            Err(Error::Unsupported { .. })
        ));
    }
}
