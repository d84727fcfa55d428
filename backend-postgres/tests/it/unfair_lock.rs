//! The unfair lock (`LockOptions::unfair`) on PostgreSQL, against the server named by
//! `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`):
//! exclusion and growing tokens under contention (alone and mixed with the fair lock),
//! the try, a revoked holder, cancelled waiters, one wake-up per release at 100 waiters,
//! the status report, breaking and guarded writes. The race with a renewal in flight is
//! in `renewal_race` (those tests run alone).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_conformance::server_url;
use distsync_core::status::LineKind;
use distsync_core::{Coordinator, Error, LockGuard, LockOptions, Locker, Session};
use sqlx::PgPool;
use tokio::time::Instant;

use crate::support::{unique, within};

/// How long a step that should be prompt may take.
const PROMPT: Duration = Duration::from_secs(10);

/// A coordinator over the test server, with a pool and the schema for reading its rows.
struct Store {
    coordinator: Coordinator,
    pool: PgPool,
    schema: String,
}

async fn connect() -> Option<Store> {
    let url = server_url("DISTSYNC_POSTGRES_URL")?;
    let backend = distsync_postgres::backend(&url).await.unwrap();
    let pool = backend.pool().clone();
    let schema = format!("\"{}\"", backend.schema());
    let coordinator = Coordinator::new(backend);
    assert!(coordinator.capabilities().unfair_lock);
    Some(Store {
        coordinator,
        pool,
        schema,
    })
}

impl Store {
    fn unfair(&self, session: &Session, name: &str) -> Arc<dyn Locker> {
        self.coordinator
            .locker_with(session, name, LockOptions::new().unfair())
            .unwrap()
    }

    /// The unfair waiter rows of `name`, live or not.
    async fn waiter_rows(&self, name: &str) -> i64 {
        sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {s}.unfair_waiters u JOIN {s}.lock_names n ON n.id = u.name_id \
              WHERE n.kind = 'lock' AND n.name = $1",
            s = self.schema
        ))
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Waits (bounded) until `locker` counts `n` contenders.
    async fn until_contenders(&self, locker: &dyn Locker, n: usize) {
        let deadline = Instant::now() + PROMPT;
        loop {
            let now = locker.contenders().await.unwrap();
            if now == n {
                return;
            }
            assert!(Instant::now() < deadline, "{now} contenders, not {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits (bounded) until `name` has `n` unfair waiter rows.
    async fn until_waiter_rows(&self, name: &str, n: i64) {
        let deadline = Instant::now() + PROMPT;
        loop {
            let now = self.waiter_rows(name).await;
            if now == n {
                return;
            }
            assert!(Instant::now() < deadline, "{now} waiter rows, not {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Contenders cycling one name: each checks under the lock that nobody else is inside
/// and records its token; the tokens, in the order the holds came, strictly increase.
async fn contend(lockers: Vec<Arc<dyn Locker>>, cycles: usize) {
    let inside = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for locker in lockers {
        let inside = Arc::clone(&inside);
        let tokens = Arc::clone(&tokens);
        tasks.push(tokio::spawn(async move {
            for _ in 0..cycles {
                let guard = within(PROMPT, "a contended lock", locker.lock())
                    .await
                    .unwrap();
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                tokens.lock().unwrap().push(guard.token().get());
                tokio::task::yield_now().await;
                inside.store(false, Ordering::SeqCst);
                guard.unlock().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let tokens = tokens.lock().unwrap();
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "tokens did not strictly increase: {tokens:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unfair_contenders_exclude_each_other_and_tokens_grow() {
    let Some(store) = connect().await else { return };
    let other = connect().await.unwrap();
    let name = unique("unfair-exclusion").to_string();
    let mut sessions = Vec::new();
    let mut lockers = Vec::new();
    for i in 0..4 {
        let side = if i % 2 == 0 { &store } else { &other };
        let session = side.coordinator.session().await.unwrap();
        lockers.push(side.unfair(&session, &name));
        sessions.push(session);
    }
    contend(lockers, 40).await;
    for session in sessions {
        session.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fair_and_unfair_contenders_of_one_name_exclude_each_other() {
    let Some(store) = connect().await else { return };
    let name = unique("unfair-mixed").to_string();
    let mut sessions = Vec::new();
    let mut lockers = Vec::new();
    for i in 0..4 {
        let session = store.coordinator.session().await.unwrap();
        lockers.push(if i % 2 == 0 {
            store.unfair(&session, &name)
        } else {
            store.coordinator.locker(&session, &name).unwrap()
        });
        sessions.push(session);
    }
    contend(lockers, 40).await;
    for session in sessions {
        session.close().await.unwrap();
    }
}

/// A fair holder keeps an unfair taker out and wakes it when it leaves; an unfair
/// holder does the same to a fair taker; the tokens grow across both.
#[tokio::test(flavor = "multi_thread")]
async fn fair_and_unfair_hand_the_name_to_each_other() {
    let Some(store) = connect().await else { return };
    let name = unique("unfair-hand").to_string();
    let a = store.coordinator.session().await.unwrap();
    let b = store.coordinator.session().await.unwrap();
    let fair = store.coordinator.locker(&a, &name).unwrap();
    let unfair = store.unfair(&b, &name);

    let held = fair.lock().await.unwrap();
    assert!(
        unfair.try_lock().await.unwrap().is_none(),
        "unfair try past a fair holder"
    );
    let waiting = tokio::spawn({
        let unfair = Arc::clone(&unfair);
        async move { unfair.lock().await }
    });
    store.until_waiter_rows(&name, 1).await;
    assert_eq!(unfair.contenders().await.unwrap(), 2);
    let first = held.token();
    held.unlock().await.unwrap();
    let held = within(PROMPT, "the unfair taker", waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(held.token() > first);
    assert_eq!(
        unfair.wakeups(),
        1,
        "the release woke the unfair waiter once"
    );

    assert!(
        fair.try_lock().await.unwrap().is_none(),
        "fair try past an unfair holder"
    );
    let waiting = tokio::spawn({
        let fair = Arc::clone(&fair);
        async move { fair.lock().await }
    });
    store.until_contenders(unfair.as_ref(), 2).await;
    let second = held.token();
    held.unlock().await.unwrap();
    let held = within(PROMPT, "the fair taker", waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(held.token() > second);
    held.unlock().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn try_lock_takes_a_free_lock_only_and_guarded_writes_follow_the_hold() {
    let Some(store) = connect().await else { return };
    let name = unique("unfair-try").to_string();
    let a = store.coordinator.session().await.unwrap();
    let b = store.coordinator.session().await.unwrap();
    let first = store.unfair(&a, &name);
    let second = store.unfair(&b, &name);
    assert_eq!(first.contenders().await.unwrap(), 0, "a name never locked");

    let held = first.try_lock().await.unwrap().expect("a free lock");
    assert!(
        second.try_lock().await.unwrap().is_none(),
        "a held lock was taken"
    );
    assert_eq!(
        store.waiter_rows(&name).await,
        0,
        "a try registered a waiter"
    );
    assert_eq!(second.contenders().await.unwrap(), 1);
    let key = format!("{name}/value");
    held.put_if_held(&key, "first").await.unwrap();
    let token = held.token();
    held.unlock().await.unwrap();

    let held = second.try_lock().await.unwrap().expect("a released lock");
    assert!(held.token() > token);
    held.put_if_held(&key, "second").await.unwrap();
    store
        .coordinator
        .backend()
        .revoke_session(b.id())
        .await
        .unwrap();
    within(PROMPT, "lost() after the revocation", held.lost()).await;
    assert!(matches!(
        held.put_if_held(&key, "stale").await,
        Err(Error::NotHeld)
    ));
    assert_eq!(first.wakeups() + second.wakeups(), 0, "a try was woken");
    a.close().await.unwrap();
}

/// A holder whose session is revoked loses the lock (`lost()`), and the waiter gets it.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_holder_frees_the_lock_and_learns_it() {
    let Some(store) = connect().await else { return };
    let name = unique("unfair-revoke").to_string();
    let a = store.coordinator.session().await.unwrap();
    let b = store.coordinator.session().await.unwrap();
    let held = store.unfair(&a, &name).lock().await.unwrap();
    let waiter = store.unfair(&b, &name);
    let waiting = tokio::spawn({
        let waiter = Arc::clone(&waiter);
        async move { waiter.lock().await }
    });
    store.until_waiter_rows(&name, 1).await;
    store
        .coordinator
        .backend()
        .revoke_session(a.id())
        .await
        .unwrap();
    within(PROMPT, "lost() after the revocation", held.lost()).await;
    let taken = within(PROMPT, "the waiter", waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(taken.token() > held.token());
    assert!(
        waiter.wakeups() >= 1,
        "the waiter was granted without a wake-up"
    );
    taken.unlock().await.unwrap();
    b.close().await.unwrap();
}

/// Waiters that leave (a dropped wait, a revoked session) leave nothing behind: the
/// remaining waiter becomes head and is woken by the next release.
#[tokio::test(flavor = "multi_thread")]
async fn waiters_that_leave_leave_nothing_and_the_next_is_woken() {
    let Some(store) = connect().await else { return };
    let name = unique("unfair-cancel").to_string();
    let holder = store.coordinator.session().await.unwrap();
    let dropped = store.coordinator.session().await.unwrap();
    let revoked = store.coordinator.session().await.unwrap();
    let last = store.coordinator.session().await.unwrap();
    let held = store.unfair(&holder, &name).lock().await.unwrap();
    let mut tasks = Vec::new();
    for (i, session) in [&dropped, &revoked, &last].into_iter().enumerate() {
        let locker = store.unfair(session, &name);
        tasks.push((
            Arc::clone(&locker),
            tokio::spawn(async move { locker.lock().await }),
        ));
        // One at a time, so that they are registered in this order.
        store
            .until_waiter_rows(&name, i64::try_from(i).unwrap() + 1)
            .await;
    }
    let (last_locker, last_task) = tasks.pop().unwrap();
    let (_, revoked_task) = tasks.pop().unwrap();
    let (_, dropped_task) = tasks.pop().unwrap();

    dropped_task.abort();
    assert!(dropped_task.await.unwrap_err().is_cancelled());
    store.until_waiter_rows(&name, 2).await;
    store
        .coordinator
        .backend()
        .revoke_session(revoked.id())
        .await
        .unwrap();
    let revoked_result = within(PROMPT, "the revoked waiter", revoked_task)
        .await
        .unwrap();
    assert!(
        matches!(revoked_result, Err(Error::SessionLost)),
        "{revoked_result:?}"
    );
    store.until_waiter_rows(&name, 1).await;
    assert_eq!(last_locker.contenders().await.unwrap(), 2);

    held.unlock().await.unwrap();
    let taken = within(PROMPT, "the last waiter", last_task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last_locker.wakeups(), 1, "one wake-up for one release");
    assert_eq!(store.waiter_rows(&name).await, 0);
    assert_eq!(last_locker.contenders().await.unwrap(), 1);
    taken.unlock().await.unwrap();
    // The dropped waiter's withdrawal left the lock free for a try.
    let again = store.unfair(&dropped, &name).try_lock().await.unwrap();
    assert!(
        again.is_some(),
        "the lock is not free after its waiters left"
    );
    for session in [holder, dropped, last] {
        session.close().await.unwrap();
    }
}

/// 100 waiters and K releases: each release wakes the head only, which takes the lock;
/// the wake-ups summed over the handles stay within one per release.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_wakes_one_of_100_waiters() {
    const WAITERS: usize = 100;
    const RELEASES: u64 = 10;
    let Some(store) = connect().await else { return };
    let name = unique("unfair-herd").to_string();
    let holder = store.coordinator.session().await.unwrap();
    let mut current = store.unfair(&holder, &name).lock().await.unwrap();
    let mut sessions = Vec::new();
    for _ in 0..10 {
        sessions.push(store.coordinator.session().await.unwrap());
    }
    let (granted, mut grants) = tokio::sync::mpsc::unbounded_channel::<LockGuard>();
    let mut lockers = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..WAITERS {
        let locker = store.unfair(&sessions[i % sessions.len()], &name);
        lockers.push(Arc::clone(&locker));
        let granted = granted.clone();
        tasks.push(tokio::spawn(async move {
            let guard = locker.lock().await.unwrap();
            let _ = granted.send(guard);
        }));
    }
    store
        .until_waiter_rows(&name, i64::try_from(WAITERS).unwrap())
        .await;
    for _ in 0..RELEASES {
        current.unlock().await.unwrap();
        current = within(PROMPT, "a grant after a release", grants.recv())
            .await
            .unwrap();
    }
    let wakeups: u64 = lockers.iter().map(|locker| locker.wakeups()).sum();
    println!("unfair lock, {WAITERS} waiters: {wakeups} wake-ups for {RELEASES} releases");
    assert!(
        wakeups <= RELEASES,
        "{wakeups} wake-ups for {RELEASES} releases at {WAITERS} waiters (a herd)"
    );
    current.unlock().await.unwrap();
    for task in tasks {
        task.abort();
    }
    for session in sessions {
        session.close().await.unwrap();
    }
    holder.close().await.unwrap();
}

/// A waiter behind a solo holder (one that holds in its name's row, in no line) leaves it
/// there, and is woken when the holder's session ends with no release: the end of a
/// session deletes no entry of that holder, so no line's trigger tells the waiter, and
/// the holder's lease (ten minutes) is far beyond the bound of the wait.
#[tokio::test(flavor = "multi_thread")]
async fn a_solo_holders_session_end_wakes_its_unfair_waiter() {
    let Some(store) = connect().await else { return };
    let name = unique("unfair-solo-end").to_string();
    let s = &store.schema;
    // The holder, written as the solo take writes it, by a session no process renews.
    let holder: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO {s}.sessions (ttl_ms, expires_at) \
         VALUES (600000, clock_timestamp() + interval '10 minutes') RETURNING id"
    ))
    .fetch_one(&store.pool)
    .await
    .unwrap();
    let k: i32 = sqlx::query_scalar(&format!("SELECT {s}.register_name('lock', $1)"))
        .bind(&name)
        .fetch_one(&store.pool)
        .await
        .unwrap();
    let held: i64 = sqlx::query_scalar(&format!(
        "UPDATE {s}.lock_names SET token = token + 1, holder_session = $2, holder_entry = 1 \
          WHERE id = $1 AND holder_session IS NULL AND NOT lined RETURNING token"
    ))
    .bind(k)
    .bind(holder)
    .fetch_one(&store.pool)
    .await
    .unwrap();

    let b = store.coordinator.session().await.unwrap();
    let waiter = store.unfair(&b, &name);
    let waiting = tokio::spawn({
        let waiter = Arc::clone(&waiter);
        async move { waiter.lock().await }
    });
    store.until_waiter_rows(&name, 1).await;
    let (solo, lined): (Option<i64>, bool) = sqlx::query_as(&format!(
        "SELECT holder_session, lined FROM {s}.lock_names WHERE id = $1"
    ))
    .bind(k)
    .fetch_one(&store.pool)
    .await
    .unwrap();
    assert_eq!(
        (solo, lined),
        (Some(holder), false),
        "the waiter moved the solo holder into a line"
    );
    assert!(
        !waiting.is_finished(),
        "the waiter passed over a live holder"
    );

    let ended: i32 = sqlx::query_scalar(&format!("SELECT {s}.end_sessions(ARRAY[$1]::bigint[])"))
        .bind(holder)
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(ended, 1);
    let taken = within(
        PROMPT,
        "the waiter, after the holder's session ended",
        waiting,
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        i64::try_from(taken.token().get()).unwrap() > held,
        "the token did not grow"
    );
    assert!(
        waiter.wakeups() >= 1,
        "the waiter was granted without a wake-up"
    );
    taken.unlock().await.unwrap();
    b.close().await.unwrap();
}

/// The status report names the unfair holder as the lock's (session and token), and
/// breaking the lock ends its session.
#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_unfair_holder_and_break_lock_ends_it() {
    let Some(store) = connect().await else { return };
    let name = unique("unfair-status").to_string();
    let a = store.coordinator.session().await.unwrap();
    let b = store.coordinator.session().await.unwrap();
    let held = store.unfair(&a, &name).lock().await.unwrap();
    let report = store.coordinator.status(&name).await.unwrap();
    let line = report.line(LineKind::Lock, &name).expect("the lock's line");
    assert_eq!(line.holders.len(), 1, "{line:?}");
    assert_eq!(line.holders[0].session, Some(a.id().to_string()));
    assert_eq!(line.holders[0].token, Some(held.token()));

    let broken = store.coordinator.break_lock(&name).await.unwrap();
    assert!(broken.is_some(), "nothing was broken");
    within(PROMPT, "lost() after the break", held.lost()).await;
    let taken = store.unfair(&b, &name).try_lock().await.unwrap();
    assert!(taken.expect("a broken lock is free").token() > held.token());
    b.close().await.unwrap();
}

/// An unfair waiter is seen wherever the lock's contenders are: the fair locker's
/// `contenders()`, the status report's waiters, `count_prefix`, and `purge_prefix`
/// removes its row.
#[tokio::test(flavor = "multi_thread")]
async fn unfair_waiters_are_counted_listed_and_purged() {
    let Some(store) = connect().await else { return };
    let prefix = unique("unfair-seen");
    let name = format!("{prefix}/lock");
    let a = store.coordinator.session().await.unwrap();
    let b = store.coordinator.session().await.unwrap();
    let fair = store.coordinator.locker(&a, &name).unwrap();
    let held = fair.lock().await.unwrap();
    let unfair = store.unfair(&b, &name);
    let waiting = tokio::spawn({
        let unfair = Arc::clone(&unfair);
        async move { unfair.lock().await }
    });
    store.until_waiter_rows(&name, 1).await;

    assert_eq!(
        fair.contenders().await.unwrap(),
        2,
        "the fair locker's contenders"
    );
    let report = store.coordinator.status(&name).await.unwrap();
    let line = report.line(LineKind::Lock, &name).expect("the lock's line");
    assert_eq!(line.holders.len(), 1, "{line:?}");
    assert_eq!(line.waiters.len(), 1, "the unfair waiter: {line:?}");
    assert_eq!(line.waiters[0].session, Some(b.id().to_string()));

    // The name's row (which holds the holder: a solo holder, which the unfair waiter
    // leaves there) and the unfair waiter's row.
    let backend = store.coordinator.backend();
    assert_eq!(backend.count_prefix(&prefix).await.unwrap(), 2);
    assert_eq!(backend.purge_prefix(&prefix).await.unwrap(), 2);
    assert_eq!(store.waiter_rows(&name).await, 0, "the unfair waiter's row");
    assert_eq!(backend.count_prefix(&prefix).await.unwrap(), 0);

    waiting.abort();
    drop(held);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Ad-hoc figures, not a test: the cycle p50 of the unfair lock, the fair lock, the
/// unfair lock's two statements alone (with `synchronous_commit` on and off), and the
/// raw advisory pair, each on one connection or handle, interleaved in rounds.
/// `cargo test -p distsync-postgres --test it -- --ignored --nocapture cycle_figures`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "figures, run by hand"]
async fn cycle_figures() {
    const CYCLES: usize = 1000;
    const ROUNDS: usize = 4;
    let Some(store) = connect().await else { return };
    let session = store.coordinator.session().await.unwrap();
    let name = unique("unfair-cycle").to_string();
    let unfair = store.unfair(&session, &name);
    let fair = store
        .coordinator
        .locker(&session, &format!("{name}/fair"))
        .unwrap();
    let mut conn = store.pool.acquire().await.unwrap();
    let sid = i64::try_from(session.id().0).unwrap();
    let k: i32 = sqlx::query_scalar(&format!(
        "SELECT {}.register_name('lock', $1)",
        store.schema
    ))
    .bind(format!("{name}/sql"))
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let take = format!(
        "SELECT o_state FROM {}.unfair_acquire($1, $2, $3, false)",
        store.schema
    );
    let leave = format!(
        "SELECT {}.semaphore_leave($1, $2, $3, false, false)",
        store.schema
    );
    let mut samples: [Vec<Duration>; 5] = Default::default();
    let mut entry = -1_000_000_000_i64;
    for _ in 0..ROUNDS {
        for _ in 0..CYCLES {
            let start = Instant::now();
            unfair.lock().await.unwrap().unlock().await.unwrap();
            samples[0].push(start.elapsed());
            let start = Instant::now();
            fair.lock().await.unwrap().unlock().await.unwrap();
            samples[1].push(start.elapsed());
            for (i, commit) in [(2, "on"), (3, "off")] {
                sqlx::query(&format!("SET synchronous_commit = {commit}"))
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                entry -= 1;
                let start = Instant::now();
                let state: i32 = sqlx::query_scalar(&take)
                    .bind(k)
                    .bind(sid)
                    .bind(entry)
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                sqlx::query(&leave)
                    .bind(k)
                    .bind(sid)
                    .bind(entry)
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                samples[i].push(start.elapsed());
                assert_eq!(state, 1);
            }
            let start = Instant::now();
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(4242, 1)")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            sqlx::query("SELECT pg_advisory_unlock(4242, 1)")
                .execute(&mut *conn)
                .await
                .unwrap();
            samples[4].push(start.elapsed());
            assert!(got);
        }
    }
    sqlx::query("SET synchronous_commit = on")
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut p50 = Vec::new();
    for sample in &mut samples {
        sample.sort();
        p50.push(sample[sample.len() / 2]);
    }
    let raw = p50[4].as_secs_f64();
    for (what, p) in [
        "unfair lock (Locker)",
        "fair lock (Locker)",
        "unfair_acquire + semaphore_leave, synchronous_commit on",
        "unfair_acquire + semaphore_leave, synchronous_commit off",
        "raw pg_try_advisory_lock + pg_advisory_unlock",
    ]
    .iter()
    .zip(&p50)
    {
        println!("{what}: p50 {p:?} (x{:.2} raw)", p.as_secs_f64() / raw);
    }
    session.close().await.unwrap();
}

/// Ad-hoc figures, not a test: grants per second of 2 and 8 clients (a session each)
/// cycling one lock for 3 s, fair and unfair, and the unfair lock's wake-ups per grant.
/// `cargo test -p distsync-postgres --test it -- --ignored --nocapture contended_figures`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "figures, run by hand"]
async fn contended_figures() {
    let Some(store) = connect().await else { return };
    for clients in [2, 8] {
        for unfair in [false, true] {
            let name = unique("unfair-contended").to_string();
            let mut sessions = Vec::new();
            let mut tasks = Vec::new();
            let mut lockers = Vec::new();
            let until = Instant::now() + Duration::from_secs(3);
            for _ in 0..clients {
                let session = store.coordinator.session().await.unwrap();
                let locker = if unfair {
                    store.unfair(&session, &name)
                } else {
                    store.coordinator.locker(&session, &name).unwrap()
                };
                lockers.push(Arc::clone(&locker));
                sessions.push(session);
                tasks.push(tokio::spawn(async move {
                    let mut grants = 0_u64;
                    while Instant::now() < until {
                        locker.lock().await.unwrap().unlock().await.unwrap();
                        grants += 1;
                    }
                    grants
                }));
            }
            let mut grants = 0;
            for task in tasks {
                grants += task.await.unwrap();
            }
            let wakeups: u64 = lockers.iter().map(|locker| locker.wakeups()).sum();
            println!(
                "{clients} clients, {}: {:.0} grants/s, {wakeups} wake-ups for {grants} grants",
                if unfair { "unfair" } else { "fair" },
                grants as f64 / 3.0
            );
            for session in sessions {
                session.close().await.unwrap();
            }
        }
    }
}
