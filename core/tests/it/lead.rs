//! `Coordinator::lead` over the memory backend: leading, losing and campaigning again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use distsync_core::coordinator::Coordinator;
use distsync_core::error::Error;
use distsync_core::lead::LeadOptions;
use distsync_core::token::FencingToken;
use distsync_kv::memory::MemoryBackend;

const DEADLINE: Duration = Duration::from_secs(10);

fn fast() -> LeadOptions {
    LeadOptions::default().with_retry(Duration::from_millis(1), Duration::from_millis(10))
}

/// Counts the work futures alive, so a test sees one dropped.
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn work_that_ends_returns_its_result_and_resigns() {
    let coordinator = Coordinator::new(MemoryBackend::new());
    let outcome = coordinator
        .lead("leader", "a", |_| async {
            Err(Error::InvalidArgument("done".into()))
        })
        .await;
    assert!(
        matches!(outcome, Err(Error::InvalidArgument(_))),
        "{outcome:?}"
    );
    let session = coordinator.session().await.unwrap();
    let leader = coordinator
        .election(&session, "leader")
        .unwrap()
        .leader()
        .await
        .unwrap();
    assert!(leader.is_none(), "resigned: {leader:?}");
}

#[tokio::test]
async fn a_lost_term_drops_the_work_and_a_new_term_runs_it_again() {
    let coordinator = Coordinator::new(MemoryBackend::new());
    let (terms, mut started) = mpsc::unbounded_channel::<(FencingToken, u64)>();
    let alive = Arc::new(AtomicUsize::new(0));
    let leading = {
        let (coordinator, alive) = (coordinator.clone(), Arc::clone(&alive));
        tokio::spawn(async move {
            coordinator
                .lead_with("leader", "a", &fast(), move |leadership| {
                    let (terms, alive) = (terms.clone(), Arc::clone(&alive));
                    async move {
                        alive.fetch_add(1, Ordering::SeqCst);
                        let _alive = Alive(alive);
                        let _ = terms.send((leadership.term(), leadership.session().id().0));
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                })
                .await
        })
    };
    let (first, session) = tokio::time::timeout(DEADLINE, started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alive.load(Ordering::SeqCst), 1);
    coordinator
        .backend()
        .revoke_session(distsync_core::session::SessionId(session))
        .await
        .unwrap();
    let (second, _) = tokio::time::timeout(DEADLINE, started.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(second > first, "term {second} after {first}");
    assert_eq!(
        alive.load(Ordering::SeqCst),
        1,
        "the first term's work was dropped"
    );
    leading.abort();
}

#[tokio::test]
async fn two_processes_never_lead_at_once() {
    let coordinator = Coordinator::new(MemoryBackend::new());
    let leaders = Arc::new(AtomicUsize::new(0));
    let terms = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for id in 0..2 {
        let (coordinator, leaders, terms) = (
            coordinator.clone(),
            Arc::clone(&leaders),
            Arc::clone(&terms),
        );
        tasks.push(tokio::spawn(async move {
            coordinator
                .lead_with("leader", format!("node-{id}"), &fast(), move |_| {
                    let (leaders, terms) = (Arc::clone(&leaders), Arc::clone(&terms));
                    async move {
                        let now = leaders.fetch_add(1, Ordering::SeqCst) + 1;
                        terms.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        leaders.fetch_sub(1, Ordering::SeqCst);
                        if now > 1 {
                            return Err(Error::InvalidArgument(format!("{now} leaders at once")));
                        }
                        Ok(())
                    }
                })
                .await
        }));
    }
    for task in tasks {
        tokio::time::timeout(DEADLINE, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    assert_eq!(terms.load(Ordering::SeqCst), 2);
}
