//! Mixed faults on STM transactions, checked from a history: clients run transfers on a
//! versioned bank for a bounded time while the seeded partition schedule of
//! [`super::mixed`] cuts them off (silent or reset), one at a time; then the final
//! state is read and [`crate::stm_history::check`] judges what was recorded, without
//! asking the store anything else.
//!
//! - **Bank**: a `version` key and [`ACCOUNTS`] balances, starting at version 0 with
//!   [`START`] each.
//! - **Clients** ([`CLIENTS`], each with its own client through its own proxy) loop:
//!   pick a transfer (from, to, amount) from the seed, and run one transaction at the
//!   case's isolation level that reads the version and every balance, and writes
//!   `version + 1` and the balances after the transfer (at most what the source holds).
//!   Every attempt of the body is recorded (what it read, what it would write); the
//!   call ends committed (`Ok`), in a conflict (nothing written, not recorded), or
//!   indeterminate (an error, or given up after [`CALL_LIMIT`]: it may have applied).
//! - **Check**: the committed transactions, ordered by the version they wrote, and the
//!   indeterminate ones the versions prove committed, form one chain from the initial
//!   state to the final one (see [`crate::stm_history`]).
//!
//! The seed and the run's length come from [`super::mixed::SEED_VAR`] and
//! [`super::mixed::SECS_VAR`], as for the other mixed-fault cases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::{Backend, Error, Isolation, Stm, StmTx};
use tokio::time::Instant;

use super::mixed::{self, SECS_VAR, SEED_VAR};
use crate::check::{lock_vec, violated, within, Check, Context, Fail, Holds, Task, PROMPT};
use crate::harness::Harness;
use crate::history::Recorder;
use crate::rng::Rng;
use crate::stm_history::{self, Attempt, State, Transaction};

/// Clients, each through its own proxy.
const CLIENTS: usize = 3;

/// Accounts in the bank.
const ACCOUNTS: usize = 4;

/// Each account's balance at version 0.
const START: i64 = 100;

/// How long one transaction may take before it is given up.
const CALL_LIMIT: Duration = Duration::from_secs(3);

/// The margin of the quiet tail over two TTLs.
const MARGIN: Duration = Duration::from_secs(1);

/// The longest pause between two transactions of one client, in ms.
const MAX_GAP_MS: usize = 30;

/// The bank's keys: the version first, then the accounts.
#[derive(Clone)]
struct Keys(Arc<Vec<String>>);

impl Keys {
    fn new(h: &Harness) -> Self {
        let mut keys = vec![h.key("bank/version")];
        keys.extend((0..ACCOUNTS).map(|account| h.key(&format!("bank/account-{account}"))));
        Self(Arc::new(keys))
    }

    /// Reads the bank in `tx`; a value that is not a number is named in the error.
    async fn read(&self, tx: &StmTx) -> distsync_core::Result<Result<State, String>> {
        let mut numbers = Vec::with_capacity(self.0.len());
        for key in self.0.iter() {
            let value = tx.get(key).await?;
            let parsed = value
                .as_deref()
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .and_then(|text| text.parse::<i64>().ok());
            match parsed {
                Some(number) => numbers.push(number),
                None => return Ok(Err(format!("{key} holds {value:?}, not a number"))),
            }
        }
        let version = u64::try_from(numbers[0]).map_err(|_| numbers[0]);
        Ok(match version {
            Ok(version) => Ok(State {
                version,
                balances: numbers[1..].to_vec(),
            }),
            Err(number) => Err(format!("the version is {number}")),
        })
    }

    /// Writes `state` in `tx`.
    fn write(&self, tx: &StmTx, state: &State) {
        tx.put(&self.0[0], state.version.to_string());
        for (key, balance) in self.0[1..].iter().zip(&state.balances) {
            tx.put(key, balance.to_string());
        }
    }
}

/// The initial state.
fn initial() -> State {
    State {
        version: 0,
        balances: vec![START; ACCOUNTS],
    }
}

/// What a run's settings give every client.
#[derive(Clone)]
struct Run {
    recorder: Recorder,
    keys: Keys,
    isolation: Isolation,
    stop: Instant,
    transactions: Arc<Mutex<Vec<Transaction>>>,
}

/// What a client counted.
#[derive(Debug, Default)]
struct Tally {
    conflicts: usize,
    errors: usize,
    timeouts: usize,
    last_error: Option<String>,
}

/// The case body (see the module docs).
pub(crate) async fn run(h: Harness, isolation: Isolation) -> Check {
    let seed = mixed::seed()?;
    let length = mixed::length()?;
    let ttl = h.fault_ttl();
    let quiet_tail = ttl * 2 + MARGIN;
    if length < quiet_tail * 2 {
        return violated(format!(
            "{SECS_VAR}: a run of {length:?} leaves no time for faults before its quiet tail of {quiet_tail:?}"
        ));
    }
    if length + CALL_LIMIT + PROMPT * 3 >= crate::CASE_LIMIT {
        return violated(format!(
            "{SECS_VAR}: a run of {length:?} does not fit in a case run's bound of {:?}",
            crate::CASE_LIMIT
        ));
    }
    run_seeded(&h, isolation, seed, length, quiet_tail)
        .await
        .map_err(|fail| match fail {
            Fail::Violated(evidence) => {
                Fail::Violated(format!("seed {seed} ({SEED_VAR}={seed}): {evidence}"))
            }
            other => other,
        })
}

async fn run_seeded(
    h: &Harness,
    isolation: Isolation,
    seed: u64,
    length: Duration,
    quiet_tail: Duration,
) -> Check {
    let keys = Keys::new(h);
    let direct = h.backend().stm().ctx("getting the STM")?;
    let start = initial();
    {
        let (keys, start) = (keys.clone(), start.clone());
        within(
            PROMPT,
            "writing the initial bank",
            direct.atomically(isolation, move |tx| {
                let (keys, start) = (keys.clone(), start.clone());
                async move {
                    keys.write(&tx, &start);
                    Ok(())
                }
            }),
        )
        .await?;
    }
    let switches = mixed::proxied_clients(h, CLIENTS).await?;
    let recorder = Recorder::new();
    let run = Run {
        recorder: recorder.clone(),
        keys: keys.clone(),
        isolation,
        stop: Instant::now() + length,
        transactions: Arc::default(),
    };
    let mut schedule = Rng::new(seed);
    let mut clients = Vec::new();
    for (client, switch) in switches.iter().enumerate() {
        let (run, backend) = (run.clone(), switch.backend());
        let rng = Rng::new(schedule.next_u64());
        clients.push(Task::spawn(format!("client {client}"), async move {
            transfers(run, client, backend, rng).await
        }));
    }
    let partitions = mixed::partition_schedule(
        &recorder,
        h.fault_ttl(),
        (run.stop - quiet_tail, run.stop),
        &switches,
        Rng::new(schedule.next_u64()),
    )
    .await;
    let mut tally = Tally::default();
    for task in &mut clients {
        let limit = run.stop.saturating_duration_since(Instant::now()) + CALL_LIMIT + PROMPT;
        let counted = task.join(limit).await?;
        tally.conflicts += counted.conflicts;
        tally.errors += counted.errors;
        tally.timeouts += counted.timeouts;
        tally.last_error = counted.last_error.or(tally.last_error);
    }
    drop(switches);

    let read_keys = keys.clone();
    let last = within(
        PROMPT,
        "reading the final bank",
        direct.atomically(isolation, move |tx| {
            let keys = read_keys.clone();
            async move { keys.read(&tx).await }
        }),
    )
    .await?
    .map_err(|why| Fail::Violated(format!("the final bank: {why}")))?;
    let transactions = lock_vec(&run.transactions).clone();
    let verdict = stm_history::check(&start, &transactions, &last);
    if !verdict.violations.is_empty() {
        let text: Vec<String> = verdict
            .violations
            .iter()
            .take(5)
            .map(ToString::to_string)
            .collect();
        return violated(format!(
            "{} violations: {} (final state {last})",
            verdict.violations.len(),
            text.join("; ")
        ));
    }
    if verdict.committed == 0 {
        return violated(format!(
            "no transaction committed in {length:?} (last error: {})",
            tally.last_error.as_deref().unwrap_or("none")
        ));
    }
    Ok(Holds::figure(
        format!(
            "seed {seed}: {} committed transactions in {}, one serial chain to version {}, 0 \
             violations; {} partitions ({} silent)",
            verdict.committed,
            crate::check::secs(length),
            last.version,
            partitions.partitions,
            partitions.silent
        ),
        format!(
            "{CLIENTS} clients through their own proxies at {isolation}, {ACCOUNTS} accounts; {} \
             indeterminate transactions ({} of them proved committed by the versions); {} ended \
             in a conflict; {} errors, {} calls given up after {CALL_LIMIT:?}{}",
            verdict.indeterminate,
            verdict.proved,
            tally.conflicts,
            tally.errors,
            tally.timeouts,
            tally
                .last_error
                .as_ref()
                .map_or_else(String::new, |error| format!(" (last: {error})"))
        ),
    ))
}

/// A client: one transfer after another until the run stops.
async fn transfers(
    run: Run,
    client: usize,
    backend: Arc<dyn Backend>,
    mut rng: Rng,
) -> Check<Tally> {
    let stm: Stm = backend.stm().ctx("getting the STM")?;
    let mut tally = Tally::default();
    while Instant::now() < run.stop {
        let from = rng.below(ACCOUNTS);
        let to = (from + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
        let amount = 1 + rng.below(30) as i64;
        let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let body = {
            let (keys, attempts) = (run.keys.clone(), attempts.clone());
            move |tx: StmTx| {
                let (keys, attempts) = (keys.clone(), attempts.clone());
                async move {
                    let read = match keys.read(&tx).await? {
                        Ok(read) => read,
                        Err(why) => return Ok(Err(why)),
                    };
                    let mut balances = read.balances.clone();
                    let moved = amount.min(balances[from]).max(0);
                    balances[from] -= moved;
                    balances[to] += moved;
                    let wrote = State {
                        version: read.version + 1,
                        balances,
                    };
                    keys.write(&tx, &wrote);
                    lock_vec(&attempts).push(Attempt { read, wrote });
                    Ok(Ok(()))
                }
            }
        };
        let invoked = run.recorder.now();
        let outcome = tokio::time::timeout(CALL_LIMIT, stm.atomically(run.isolation, body)).await;
        let returned = run.recorder.now();
        let committed = match outcome {
            Ok(Ok(Ok(()))) => true,
            Ok(Ok(Err(why))) => {
                return Err(Fail::Violated(format!(
                    "client {client} read the bank: {why}"
                )))
            }
            Ok(Err(Error::StmConflict { .. })) => {
                tally.conflicts += 1;
                continue;
            }
            Ok(Err(error)) => {
                tally.errors += 1;
                tally.last_error = Some(error.to_string());
                false
            }
            Err(_) => {
                tally.timeouts += 1;
                false
            }
        };
        let attempts = lock_vec(&attempts).clone();
        if committed || !attempts.is_empty() {
            lock_vec(&run.transactions).push(Transaction {
                client,
                invoked,
                returned,
                committed,
                attempts,
            });
        }
        tokio::time::sleep(Duration::from_millis(rng.below(MAX_GAP_MS) as u64)).await;
    }
    Ok(tally)
}
