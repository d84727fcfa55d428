//! Interop with Go: Debian's `etcdctl lock` and `etcdctl elect` (etcd's Go
//! `concurrency` package) against distsync on the same names, with no namespace.
//! They exclude each other as lockers (distsync's fair and unfair lock alike), and see
//! one leader as candidates and observers, both ways round.

use crate::common;
use distsync_core::Primitives;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use distsync_core::{Backend, LeaderInfo, LockGuard, Locker, Name, Session, SessionOptions};
use distsync_etcd::EtcdBackend;
use distsync_kv::kv::{Kv, Range};
use futures::stream::BoxStream;
use futures::StreamExt;

use common::etcdctl::{self, Etcdctl};
use common::{endpoints_of, etcd_url, eventually, unique, within};

const WAIT: Duration = Duration::from_secs(15);

struct Setup {
    backend: Arc<EtcdBackend>,
    endpoints: String,
}

async fn setup() -> Option<Setup> {
    let url = etcd_url()?;
    if !etcdctl::available() {
        return None;
    }
    let endpoints = endpoints_of(&url);
    // No namespace: etcdctl uses none.
    let backend = distsync_etcd::backend(&format!("etcd://{endpoints}"))
        .await
        .unwrap();
    assert_eq!(backend.namespace(), "");
    Some(Setup {
        backend: Arc::new(backend),
        endpoints,
    })
}

impl Setup {
    async fn session(&self) -> Session {
        self.backend
            .session(SessionOptions::with_ttl(Duration::from_secs(10)))
            .await
            .unwrap()
    }

    /// A locker of `name` on `session`: the fair lock, or with `unfair` the unfair one.
    fn locker(&self, session: &Session, name: &str, unfair: bool) -> Arc<dyn Locker> {
        let name = Name::new(name).unwrap();
        let locker = if unfair {
            self.backend.unfair_locker(session, name)
        } else {
            self.backend.locker(session, name)
        };
        Arc::from(locker.unwrap())
    }

    /// The keys under `<name>/`, oldest first.
    async fn contenders(&self, name: &str) -> Vec<(String, i64)> {
        let range = Range::prefix(format!("{name}/"));
        let mut kvs = self.backend.kv().range(range).await.unwrap().kvs;
        kvs.sort_by_key(|kv| kv.create_revision);
        kvs.into_iter()
            .map(|kv| (kv.key, kv.create_revision))
            .collect()
    }

    /// Waits until exactly `count` contenders are queued on `name`.
    async fn await_contenders(&self, name: &str, count: usize) -> Vec<(String, i64)> {
        eventually(WAIT, &format!("{count} contenders on {name}"), || async {
            let contenders = self.contenders(name).await;
            (contenders.len() == count).then_some(contenders)
        })
        .await
    }
}

fn own_key(name: &str, session: &Session) -> String {
    format!("{name}/{:x}", session.id().0)
}

async fn next_leader(
    stream: &mut BoxStream<'static, distsync_core::Result<LeaderInfo>>,
) -> LeaderInfo {
    within(WAIT, "a leader from observe()", stream.next())
        .await
        .expect("observe() does not end")
        .expect("observe() yields leaders")
}

/// Reads one leader (key line, value line) from `etcdctl elect` or `elect -l`.
async fn etcdctl_leader(process: &mut Etcdctl) -> (String, String) {
    let key = process.line(WAIT).await;
    let value = process.line(WAIT).await;
    (key, value)
}

/// `etcdctl lock <name>` holding: the process, its key and the key's create revision.
async fn etcdctl_holding(setup: &Setup, name: &str) -> (Etcdctl, String, i64) {
    let mut go = Etcdctl::spawn(&setup.endpoints, &["lock", name]);
    let go_key = go.line(WAIT).await;
    assert!(
        go_key.starts_with(&format!("{name}/")),
        "etcdctl printed {go_key:?}"
    );
    let go_revision = setup.contenders(name).await[0].1;
    (go, go_key, go_revision)
}

/// etcdctl lets go, and distsync's `waiter` on `session` holds with Go's key layout and
/// a token above Go's `go_revision`, then releases.
async fn etcdctl_lets_go(
    setup: &Setup,
    name: &str,
    session: Session,
    mut go: Etcdctl,
    go_revision: i64,
    waiter: tokio::task::JoinHandle<distsync_core::Result<LockGuard>>,
) {
    assert!(
        go.terminate(WAIT).await,
        "etcdctl unlocks and exits cleanly"
    );
    let guard = within(WAIT, "distsync to get the lock", waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(guard.key(), own_key(name, &session));
    assert!(guard.token().get() > go_revision as u64);
    assert_eq!(setup.contenders(name).await.len(), 1);
    guard.unlock().await.unwrap();
    assert!(setup.contenders(name).await.is_empty());
    session.close().await.unwrap();
}

/// `lock()` of `locker` in a task of its own.
fn waiting(locker: &Arc<dyn Locker>) -> tokio::task::JoinHandle<distsync_core::Result<LockGuard>> {
    let locker = Arc::clone(locker);
    tokio::spawn(async move { locker.lock().await })
}

/// While `etcdctl lock` holds `name`, a distsync locker of it (of the fair lock or,
/// `unfair`, the unfair one) is refused by `try_lock`, and the refused take leaves
/// nothing under the lock: only Go's key is there. Returns etcdctl, its key and
/// revision, and the locker's session and locker.
async fn refused_while_etcdctl_holds(
    setup: &Setup,
    name: &str,
    unfair: bool,
) -> (Etcdctl, String, i64, Session, Arc<dyn Locker>) {
    let (go, go_key, go_revision) = etcdctl_holding(setup, name).await;
    let session = setup.session().await;
    let locker = setup.locker(&session, name, unfair);
    assert!(
        locker.try_lock().await.unwrap().is_none(),
        "try_lock must fail while etcdctl holds the lock"
    );
    assert_eq!(
        setup.contenders(name).await,
        vec![(go_key.clone(), go_revision)],
        "a refused take writes nothing under the lock"
    );
    (go, go_key, go_revision, session, locker)
}

#[tokio::test]
async fn distsync_waits_while_etcdctl_holds_the_lock() {
    let Some(setup) = setup().await else { return };
    let name = unique("interop-lock-go-first");
    let (go, go_key, go_revision, session, locker) =
        refused_while_etcdctl_holds(&setup, &name, false).await;

    let waiter = waiting(&locker);
    let queued = setup.await_contenders(&name, 2).await;
    assert_eq!(queued[0].0, go_key, "etcdctl's key stays first");
    assert_eq!(
        queued[1].0,
        own_key(&name, &session),
        "distsync queues Go's way"
    );
    assert!(!waiter.is_finished(), "distsync must wait for etcdctl");
    etcdctl_lets_go(&setup, &name, session, go, go_revision, waiter).await;
}

/// distsync's unfair lock shares the fair lock's holder key, Go's: against a Go holder
/// it takes nothing and waits in its own line, out of the range Go reads, and holds
/// with Go's key layout once Go lets go.
#[tokio::test]
async fn distsync_unfair_waits_while_etcdctl_holds_the_lock() {
    let Some(setup) = setup().await else { return };
    let name = unique("interop-unfair-go-first");
    let (go, _, go_revision, session, locker) =
        refused_while_etcdctl_holds(&setup, &name, true).await;

    let waiter = waiting(&locker);
    eventually(WAIT, "distsync's unfair waiter counted", || async {
        (locker.contenders().await.unwrap() == 2).then_some(())
    })
    .await;
    assert_eq!(
        setup.contenders(&name).await.len(),
        1,
        "the unfair waiter stays out of the range Go reads"
    );
    assert!(!waiter.is_finished(), "distsync must wait for etcdctl");
    etcdctl_lets_go(&setup, &name, session, go, go_revision, waiter).await;
}

/// `etcdctl lock` queues behind a distsync holder, of the fair lock or (`unfair`) the
/// unfair one, whose key is Go's, and takes the lock once it is released.
async fn etcdctl_waits_while_distsync_holds(unfair: bool) {
    let Some(setup) = setup().await else { return };
    let name = unique("interop-lock-rust-first");
    let session = setup.session().await;
    let guard = setup.locker(&session, &name, unfair).lock().await.unwrap();
    assert_eq!(guard.key(), own_key(&name, &session), "Go's key layout");

    let mut go = Etcdctl::spawn(
        &setup.endpoints,
        &["lock", &name, "--", "sh", "-c", "echo acquired"],
    );
    let queued = setup.await_contenders(&name, 2).await;
    assert_eq!(queued[0].0, guard.key(), "distsync's key stays first");
    assert!(go.is_running(), "etcdctl must wait for distsync");

    guard.unlock().await.unwrap();
    assert_eq!(go.line(WAIT).await, "acquired");
    assert!(go.wait(WAIT).await, "etcdctl ran its command and unlocked");
    assert!(setup.contenders(&name).await.is_empty());
    session.close().await.unwrap();
}

#[tokio::test]
async fn etcdctl_waits_while_distsync_holds_the_lock() {
    etcdctl_waits_while_distsync_holds(false).await;
}

#[tokio::test]
async fn etcdctl_waits_while_distsync_unfair_holds_the_lock() {
    etcdctl_waits_while_distsync_holds(true).await;
}

#[tokio::test]
async fn distsync_sees_and_follows_an_etcdctl_leader() {
    let Some(setup) = setup().await else { return };
    let name = unique("interop-elect-go-first");
    let mut listener = Etcdctl::spawn(&setup.endpoints, &["elect", "-l", &name]);
    let mut go = Etcdctl::spawn(&setup.endpoints, &["elect", &name, "go-leader"]);
    let (go_key, go_value) = etcdctl_leader(&mut go).await;
    assert_eq!(go_value, "go-leader");
    assert_eq!(
        etcdctl_leader(&mut listener).await,
        (go_key.clone(), go_value)
    );

    let session = setup.session().await;
    let election = setup
        .backend
        .election(&session, Name::new(&name).unwrap())
        .unwrap();
    let leader = election.leader().await.unwrap().expect("a leader");
    assert_eq!(leader.value, Bytes::from("go-leader"));
    assert_eq!(leader.key, go_key);
    assert_eq!(leader.term.get() as i64, setup.contenders(&name).await[0].1);
    let mut observed = election.observe();
    assert_eq!(next_leader(&mut observed).await, leader);

    let candidate = setup
        .backend
        .election(&session, Name::new(&name).unwrap())
        .unwrap();
    let campaign = tokio::spawn(async move { candidate.campaign("rust-leader").await });
    setup.await_contenders(&name, 2).await;
    assert!(
        !campaign.is_finished(),
        "distsync must wait for etcdctl to resign"
    );

    assert!(
        go.terminate(WAIT).await,
        "etcdctl resigns and exits cleanly"
    );
    let leadership = within(WAIT, "distsync to be elected", campaign)
        .await
        .unwrap()
        .unwrap();
    assert!(leadership.term() > leader.term);
    let rust_key = own_key(&name, &session);
    assert_eq!(leadership.key(), rust_key);

    // Both observers see the new leader, then its proclaim.
    let seen = next_leader(&mut observed).await;
    assert_eq!(
        (seen.value, seen.term),
        (Bytes::from("rust-leader"), leadership.term())
    );
    assert_eq!(
        etcdctl_leader(&mut listener).await,
        (rust_key.clone(), "rust-leader".to_owned())
    );
    leadership
        .proclaim(Bytes::from("rust-proclaimed"))
        .await
        .unwrap();
    assert_eq!(
        next_leader(&mut observed).await.value,
        Bytes::from("rust-proclaimed")
    );
    assert_eq!(
        etcdctl_leader(&mut listener).await,
        (rust_key, "rust-proclaimed".to_owned())
    );

    leadership.resign().await.unwrap();
    assert!(election.leader().await.unwrap().is_none());
    assert!(listener.terminate(WAIT).await);
    session.close().await.unwrap();
}

#[tokio::test]
async fn etcdctl_sees_and_follows_a_distsync_leader() {
    let Some(setup) = setup().await else { return };
    let name = unique("interop-elect-rust-first");
    let session = setup.session().await;
    let election = setup
        .backend
        .election(&session, Name::new(&name).unwrap())
        .unwrap();
    let leadership = election.campaign("rust-leader").await.unwrap();
    let rust_key = own_key(&name, &session);

    let mut listener = Etcdctl::spawn(&setup.endpoints, &["elect", "-l", &name]);
    assert_eq!(
        etcdctl_leader(&mut listener).await,
        (rust_key.clone(), "rust-leader".to_owned())
    );

    let mut go = Etcdctl::spawn(&setup.endpoints, &["elect", &name, "go-leader"]);
    let queued = setup.await_contenders(&name, 2).await;
    assert_eq!(queued[0].0, rust_key, "distsync's candidacy stays first");
    assert!(go.is_running());

    leadership
        .proclaim(Bytes::from("rust-proclaimed"))
        .await
        .unwrap();
    assert_eq!(
        etcdctl_leader(&mut listener).await,
        (rust_key, "rust-proclaimed".to_owned())
    );

    let mut observed = election.observe();
    assert_eq!(
        next_leader(&mut observed).await.value,
        Bytes::from("rust-proclaimed")
    );
    let rust_term = leadership.term();
    leadership.resign().await.unwrap();

    let (go_key, go_value) = etcdctl_leader(&mut go).await;
    assert_eq!(go_value, "go-leader");
    assert_eq!(go_key, queued[1].0);
    assert_eq!(
        etcdctl_leader(&mut listener).await,
        (go_key.clone(), go_value)
    );
    let seen = next_leader(&mut observed).await;
    assert_eq!(
        (&seen.value, seen.key.as_str()),
        (&Bytes::from("go-leader"), go_key.as_str())
    );
    assert!(seen.term > rust_term);
    assert_eq!(election.leader().await.unwrap(), Some(seen));

    assert!(go.terminate(WAIT).await);
    assert!(listener.terminate(WAIT).await);
    session.close().await.unwrap();
}
