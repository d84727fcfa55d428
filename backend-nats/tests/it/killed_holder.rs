//! A holder killed with SIGKILL (this test binary re-run as a child process that
//! locks and then waits forever) frees its lock about a TTL after its last renewal:
//! the server ends its key and the delete marker wakes the waiter.

use distsync_core::Primitives;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use distsync_core::{Backend, Name, SessionOptions};

/// The variable that makes [`child_holder`] the holder, naming the lock.
const CHILD_VAR: &str = "DISTSYNC_NATS_CHILD_LOCK";

/// The holder's session TTL.
const TTL: Duration = Duration::from_secs(2);

/// The child: locks the lock `CHILD_VAR` names, prints `held <token>`, and waits to be
/// killed. Does nothing when run as an ordinary test.
#[tokio::test]
async fn child_holder() {
    let Ok(name) = std::env::var(CHILD_VAR) else {
        return;
    };
    let Some(url) = crate::common::url("it-kill") else {
        return;
    };
    let backend = distsync_nats::backend(&url).await.expect("connecting");
    let session = backend
        .session(SessionOptions::with_ttl(TTL))
        .await
        .expect("a session");
    let guard = backend
        .locker(&session, Name::new(name).expect("a name"))
        .expect("a locker")
        .lock()
        .await
        .expect("locking");
    println!("held {}", guard.token().get());
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn a_killed_holders_lock_is_free_about_a_ttl_later() {
    let Some(url) = crate::common::url("it-kill") else {
        return;
    };
    let backend = distsync_nats::backend(&url).await.expect("connecting");
    let name = Name::new(format!("killed-{}", std::process::id())).expect("a name");
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["killed_holder::child_holder", "--exact", "--nocapture"])
        .env(CHILD_VAR, name.as_str())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the child holder");
    let stdout = child.stdout.take().expect("the child's stdout");
    let held = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("held ").map(str::to_owned))
    });
    let child_token: u64 = tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("the child locked in time")
        .expect("the reader")
        .expect("the child said it holds")
        .parse()
        .expect("a token");
    let session = backend
        .session(SessionOptions::with_ttl(TTL))
        .await
        .expect("a session");
    let locker = backend.locker(&session, name.clone()).expect("a locker");
    let waiting = tokio::spawn(async move { locker.lock().await });
    let probe = backend.locker(&session, name).expect("a locker");
    crate::common::until(Duration::from_secs(5), "the waiter queued", || async {
        probe.contenders().await.expect("contenders") == 2
    })
    .await;
    child.kill().expect("killing the child holder");
    let killed = tokio::time::Instant::now();
    let _ = child.wait();
    let guard = tokio::time::timeout(TTL * 3, waiting)
        .await
        .expect("the lock was freed within three TTLs")
        .expect("the waiter")
        .expect("locking");
    let after = killed.elapsed();
    eprintln!("the killed holder's lock was granted {after:?} after the kill (TTL {TTL:?})");
    // The key ends a TTL (whole seconds) after its last renewal, which was at most a
    // third of a TTL before the kill; the marker then reaches the waiter.
    assert!(
        after >= TTL / 2,
        "granted {after:?} after the kill: before the TTL"
    );
    assert!(
        after <= TTL + Duration::from_secs(2),
        "granted {after:?} after the kill"
    );
    assert!(guard.token().get() > child_token);
    guard.unlock().await.expect("unlocking");
    session.close().await.expect("closing");
}
