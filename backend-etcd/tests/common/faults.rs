//! The conformance harness for etcd and its fault hooks.
//!
//! The external lock holder of [`Faults::spawn_lock_holder`] is Go's: `etcdctl lock`
//! in a child process, which holds the lock through a session of its own, with the
//! very key layout distsync uses. Killing it (SIGKILL) leaves its lease to expire;
//! pausing it (SIGSTOP) stops its keepalives.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_conformance::{ExternalHolder, Faults, Harness};
use distsync_core::kv::{Kv, Range};
use distsync_core::{Backend, Error, FencingToken, Name, Result};
use distsync_etcd::{EtcdBackend, EtcdConfig, EtcdKv};

use super::etcdctl::{self, Etcdctl};

/// How long etcdctl may take to get a free lock.
const HOLD_WAIT: Duration = Duration::from_secs(30);

/// The backend at `DISTSYNC_ETCD_URL` in a harness with [`EtcdFaults`], or `None` to
/// skip (loudly; a failure under `CI=true`).
pub async fn harness() -> Option<Harness> {
    let url = distsync_conformance::server_url("DISTSYNC_ETCD_URL")?;
    let backend: EtcdBackend = distsync_etcd::backend(&url)
        .await
        .unwrap_or_else(|error| panic!("connecting to etcd at {url}: {error}"));
    let config = EtcdConfig::parse(&url).expect("a valid URL");
    let faults = EtcdFaults {
        kv: Arc::clone(backend.kv()),
        endpoints: config.endpoints().join(","),
        namespace: config.namespace().to_owned(),
    };
    Some(Harness::new(Arc::new(backend)).with_faults(Arc::new(faults)))
}

/// Fault hooks for etcd: store-side lease revoke (the default), and a lock holder in a
/// child process (`etcdctl lock`).
pub struct EtcdFaults {
    kv: Arc<EtcdKv>,
    endpoints: String,
    namespace: String,
}

#[async_trait]
impl Faults for EtcdFaults {
    fn describe(&self) -> String {
        "store-side lease revoke; `etcdctl lock` holder in a child process".to_owned()
    }

    async fn spawn_lock_holder(
        &self,
        backend: &dyn Backend,
        name: &Name,
        ttl: Duration,
    ) -> Result<Box<dyn ExternalHolder>> {
        if !etcdctl::available() {
            return Err(Error::unsupported(
                backend.capabilities().backend,
                "fault hook: a lock holder in a child process (etcdctl is missing)",
            ));
        }
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let lock = format!("{}{name}", self.namespace);
        let mut process = Etcdctl::spawn(
            &self.endpoints,
            &["lock", &lock, &format!("--ttl={}", seconds.max(1))],
        );
        let key = process.line(HOLD_WAIT).await;
        let held = self.kv.range(Range::key(&key)).await?;
        let Some(kv) = held.kvs.first() else {
            return Err(Error::InvalidArgument(format!(
                "etcdctl printed {key:?}, which is not in the store"
            )));
        };
        let token = FencingToken(u64::try_from(kv.create_revision).unwrap_or_default());
        Ok(Box::new(EtcdctlHolder { process, token }))
    }
}

/// `etcdctl lock` holding a lock.
struct EtcdctlHolder {
    process: Etcdctl,
    token: FencingToken,
}

#[async_trait]
impl ExternalHolder for EtcdctlHolder {
    fn token(&self) -> FencingToken {
        self.token
    }

    async fn kill(&mut self) -> Result<()> {
        self.process.signal("-KILL").map_err(Error::InvalidArgument)
    }

    async fn pause(&mut self) -> Result<()> {
        self.process.signal("-STOP").map_err(Error::InvalidArgument)
    }

    async fn resume(&mut self) -> Result<()> {
        self.process.signal("-CONT").map_err(Error::InvalidArgument)
    }
}
