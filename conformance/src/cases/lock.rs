//! Lock cases: exclusion, fencing, `try_lock`, FIFO, cancelled waiters, and what
//! happens when the store ends the holder's session.

mod break_hold;
mod jepsen;
mod lock_delay;
mod multi_lock;
mod revoke;
mod unfair;

pub(super) use unfair::CASES as UNFAIR_CASES;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::{Error, Fairness, FencingToken, LockGuard, Locker, Name, Session};
use tokio::time::Instant;

use super::scenario::{crash, go_interop, partition, pause, Held, Target};
use super::{boxed, FENCING, FIFO, LOST, PARTITION, STALLED};
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    ensure, join_all, lock_vec, ms, per_second, strictly_increasing, violated, within, Bounded,
    Check, Context, CriticalSection, Fail, Holds, Task, LONG, PROMPT,
};
use crate::faults::{Hook, PartitionMode};
use crate::harness::Harness;

/// The lock cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "lock_mutual_exclusion",
        group: Group::Lock,
        guarantee: "mutual exclusion under contention",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(mutual_exclusion(h, Fairness::Fair)),
    },
    Case {
        id: "lock_fencing_tokens",
        group: Group::Lock,
        guarantee: "fencing tokens strictly increase",
        needs: &[Need::Lock],
        claim: FENCING,
        hooks: &[],
        run: |h| boxed(fencing_tokens(h, Fairness::Fair)),
    },
    Case {
        id: "lock_try_lock",
        group: Group::Lock,
        guarantee: "try_lock: None while held, a guard when free",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(try_lock(h, Fairness::Fair)),
    },
    Case {
        id: "lock_fifo_waiters",
        group: Group::Lock,
        guarantee: "waiters granted in arrival order",
        needs: &[Need::Lock],
        claim: FIFO,
        hooks: &[],
        run: |h| boxed(fifo_waiters(h, Fairness::Fair)),
    },
    Case {
        id: "lock_cancelled_waiter",
        group: Group::Lock,
        guarantee: "a cancelled waiter blocks no one",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(cancelled_waiter(h, Fairness::Fair)),
    },
    Case {
        id: "lock_session_end_fires_lost",
        group: Group::Lock,
        guarantee: "lost() fires when the store ends the session",
        needs: &[Need::Lock],
        claim: LOST,
        hooks: &[],
        run: |h| boxed(session_end_fires_lost(h, Fairness::Fair)),
    },
    Case {
        id: "lock_session_end_frees_lock",
        group: Group::Lock,
        guarantee: "the lock frees when the store ends the session",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(session_end_frees_lock(h, Fairness::Fair)),
    },
    Case {
        id: "lock_holder_crash",
        group: Group::Lock,
        guarantee: "a holder killed (SIGKILL) in a child process frees the lock",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[Hook::ChildHolder],
        run: |h| boxed(crash::holder(h, Target::Lock)),
    },
    Case {
        id: "lock_holder_pause",
        group: Group::Lock,
        guarantee:
            "a holder paused past its TTL loses the lock, sees lost(), its write is fenced off",
        needs: &[Need::Lock],
        claim: STALLED,
        hooks: &[Hook::PausedHolder],
        run: |h| boxed(pause::holder(h, Target::Lock)),
    },
    Case {
        id: "lock_jepsen_counter",
        group: Group::Lock,
        guarantee:
            "counter under the lock with paused holders: lost updates without / with fencing",
        needs: &[Need::Lock],
        claim: FENCING,
        hooks: &[Hook::PausedHolder],
        run: |h| boxed(jepsen::counter(h)),
    },
    Case {
        id: "lock_partition_silent",
        group: Group::Lock,
        guarantee:
            "a lock holder cut off (silent partition) sees lost() before anyone else is granted",
        needs: &[Need::Lock],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| {
            boxed(partition::cut_off_holder(
                h,
                Held::Lock,
                PartitionMode::Silent,
            ))
        },
    },
    Case {
        id: "lock_partition_reset",
        group: Group::Lock,
        guarantee:
            "a lock holder cut off (connections reset) sees lost() before anyone else is granted",
        needs: &[Need::Lock],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| {
            boxed(partition::cut_off_holder(
                h,
                Held::Lock,
                PartitionMode::Reset,
            ))
        },
    },
    Case {
        id: "lock_multi_lock_opposite_orders",
        group: Group::Lock,
        guarantee: "multi-lock: {a, b} and {b, a} in a loop never deadlock or overlap",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(multi_lock::opposite_orders(h)),
    },
    Case {
        id: "lock_guarded_write",
        group: Group::Lock,
        guarantee: "put_if_held commits only while held: a stale holder's write is refused",
        // The specific need first: the matrix notes name the first need's flag.
        needs: &[Need::GuardedWrites, Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(guarded_write(h, Fairness::Fair)),
    },
    Case {
        id: "lock_break_hold",
        group: Group::Lock,
        guarantee: "a broken hold: the holder sees lost(), the waiter is granted with a higher \
                    token, the holder's guarded write is refused",
        // The specific need first: the matrix notes name the first need's flag.
        needs: &[Need::BreakLock, Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(break_hold::break_hold(h, Fairness::Fair)),
    },
    Case {
        id: "lock_delay_after_kill",
        group: Group::Lock,
        guarantee: "lock-delay: after a holder is killed (SIGKILL), the next grant waits the delay",
        needs: &[Need::Lock, Need::Counter],
        claim: Claim::Offered,
        hooks: &[Hook::ChildHolder],
        run: |h| boxed(lock_delay::after_kill(h)),
    },
    Case {
        id: "lock_delay_after_pause",
        group: Group::Lock,
        guarantee: "lock-delay: after a holder paused past its TTL, the next grant waits the delay",
        needs: &[Need::Lock, Need::Counter],
        claim: STALLED,
        hooks: &[Hook::PausedHolder],
        run: |h| boxed(lock_delay::after_pause(h)),
    },
    Case {
        id: "lock_delay_clean_release",
        group: Group::Lock,
        guarantee: "lock-delay: after a clean release the next grant comes at once",
        needs: &[Need::Lock, Need::Counter],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(lock_delay::clean_release(h)),
    },
    Case {
        id: "lock_revoke_request",
        group: Group::Lock,
        guarantee: "a release request: the holder sees it within one poll interval, releases, and \
                    the waiter is granted with a higher token",
        // The specific need first: the matrix notes name the first need's flag.
        needs: &[Need::ReleaseRequest, Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(revoke::request(h)),
    },
    Case {
        id: "lock_revoke_no_holder",
        group: Group::Lock,
        guarantee: "a release request reaches only the hold it was made for: none with no \
                    holder, not the next holder",
        needs: &[Need::ReleaseRequest, Need::Lock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(revoke::no_holder(h)),
    },
    Case {
        id: "lock_interop_go",
        group: Group::Lock,
        guarantee: "interoperates with etcd's Go concurrency.Mutex: mutual exclusion and one \
                    FIFO line across languages",
        needs: &[Need::Lock],
        claim: Claim::Offered,
        hooks: &[Hook::GoPeer],
        run: |h| boxed(go_interop::lock(h)),
    },
];

/// The store's lock of `fairness` named `name`, held through `session`.
fn locker_of(
    h: &Harness,
    fairness: Fairness,
    session: &Session,
    name: Name,
) -> distsync_core::Result<Box<dyn Locker>> {
    match fairness {
        Fairness::Unfair => h.backend().unfair_locker(session, name),
        _ => h.backend().locker(session, name),
    }
}

/// Contenders, each with its own session.
const CONTENDERS: usize = 8;
/// Grants per contender.
const ROUNDS: usize = 50;

/// Mutual exclusion under contention: 8 tasks, each with its own session, take the
/// lock 50 times each. Inside, an overlap detector (a count of current holders that
/// must never exceed one) and a non-atomic read-modify-write of a shared counter
/// (read, yield, write back plus one) that loses increments if two holders overlap.
async fn mutual_exclusion(h: Harness, fairness: Fairness) -> Check {
    let name = h.name("mutex").ctx("naming the lock")?;
    let section = Arc::new(CriticalSection::default());
    let mut lockers = Vec::new();
    for i in 0..CONTENDERS {
        let session = h.session().set_up(format!("opening session {i}")).await?;
        let locker = locker_of(&h, fairness, &session, name.clone()).ctx("making a locker")?;
        lockers.push((session, locker));
    }
    let started = Instant::now();
    let mut tasks: Vec<Task<()>> = lockers
        .into_iter()
        .enumerate()
        .map(|(i, (session, locker))| {
            let section = section.clone();
            Task::spawn(format!("contender {i}"), async move {
                for round in 0..ROUNDS {
                    let guard = locker
                        .lock()
                        .await
                        .ctx(format!("contender {i} locking (round {round})"))?;
                    section.pass().await;
                    guard
                        .unlock()
                        .bounded(format!("contender {i} unlocking (round {round})"))
                        .await?;
                }
                drop(session);
                Ok(())
            })
        })
        .collect();
    join_all(&mut tasks, LONG).await?;
    let elapsed = started.elapsed();
    let grants = CONTENDERS * ROUNDS;
    let overlaps = section.overlaps();
    let counted = section.counted();
    ensure!(
        overlaps == 0,
        "{overlaps} of {grants} grants found another holder inside the critical section"
    );
    ensure!(
        counted == grants as u64,
        "the unprotected counter reads {counted} after {grants} increments under the lock: updates were lost"
    );
    Ok(Holds::figure(
        format!("{grants} grants, {}", per_second(grants, elapsed)),
        format!(
            "{CONTENDERS} sessions x {ROUNDS} rounds: never two holders, no lost counter update"
        ),
    ))
}

/// Fencing tokens strictly increase across successive grants: 4 contenders take the
/// lock 10 times each and record their token while holding it; then a `try_lock`
/// grant must top them all.
async fn fencing_tokens(h: Harness, fairness: Fairness) -> Check {
    const TASKS: usize = 4;
    const GRANTS: usize = 10;
    let name = h.name("mutex").ctx("naming the lock")?;
    let tokens = Arc::new(Mutex::new(Vec::<(usize, FencingToken)>::new()));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let session = h.session().set_up("opening a session").await?;
        let locker = locker_of(&h, fairness, &session, name.clone()).ctx("making a locker")?;
        let tokens = tokens.clone();
        tasks.push(Task::spawn(format!("contender {i}"), async move {
            for _ in 0..GRANTS {
                let guard = locker.lock().await.ctx(format!("contender {i} locking"))?;
                lock_vec(&tokens).push((i, guard.token()));
                guard
                    .unlock()
                    .bounded(format!("contender {i} unlocking"))
                    .await?;
            }
            drop(session);
            Ok(())
        }));
    }
    join_all(&mut tasks, LONG).await?;
    let session = h.session().set_up("opening a session").await?;
    let locker = locker_of(&h, fairness, &session, name).ctx("making a locker")?;
    let Some(last) = within(PROMPT, "try_lock on the free lock", locker.try_lock()).await? else {
        return violated("try_lock returned None on a lock nobody holds");
    };
    let mut tokens = std::mem::take(&mut *lock_vec(&tokens));
    tokens.push((TASKS, last.token()));
    last.unlock().bounded("unlocking").await?;
    strictly_increasing(&tokens)?;
    let first = tokens.first().map(|(_, t)| t.get()).unwrap_or_default();
    let last = tokens.last().map(|(_, t)| t.get()).unwrap_or_default();
    Ok(Holds::figure(
        format!("{} grants, tokens {first}..{last}", tokens.len()),
        "every grant's token is greater than the previous grant's, including a try_lock grant",
    ))
}

/// `try_lock` returns `None` at once while another session holds the lock, and a
/// guard once it is free.
async fn try_lock(h: Harness, fairness: Fairness) -> Check {
    let name = h.name("mutex").ctx("naming the lock")?;
    let (a, b) = (
        h.session().set_up("opening session A").await?,
        h.session().set_up("opening session B").await?,
    );
    let la = locker_of(&h, fairness, &a, name.clone()).ctx("making locker A")?;
    let lb = locker_of(&h, fairness, &b, name).ctx("making locker B")?;
    let Some(held) = within(PROMPT, "A's try_lock on a free lock", la.try_lock()).await? else {
        return violated("A's try_lock returned None on a lock nobody holds");
    };
    let started = Instant::now();
    if let Some(intruder) = within(PROMPT, "B's try_lock while A holds", lb.try_lock()).await? {
        return violated(format!(
            "B's try_lock granted {} (token {}) while A held token {}",
            intruder.key(),
            intruder.token(),
            held.token()
        ));
    }
    let refusal = started.elapsed();
    held.unlock().bounded("A unlocking").await?;
    let Some(b_held) = within(PROMPT, "B's try_lock after A unlocked", lb.try_lock()).await? else {
        return violated("B's try_lock returned None after A unlocked");
    };
    if within(PROMPT, "A's try_lock while B holds", la.try_lock())
        .await?
        .is_some()
    {
        return violated("A's try_lock was granted while B held the lock");
    }
    b_held.unlock().bounded("B unlocking").await?;
    Ok(Holds::figure(
        format!("refused in {}", ms(refusal)),
        "None while another session holds, a guard once free",
    ))
}

/// Waiters are granted in arrival order: a holder holds; 5 waiters, each with its own
/// session, start one after another, the next starting only once `contenders()` shows
/// the previous one registered in the store (a bounded poll); each records its index
/// while holding. Measured on every backend; claimed only where `fifo_waiters` is.
async fn fifo_waiters(h: Harness, fairness: Fairness) -> Check {
    const WAITERS: usize = 5;
    let name = h.name("mutex").ctx("naming the lock")?;
    let holder_session = h.session().set_up("opening the holder's session").await?;
    let holder = locker_of(&h, fairness, &holder_session, name.clone()).ctx("making a locker")?;
    let held = within(PROMPT, "the holder locking", holder.lock()).await?;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..WAITERS {
        let session = h.session().set_up("opening a waiter's session").await?;
        let locker = locker_of(&h, fairness, &session, name.clone()).ctx("making a locker")?;
        let order = order.clone();
        let waiter = Task::spawn(format!("waiter {i}"), async move {
            let guard = locker.lock().await.ctx(format!("waiter {i} locking"))?;
            lock_vec(&order).push(i);
            guard
                .unlock()
                .bounded(format!("waiter {i} unlocking"))
                .await?;
            drop(session);
            Ok(())
        });
        registered(holder.as_ref(), i + 2).await?;
        waiter
            .ensure_blocked(Duration::ZERO, "the holder still holds the lock")
            .await?;
        waiters.push(waiter);
    }
    held.unlock().bounded("the holder unlocking").await?;
    join_all(&mut waiters, LONG).await?;
    let order = std::mem::take(&mut *lock_vec(&order));
    let expected: Vec<usize> = (0..WAITERS).collect();
    ensure!(
        order == expected,
        "waiters queued in order {expected:?} were granted in order {order:?}"
    );
    Ok(Holds::figure(
        format!("{WAITERS} waiters in order"),
        format!("grant order {order:?} is the arrival order"),
    ))
}

/// Polls `locker.contenders()` (every 2 ms, for at most [`PROMPT`]) until it counts
/// `count` (the holder and the waiters started so far).
async fn registered(locker: &dyn Locker, count: usize) -> Check<()> {
    let deadline = tokio::time::Instant::now() + PROMPT;
    loop {
        let seen = locker.contenders().await.ctx("counting contenders")?;
        if seen >= count {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return violated(format!(
                "a started waiter never registered: {seen} contenders after {PROMPT:?}, expected {count}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A cancelled waiter blocks no one: while A holds, B's `lock()` is cancelled after
/// waiting (its future dropped by a timeout) with B's session kept alive, so any
/// residue would stay until the test ends; C then waits; when A unlocks, C must get
/// the lock promptly, and B can lock again afterwards.
async fn cancelled_waiter(h: Harness, fairness: Fairness) -> Check {
    let name = h.name("mutex").ctx("naming the lock")?;
    let a = h.session().set_up("opening session A").await?;
    let b = h.session().set_up("opening session B").await?;
    let c = h.session().set_up("opening session C").await?;
    let la = locker_of(&h, fairness, &a, name.clone()).ctx("making locker A")?;
    let lb: Arc<dyn Locker> =
        Arc::from(locker_of(&h, fairness, &b, name.clone()).ctx("making locker B")?);
    let lc = locker_of(&h, fairness, &c, name).ctx("making locker C")?;
    let held = within(PROMPT, "A locking", la.lock()).await?;
    if let Ok(granted) = tokio::time::timeout(h.settle(), lb.lock()).await {
        let granted = granted.ctx("B waiting while A holds")?;
        return violated(format!(
            "B was granted token {} while A held token {}",
            granted.token(),
            held.token()
        ));
    }
    let c_waiter = Task::spawn("waiter C", async move {
        let guard = lc.lock().await.ctx("C locking")?;
        Ok((guard, Instant::now()))
    });
    c_waiter
        .ensure_blocked(h.settle(), "A still holds the lock")
        .await?;
    let mut c_waiter = c_waiter;
    let released = Instant::now();
    held.unlock().bounded("A unlocking").await?;
    let (c_guard, granted_at) = c_waiter.join(PROMPT).await.map_err(|fail| match fail {
        Fail::Violated(evidence) => Fail::Violated(format!(
            "after B's lock() was cancelled, C did not get the lock once A released it: {evidence}"
        )),
        other => other,
    })?;
    let handover = granted_at.saturating_duration_since(released);
    c_guard.unlock().bounded("C unlocking").await?;
    let again = within(PROMPT, "B locking again after C released", lb.lock()).await?;
    again.unlock().bounded("B unlocking").await?;
    Ok(Holds::figure(
        format!("next waiter granted {} after release", ms(handover)),
        "a waiter dropped mid-wait left nothing that blocked the next waiter or itself",
    ))
}

/// `lost()` fires when the store ends the holder's session (revoke from the store
/// side): the figure is the time from the revoke to the guard's `lost()`.
async fn session_end_fires_lost(h: Harness, fairness: Fairness) -> Check {
    let name = h.name("mutex").ctx("naming the lock")?;
    let a = h
        .fault_session()
        .set_up("opening the holder's session")
        .await?;
    let la = locker_of(&h, fairness, &a, name).ctx("making a locker")?;
    let held = within(PROMPT, "locking", la.lock()).await?;
    let lost = held.lost();
    let started = Instant::now();
    h.end_session(&a)
        .bounded("ending the session from the store side")
        .await?;
    let limit = h.fault_ttl() * 2 + PROMPT;
    if tokio::time::timeout(limit, lost).await.is_err() {
        return violated(format!(
            "the guard's lost() had not fired {limit:?} after the store revoked its session (TTL {:?})",
            h.fault_ttl()
        ));
    }
    let fired = started.elapsed();
    let left = limit.saturating_sub(started.elapsed());
    if tokio::time::timeout(left, a.lost()).await.is_err() {
        return violated(format!(
            "the guard's lost() fired but the session's had not {limit:?} after the revoke"
        ));
    }
    let session_fired = started.elapsed();
    ensure!(
        held.is_lost(),
        "lost() fired but the guard's is_lost() is false"
    );
    match held.unlock().await {
        Err(Error::SessionLost) | Err(Error::NotHeld) => {}
        Ok(()) => return violated("unlock() of a guard whose session was revoked returned Ok"),
        Err(other) => {
            return violated(format!(
                "unlock() after the revoke: unexpected error {other}"
            ))
        }
    }
    Ok(Holds::figure(
        format!(
            "guard lost() after {}, session lost() after {}",
            ms(fired),
            ms(session_fired)
        ),
        format!(
            "session TTL {:?}; the session's own lost() after {}; unlock() then reports the loss",
            h.fault_ttl(),
            ms(session_fired)
        ),
    ))
}

/// The lock frees when the store ends the holder's session: a waiter with another
/// session gets it; the figure is the time from the revoke to the grant.
async fn session_end_frees_lock(h: Harness, fairness: Fairness) -> Check {
    let (a, held, mut waiter) = held_and_awaited(&h, fairness).await?;
    let revoked = Instant::now();
    h.end_session(&a)
        .bounded("ending A's session from the store side")
        .await?;
    let limit = h.fault_ttl() * 2 + PROMPT;
    let (guard, granted_at) = waiter.join(limit).await?;
    let took = granted_at.saturating_duration_since(revoked);
    ensure!(
        guard.token() > held.token(),
        "B's token {} is not above the revoked holder's {}",
        guard.token(),
        held.token()
    );
    guard.unlock().bounded("B unlocking").await?;
    drop(held);
    Ok(Holds::figure(
        format!("re-acquired {} after the revoke", ms(took)),
        "another session's waiter was granted the lock once the store ended the holder's session",
    ))
}

/// A lock held by A (through a session with the fault TTL) and awaited by B (another
/// session, spawned, returning its guard and the moment it was granted), B checked to
/// be blocked: the start of the cases that end A's session.
pub(super) async fn held_and_awaited(
    h: &Harness,
    fairness: Fairness,
) -> Check<(Session, LockGuard, Task<(LockGuard, Instant)>)> {
    let name = h.name("mutex").ctx("naming the lock")?;
    let a = h
        .fault_session()
        .set_up("opening the holder's session")
        .await?;
    let b = h.session().set_up("opening the waiter's session").await?;
    let la = locker_of(h, fairness, &a, name.clone()).ctx("making locker A")?;
    let lb = locker_of(h, fairness, &b, name).ctx("making locker B")?;
    let held = within(PROMPT, "A locking", la.lock()).await?;
    let waiter = Task::spawn("waiter B", async move {
        let guard = lb.lock().await.ctx("B locking")?;
        Ok((guard, Instant::now()))
    });
    waiter
        .ensure_blocked(h.settle(), "A holds the lock")
        .await?;
    Ok((a, held, waiter))
}

/// Guarded writes: a holder's `put_if_held` commits while it holds; once the store has
/// ended its session (the holder may not know yet), its guarded write is refused with
/// `NotHeld` and writes nothing; the next holder's guarded write commits.
async fn guarded_write(h: Harness, fairness: Fairness) -> Check {
    let name = h.name("mutex").ctx("naming the lock")?;
    let key = h.key("guarded");
    let a = h.fault_session().set_up("opening A's session").await?;
    let b = h.session().set_up("opening B's session").await?;
    let held = locker_of(&h, fairness, &a, name.clone())
        .ctx("making A's locker")?
        .lock()
        .bounded("A locking")
        .await?;
    held.put_if_held(&key, "a")
        .bounded("A's guarded write while holding")
        .await?;
    h.end_session(&a)
        .bounded("ending A's session in the store")
        .await?;
    let b_locker = locker_of(&h, fairness, &b, name).ctx("making B's locker")?;
    let next = within(PROMPT, "B locking after A's session ended", b_locker.lock()).await?;
    match held.put_if_held(&key, "stale").await {
        Err(Error::NotHeld | Error::SessionLost) => {}
        Ok(()) => {
            return violated("A's guarded write committed after its session was ended and B holds")
        }
        Err(error) => {
            return violated(format!("A's stale guarded write: unexpected error {error}"))
        }
    }
    next.put_if_held(&key, "b")
        .bounded("B's guarded write")
        .await?;
    let stm = h.backend().stm().ctx("getting the STM")?;
    let read = key.clone();
    let value = stm
        .atomically(distsync_core::Isolation::SerializableSnapshot, move |tx| {
            let read = read.clone();
            async move { tx.get(&read).await }
        })
        .bounded("reading the guarded key")
        .await?;
    ensure!(
        value.as_deref() == Some(b"b".as_slice()),
        "the guarded key reads {value:?} after A wrote \"a\", A's stale write was refused and B wrote \"b\""
    );
    next.unlock().bounded("B unlocking").await?;
    Ok(Holds::new(
        "the holder's write committed; the stale holder's was refused (NotHeld); the next holder's committed",
    ))
}
