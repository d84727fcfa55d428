//! Fault hooks of the in-process memory store.
//!
//! A child process cannot share a store that lives in this process, so holder crashes
//! (SIGKILL), server restarts and cluster faults are unsupported here, with that
//! reason. What the store can model, it does: [`MemoryKv::freeze_lease`] makes a
//! lease's renewals stop reaching the store, exactly what a paused (SIGSTOPped) or
//! partitioned client looks like to it; an in-process holder whose lease is frozen is
//! the "paused holder", and a frozen lease is the out-of-band session kill (the store
//! expires it behind its owner's back).

use std::sync::Arc;

use async_trait::async_trait;
use distsync_core::kv::LeaseId;
use distsync_core::memory::{self, MemoryBackend, MemoryKv};
use distsync_core::recipes::KvBackend;
use distsync_core::{
    Backend, Bytes, Election, Error, FencingToken, Leadership, LockGuard, Locker, Result, Session,
    SessionId, SessionOptions,
};

use super::{ExternalHolder, Faults, HoldKind, HolderSpec, Hook};
use crate::harness::Harness;

/// Why process-level hooks are unsupported on the memory store.
pub(crate) const NO_CHILD: &str =
    "process-level fault: a child process cannot share the in-process memory store";

/// Fault hooks of a [`MemoryBackend`]: paused holders and out-of-band kills through
/// [`MemoryKv::freeze_lease`], and second clients over the same store.
#[derive(Clone, Debug)]
pub struct MemoryFaults {
    kv: MemoryKv,
}

impl MemoryFaults {
    /// The hooks of the store behind `backend`.
    pub fn new(backend: &MemoryBackend) -> Self {
        Self {
            kv: (**backend.kv()).clone(),
        }
    }
}

impl Harness {
    /// A harness over a fresh in-process memory store, with [`MemoryFaults`].
    pub fn memory() -> Self {
        let backend = MemoryBackend::new();
        let faults = MemoryFaults::new(&backend);
        Harness::new(Arc::new(backend)).with_faults(Arc::new(faults))
    }
}

fn lease(session: SessionId) -> Result<LeaseId> {
    LeaseId::try_from(session.0)
        .map_err(|_| Error::InvalidArgument(format!("no memory lease has id {session}")))
}

#[async_trait]
impl Faults for MemoryFaults {
    fn describe(&self) -> String {
        "memory store: revoke, frozen leases, second clients".to_owned()
    }

    fn offers(&self, hook: Hook) -> std::result::Result<(), String> {
        match hook {
            Hook::KillSession | Hook::PausedHolder | Hook::SecondClient => Ok(()),
            Hook::ChildHolder => Err(NO_CHILD.to_owned()),
            Hook::PrivateServer => Err(
                "no server to restart: the memory store lives and dies with its process".to_owned(),
            ),
            Hook::Cluster => Err("no cluster: the memory store is one in-process map".to_owned()),
        }
    }

    async fn kill_session(&self, _backend: &dyn Backend, session: SessionId) -> Result<String> {
        if !self.kv.freeze_lease(lease(session)?) {
            return Err(Error::InvalidArgument(format!(
                "the memory store has no lease {session}"
            )));
        }
        Ok("lease frozen: the store expires it after its TTL, unknown to its owner".to_owned())
    }

    async fn spawn_holder(
        &self,
        backend: &dyn Backend,
        spec: &HolderSpec,
    ) -> Result<Box<dyn ExternalHolder>> {
        let session = backend.session(SessionOptions::with_ttl(spec.ttl)).await?;
        let hold = match spec.kind {
            HoldKind::Lock => {
                let locker = backend.locker(&session, spec.name.clone())?;
                let guard = locker.lock().await?;
                Hold::Lock {
                    _locker: locker,
                    guard,
                }
            }
            HoldKind::Leadership => {
                let election = backend.election(&session, spec.name.clone())?;
                let leadership = election.campaign(Bytes::from_static(b"holder")).await?;
                Hold::Leadership {
                    _election: election,
                    leadership,
                }
            }
        };
        Ok(Box::new(FrozenHolder {
            kv: self.kv.clone(),
            session,
            hold,
        }))
    }

    async fn second_client(&self, _backend: &dyn Backend) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(KvBackend::with_kv(
            self.kv.clone(),
            "",
            memory::capabilities(),
        )))
    }
}

/// What the holder holds, with the handle it was taken through (kept for as long).
enum Hold {
    Lock {
        _locker: Box<dyn Locker>,
        guard: LockGuard,
    },
    Leadership {
        _election: Box<dyn Election>,
        leadership: Leadership,
    },
}

/// An in-process holder whose "pause" freezes its lease.
struct FrozenHolder {
    kv: MemoryKv,
    session: Session,
    hold: Hold,
}

#[async_trait]
impl ExternalHolder for FrozenHolder {
    fn token(&self) -> FencingToken {
        match &self.hold {
            Hold::Lock { guard, .. } => guard.token(),
            Hold::Leadership { leadership, .. } => leadership.term(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "in-process holder with memory lease {} (pause = frozen lease)",
            self.session.id()
        )
    }

    async fn kill(&mut self) -> Result<()> {
        Err(Error::unsupported("memory", NO_CHILD))
    }

    async fn pause(&mut self) -> Result<()> {
        if self.kv.freeze_lease(lease(self.session.id())?) {
            Ok(())
        } else {
            Err(Error::SessionLost)
        }
    }

    async fn resume(&mut self) -> Result<()> {
        // A frozen lease stays frozen: like a process woken after its lease expired,
        // the holder's renewals no longer help it.
        Ok(())
    }

    async fn write(&mut self) -> Result<FencingToken> {
        Ok(self.token())
    }

    async fn lost(&mut self) -> Result<()> {
        match &self.hold {
            Hold::Lock { guard, .. } => guard.lost().await,
            Hold::Leadership { leadership, .. } => leadership.lost().await,
        }
        Ok(())
    }
}
