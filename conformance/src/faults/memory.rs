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
use distsync_core::lock_delay;
use distsync_core::raw::parse_duration;
use distsync_core::LockOptions;
use distsync_core::{
    Backend, Bytes, Delivery, Election, Error, FencingToken, Leadership, LockGuard, Locker, Permit,
    Queue, Result, Semaphore, Session, SessionId, SessionOptions,
};
use distsync_kv::kv::LeaseId;
use distsync_kv::memory::{self, FaultyKv, MemoryBackend, MemoryKv, Partition, TxnFault};
use distsync_kv::recipes::KvBackend;

use super::{
    ExternalHolder, Faults, FreshStore, HoldKind, HolderSpec, Hook, PartitionMode, Partitioned,
    HOLDER_LOCK_DELAY, HOLDER_PERMITS,
};
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
            Hook::KillSession
            | Hook::PausedHolder
            | Hook::SecondClient
            | Hook::Partition
            | Hook::FreshStore => Ok(()),
            Hook::ChildHolder => Err(NO_CHILD.to_owned()),
            Hook::AnyExternalHolder => super::any_external_holder(self),
            Hook::PrivateServer => Err(
                "no server to restart: the memory store lives and dies with its process".to_owned(),
            ),
            Hook::Cluster | Hook::Failover => {
                Err("no cluster: the memory store is one in-process map".to_owned())
            }
            Hook::EvictingServer => Err("the memory store never evicts".to_owned()),
            Hook::PowerLoss => Err("no disk: the memory store keeps nothing on one".to_owned()),
            Hook::CallerTransactions => Err(super::CALLER_TRANSACTIONS_FROM_HARNESS.to_owned()),
            Hook::SessionTakeover => {
                Err("session ids are the store's lease ids, assigned once per process".to_owned())
            }
            Hook::GoPeer => Err(
                "etcd's Go packages run on etcd only: the memory store is in-process".to_owned(),
            ),
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
            HoldKind::Lock | HoldKind::UnfairLock => {
                let locker = if spec.kind == HoldKind::Lock {
                    backend.locker(&session, spec.name.clone())?
                } else {
                    backend.unfair_locker(&session, spec.name.clone())?
                };
                let guard = locker.lock().await?;
                Hold::Lock {
                    _locker: locker.into(),
                    guard,
                }
            }
            HoldKind::DelayedLock => {
                let options = LockOptions::new().lock_delay(HOLDER_LOCK_DELAY);
                let locker = lock_delay::locker(backend, &session, spec.name.clone(), options)?;
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
            HoldKind::Permit => {
                let semaphore = backend.semaphore(&session, spec.name.clone(), HOLDER_PERMITS)?;
                let permit = semaphore.acquire().await?;
                Hold::Permit {
                    _semaphore: semaphore,
                    permit,
                }
            }
            HoldKind::Delivery => {
                let queue = backend.queue(spec.name.clone())?;
                let delivery = queue.receive(&session).await?;
                Hold::Delivery {
                    _queue: queue,
                    delivery,
                }
            }
            HoldKind::JobRunner => return Err(Error::unsupported("memory", NO_CHILD)),
        };
        Ok(Box::new(FrozenHolder {
            kv: self.kv.clone(),
            session,
            hold,
        }))
    }

    /// A new in-process memory store, with hooks of its own.
    async fn fresh_store(&self, _backend: &dyn Backend) -> Result<FreshStore> {
        let backend = MemoryBackend::new();
        let faults = Arc::new(MemoryFaults::new(&backend));
        Ok(FreshStore::new(Arc::new(backend), faults, None))
    }

    async fn second_client(&self, _backend: &dyn Backend) -> Result<Arc<dyn Backend>> {
        Ok(Arc::new(KvBackend::with_kv(
            self.kv.clone(),
            "",
            memory::capabilities(),
        )))
    }

    /// The gated client, its requests bounded by `timeout=` in `settings` as a server
    /// client's are, its queues putting back claims older than `stale_claim=` (the
    /// rest, e.g. `connect_timeout=`, has nothing to bound in process).
    async fn partitioned_client_with(
        &self,
        _backend: &dyn Backend,
        settings: &str,
    ) -> Result<Box<dyn Partitioned>> {
        let (mut timeout, mut stale_claim) = (None, None);
        for (key, value) in settings.split('&').filter_map(|pair| pair.split_once('=')) {
            let slot = match key {
                "timeout" => &mut timeout,
                "stale_claim" => &mut stale_claim,
                _ => continue,
            };
            *slot = Some(parse_duration(value).map_err(|reason| {
                Error::InvalidArgument(format!("partitioned client {key}: {reason}"))
            })?);
        }
        let kv = FaultyKv::new(self.kv.clone()).with_request_timeout(timeout);
        let backend = KvBackend::with_kv(kv.clone(), "", memory::capabilities());
        let backend = match stale_claim {
            Some(bound) => backend.with_stale_claim(bound),
            None => backend,
        };
        Ok(Box::new(GatedClient {
            backend: Arc::new(backend),
            kv,
        }))
    }
}

/// A second client of the memory store behind a [`FaultyKv`]: the in-process model of
/// a network partition. The store itself goes on (expiring leases that are no longer
/// renewed), exactly as a server behind a partition does.
struct GatedClient {
    backend: Arc<dyn Backend>,
    kv: FaultyKv,
}

impl Partitioned for GatedClient {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn set(&self, mode: PartitionMode) {
        // A lost reply is the next transaction after `after` applied with its reply
        // lost; every other mode clears such a plan.
        match mode {
            PartitionMode::LoseReply { after } => {
                self.kv
                    .fail_txns_after(usize::from(after), 1, TxnFault::ReplyLost);
            }
            PartitionMode::LoseReplyThenReset { after } => {
                self.kv
                    .fail_txns_after(usize::from(after), 1, TxnFault::ReplyLostThenReset);
            }
            _ => self.kv.fail_txns(0, TxnFault::ReplyLost),
        }
        self.kv.partition(match mode {
            PartitionMode::Forward
            | PartitionMode::LoseReply { .. }
            | PartitionMode::LoseReplyThenReset { .. } => Partition::Open,
            PartitionMode::Silent => Partition::Silent,
            PartitionMode::Reset => Partition::Reset,
        });
    }
}

/// What the holder holds, with the handle it was taken through (kept for as long).
enum Hold {
    Lock {
        _locker: Arc<dyn Locker>,
        guard: LockGuard,
    },
    Leadership {
        _election: Box<dyn Election>,
        leadership: Leadership,
    },
    Permit {
        _semaphore: Box<dyn Semaphore>,
        permit: Permit,
    },
    Delivery {
        _queue: Box<dyn Queue>,
        delivery: Delivery,
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
            Hold::Permit { permit, .. } => permit.token(),
            Hold::Leadership { leadership, .. } => leadership.term(),
            Hold::Delivery { delivery, .. } => FencingToken(u64::from(delivery.redeliveries()) + 1),
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
            Hold::Permit { permit, .. } => permit.lost().await,
            Hold::Leadership { leadership, .. } => leadership.lost().await,
            Hold::Delivery { delivery, .. } => delivery.lost().await,
        }
        Ok(())
    }
}
