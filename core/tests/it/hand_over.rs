//! Leadership hand-over on the memory backend: a named successor behind others is
//! elected, and the candidates ahead of it step back and stay in line.

use std::time::Duration;

use distsync_core::hand_over::Successor;
use distsync_core::{Coordinator, Session};
use tokio::time::Instant;

async fn in_line(coordinator: &Coordinator, name: &str, session: &Session) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while coordinator
        .candidates(name)
        .await
        .unwrap()
        .position(session.id())
        .is_none()
    {
        assert!(Instant::now() < deadline, "never joined the line");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_named_successor_behind_others_is_elected() {
    let coordinator = distsync_kv::memory::connect("memory://").await.unwrap();
    let a = coordinator.session().await.unwrap();
    let leader = coordinator
        .election(&a, "e")
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let mut waiting = Vec::new();
    for who in ["b", "c", "d"] {
        let session = coordinator.session().await.unwrap();
        let election = coordinator.election(&session, "e").unwrap();
        let task = tokio::spawn(async move { election.campaign(who).await });
        in_line(&coordinator, "e", &session).await;
        waiting.push((session, task));
    }
    let d = waiting[2].0.id();
    let handed = leader
        .resign_to(Successor::Candidate(d), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(handed.to.session, d);
    let (_, task) = waiting.pop().unwrap();
    let won = task.await.unwrap().unwrap();
    assert!(won.term() > handed.from_term);
    // The two that stepped back campaign again, behind d.
    for (session, task) in &waiting {
        in_line(&coordinator, "e", session).await;
        assert!(!task.is_finished());
    }
}
