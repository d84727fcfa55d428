//! Server restarts, on a private server of the case's own (see
//! [`crate::faults::private`]): etcd keeps its state, Redis without persistence loses
//! it, PostgreSQL keeps its tables but drops every connection and with them the
//! advisory locks.
//!
//! - *live clients*: a lock holder, a waiter and a blocked consumer are live across
//!   the restart. Each must get `lost()` or an error, or keep a hold that is still
//!   exclusive — never a silent wrong answer (a holder whose lock was given away
//!   without its `lost()`, an `unlock()` that says Ok for a lock it no longer had, a
//!   second holder while the first still holds) — and the same backend must work
//!   again once the server is back.
//! - *durable state*: queue items, an STM key, a held barrier and the fencing counter
//!   are all still there after the restart (`survives_restart`).
//! - *crash after a release*: a lock released just before the server crashes (SIGKILL,
//!   or PostgreSQL's immediate stop, which loses what its WAL buffers held unwritten)
//!   is free soon after the server is back, while its former holder's session lives
//!   on: a release the store acknowledged is never taken back for longer than the
//!   holder's next renewal, whether the store made it durable before answering (etcd),
//!   lost it with everything else (Redis without persistence) or committed it
//!   asynchronously and has it made again (PostgreSQL). A store that forgets and then
//!   waits out a lock-delay (Redis with `max_session_ttl`) keeps every forgotten name
//!   closed for longer than any session by design, the released one included: it
//!   does not claim this row.

use distsync_core::raw::GuardStoreSide as _;
use std::sync::Arc;
use std::time::Duration;

use distsync_core::{
    Backend, Bytes, Error, FencingToken, Isolation, LockGuard, Name, Result, Session,
    SessionOptions,
};
use tokio::time::Instant;

use crate::cases::scenario::first_grant::first_grant;
use crate::check::{
    ensure, eventually, secs, violated, within, Bounded, Check, Context, Fail, Holds, Task, PROMPT,
};
use crate::faults::PrivateServer;
use crate::harness::Harness;

/// How long a private server may take to be created and started.
pub(super) const START: Duration = Duration::from_secs(120);

/// The session TTL of the live clients: long enough for a lease to survive a quick
/// restart where the store keeps leases (etcd), short enough that a lost one is
/// noticed soon.
pub(super) const TTL: Duration = Duration::from_secs(4);

/// How long the backend may take to work again after the restart.
pub(super) const RECOVERY: Duration = Duration::from_secs(30);

/// A private server of the harness's kind and a backend on it, once it grants.
///
/// A store with a lock-delay after it forgets (Redis with `max_session_ttl`) takes a
/// brand-new server for one that may have forgotten, and grants nothing until the
/// bound has passed since it started: the price of the lock-delay, paid once per
/// server, not what the restart cases measure. A probe lock is tried until it is
/// granted, so that the case's own grants before the restart are prompt.
pub(super) async fn private_server(
    h: &Harness,
) -> Check<(Box<dyn PrivateServer>, Arc<dyn Backend>)> {
    let server = within(
        START,
        "starting a private server",
        h.faults().private_server(&**h.backend()),
    )
    .await?;
    let backend = within(PROMPT, "connecting to the private server", server.connect()).await?;
    first_grant(
        &backend,
        SessionOptions::with_ttl(TTL.max(backend.capabilities().min_session_ttl)),
        name(h, "first-grant")?,
        RECOVERY,
    )
    .await?;
    Ok((server, backend))
}

/// Stops and starts the server; returns when it answers again, and how long it was
/// away.
pub(super) async fn restart(server: &mut Box<dyn PrivateServer>) -> Check<(Instant, Duration)> {
    let stopping = Instant::now();
    within(START, "stopping the private server", server.stop()).await?;
    within(START, "starting the private server again", server.start()).await?;
    Ok((Instant::now(), stopping.elapsed()))
}

fn name(h: &Harness, suffix: &str) -> Check<Name> {
    h.name(suffix).ctx(format!("naming {suffix}"))
}

/// A session of `ttl` on `backend` (for at most [`PROMPT`]).
async fn open_session(backend: &Arc<dyn Backend>, ttl: Duration) -> Check<Session> {
    within(
        PROMPT,
        "opening a session",
        backend.session(SessionOptions::with_ttl(ttl)),
    )
    .await
}

/// `lock` locked through `session` on `backend` (for at most [`PROMPT`]); `doing` says
/// who locks in evidence.
async fn lock_through(
    backend: &Arc<dyn Backend>,
    session: &Session,
    lock: Name,
    doing: &str,
) -> Check<LockGuard> {
    let locker = backend.locker(session, lock).ctx("making a locker")?;
    within(PROMPT, doing, locker.lock()).await
}

/// Lock, unlock, enqueue and dequeue through `backend`: it works.
async fn works(backend: &Arc<dyn Backend>, lock: &Name, queue: &Name) -> Result<()> {
    let ttl = TTL.max(backend.capabilities().min_session_ttl);
    let session = backend.session(SessionOptions::with_ttl(ttl)).await?;
    let guard = backend.locker(&session, lock.clone())?.lock().await?;
    guard.unlock().await?;
    let queue = backend.queue(queue.clone())?;
    queue.enqueue(Bytes::from_static(b"probe")).await?;
    queue.dequeue().await?;
    session.close().await
}

/// The live-clients case (see the module docs).
pub(super) async fn live_clients(h: Harness) -> Check {
    let (mut server, backend) = private_server(&h).await?;
    let ttl = TTL.max(backend.capabilities().min_session_ttl);
    let lock = name(&h, "mutex")?;
    let jobs = name(&h, "jobs")?;
    let open = || backend.session(SessionOptions::with_ttl(ttl));
    let holder = within(PROMPT, "opening the holder's session", open()).await?;
    let waiting = within(PROMPT, "opening the waiter's session", open()).await?;
    let held = lock_through(&backend, &holder, lock.clone(), "the holder locking").await?;
    let first_token = held.token();
    let locker = backend
        .locker(&waiting, lock.clone())
        .ctx("making the waiter's locker")?;
    let holder_alive = held.lost_token().clone();
    let mut waiter = Task::spawn("the waiter", async move {
        let granted = locker.lock().await;
        // What the holder believed at the moment of the grant.
        let holder_lost = holder_alive.is_cancelled();
        Ok((granted, holder_lost, Instant::now()))
    });
    let consumer_queue = backend.queue(jobs.clone()).ctx("making a queue")?;
    let mut consumer = Task::spawn(
        "the consumer",
        async move { Ok(consumer_queue.dequeue().await) },
    );
    waiter
        .ensure_blocked(h.settle(), "the holder holds the lock")
        .await?;
    ensure!(
        !consumer.is_finished(),
        "a consumer of an empty queue returned before anything was enqueued"
    );

    let (restarted, _) = restart(&mut server).await?;
    let probe = name(&h, "probe")?;
    let probe_queue = name(&h, "probe-queue")?;
    eventually(
        RECOVERY,
        "the backend working after the restart",
        || async { Ok(works(&backend, &probe, &probe_queue).await.ok()) },
    )
    .await?;
    let recovered = restarted.elapsed();
    let mut facts = Vec::new();

    // Kept to the case's end where the restart left it held.
    let _held = holder_and_waiter(held, &mut waiter, ttl, first_token, &mut facts).await?;
    consumer_gets_the_next_item(&backend, &jobs, &mut consumer, &mut facts).await?;

    drop((holder, waiting));
    Ok(Holds::figure(
        format!(
            "working again {} after the server was back",
            secs(recovered)
        ),
        facts.join("; "),
    ))
}

/// The waiter's outcome of the lock its holder held across the restart.
type Waited = (Result<LockGuard>, bool, Instant);

/// A lease the store lost is noticed within one TTL of failed or refused renewals,
/// and the waiter is granted only once the holder knows; a holder that kept its lock
/// keeps it from the waiter until it unlocks. Returns the holder's guard where it is
/// still held.
async fn holder_and_waiter(
    held: LockGuard,
    waiter: &mut Task<Waited>,
    ttl: Duration,
    first_token: FencingToken,
    facts: &mut Vec<String>,
) -> Check<Option<LockGuard>> {
    let holder_lost = tokio::time::timeout(ttl * 2, held.lost()).await.is_ok();
    let mut kept = None;
    if holder_lost {
        facts.push("holder lost()".to_owned());
        match held.unlock().await {
            Ok(()) => {
                return violated("unlock() by a holder whose lock the restart took returned Ok")
            }
            Err(error) => facts.push(format!("its unlock(): {error}")),
        }
        let (granted, holder_lost_then, _) = waiter.join(ttl * 2 + PROMPT).await?;
        match granted {
            Ok(guard) => {
                ensure!(
                    holder_lost_then,
                    "the waiter was granted the lock before the holder's lost() fired"
                );
                facts.push(format!(
                    "waiter granted (token {} after {first_token})",
                    guard.token()
                ));
            }
            Err(error) => facts.push(format!("waiter: {error}")),
        }
    } else {
        facts.push("holder kept its lock".to_owned());
        if waiter.is_finished() {
            let (granted, _, _) = waiter.join(PROMPT).await?;
            match granted {
                Ok(guard) => {
                    return violated(format!(
                        "the waiter was granted token {} while the holder (token {first_token}) still held the lock",
                        guard.token()
                    ))
                }
                Err(error) => facts.push(format!("waiter: {error}")),
            }
            kept = Some(held);
        } else {
            within(
                PROMPT,
                "the holder unlocking after the restart",
                held.unlock(),
            )
            .await?;
            let (granted, _, _) = waiter.join(PROMPT).await?;
            let guard = granted.ctx("the waiter locking after the holder unlocked")?;
            ensure!(
                guard.token() > first_token,
                "the waiter's token {} is not above the holder's {first_token}",
                guard.token()
            );
            facts.push("waiter granted after the unlock".to_owned());
            guard.unlock().bounded("the waiter unlocking").await?;
        }
    }

    Ok(kept)
}

/// The blocked consumer gets the next item or an error, never a hang or another item.
async fn consumer_gets_the_next_item(
    backend: &Arc<dyn Backend>,
    jobs: &Name,
    consumer: &mut Task<Result<Bytes>>,
    facts: &mut Vec<String>,
) -> Check<()> {
    let producer = backend.queue(jobs.clone()).ctx("making a queue")?;
    eventually(RECOVERY, "enqueueing after the restart", || async {
        Ok(producer.enqueue(Bytes::from_static(b"after")).await.ok())
    })
    .await?;
    match consumer.join(RECOVERY).await? {
        Ok(item) => ensure!(
            item.as_ref() == b"after",
            "the consumer blocked across the restart got {item:?}, not the item enqueued after it"
        ),
        Err(error) => {
            facts.push(format!("consumer: {error}"));
            // The item is still there for the next consumer.
            let again = within(PROMPT, "dequeueing after the restart", producer.dequeue()).await?;
            ensure!(
                again.as_ref() == b"after",
                "dequeued {again:?}, not \"after\""
            );
        }
    }

    Ok(())
}

/// The durable-state case (see the module docs).
pub(super) async fn durable_state(h: Harness) -> Check {
    let (mut server, backend) = private_server(&h).await?;
    let items = ["a", "b", "c"];
    let queue = backend.queue(name(&h, "jobs")?).ctx("making a queue")?;
    for item in items {
        within(PROMPT, "enqueueing", queue.enqueue(item)).await?;
    }
    let stm = backend.stm().ctx("getting the STM")?;
    let key = h.key("balance");
    let put_key = key.clone();
    within(
        PROMPT,
        "writing an STM key",
        stm.atomically(Isolation::SerializableSnapshot, move |tx| {
            let key = put_key.clone();
            async move {
                tx.put(&key, "100");
                Ok(())
            }
        }),
    )
    .await?;
    let barrier = backend.barrier(name(&h, "gate")?).ctx("making a barrier")?;
    within(PROMPT, "holding the barrier", barrier.hold()).await?;
    let lock = name(&h, "mutex")?;
    let ttl = TTL.max(backend.capabilities().min_session_ttl);
    let token = {
        let session = open_session(&backend, ttl).await?;
        let guard = lock_through(&backend, &session, lock.clone(), "locking").await?;
        let token = guard.token();
        guard.unlock().bounded("unlocking").await?;
        session.close().bounded("closing the session").await?;
        token
    };

    let (_, downtime) = restart(&mut server).await?;
    let len = eventually(RECOVERY, "reading the queue after the restart", || async {
        Ok(queue.len().await.ok())
    })
    .await?;
    let mut lost = Vec::new();
    if len != items.len() {
        lost.push(format!("the queue holds {len} items, not {}", items.len()));
    }
    let mut order = Vec::new();
    while let Some(item) = within(PROMPT, "dequeueing", queue.try_dequeue()).await? {
        order.push(String::from_utf8_lossy(&item).into_owned());
    }
    if len == items.len() && order != items {
        lost.push(format!("the queue gave {order:?}, not {items:?}"));
    }
    let get_key = key.clone();
    let balance = within(
        PROMPT,
        "reading the STM key",
        stm.atomically(Isolation::SerializableSnapshot, move |tx| {
            let key = get_key.clone();
            async move { tx.get(&key).await }
        }),
    )
    .await?;
    if balance.as_deref() != Some(&b"100"[..]) {
        lost.push(format!("the STM key reads {balance:?}, not \"100\""));
    }
    let waiter_barrier = backend.barrier(name(&h, "gate")?).ctx("making a barrier")?;
    let mut barrier_waiter = Task::spawn("a barrier waiter", async move {
        waiter_barrier.wait().await.ctx("waiting at the barrier")
    });
    tokio::time::sleep(h.settle()).await;
    if barrier_waiter.is_finished() {
        barrier_waiter.join(PROMPT).await?;
        lost.push("the barrier is no longer held".to_owned());
    } else {
        within(PROMPT, "releasing the barrier", barrier.release()).await?;
        barrier_waiter.join(PROMPT).await?;
    }
    let session = open_session(&backend, ttl).await?;
    // A lock-delay after the store forgot may hold the grant back (for at most the
    // store's bound on session TTLs, seconds here).
    let locker = backend.locker(&session, lock).ctx("making a locker")?;
    let guard = within(RECOVERY, "locking after the restart", locker.lock()).await?;
    if guard.token() <= token {
        lost.push(format!(
            "the fencing counter restarted: token {} after {token}",
            guard.token()
        ));
    }
    guard.unlock().bounded("unlocking").await?;
    ensure!(lost.is_empty(), "after the restart: {}", lost.join("; "));
    Ok(Holds::figure(
        format!("all kept across a {} restart", secs(downtime)),
        "queue items and order, an STM key, a held barrier and the fencing counter survived",
    ))
}

/// The session TTL of the crash-after-release case's former holder: its row, key or
/// lease outlives the release by at least two thirds of it (it renews every third),
/// which bounds how long the lock may take to be free again without the session's
/// expiry having freed it.
const CRASH_HOLDER_TTL: Duration = Duration::from_secs(45);

/// The crash-after-release case (see the module docs).
pub(super) async fn crash_after_release(h: Harness) -> Check {
    let (mut server, backend) = private_server(&h).await?;
    let ttl = CRASH_HOLDER_TTL.max(backend.capabilities().min_session_ttl);
    let lock = name(&h, "released")?;
    let opening = backend.session(SessionOptions::with_ttl(ttl));
    let holder = match tokio::time::timeout(PROMPT, opening).await {
        Ok(Ok(session)) => session,
        // A store that bounds session TTLs below this one (Redis with
        // `max_session_ttl`) runs a lock-delay after it forgets, which keeps the
        // released name closed for longer than any session by design.
        // No measure either way: the release cannot be told apart from the session's
        // expiry, so the case does not apply to this configuration.
        Ok(Err(Error::InvalidArgument(reason))) => {
            return Err(Fail::Unsupported(format!(
                "not applicable under a lock-delay: a {} session is refused ({reason}), and \
                 the lock-delay after the store forgets keeps a released name closed for \
                 longer than any session it allows",
                secs(ttl)
            )))
        }
        Ok(Err(error)) => return Err(error).ctx("opening the holder's session"),
        Err(_) => {
            return violated(format!(
                "opening the holder's session: no answer within {}",
                secs(PROMPT)
            ))
        }
    };
    let guard = lock_through(&backend, &holder, lock.clone(), "locking").await?;
    let token = guard.token();
    guard.unlock().bounded("unlocking").await?;
    let released = Instant::now();
    within(START, "crashing the private server", server.crash()).await?;
    within(START, "starting the private server again", server.start()).await?;
    let back = Instant::now();
    // The holder's session cannot have expired before this, counted from the release
    // (its last renewal came at most a third of the TTL before it), less a margin.
    let bound = (ttl * 2 / 3)
        .saturating_sub(released.elapsed())
        .saturating_sub(Duration::from_secs(2));
    ensure!(
        bound >= Duration::from_secs(5),
        "the crash and restart took {}: too long to tell a release made again from the session's expiry",
        secs(released.elapsed())
    );
    let other = eventually(RECOVERY, "connecting after the restart", || async {
        Ok(server.connect().await.ok())
    })
    .await?;
    let session = eventually(RECOVERY, "opening a session after the restart", || async {
        Ok(other.session(SessionOptions::with_ttl(ttl)).await.ok())
    })
    .await?;
    let locker = other.locker(&session, lock).ctx("making a locker")?;
    let left = bound.saturating_sub(back.elapsed());
    let guard = within(
        left,
        "locking the name released just before the crash, before its former holder's session could expire",
        locker.lock(),
    )
    .await?;
    let free_after = back.elapsed();
    let ended = holder.is_lost();
    ensure!(
        guard.token() > token,
        "the fencing token went back across the crash: {} after {token}",
        guard.token()
    );
    guard.unlock().bounded("unlocking").await?;
    // Not part of the guarantee: the former holder's session may have ended with the
    // store's state (Redis without persistence) without having noticed it yet.
    let _ = tokio::time::timeout(PROMPT, holder.close()).await;
    Ok(Holds::figure(
        format!("free {} after the restart", secs(free_after)),
        if ended {
            "the former holder's session ended with the crash"
        } else {
            "while the former holder's session was still open"
        },
    ))
}

/// The tokens of one lock, one write lock and one election, each granted once.
pub(super) async fn grant_tokens(h: &Harness, backend: &Arc<dyn Backend>) -> Check<[u64; 3]> {
    let caps = backend.capabilities().clone();
    let ttl = TTL.max(caps.min_session_ttl);
    let session = eventually(RECOVERY, "opening a session", || async {
        Ok(backend.session(SessionOptions::with_ttl(ttl)).await.ok())
    })
    .await?;
    let locker = backend
        .locker(&session, name(h, "fenced-lock")?)
        .ctx("making a locker")?;
    // Grants wait for a lock-delay after the store forgot (at most its bound on
    // session TTLs): longer than a prompt answer, well within the recovery.
    let guard = within(RECOVERY, "locking", locker.lock()).await?;
    let lock = guard.token().get();
    guard.unlock().bounded("unlocking").await?;
    let mut write = 0;
    if caps.rwlock {
        let rwlock = backend
            .rwlock(&session, name(h, "fenced-rwlock")?)
            .ctx("making an rwlock")?;
        let guard = within(RECOVERY, "write-locking", rwlock.write()).await?;
        write = guard.token().get();
        guard.unlock().bounded("unlocking the write lock").await?;
    }
    let mut term = 0;
    if caps.election {
        let election = backend
            .election(&session, name(h, "fenced-election")?)
            .ctx("making an election")?;
        let campaign = election.campaign(Bytes::from_static(b"fenced"));
        let leadership = within(RECOVERY, "campaigning", campaign).await?;
        term = leadership.term().get();
        leadership.resign().bounded("resigning").await?;
    }
    session.close().bounded("closing the session").await?;
    Ok([lock, write, term])
}

/// Fencing tokens across a restart: a lock, a write lock and a leadership are granted
/// once before and once after the private server restarts (losing its state where
/// the store does: Redis without persistence); every token after must be greater than
/// its counterpart before. A store whose tokens may repeat must not declare `fencing`.
pub(super) async fn fencing_tokens(h: Harness) -> Check {
    let (mut server, backend) = private_server(&h).await?;
    let before = grant_tokens(&h, &backend).await?;
    let (_, downtime) = restart(&mut server).await?;
    let after = grant_tokens(&h, &backend).await?;
    let kinds = ["lock", "write lock", "election term"];
    for ((kind, before), after) in kinds.iter().zip(before).zip(after) {
        ensure!(
            before == 0 || after > before,
            "the {kind} token went from {before} before the restart to {after} after it"
        );
    }
    Ok(Holds::figure(
        format!(
            "lock token {} → {} across a {} restart",
            before[0],
            after[0],
            secs(downtime)
        ),
        format!(
            "tokens before {before:?}, after {after:?} (lock, write lock, term; 0 = not offered)"
        ),
    ))
}
