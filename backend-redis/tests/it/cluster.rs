//! Redis Cluster (`DISTSYNC_REDIS_CLUSTER_URL`, started by `scripts/servers.sh`;
//! skipped loudly when unset, a failure under `CI=true`): what is particular to a
//! cluster, where a session key and what the session holds live in different hash
//! slots (see `src/cluster.rs`). A session renews holds on every master, a hold gone
//! in one slot ends the session and frees what it held in the others, closing a
//! session frees every slot at once, a waiter is woken whichever node serves its
//! lock, a name's holder is read from its own slot (which a break acts on), a refused
//! try leaves no listing in its session's registry, and what a
//! cluster cannot do atomically is refused with `Unsupported` (listings across masters
//! are in `cluster_listing.rs`). The
//! conformance runner's `redis-cluster` column runs the suite and the master
//! failover cases.

use crate::support;
use distsync_core::Primitives;

use std::time::Duration;

use distsync_conformance::server_url;
use distsync_core::{Backend, Error, LockGuard, Name, SessionOptions};
use distsync_redis::redis;
use support::RENEWED_TTL;

/// Names spread over the cluster's slots (hence its masters).
const NAMES: usize = 12;

pub(crate) fn cluster_url() -> Option<String> {
    server_url("DISTSYNC_REDIS_CLUSTER_URL")
}

/// `url` with a namespace of this test's own and no replica acknowledgement (these
/// tests fail nothing over).
/// The sessions' TTL: long beside a test, so that nothing it frees is freed by an
/// expiry, and within the default bound on session TTLs of a Redis without
/// persistence (15 s).
const SESSION_TTL: Duration = Duration::from_secs(15);

pub(crate) fn own_namespace(url: &str, tag: &str) -> String {
    let base = url.split_once('?').map_or(url, |(base, _)| base);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{base}?namespace=cluster-test-{tag}-{}-{nanos}:",
        std::process::id()
    )
}

pub(crate) fn names() -> Vec<Name> {
    (0..NAMES)
        .map(|n| Name::new(format!("spread/{n}")).unwrap())
        .collect()
}

/// A plain cluster connection to the nodes of `url`, to look at keys behind the
/// backend's back.
pub(crate) async fn raw(url: &str) -> redis::cluster_async::ClusterConnection {
    let rest = url.trim_start_matches("redis+cluster://");
    let hosts = rest.split(['?', '/']).next().unwrap();
    let nodes: Vec<String> = hosts.split(',').map(|h| format!("redis://{h}")).collect();
    redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

async fn exists(conn: &mut redis::cluster_async::ClusterConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .unwrap()
        == 1
}

pub(crate) async fn lock_all(
    backend: &distsync_redis::RedisBackend,
    session: &distsync_core::Session,
) -> Vec<LockGuard> {
    let mut guards = Vec::new();
    for name in names() {
        guards.push(backend.locker(session, name).unwrap().lock().await.unwrap());
    }
    guards
}

/// Every name can be taken by another session now (tries, no waiting).
async fn all_free(backend: &distsync_redis::RedisBackend) -> bool {
    let other = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(5)))
        .await
        .unwrap();
    let mut free = true;
    for name in names() {
        match backend
            .locker(&other, name)
            .unwrap()
            .try_lock()
            .await
            .unwrap()
        {
            Some(guard) => guard.unlock().await.unwrap(),
            None => free = false,
        }
    }
    other.close().await.unwrap();
    free
}

/// Polls `check` every 50 ms until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_session_renews_its_holds_on_every_master() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "renew");
    let backend = distsync_redis::backend(&url).await.unwrap();
    let ttl = RENEWED_TTL;
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let guards = lock_all(&backend, &session).await;
    let mut conn = raw(&url).await;
    // Four TTLs: every entry key lives only as long as renewals reach its slot.
    tokio::time::sleep(4 * ttl).await;
    assert!(!session.is_lost(), "the session was lost while renewing");
    for guard in &guards {
        assert!(
            exists(&mut conn, guard.key()).await,
            "{} expired",
            guard.key()
        );
    }
    assert!(
        !all_free(&backend).await,
        "another session took a held name"
    );
    for guard in guards {
        guard.unlock().await.unwrap();
    }
    assert!(all_free(&backend).await);
    session.close().await.unwrap();
}

#[tokio::test]
async fn a_hold_gone_in_one_slot_ends_the_session_and_frees_the_others() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "gone");
    let backend = distsync_redis::backend(&url).await.unwrap();
    // A long TTL: the names must come free through the loss, not through expiry.
    let ttl = SESSION_TTL;
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let guards = lock_all(&backend, &session).await;
    let mut conn = raw(&url).await;
    redis::cmd("DEL")
        .arg(guards[0].key())
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    // The next renewal (every TTL/3) finds the key gone.
    tokio::time::timeout(ttl / 2, session.lost())
        .await
        .expect("lost() within half the TTL");
    assert!(
        eventually(Duration::from_secs(10), || all_free(&backend)).await,
        "the names the lost session held in other slots were not released"
    );
    drop(guards);
}

/// Holds taken and released while the session's renewals are on their way: a renewal
/// that finds a key gone or taken by the next holder because its hold was released
/// after the renewal listed it is no loss, and the session lives on. Two sessions pass
/// every name back and forth for four TTLs, so that nearly every renewal races a
/// release; a hold lost for real is `a_hold_gone_in_one_slot_ends_the_session_...`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_released_while_a_renewal_is_on_its_way_keep_the_session() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "churn");
    let backend = distsync_redis::backend(&url).await.unwrap();
    let ttl = RENEWED_TTL;
    let mut sessions = Vec::new();
    for _ in 0..2 {
        sessions.push(
            backend
                .session(SessionOptions::with_ttl(ttl))
                .await
                .unwrap(),
        );
    }
    let until = tokio::time::Instant::now() + 4 * ttl;
    let mut tasks = tokio::task::JoinSet::new();
    for session in &sessions {
        for name in names() {
            let locker = backend.locker(session, name).unwrap();
            tasks.spawn(async move {
                let mut cycles = 0_u64;
                while tokio::time::Instant::now() < until {
                    locker.lock().await?.unlock().await?;
                    cycles += 1;
                }
                Ok::<_, Error>(cycles)
            });
        }
    }
    let mut cycles = 0;
    while let Some(joined) = tasks.join_next().await {
        cycles += joined
            .unwrap()
            .expect("a lock or unlock failed while the holds came and went");
    }
    for session in sessions {
        assert!(
            !session.is_lost(),
            "a session was lost while its holds came and went ({cycles} cycles)"
        );
        session.close().await.unwrap();
    }
}

#[tokio::test]
async fn closing_a_session_frees_every_slot_at_once() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "close");
    let backend = distsync_redis::backend(&url).await.unwrap();
    let session = backend
        .session(SessionOptions::with_ttl(SESSION_TTL))
        .await
        .unwrap();
    let guards = lock_all(&backend, &session).await;
    let keys: Vec<String> = guards.iter().map(|g| g.key().to_owned()).collect();
    drop(guards);
    session.close().await.unwrap();
    let mut conn = raw(&url).await;
    for key in &keys {
        assert!(!exists(&mut conn, key).await, "{key} outlived the session");
    }
    assert!(all_free(&backend).await);
}

#[tokio::test]
async fn a_waiter_is_woken_whichever_node_serves_its_lock() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "wake");
    let holder_backend = distsync_redis::backend(&url).await.unwrap();
    let waiter_backend = distsync_redis::backend(&url).await.unwrap();
    // With a 30 s TTL, a waiter that was not woken would re-check only after it.
    let options = SessionOptions::with_ttl(SESSION_TTL);
    let holder = holder_backend.session(options.clone()).await.unwrap();
    let waiter = waiter_backend.session(options).await.unwrap();
    for name in names() {
        let guard = holder_backend
            .locker(&holder, name.clone())
            .unwrap()
            .lock()
            .await
            .unwrap();
        let locker = waiter_backend.locker(&waiter, name.clone()).unwrap();
        let waiting = tokio::spawn(async move { locker.lock().await });
        // The waiter is in line (its entry counts) before the release.
        let line = holder_backend.locker(&holder, name.clone()).unwrap();
        assert!(
            eventually(Duration::from_secs(10), || async {
                line.contenders().await.unwrap() == 2
            })
            .await
        );
        guard.unlock().await.unwrap();
        let granted = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap_or_else(|_| panic!("the waiter on {name} was not woken"))
            .unwrap()
            .unwrap();
        granted.unlock().await.unwrap();
    }
    holder.close().await.unwrap();
    waiter.close().await.unwrap();
}

#[tokio::test]
async fn what_spans_two_slots_is_declared_and_refused() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "declared");
    let backend = distsync_redis::backend(&url).await.unwrap();
    let capabilities = backend.capabilities();
    assert!(!capabilities.guarded_writes);
    assert!(
        !capabilities.survives_failover,
        "no replica acknowledgement asked"
    );
    // Without acknowledgement, tokens keep growing across a promotion only by the
    // lock-delay, on by default there, and gone with `max_session_ttl=off`.
    assert!(capabilities.fencing, "the default lock-delay");
    let off = distsync_redis::backend(&format!("{url}&max_session_ttl=off"))
        .await
        .unwrap();
    assert!(
        !off.capabilities().fencing,
        "no acknowledgement, no lock-delay"
    );
    let acknowledged = distsync_redis::backend(&format!("{url}&wait_replicas=1"))
        .await
        .unwrap();
    assert!(acknowledged.capabilities().survives_failover);
    assert!(acknowledged.capabilities().fencing);
    let session = backend
        .session(SessionOptions::with_ttl(Duration::from_secs(5)))
        .await
        .unwrap();
    let guard = backend
        .locker(&session, names()[0].clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert!(matches!(
        guard.put_if_held("k", "v").await,
        Err(Error::Unsupported { .. })
    ));
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
}

/// Every name held through one session of one client (`owner`), beside a second
/// client (`other`), in a namespace of the test's own.
struct Held {
    url: String,
    /// Kept: its connections serve the session's renewals.
    _owner: distsync_redis::RedisBackend,
    other: distsync_redis::RedisBackend,
    session: distsync_core::Session,
    guards: Vec<LockGuard>,
}

impl Held {
    /// `None` (the test is skipped) without a cluster.
    async fn all(tag: &str) -> Option<Self> {
        let url = own_namespace(&cluster_url()?, tag);
        let owner = distsync_redis::backend(&url).await.unwrap();
        let other = distsync_redis::backend(&url).await.unwrap();
        let session = owner
            .session(SessionOptions::with_ttl(SESSION_TTL))
            .await
            .unwrap();
        let guards = lock_all(&owner, &session).await;
        Some(Self {
            url,
            _owner: owner,
            other,
            session,
            guards,
        })
    }
}

#[tokio::test]
async fn a_revoke_from_another_client_frees_every_slot_at_once() {
    let Some(held) = Held::all("revoke").await else {
        return;
    };
    let keys: Vec<String> = held.guards.iter().map(|g| g.key().to_owned()).collect();
    // The other client knows only the session's id: the store's registry lists the
    // holds, which live in other slots than the session key.
    held.other.revoke_session(held.session.id()).await.unwrap();
    let mut conn = raw(&held.url).await;
    for key in &keys {
        assert!(!exists(&mut conn, key).await, "{key} outlived the revoke");
    }
    assert!(all_free(&held.other).await);
    tokio::time::timeout(Duration::from_secs(10), held.session.lost())
        .await
        .expect("the owner learns of the revoke");
}

#[tokio::test]
async fn a_names_holder_is_read_from_its_slot_and_broken_from_another_client() {
    let Some(held) = Held::all("break").await else {
        return;
    };
    // Every name's line is read from its own slot, whichever master serves it.
    for (name, guard) in names().iter().zip(&held.guards) {
        let report = held.other.status_of(name).await.unwrap();
        let line = report
            .line(distsync_core::status::LineKind::Lock, name.as_str())
            .unwrap_or_else(|| panic!("no line for {name}: {report:?}"));
        assert_eq!(line.holders.len(), 1, "{name}: {line:?}");
        assert_eq!(
            line.holders[0].session.as_deref(),
            Some(held.session.id().to_string().as_str()),
            "{name}"
        );
        assert_eq!(line.holders[0].token, Some(guard.token()), "{name}");
        assert_eq!(line.holders[0].key, guard.key(), "{name}");
    }
    let name = &names()[3];
    let broken = held
        .other
        .break_lock(name)
        .await
        .unwrap()
        .expect("the lock is held");
    assert_eq!(broken.session, held.session.id());
    assert_eq!(broken.token, Some(held.guards[3].token()));
    tokio::time::timeout(Duration::from_secs(10), held.session.lost())
        .await
        .expect("the owner learns of the break");
    // The break ended the session: every name it held is free.
    assert!(all_free(&held.other).await);
    assert_eq!(held.other.break_lock(name).await.unwrap(), None);
    assert!(held.other.status_of(name).await.unwrap().lines.is_empty());
}

/// The id of the master serving `key`'s slot (`CLUSTER MYID` routed there).
pub(crate) async fn master_of(
    conn: &mut redis::cluster_async::ClusterConnection,
    key: &str,
) -> String {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::Master,
    )));
    let id = conn
        .route_command(redis::cmd("CLUSTER").arg("MYID").clone(), route)
        .await
        .unwrap();
    redis::from_redis_value(id).unwrap()
}

/// Stops the master serving `key` from running writes (scripts included) for `ms`.
async fn pause_writes_of(conn: &mut redis::cluster_async::ClusterConnection, key: &str, ms: u64) {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::Master,
    )));
    conn.route_command(
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(ms)
            .arg("WRITE")
            .clone(),
        route,
    )
    .await
    .unwrap();
}

/// The session's health once it is healthy with a deadline later than `after`.
async fn renewed_past(
    health: &mut distsync_core::HealthWatch,
    after: std::time::Instant,
) -> std::time::Instant {
    let wait = async {
        loop {
            if let distsync_core::SessionHealth::Healthy { valid_until } = health.current() {
                if valid_until > after {
                    return valid_until;
                }
            }
            assert!(
                !matches!(health.changed().await, distsync_core::SessionHealth::Lost),
                "the session was lost"
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("no renewal within 10 s")
}

/// A take still in flight when a renewal is sent: the renewal cannot renew the key
/// (no reply has listed it yet), so the session may count from the take's send time
/// only if the store expires the taken key at least one TTL after that. The session
/// key's master pauses its writes just before the take and the renewal that follows,
/// so both answer only once it resumes (the take waits for its listing in the session
/// registry, in the session key's slot), while the take itself runs at once on the
/// lock's master. The take is sent well after the session's last renewal, more than
/// the margin later, where an entry expiring with that renewal's count fell short of
/// the deadline the renewal then gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_sent_during_a_take_never_outlasts_the_taken_key() {
    let Some(url) = cluster_url() else { return };
    // Without the lock-delay: what is measured is the take's expiry against the
    // renewal, and the lock-delay's checks add round trips the timing has no room for.
    let url = format!("{}&max_session_ttl=off", own_namespace(&url, "inflight"));
    let namespace = url
        .split_once("namespace=")
        .and_then(|(_, rest)| rest.split('&').next())
        .unwrap()
        .to_owned();
    let backend = distsync_redis::backend(&url).await.unwrap();
    let mut conn = raw(&url).await;
    // Renewals every 2 s. The take goes 1.7 s after a renewal, 1.1 s more than the
    // margin; the pause ends 1 s later, 1.3 s before the renewal after the next.
    let ttl = Duration::from_secs(6);
    let margin = Duration::from_millis(600);
    let interval = ttl / 3;
    let early = Duration::from_millis(300);
    let pause = Duration::from_secs(1);
    let session = backend
        .session(SessionOptions::with_ttl(ttl).margin(margin))
        .await
        .unwrap();
    let session_key = format!("{{{namespace}session:{}}}", session.id().0);
    let session_master = master_of(&mut conn, &session_key).await;
    let mut name = None;
    for n in 0..64 {
        let candidate = format!("inflight/{n}");
        if master_of(&mut conn, &format!("{{{namespace}{candidate}}}")).await != session_master {
            name = Some(Name::new(candidate).unwrap());
            break;
        }
    }
    let locker = backend
        .locker(&session, name.expect("no name served by another master"))
        .unwrap();
    let mut health = session.health_watch();
    // A loaded machine may miss the timing the case needs: such an attempt tells
    // nothing either way, and the next one tries again.
    for _attempt in 0..5 {
        // Just after a renewal: the next one is sent one interval after this one was.
        let deadline = renewed_past(&mut health, session.valid_until().unwrap()).await;
        let renewal_sent = tokio::time::Instant::from_std(deadline - (ttl - margin));
        let next_renewal = renewal_sent + interval;
        tokio::time::sleep_until(next_renewal - early).await;
        pause_writes_of(
            &mut conn,
            &session_key,
            u64::try_from(pause.as_millis()).unwrap(),
        )
        .await;
        let taking = tokio::time::Instant::now();
        let guard = locker.try_lock().await.unwrap().expect("the lock is free");
        let deadline = renewed_past(&mut health, deadline).await;
        let asked = std::time::Instant::now();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(guard.key())
            .query_async(&mut conn)
            .await
            .unwrap();
        guard.unlock().await.unwrap();
        if taking >= next_renewal || asked >= (next_renewal + interval).into_std() {
            continue;
        }
        let expiry = asked + Duration::from_millis(u64::try_from(pttl).unwrap());
        assert!(
            deadline <= expiry,
            "the session's deadline is {:?} after the store's expiry of the key it holds",
            deadline.duration_since(expiry)
        );
        session.close().await.unwrap();
        return;
    }
    panic!("five attempts missed their timing: the machine is too loaded for this test");
}

/// A consumer waiting for an item keeps its session: its receive counts as a take in
/// flight for the session's renewals only while its script runs, not while it waits
/// for a wake-up, so the renewals meanwhile extend the session's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_waiting_for_an_item_keeps_its_session() {
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "waiting");
    let backend = distsync_redis::backend(&url).await.unwrap();
    let ttl = RENEWED_TTL;
    let session = backend
        .session(SessionOptions::with_ttl(ttl))
        .await
        .unwrap();
    let name = Name::new("waiting/consumer").unwrap();
    let queue = backend.queue(name.clone()).unwrap();
    let receiving = {
        let session = session.clone();
        tokio::spawn(async move { queue.receive(&session).await })
    };
    // Four TTLs of waiting, renewals every TTL/3.
    assert!(
        tokio::time::timeout(4 * ttl, session.lost()).await.is_err(),
        "the session of a consumer waiting for an item was lost"
    );
    backend
        .queue(name)
        .unwrap()
        .enqueue(distsync_core::Bytes::from_static(b"item"))
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), receiving)
        .await
        .expect("the waiting consumer got no item")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.item().as_ref(), b"item");
    delivery.ack().await.unwrap();
    session.close().await.unwrap();
}

/// Tries refused because another session holds the name leave no listing in the trying
/// session's registry: each take lists its key there, beside the take (so that a
/// revoke from any client finds it), and a refused one unlists it again, a fair or
/// read-write lock's entry in the background, the unfair lock's holder key before the
/// try answers. So do a semaphore joiner that names another permit count and an entry
/// over a double barrier's count. A session that kept polling `try_lock` would
/// otherwise grow its registry by one entry per refused try until it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tries_leave_no_registry_entry() {
    const TRIES: usize = 20;
    let Some(url) = cluster_url() else { return };
    let url = own_namespace(&url, "refused");
    let namespace = url
        .split_once("namespace=")
        .and_then(|(_, rest)| rest.split('&').next())
        .unwrap()
        .to_owned();
    let backend = distsync_redis::backend(&url).await.unwrap();
    let mut conn = raw(&url).await;
    let options = SessionOptions::with_ttl(SESSION_TTL);
    let holding = backend.session(options.clone()).await.unwrap();
    let trying = backend.session(options).await.unwrap();
    let lock = Name::new("refused/lock").unwrap();
    let rw = Name::new("refused/rw").unwrap();
    let unfair = Name::new("refused/unfair").unwrap();
    let permits = Name::new("refused/permits").unwrap();
    let barrier = Name::new("refused/barrier").unwrap();
    let held_lock = backend
        .locker(&holding, lock.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let held_rw = backend
        .rwlock(&holding, rw.clone())
        .unwrap()
        .write()
        .await
        .unwrap();
    let held_unfair = backend
        .unfair_locker(&holding, unfair.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let two = std::num::NonZeroUsize::new(2).unwrap();
    let held_permit = backend
        .semaphore(&holding, permits.clone(), two)
        .unwrap()
        .acquire()
        .await
        .unwrap();
    // A double barrier of one: the holder's entry fills it, and passes at once.
    let one = std::num::NonZeroUsize::new(1).unwrap();
    let full_barrier = backend
        .double_barrier(&holding, barrier.clone(), one)
        .unwrap();
    full_barrier.enter().await.unwrap();
    let registry_of = |session: &distsync_core::Session| {
        format!("{{{namespace}session:{}}}:held", session.id().0)
    };
    assert_eq!(
        hash_len(&mut conn, &registry_of(&holding)).await,
        5,
        "the holds are not listed in their session's registry: nothing tested"
    );
    let unfair_holder = format!("{{{namespace}refused/unfair}}:lock:u");
    assert!(
        hash_has(&mut conn, &registry_of(&holding), &unfair_holder).await,
        "the unfair hold is listed under another key: nothing tested"
    );
    let locker = backend.locker(&trying, lock).unwrap();
    let rwlock = backend.rwlock(&trying, rw).unwrap();
    let unfair_locker = backend.unfair_locker(&trying, unfair).unwrap();
    // A joiner that names another permit count is refused too, waiting or not.
    let other_count = backend
        .semaphore(&trying, permits, std::num::NonZeroUsize::new(3).unwrap())
        .unwrap();
    // An entry over a double barrier's count is refused too.
    let over_count = backend.double_barrier(&trying, barrier, one).unwrap();
    let registry = registry_of(&trying);
    for _ in 0..TRIES {
        assert!(locker.try_lock().await.unwrap().is_none());
        assert!(rwlock.try_read().await.unwrap().is_none());
        assert!(rwlock.try_write().await.unwrap().is_none());
        assert!(unfair_locker.try_lock().await.unwrap().is_none());
        assert!(matches!(
            other_count.try_acquire().await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            other_count.acquire().await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            over_count.enter().await,
            Err(Error::TooManyParticipants { .. })
        ));
        assert!(
            !hash_has(&mut conn, &registry, &unfair_holder).await,
            "a refused unfair try left the holder key listed"
        );
    }
    // The fair side's unlistings run in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = hash_len(&mut conn, &registry).await;
        if listed == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{listed} refused tries stayed listed in their session's registry"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    held_lock.unlock().await.unwrap();
    held_rw.unlock().await.unwrap();
    held_unfair.unlock().await.unwrap();
    held_permit.release().await.unwrap();
    full_barrier.leave().await.unwrap();
    let guard = locker.try_lock().await.unwrap().expect("the lock is free");
    guard.unlock().await.unwrap();
    holding.close().await.unwrap();
    trying.close().await.unwrap();
}

/// How many fields the hash `key` has.
async fn hash_len(conn: &mut redis::cluster_async::ClusterConnection, key: &str) -> usize {
    redis::cmd("HLEN").arg(key).query_async(conn).await.unwrap()
}

/// Whether the hash `key` has the field `field`.
pub(crate) async fn hash_has(
    conn: &mut redis::cluster_async::ClusterConnection,
    key: &str,
    field: &str,
) -> bool {
    redis::cmd("HEXISTS")
        .arg(key)
        .arg(field)
        .query_async(conn)
        .await
        .unwrap()
}
