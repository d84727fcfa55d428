//! The fault hooks of a private primary with one promotable replica, whatever the
//! store ([`PromotedPairFaults`]), and the harness over them
//! ([`Harness::connect_promoted_pair`](crate::harness::Harness::connect_promoted_pair)):
//! each [`Faults::cluster`] starts a fresh pair of the store's
//! ([`PromotedStore`]: a PostgreSQL primary with a streaming standby, a MariaDB primary
//! with a GTID replica), on which the case `server_primary_failover_promoted` kills
//! the primary and promotes the replica.

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::{Backend, Result};

use super::mariadb_replica::MariadbReplicaPair;
use super::postgres_standby::PostgresStandbyPair;
use super::{Cluster, Connect, Faults, Hook};

/// The store whose primary/replica pair a [`PromotedPairFaults`] starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromotedStore {
    /// [`PostgresStandbyPair`]: `synchronous` names the standby in
    /// `synchronous_standby_names`.
    Postgres,
    /// [`MariadbReplicaPair`]: `synchronous` turns semi-synchronous replication on
    /// (`AFTER_SYNC`).
    Mariadb,
}

impl PromotedStore {
    /// Whether a pair can be started here, or why not.
    pub fn available(self) -> std::result::Result<(), String> {
        match self {
            Self::Postgres => PostgresStandbyPair::available(),
            Self::Mariadb => MariadbReplicaPair::available(),
        }
    }

    /// What the pair is, for [`Faults::describe`].
    fn describe(self, synchronous: bool) -> String {
        match (self, synchronous) {
            (Self::Postgres, true) => "postgres primary with a synchronous streaming standby",
            (Self::Postgres, false) => "postgres primary with an asynchronous streaming standby",
            (Self::Mariadb, true) => "mariadb primary with a semi-synchronous (AFTER_SYNC) replica",
            (Self::Mariadb, false) => "mariadb primary with an asynchronous replica",
        }
        .to_owned()
    }

    /// Starts a fresh pair of this store.
    async fn start(self, connect: Connect, synchronous: bool) -> Result<Box<dyn Cluster>> {
        Ok(match self {
            Self::Postgres => Box::new(PostgresStandbyPair::start(connect, synchronous).await?),
            Self::Mariadb => Box::new(MariadbReplicaPair::start(connect, synchronous).await?),
        })
    }
}

/// The fault hooks of a primary with a promotable replica: each [`Faults::cluster`]
/// starts a fresh pair of the [`PromotedStore`] ([`Hook::Failover`]); second clients
/// reach the harness's own server.
#[derive(Clone)]
pub struct PromotedPairFaults {
    store: PromotedStore,
    url: String,
    connect: Connect,
    synchronous: bool,
}

impl std::fmt::Debug for PromotedPairFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromotedPairFaults")
            .field("store", &self.store)
            .field("url", &distsync_core::redact_url(&self.url))
            .field("synchronous", &self.synchronous)
            .finish_non_exhaustive()
    }
}

impl PromotedPairFaults {
    /// Hooks whose pairs of `store` replicate synchronously (semi-synchronously) or
    /// not; second clients reach `url`.
    pub fn new(store: PromotedStore, url: &str, connect: Connect, synchronous: bool) -> Self {
        Self {
            store,
            url: url.to_owned(),
            connect,
            synchronous,
        }
    }
}

#[async_trait]
impl Faults for PromotedPairFaults {
    fn describe(&self) -> String {
        format!(
            "{}: failover, second clients",
            self.store.describe(self.synchronous)
        )
    }

    fn offers(&self, hook: Hook) -> std::result::Result<(), String> {
        match hook {
            // The pair is two private servers.
            Hook::Failover | Hook::PrivateServer => self.store.available(),
            Hook::SecondClient => Ok(()),
            other => Err(format!(
                "{other}: not offered by the primary/replica pair harness (run the other \
                 cases against the server itself)"
            )),
        }
    }

    async fn cluster(&self, _backend: &dyn Backend) -> Result<Box<dyn Cluster>> {
        self.store
            .start(Arc::clone(&self.connect), self.synchronous)
            .await
    }

    async fn second_client(&self, _backend: &dyn Backend) -> Result<Arc<dyn Backend>> {
        (self.connect)(self.url.clone()).await
    }
}

impl crate::harness::Harness {
    /// A harness over the server at `url`, connected with `connect`, whose failover
    /// cases each start a private pair of `store` ([`PromotedPairFaults`]; with
    /// `synchronous`, a synchronous standby or a semi-synchronous replica).
    ///
    /// # Errors
    /// The connection error.
    pub async fn connect_promoted_pair(
        store: PromotedStore,
        url: &str,
        connect: Connect,
        synchronous: bool,
    ) -> Result<Self> {
        let faults = PromotedPairFaults::new(store, url, Arc::clone(&connect), synchronous);
        let backend = connect(url.to_owned()).await?;
        // The cases run on the pair, whose primary waits for its replica or not; a
        // backend connected to it declares `survives_failover` accordingly (the case
        // checks that it does).
        let capabilities = backend
            .capabilities()
            .clone()
            .with_survives_failover(synchronous);
        Ok(Self::new(backend)
            .with_faults(Arc::new(faults))
            .with_capabilities(capabilities))
    }
}

/// The pairs of one test process take turns: each is two servers on a small machine.
static PAIRS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `server_primary_failover_promoted` on a fresh pair of `store` (with
/// `synchronous`, a synchronous standby or a semi-synchronous replica) beside the
/// server that `var` names, connected with `connect`, in a runtime of its own, one
/// pair at a time in this process: a backend's own failover test. `None` when `var`
/// is unset (see [`crate::server_url`]).
///
/// # Panics
/// When the harness cannot connect, or the case fails, is unsupported or takes
/// `within` or longer.
pub fn run_promoted_failover(
    store: PromotedStore,
    var: &str,
    connect: Connect,
    synchronous: bool,
    within: std::time::Duration,
) -> Option<crate::Report> {
    let url = crate::server_url(var)?;
    let _turn = PAIRS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let harness =
            crate::harness::Harness::connect_promoted_pair(store, &url, connect, synchronous)
                .await
                .unwrap_or_else(|error| panic!("connecting to {store:?}: {error}"));
        let case = crate::find("server_primary_failover_promoted").expect("the case");
        let report = crate::run_case(case, &harness).await;
        eprintln!("{report}");
        assert!(!report.is_failure(), "{report}");
        assert!(
            !matches!(report.outcome, crate::Outcome::Unsupported { .. }),
            "{report}"
        );
        assert!(
            report.elapsed < within,
            "took {:?}: {report}",
            report.elapsed
        );
        Some(report)
    })
}
