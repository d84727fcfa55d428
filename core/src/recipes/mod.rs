//! Every primitive built on a revisioned key-value store ([`Kv`]) exactly as etcd's Go
//! `clientv3/concurrency` and `recipes` packages build them: same key layouts, same
//! transactions, same waits. The memory and etcd backends are both [`KvBackend`]s.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::Backend;
use crate::barrier::{Barrier, DoubleBarrier};
use crate::capabilities::Capabilities;
use crate::election::Election;
use crate::error::{Error, Result};
use crate::kv::{Kv, LeaseId};
use crate::lock::Locker;
use crate::name::Name;
use crate::queue::Queue;
use crate::rwlock::RwLock;
use crate::session::{KeepAlive, Lease, Session, SessionId, SessionOptions};
use crate::stm::Stm;

/// A [`Backend`] over any [`Kv`] store, with every key under `namespace`.
pub struct KvBackend<K: Kv> {
    kv: Arc<K>,
    namespace: String,
    capabilities: Capabilities,
}

impl<K: Kv> KvBackend<K> {
    /// A backend over `kv`, prefixing every key with `namespace` (may be empty; a
    /// non-empty namespace usually ends with `/`), declaring `capabilities`.
    pub fn with_kv(kv: K, namespace: impl Into<String>, capabilities: Capabilities) -> Self {
        Self {
            kv: Arc::new(kv),
            namespace: namespace.into(),
            capabilities,
        }
    }

    /// The store.
    pub fn kv(&self) -> &Arc<K> {
        &self.kv
    }

    /// The key prefix of this backend.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The full store key of a primitive's name.
    pub fn key(&self, name: &Name) -> String {
        format!("{}{}", self.namespace, name)
    }

    fn lease_of(&self, session: &Session) -> Result<LeaseId> {
        Ok(session.lease_for::<KvLease<K>>(self.kv.backend())?.id)
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::unsupported(self.kv.backend(), what)
    }
}

/// The [`Lease`] behind a session of a [`KvBackend`].
pub struct KvLease<K: Kv> {
    kv: Arc<K>,
    id: LeaseId,
}

impl<K: Kv> KvLease<K> {
    /// The store's lease id.
    pub fn id(&self) -> LeaseId {
        self.id
    }
}

#[async_trait]
impl<K: Kv> Lease for KvLease<K> {
    async fn keep_alive(&self) -> Result<KeepAlive> {
        self.kv.lease_keep_alive(self.id).await
    }

    async fn revoke(&self) -> Result<()> {
        self.kv.lease_revoke(self.id).await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[async_trait]
impl<K: Kv> Backend for KvBackend<K> {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn session(&self, options: SessionOptions) -> Result<Session> {
        if options.ttl < self.capabilities.min_session_ttl {
            return Err(Error::InvalidArgument(format!(
                "session ttl {:?} is below the {} backend's minimum {:?}",
                options.ttl,
                self.kv.backend(),
                self.capabilities.min_session_ttl
            )));
        }
        let id = self.kv.lease_grant(options.ttl).await?;
        let lease = KvLease {
            kv: Arc::clone(&self.kv),
            id,
        };
        Ok(Session::start(
            self.kv.backend(),
            SessionId(id as u64),
            options.ttl,
            Arc::new(lease),
        ))
    }

    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        self.kv.lease_revoke(id.0 as LeaseId).await
    }

    fn locker(&self, session: &Session, _name: Name) -> Result<Box<dyn Locker>> {
        self.lease_of(session)?;
        Err(self.unsupported("lock"))
    }

    fn election(&self, session: &Session, _name: Name) -> Result<Box<dyn Election>> {
        self.lease_of(session)?;
        Err(self.unsupported("election"))
    }

    fn rwlock(&self, session: &Session, _name: Name) -> Result<Box<dyn RwLock>> {
        self.lease_of(session)?;
        Err(self.unsupported("rwlock"))
    }

    fn queue(&self, _name: Name) -> Result<Box<dyn Queue>> {
        Err(self.unsupported("queue"))
    }

    fn barrier(&self, _name: Name) -> Result<Box<dyn Barrier>> {
        Err(self.unsupported("barrier"))
    }

    fn double_barrier(
        &self,
        session: &Session,
        _name: Name,
        _count: usize,
    ) -> Result<Box<dyn DoubleBarrier>> {
        self.lease_of(session)?;
        Err(self.unsupported("double barrier"))
    }

    fn stm(&self) -> Result<Arc<dyn Stm>> {
        Err(self.unsupported("stm"))
    }
}
