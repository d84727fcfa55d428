//! Leader election, as etcd's Go `concurrency.Election`.
//!
//! Layout: each candidate puts `<ns><name>/<lease id in lowercase hex>` with its value
//! (attached to its session's lease); the leader is the candidate whose key has the
//! lowest create revision, and the term is that create revision. A candidate waits for
//! the deletion of the key created just before its own. This is the layout of
//! `etcdctl elect <name>`, so Go programs and distsync see one election.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::kv::{EventKind, KeyValue, Kv, Range, Revision, TxnOp, WatchResponse};
use distsync_core::election::{Election, LeaderInfo, Leadership, Proclaim};
use distsync_core::error::{Error, Result};
use distsync_core::name::Name;
use distsync_core::raw::{observe_leaders, LeaderObserver};

use super::hold::{fencing_token, SessionKv};
use super::key::{if_created_at, lease_key, KeySpace};
use super::wait::{next_event, read, watch, Events};

/// An [`Election`] over a [`Kv`] store.
pub(crate) struct KvElection {
    keys: SessionKv,
    name: Name,
    prefix: String,
    key: String,
}

impl KvElection {
    /// The election `name` under `space`, campaigning through `keys`' session.
    pub(crate) fn new(keys: SessionKv, space: &KeySpace, name: Name) -> Self {
        let prefix = space.lock_line(&name);
        Self {
            key: lease_key(&prefix, keys.lease),
            keys,
            name,
            prefix,
        }
    }
}

/// Go's `Proclaim`: rewrites the leader key while it is still the one created in this
/// term.
struct KvProclaim {
    keys: SessionKv,
    key: String,
    term: Revision,
}

#[async_trait]
impl Proclaim for KvProclaim {
    async fn proclaim_bytes(&self, value: Bytes) -> Result<()> {
        let put = TxnOp::put(&self.key, value, self.keys.lease);
        let proclaimed = if_created_at(&*self.keys.kv, &self.key, self.term, put).await?;
        proclaimed.then_some(()).ok_or(Error::NotLeader)
    }
}

fn leader_info(kv: KeyValue) -> LeaderInfo {
    LeaderInfo::new(kv.value, fencing_token(kv.create_revision), kv.key)
}

#[async_trait]
impl Election for KvElection {
    fn name(&self) -> &Name {
        &self.name
    }

    /// Go's `Campaign`: puts the own key with `value` (or reuses it, proclaiming
    /// `value` if it differs), then waits for the deletion of every older candidate.
    ///
    /// Cancel-safety: cancel-safe; a dropped future deletes the own key in the
    /// background, so it never leaves this candidate leader.
    async fn campaign_bytes(&self, value: Bytes) -> Result<Leadership> {
        let Some(mut cleanup) = self.keys.contend(&self.key, true).await? else {
            return Err(Error::SessionLost);
        };
        let own = self
            .keys
            .put_own(&self.key, value.clone(), "candidate", vec![], vec![]);
        let own = own.await?;
        cleanup.created_at(own.create_revision);
        let proclaim = KvProclaim {
            keys: self.keys.clone(),
            key: self.key.clone(),
            term: own.create_revision,
        };
        if own.existing.is_some_and(|existing| existing.value != value) {
            if let Err(error) = proclaim.proclaim_bytes(value).await {
                cleanup.remove_now().await?;
                return Err(error);
            }
        }
        let term = proclaim.term;
        // Errors (and a lost session) leave `cleanup` armed: the candidacy is withdrawn.
        cleanup.wait_turn(&self.prefix, term, None).await?;
        // The key watch starts with the first `lost()`/`is_lost()`/`while_held()`, as a
        // lock's does: a campaign nobody asks about opens no watch on the store.
        let held = self.keys.held(&self.key, term);
        Ok(held.leadership(cleanup.disarm(), Arc::new(proclaim)))
    }

    /// Go's `Leader`: the first-created candidate key.
    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        let first = Range::prefix(&self.prefix).first_create();
        let response = self.keys.kv.range(first).await?;
        Ok(response.kvs.into_iter().next().map(leader_info))
    }

    /// Go's `Observe`: the current leader, then every proclaim of it, then the next
    /// leader once its key is deleted, and so on. Each item is newer (by term, then by
    /// modification) than the one before. Transient store errors (a member cut off from
    /// the leader, a broken connection) are ridden out: the stream re-reads and follows
    /// again; other errors end it.
    fn observe(&self) -> BoxStream<'static, Result<LeaderInfo>> {
        let observer = Observer {
            kv: Arc::clone(&self.keys.kv),
            prefix: self.prefix.clone(),
            state: ObserveState::Find { at: None },
            pending: VecDeque::new(),
            last: None,
        };
        observe_leaders(observer)
    }
}

/// What [`Observer`] does next.
enum ObserveState {
    /// Read the first-created key (as of revision `at`, the previous leader's
    /// deletion, so that the next leader's value at that moment is not skipped); if
    /// there is none, wait for the first put.
    Find { at: Option<Revision> },
    /// Follow the leader key from revision `from` until it is deleted.
    Follow {
        key: String,
        term: Revision,
        from: Revision,
        stream: Option<Events>,
    },
}

/// The state machine behind [`KvElection::observe`].
struct Observer {
    kv: Arc<dyn Kv>,
    prefix: String,
    state: ObserveState,
    pending: VecDeque<KeyValue>,
    /// `(term, mod revision)` of the last item yielded.
    last: Option<(Revision, Revision)>,
}

impl LeaderObserver for Observer {
    async fn next_leader(&mut self) -> Result<LeaderInfo> {
        loop {
            while let Some(kv) = self.pending.pop_front() {
                let position = (kv.create_revision, kv.mod_revision);
                if self.last.is_some_and(|last| position <= last) {
                    continue;
                }
                self.last = Some(position);
                return Ok(leader_info(kv));
            }
            self.advance().await?;
        }
    }
}

impl Observer {
    /// Moves the state machine on until it has queued something to yield.
    async fn advance(&mut self) -> Result<()> {
        match &mut self.state {
            ObserveState::Find { at } => {
                let kv = &*self.kv;
                let first = Range::prefix(&self.prefix).first_create();
                let current = read(kv, first.clone(), None).await?;
                let past = match *at {
                    Some(revision) => kv.range(first.at_revision(revision)).await.ok(),
                    None => None,
                };
                // Follow from the current revision when nothing can have been missed
                // since the hand-over: a watch from a past revision is exact but etcd
                // serves such ("unsynced") watches only every 100 ms.
                let (leader, from) = match (past, current.kvs.first()) {
                    // The leader at the hand-over is still there, unchanged.
                    (Some(past), Some(now))
                        if past.kvs.first().is_some_and(|then| {
                            then.create_revision == now.create_revision
                                && then.mod_revision == now.mod_revision
                        }) =>
                    {
                        (now.clone(), current.revision + 1)
                    }
                    // It changed since: replay its history from the hand-over.
                    (Some(past), _) if !past.kvs.is_empty() => {
                        let then = past.kvs.into_iter().next().unwrap_or_default();
                        let from = then.mod_revision + 1;
                        (then, from)
                    }
                    // No history asked for (or it was compacted): the current leader.
                    (None, Some(now)) => (now.clone(), current.revision + 1),
                    // No leader at the hand-over (or none now): wait for the first
                    // put after it, from the hand-over if known (exact), else from now.
                    (past, _) => {
                        let from = match (past, *at) {
                            (Some(_), Some(at)) => at + 1,
                            _ => current.revision + 1,
                        };
                        match next_event(kv, &self.prefix, true, from, EventKind::Put, None).await?
                        {
                            Some(event) => {
                                let from = event.kv.mod_revision + 1;
                                (event.kv, from)
                            }
                            None => return Ok(()),
                        }
                    }
                };
                // Open the watch now, not when the consumer next polls: a watch from a
                // revision that is already past when it reaches etcd is served slowly.
                let stream = watch(kv, &leader.key, false, from, None).await?;
                self.state = ObserveState::Follow {
                    key: leader.key.clone(),
                    term: leader.create_revision,
                    from,
                    stream: Some(stream),
                };
                self.pending.push_back(leader);
                Ok(())
            }
            ObserveState::Follow {
                key,
                term,
                from,
                stream,
            } => {
                let events = match stream {
                    Some(events) => events,
                    None => stream.insert(watch(&*self.kv, key, false, *from, None).await?),
                };
                let resync = match events.next().await {
                    Some(Ok(WatchResponse::Events(events))) => {
                        for event in events {
                            match event.kind {
                                EventKind::Put => {
                                    *from = event.kv.mod_revision + 1;
                                    self.pending.push_back(event.kv);
                                }
                                EventKind::Delete => {
                                    self.state = ObserveState::Find {
                                        at: Some(event.kv.mod_revision),
                                    };
                                    return Ok(());
                                }
                            }
                        }
                        false
                    }
                    Some(Ok(WatchResponse::Compacted(_))) | None => true,
                    // A member without leader, a broken connection: re-read.
                    Some(Err(error)) if error.is_transient() => true,
                    Some(Err(error)) => return Err(error),
                };
                if resync {
                    // Re-read the leader key: yield its current value if newer, and
                    // watch again from the read; a vanished key means a new leader.
                    *stream = None;
                    let current = read(&*self.kv, Range::key(key.as_str()), None).await?;
                    match current.kvs.into_iter().next() {
                        Some(found) if found.create_revision == *term => {
                            *from = current.revision + 1;
                            self.pending.push_back(found);
                        }
                        _ => self.state = ObserveState::Find { at: None },
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use distsync_core::Primitives;
    use futures::StreamExt;

    use crate::kv::{Kv, Range, Txn, TxnOp};
    use crate::recipes::testing::{
        backend, flaky_backend, name, session, session_of, sessions, settle, until_watches, within,
    };

    use distsync_core::Error;

    /// A leadership won at once opens no watch on the store until its `lost()` is
    /// asked (as a lock's guard; proclaiming and `Debug` do not ask); a leader key
    /// deleted before anyone asked is lost once asked; one asked about is watched.
    #[tokio::test]
    async fn a_leadership_watches_its_key_only_once_asked() {
        let backend = flaky_backend();
        let (a, b) = (session_of(&backend).await, session_of(&backend).await);
        let leadership = within(backend.election(&a, name("e")).unwrap().campaign("a"))
            .await
            .unwrap();
        leadership.proclaim("a2").await.unwrap();
        let _ = format!("{leadership:?}");
        settle().await;
        assert_eq!(backend.kv().watches(), 0, "won at once: no watch");

        let delete = |key: &str| Txn::when(vec![]).and_then(vec![TxnOp::delete(key)]);
        backend.kv().txn(delete(leadership.key())).await.unwrap();
        within(leadership.lost()).await;
        assert!(!a.is_lost(), "only the leadership was taken away");
        assert!(matches!(
            leadership.proclaim("a3").await,
            Err(Error::NotLeader)
        ));
        drop(leadership);

        let next = within(backend.election(&b, name("e")).unwrap().campaign("b"))
            .await
            .unwrap();
        let watches = backend.kv().watches();
        assert!(!next.is_lost());
        until_watches(&backend, watches + 1).await;
        backend.kv().txn(delete(next.key())).await.unwrap();
        within(next.lost()).await;
    }

    #[tokio::test]
    async fn candidates_lead_in_turn_with_growing_terms() {
        let backend = backend();
        let [s1, s2] = sessions(&backend).await;
        let e1 = backend.election(&s1, name("e")).unwrap();
        let e2 = backend.election(&s2, name("e")).unwrap();
        assert_eq!(e1.leader().await.unwrap(), None);
        let first = e1.campaign("a").await.unwrap();
        assert_eq!(first.key(), format!("e/{:x}", s1.id().0));
        let second = tokio::spawn(async move { e2.campaign("b").await });
        settle().await;
        assert!(!second.is_finished());
        let leader = e1.leader().await.unwrap().unwrap();
        assert_eq!(
            (leader.value, leader.term),
            (Bytes::from("a"), first.term())
        );

        let first_term = first.term();
        first.resign().await.unwrap();
        let second = within(second).await.unwrap().unwrap();
        assert!(second.term() > first_term);
        let leader = e1.leader().await.unwrap().unwrap();
        assert_eq!(leader.value, Bytes::from("b"));
    }

    async fn next_of(
        changes: &mut futures::stream::BoxStream<
            'static,
            distsync_core::Result<distsync_core::LeaderInfo>,
        >,
    ) -> distsync_core::LeaderInfo {
        within(changes.next()).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn observe_yields_every_leader_and_proclaim_in_order() {
        let backend = backend();
        let [s1, s2, s3] = sessions(&backend).await;
        let observer = backend.election(&s3, name("e")).unwrap();
        let mut changes = observer.observe();

        let a = backend
            .election(&s1, name("e"))
            .unwrap()
            .campaign("a0")
            .await
            .unwrap();
        assert_eq!(next_of(&mut changes).await.value, Bytes::from("a0"));
        a.proclaim("a1").await.unwrap();
        a.proclaim("a2").await.unwrap();
        let e2 = backend.election(&s2, name("e")).unwrap();
        let b = tokio::spawn(async move { e2.campaign("b0").await });
        settle().await;
        let a_term = a.term();
        a.resign().await.unwrap();
        let b = within(b).await.unwrap().unwrap();
        b.proclaim("b1").await.unwrap();

        let seen: Vec<_> = [
            next_of(&mut changes).await,
            next_of(&mut changes).await,
            next_of(&mut changes).await,
            next_of(&mut changes).await,
        ]
        .into_iter()
        .map(|info| (info.value, info.term))
        .collect();
        assert_eq!(
            seen,
            vec![
                (Bytes::from("a1"), a_term),
                (Bytes::from("a2"), a_term),
                (Bytes::from("b0"), b.term()),
                (Bytes::from("b1"), b.term()),
            ]
        );
    }

    #[tokio::test]
    async fn proclaim_fails_once_the_leader_key_is_gone() {
        let backend = backend();
        let s = session(&backend).await;
        let leadership = backend
            .election(&s, name("e"))
            .unwrap()
            .campaign("a")
            .await
            .unwrap();
        backend
            .kv()
            .txn(Txn::default().and_then(vec![TxnOp::delete(leadership.key())]))
            .await
            .unwrap();
        within(leadership.lost()).await;
        assert!(matches!(
            leadership.proclaim("b").await,
            Err(Error::NotLeader)
        ));
        assert!(matches!(leadership.resign().await, Err(Error::NotLeader)));
    }

    #[tokio::test]
    async fn a_cancelled_campaign_withdraws() {
        let backend = backend();
        let [s1, s2] = sessions(&backend).await;
        let _leader = backend
            .election(&s1, name("e"))
            .unwrap()
            .campaign("a")
            .await
            .unwrap();
        let e2 = backend.election(&s2, name("e")).unwrap();
        let campaign = tokio::spawn(async move { e2.campaign("b").await });
        settle().await;
        assert_eq!(
            backend.kv().range(Range::prefix("e/")).await.unwrap().count,
            2
        );
        campaign.abort();
        settle().await;
        assert_eq!(
            backend.kv().range(Range::prefix("e/")).await.unwrap().count,
            1
        );
    }

    #[tokio::test]
    async fn observe_waits_for_a_first_leader() {
        let backend = backend();
        let s = session(&backend).await;
        let election = backend.election(&s, name("e")).unwrap();
        let mut changes = election.observe();
        let next = changes.next();
        futures::pin_mut!(next);
        settle().await;
        assert!(futures::poll!(next.as_mut()).is_pending());
        let leadership = election.campaign("v").await.unwrap();
        let first = within(next).await.unwrap().unwrap();
        assert_eq!(
            (first.value, first.term),
            (Bytes::from("v"), leadership.term())
        );
    }
}
