//! STM cases: the bank, forced conflicts retried, and what ReadCommitted does not
//! protect.

mod linearizable;
mod session_end;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use distsync_core::Isolation::{
    ReadCommitted, RepeatableReads, Serializable, SerializableSnapshot,
};
use distsync_core::{Bytes, Error, Isolation, Stm, StmOptions, StmTx};
use tokio::time::Instant;

use super::scenario::go_interop;
use super::{boxed, LINEARIZABLE};
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    ensure, join_all, violated, within, within_check, Check, Context, Holds, Task, LONG, PROMPT,
};
use crate::faults::Hook;
use crate::harness::Harness;
use crate::rng::Rng;

/// The STM cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "stm_bank_serializable_snapshot",
        group: Group::Stm,
        guarantee: "bank total kept at SerializableSnapshot",
        needs: &[Need::Stm(SerializableSnapshot)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(bank(h, SerializableSnapshot)),
    },
    Case {
        id: "stm_bank_serializable",
        group: Group::Stm,
        guarantee: "bank total kept at Serializable",
        needs: &[Need::Stm(Serializable)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(bank(h, Serializable)),
    },
    Case {
        id: "stm_bank_repeatable_reads",
        group: Group::Stm,
        guarantee: "bank total kept at RepeatableReads",
        needs: &[Need::Stm(RepeatableReads)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(bank(h, RepeatableReads)),
    },
    Case {
        id: "stm_conflict_serializable_snapshot",
        group: Group::Stm,
        guarantee: "conflicts retried at SerializableSnapshot",
        needs: &[Need::Stm(SerializableSnapshot)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(conflict_retried(h, SerializableSnapshot)),
    },
    Case {
        id: "stm_conflict_serializable",
        group: Group::Stm,
        guarantee: "conflicts retried at Serializable",
        needs: &[Need::Stm(Serializable)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(conflict_retried(h, Serializable)),
    },
    Case {
        id: "stm_conflict_repeatable_reads",
        group: Group::Stm,
        guarantee: "conflicts retried at RepeatableReads",
        needs: &[Need::Stm(RepeatableReads)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(conflict_retried(h, RepeatableReads)),
    },
    Case {
        id: "stm_read_committed_lost_update",
        group: Group::Stm,
        guarantee: "ReadCommitted: lost update possible, as documented",
        needs: &[Need::Stm(ReadCommitted)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(read_committed_lost_update(h)),
    },
    Case {
        id: "stm_no_anomalies_serializable_snapshot",
        group: Group::Stm,
        guarantee: "no write skew, no phantom on absent keys at SerializableSnapshot",
        needs: &[Need::Stm(SerializableSnapshot)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(no_skew_no_phantom(h, SerializableSnapshot)),
    },
    Case {
        id: "stm_no_anomalies_serializable",
        group: Group::Stm,
        guarantee: "no write skew, no phantom on absent keys at Serializable",
        needs: &[Need::Stm(Serializable)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(no_skew_no_phantom(h, Serializable)),
    },
    Case {
        id: "stm_no_anomalies_repeatable_reads",
        group: Group::Stm,
        guarantee: "no write skew, no phantom on absent keys at RepeatableReads",
        needs: &[Need::Stm(RepeatableReads)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(no_skew_no_phantom(h, RepeatableReads)),
    },
    Case {
        id: "stm_read_committed_anomalies",
        group: Group::Stm,
        guarantee: "ReadCommitted: write skew and phantom possible, as documented",
        needs: &[Need::Stm(ReadCommitted)],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(read_committed_anomalies(h)),
    },
    Case {
        id: "stm_no_stale_read",
        group: Group::Stm,
        guarantee: "no stale read across two clients (linearizability probe)",
        needs: &[Need::Stm(SerializableSnapshot)],
        claim: LINEARIZABLE,
        hooks: &[Hook::SecondClient],
        run: |h| boxed(linearizable::no_stale_read(h)),
    },
    Case {
        id: "stm_across_session_end",
        group: Group::Stm,
        guarantee: "a client cut off (reset, then silent) for longer than a session: a \
                    transaction during the cut ends with a connection error or a timeout, never \
                    a lost session; after the heal the next one commits",
        needs: &[Need::Stm(SerializableSnapshot)],
        claim: Claim::Offered,
        hooks: &[Hook::Partition],
        run: |h| boxed(session_end::across_session_end(h)),
    },
    Case {
        id: "stm_interop_go",
        group: Group::Stm,
        guarantee: "interoperates with etcd's Go concurrency.STM (layout=go): concurrent \
                    transfers of both keep the sum",
        needs: &[Need::Stm(Isolation::SerializableSnapshot)],
        claim: Claim::Offered,
        hooks: &[Hook::GoPeer],
        run: |h| boxed(go_interop::stm(h)),
    },
];

const ACCOUNTS: usize = 5;
const OPENING_BALANCE: u64 = 100;
const WORKERS: usize = 10;
/// Transfers per worker: 400 commits over 5 accounts, where most attempts conflict
/// (hundreds of retries on every store), so an isolation that loses an update shows in
/// the total; the forced interleavings below catch one deterministically. More would
/// only lengthen the run (a commit is a durable write: 100 per worker took 26 s of a
/// CI column on etcd).
const TRANSFERS: usize = 40;

/// The bank at `isolation`: 5 accounts of 100; 10 workers each make 40 transfers of
/// half the balance of a random account to another random account, one transaction
/// per transfer; the total stays 500. Figure: commits per second and retries.
async fn bank(h: Harness, isolation: Isolation) -> Check {
    let stm = h.backend().stm().ctx("getting the STM")?;
    let accounts: Arc<Vec<String>> = Arc::new(
        (0..ACCOUNTS)
            .map(|i| h.key(&format!("account{i}")))
            .collect(),
    );
    let opening = accounts.clone();
    within(
        PROMPT,
        "opening the accounts",
        stm.atomically(isolation, move |tx| {
            let opening = opening.clone();
            async move {
                for account in opening.iter() {
                    tx.put(account, OPENING_BALANCE.to_string());
                }
                Ok(())
            }
        }),
    )
    .await?;
    let options = StmOptions::with_max_attempts(10_000);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (stm, accounts, options) = (stm.clone(), accounts.clone(), options.clone());
        workers.push(Task::spawn(format!("worker {w}"), async move {
            let mut rng = Rng::new(w as u64 + 7);
            let mut retries = 0u64;
            for _ in 0..TRANSFERS {
                let from = rng.below(ACCOUNTS);
                let to = (from + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
                let (from, to) = (accounts[from].clone(), accounts[to].clone());
                let committed = stm
                    .atomically_with(isolation, &options, |tx| {
                        let (from, to) = (from.clone(), to.clone());
                        async move {
                            let from_balance = balance(&tx, &from).await?;
                            let to_balance = balance(&tx, &to).await?;
                            let amount = from_balance / 2;
                            tx.put(&from, (from_balance - amount).to_string());
                            tx.put(&to, (to_balance + amount).to_string());
                            Ok(())
                        }
                    })
                    .await
                    .ctx(format!("worker {w} transferring"))?;
                retries += u64::from(committed.attempts - 1);
            }
            Ok(retries)
        }));
    }
    let retries: u64 = join_all(&mut workers, LONG).await?.into_iter().sum();
    let elapsed = started.elapsed();
    let reading = accounts.clone();
    let balances = within(
        PROMPT,
        "reading every balance",
        stm.atomically(isolation, move |tx| {
            let reading = reading.clone();
            async move {
                let mut balances = Vec::new();
                for account in reading.iter() {
                    balances.push(balance(&tx, account).await?);
                }
                Ok(balances)
            }
        }),
    )
    .await?;
    let total: u64 = balances.iter().sum();
    let expected = ACCOUNTS as u64 * OPENING_BALANCE;
    ensure!(
        total == expected,
        "the accounts {balances:?} sum to {total}, not {expected}"
    );
    let commits = WORKERS * TRANSFERS;
    Ok(Holds::figure(
        format!(
            "{:.0} commits/s, {retries} retries",
            commits as f64 / elapsed.as_secs_f64().max(1e-9)
        ),
        format!(
            "{WORKERS} workers x {TRANSFERS} transfers at {isolation}: the total stayed {expected}"
        ),
    ))
}

/// The forced interleaving both conflict cases use: transaction A reads `x`; inside
/// A's body, on its first attempt only, a whole transaction B adds 10 to `x` and
/// commits; A then writes what it read plus 1. Returns what A read last, A's attempts,
/// and the final value of `x` (which starts at 0).
async fn forced_conflict(h: &Harness, isolation: Isolation) -> Check<(u64, u32, u64)> {
    let stm = h.backend().stm().ctx("getting the STM")?;
    let x = h.key("x");
    let init = x.clone();
    within(
        PROMPT,
        "initialising x",
        stm.atomically(isolation, move |tx| {
            let init = init.clone();
            async move {
                tx.put(&init, "0");
                Ok(())
            }
        }),
    )
    .await?;
    let b_ran = Arc::new(AtomicBool::new(false));
    let b_attempts = Arc::new(AtomicU32::new(0));
    let (stm_b, x_a) = (stm.clone(), x.clone());
    let committed = within_check(PROMPT * 2, "transaction A with B forced inside it", async {
        stm.atomically_with(isolation, &StmOptions::default(), |tx| {
            let (stm_b, x, b_ran, b_attempts) = (
                stm_b.clone(),
                x_a.clone(),
                b_ran.clone(),
                b_attempts.clone(),
            );
            async move {
                let seen = balance(&tx, &x).await?;
                if !b_ran.swap(true, Ordering::SeqCst) {
                    let b = add(&stm_b, isolation, &x, 10);
                    let attempts = match tokio::time::timeout(PROMPT, b).await {
                        Ok(attempts) => attempts?,
                        Err(_) => {
                            return Err(Error::InvalidArgument(format!(
                                "transaction B did not commit within {PROMPT:?} while A was open"
                            )))
                        }
                    };
                    b_attempts.store(attempts, Ordering::SeqCst);
                }
                tx.put(&x, (seen + 1).to_string());
                Ok(seen)
            }
        })
        .await
        .ctx(format!("running A at {isolation}"))
    })
    .await?;
    // B committed (an error from B aborts A above). It may have needed more than one
    // attempt: a store may detect conflicts more coarsely than per key (PostgreSQL's
    // serializable snapshot isolation locks index pages, so a concurrent case's keys on
    // the same page can abort B), which is a retry, not a wrong answer.
    let b_attempts = b_attempts.load(Ordering::SeqCst);
    if b_attempts > 1 {
        tracing::debug!(b_attempts, %isolation, "transaction B retried (coarse conflict detection)");
    }
    let reader = x.clone();
    let last = within(
        PROMPT,
        "reading x",
        stm.atomically(isolation, move |tx| {
            let reader = reader.clone();
            async move { balance(&tx, &reader).await }
        }),
    )
    .await?;
    Ok((committed.value, committed.attempts, last))
}

/// Conflicts are retried at `isolation` (a level stronger than ReadCommitted): in the
/// forced interleaving, A's commit must fail and A retry, reading B's value; the final
/// value reflects both transactions (0 + 10 + 1 = 11).
async fn conflict_retried(h: Harness, isolation: Isolation) -> Check {
    let (seen, attempts, last) = forced_conflict(&h, isolation).await?;
    ensure!(
        last == 11,
        "x is {last} after B added 10 and A added 1 to what it read: {}",
        if last == 1 {
            "B's update was lost"
        } else {
            "neither update order explains it"
        }
    );
    ensure!(
        attempts >= 2,
        "A committed on attempt {attempts} although B changed x after A read it"
    );
    ensure!(
        seen == 10,
        "A's last attempt read {seen}, not B's committed 10"
    );
    Ok(Holds::figure(
        format!("A retried ({attempts} attempts)"),
        format!("at {isolation} A's first attempt conflicted with B and was retried; x = 11"),
    ))
}

/// What ReadCommitted does NOT protect: the same forced interleaving at ReadCommitted.
///
/// ReadCommitted promises only that reads see committed data and that a commit is
/// applied atomically; its commit checks nothing, so the documented outcome is a lost
/// update: A commits on its first attempt and overwrites B's +10 with 0 + 1 = 1. The
/// case therefore reports `holds` with "lost update observed, as documented" when
/// that happens. A backend may protect more than the level promises (A retried, x =
/// 11): that also holds, and the detail says the anomaly did not occur. It is
/// violated only by an outcome no reading of the level allows: any other final value
/// (a commit half applied, B's write lost without A's, a value from nowhere), or A
/// having read something other than the committed 0 or 10.
async fn read_committed_lost_update(h: Harness) -> Check {
    let (seen, attempts, last) = forced_conflict(&h, Isolation::ReadCommitted).await?;
    match (last, seen) {
        (1, 0) => Ok(Holds::figure(
            "lost update observed",
            format!(
                "lost update observed, as documented: A committed on attempt {attempts} and \
                 overwrote B's +10 (x = 1)"
            ),
        )),
        (11, 10) => Ok(Holds::figure(
            "no lost update",
            format!("the backend protected more than ReadCommitted promises: A retried ({attempts} attempts), x = 11"),
        )),
        _ => violated(format!(
            "at ReadCommitted A last read {seen} and x ended at {last}; only 1 (lost update) or \
             11 (serialised) are possible"
        )),
    }
}

/// Adds `n` to `key` in one transaction; returns the attempts it took.
async fn add(stm: &Stm, isolation: Isolation, key: &str, n: u64) -> distsync_core::Result<u32> {
    let key = key.to_owned();
    let committed = stm
        .atomically_with(isolation, &StmOptions::default(), move |tx| {
            let key = key.clone();
            async move {
                let value = balance(&tx, &key).await?;
                tx.put(&key, (value + n).to_string());
                Ok(())
            }
        })
        .await?;
    Ok(committed.attempts)
}

/// Reads a decimal number (a missing key is 0).
async fn balance(tx: &StmTx, key: &str) -> distsync_core::Result<u64> {
    match tx.get(key).await? {
        None => Ok(0),
        Some(value) => parse(&value).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{key} holds {:?}, not a decimal number",
                String::from_utf8_lossy(&value)
            ))
        }),
    }
}

fn parse(value: &Bytes) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Which anomaly a forced interleaving provokes.
#[derive(Clone, Copy, Debug)]
enum Anomaly {
    /// Write skew: `x` and `y` start at 1 (two doctors on call); each transaction reads
    /// both and, if both are 1, sets its own to 0. Serially, one stays on call.
    WriteSkew,
    /// Phantom on absent keys: `x` and `y` start absent; each transaction reads both
    /// and, if both are absent, creates its own. Serially, only one is created.
    Phantom,
}

/// Runs the two transactions of `anomaly` at `isolation`, the second entirely inside
/// the first's first attempt; returns whether the anomaly happened (both wrote) and
/// the first transaction's attempts.
async fn provoke(h: &Harness, isolation: Isolation, anomaly: Anomaly) -> Check<(bool, u32)> {
    let stm = h.backend().stm().ctx("getting the STM")?;
    let tag = match anomaly {
        Anomaly::WriteSkew => "skew",
        Anomaly::Phantom => "phantom",
    };
    let (x, y) = (h.key(&format!("{tag}/x")), h.key(&format!("{tag}/y")));
    if let Anomaly::WriteSkew = anomaly {
        let (ix, iy) = (x.clone(), y.clone());
        within(
            PROMPT,
            "putting both on call",
            stm.atomically(isolation, move |tx| {
                let (ix, iy) = (ix.clone(), iy.clone());
                async move {
                    tx.put(&ix, "1");
                    tx.put(&iy, "1");
                    Ok(())
                }
            }),
        )
        .await?;
    }
    // One transaction: reads both keys; writes `own` if the condition holds.
    let step = |stm: Stm, own: String, other: String| async move {
        stm.atomically(isolation, move |tx| {
            let (own, other) = (own.clone(), other.clone());
            async move { decide(&tx, anomaly, &own, &other).await }
        })
        .await
    };
    let b_ran = Arc::new(AtomicBool::new(false));
    let (stm_b, xa, ya) = (stm.clone(), x.clone(), y.clone());
    let committed = within_check(PROMPT * 2, format!("transaction A ({anomaly:?})"), async {
        stm.atomically_with(isolation, &StmOptions::default(), |tx| {
            let (stm_b, x, y, b_ran) = (stm_b.clone(), xa.clone(), ya.clone(), b_ran.clone());
            async move {
                let first = tx.get(&x).await?;
                let second = tx.get(&y).await?;
                if !b_ran.swap(true, Ordering::SeqCst) {
                    match tokio::time::timeout(PROMPT, step(stm_b, y.clone(), x.clone())).await {
                        Ok(result) => {
                            result?;
                        }
                        Err(_) => {
                            return Err(Error::InvalidArgument(format!(
                                "transaction B did not commit within {PROMPT:?} while A was open"
                            )))
                        }
                    }
                }
                Ok(write_if(&tx, anomaly, &x, first, second))
            }
        })
        .await
        .ctx(format!("running A at {isolation}"))
    })
    .await?;
    let (rx, ry) = (x.clone(), y.clone());
    let (after_x, after_y) = within(
        PROMPT,
        "reading both keys",
        stm.atomically(isolation, move |tx| {
            let (rx, ry) = (rx.clone(), ry.clone());
            async move { Ok((tx.get(&rx).await?, tx.get(&ry).await?)) }
        }),
    )
    .await?;
    let happened = match anomaly {
        Anomaly::WriteSkew => {
            after_x.as_deref() == Some(b"0".as_slice())
                && after_y.as_deref() == Some(b"0".as_slice())
        }
        Anomaly::Phantom => after_x.is_some() && after_y.is_some(),
    };
    Ok((happened, committed.attempts))
}

/// One transaction's decision on what it read (see [`Anomaly`]).
async fn decide(
    tx: &StmTx,
    anomaly: Anomaly,
    own: &str,
    other: &str,
) -> distsync_core::Result<bool> {
    let mine = tx.get(own).await?;
    let theirs = tx.get(other).await?;
    Ok(write_if(tx, anomaly, own, mine, theirs))
}

/// Writes `own` if the anomaly's condition holds on what was read; whether it wrote.
fn write_if(
    tx: &StmTx,
    anomaly: Anomaly,
    own: &str,
    mine: Option<Bytes>,
    theirs: Option<Bytes>,
) -> bool {
    let one = |v: &Option<Bytes>| v.as_deref() == Some(b"1".as_slice());
    match anomaly {
        Anomaly::WriteSkew if one(&mine) && one(&theirs) => {
            tx.put(own, "0");
            true
        }
        Anomaly::Phantom if mine.is_none() && theirs.is_none() => {
            tx.put(own, "created");
            true
        }
        _ => false,
    }
}

/// At a level stronger than ReadCommitted, neither write skew nor a phantom on absent
/// keys: in both forced interleavings, A retries and sees B's write.
async fn no_skew_no_phantom(h: Harness, isolation: Isolation) -> Check {
    let (skew, skew_attempts) = provoke(&h, isolation, Anomaly::WriteSkew).await?;
    ensure!(
        !skew,
        "write skew at {isolation}: both transactions read both on call and both went off call"
    );
    let (phantom, phantom_attempts) = provoke(&h, isolation, Anomaly::Phantom).await?;
    ensure!(
        !phantom,
        "phantom at {isolation}: both transactions read both keys absent and both created theirs"
    );
    Ok(Holds::figure(
        format!("A retried ({skew_attempts} and {phantom_attempts} attempts)"),
        format!("at {isolation}, the second writer saw the first in both interleavings"),
    ))
}

/// ReadCommitted allows both anomalies, as documented: the forced interleavings show
/// them.
async fn read_committed_anomalies(h: Harness) -> Check {
    let (skew, _) = provoke(&h, Isolation::ReadCommitted, Anomaly::WriteSkew).await?;
    let (phantom, _) = provoke(&h, Isolation::ReadCommitted, Anomaly::Phantom).await?;
    ensure!(
        skew && phantom,
        "ReadCommitted was expected to allow both anomalies (write skew: {skew}, phantom: \
         {phantom}): the documentation would be wrong"
    );
    Ok(Holds::figure(
        "write skew and phantom observed",
        "ReadCommitted validates nothing it read, as documented",
    ))
}
