//! STM: bank transfers (half of a random account's balance to another, over 5
//! accounts of 100, as etcd's STM example) by 1 and by 8 concurrent workers, each on a
//! connection of its own; commits per second and retries per commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use distsync::stm::{Isolation, Stm, StmOptions, StmTx};
use distsync::Error;

use crate::args::Plan;
use crate::stats::per_second;
use crate::target::Target;
use crate::Result;

/// Accounts in the bank.
const ACCOUNTS: usize = 5;
/// Opening balance of each account.
const OPENING: u64 = 100;
/// Attempts per transfer before it counts as failed.
const MAX_ATTEMPTS: u32 = 1_000;

/// The outcome for one worker count.
#[derive(Debug)]
pub struct StmResult {
    /// Concurrent workers.
    pub workers: usize,
    /// The isolation level used.
    pub isolation: Option<Isolation>,
    /// Committed transfers.
    pub commits: usize,
    /// Attempts over all committed transfers.
    pub attempts: u64,
    /// Wall time of the transfers.
    pub elapsed: Duration,
    /// Why the run stopped early or failed its check, if it did.
    pub error: Option<String>,
}

impl StmResult {
    /// Committed transfers per second, all workers together.
    pub fn rate(&self) -> f64 {
        per_second(self.commits, self.elapsed)
    }

    /// Retries (attempts after the first) per committed transfer.
    pub fn retries_per_commit(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            (self.attempts as f64 - self.commits as f64) / self.commits as f64
        }
    }
}

/// A tiny deterministic generator (xorshift64*) for picking accounts.
struct Picker(u64);

impl Picker {
    fn below(&mut self, bound: usize) -> usize {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1) as u64) as usize
    }
}

fn balance(key: &str, value: Option<bytes::Bytes>) -> distsync::Result<u64> {
    let value = value.ok_or_else(|| Error::InvalidArgument(format!("account {key} is missing")))?;
    std::str::from_utf8(&value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Error::InvalidArgument(format!("account {key} holds {value:?}")))
}

/// One transfer of half of `from`'s balance to `to`.
async fn transfer(tx: StmTx, from: String, to: String) -> distsync::Result<()> {
    let source = balance(&from, tx.get(&from).await?)?;
    let target = balance(&to, tx.get(&to).await?)?;
    let amount = source / 2;
    tx.put(&from, (source - amount).to_string());
    tx.put(&to, (target + amount).to_string());
    Ok(())
}

/// The first isolation level `target` supports, SerializableSnapshot first.
fn isolation(target: &Target) -> Option<Isolation> {
    let capabilities = target.coordinator.capabilities();
    Isolation::ALL
        .into_iter()
        .find(|&level| capabilities.supports_isolation(level))
}

/// Measures bank transfers on `target` with `workers` workers.
pub async fn run(target: &Target, run_id: &str, workers: usize, plan: &Plan) -> StmResult {
    let mut result = StmResult {
        workers,
        isolation: isolation(target),
        commits: 0,
        attempts: 0,
        elapsed: Duration::ZERO,
        error: None,
    };
    let Some(level) = result.isolation else {
        result.error = Some("the backend supports no STM isolation level".into());
        return result;
    };
    let keys: Arc<Vec<String>> = Arc::new(
        (0..ACCOUNTS)
            .map(|index| format!("{run_id}/stm/{workers}/account-{index}"))
            .collect(),
    );
    if let Err(error) = measure(target, &keys, level, workers, plan, &mut result).await {
        result.error.get_or_insert(error.to_string());
    }
    result
}

async fn measure(
    target: &Target,
    keys: &Arc<Vec<String>>,
    level: Isolation,
    workers: usize,
    plan: &Plan,
    result: &mut StmResult,
) -> Result<()> {
    open_accounts(target, keys, level).await?;
    let mut stms: Vec<Stm> = Vec::with_capacity(workers);
    for _ in 0..workers {
        stms.push(target.client().await?.stm()?);
    }
    let deadline = Instant::now() + plan.case_time;
    let start = Instant::now();
    let tasks: Vec<_> = stms
        .into_iter()
        .enumerate()
        .map(|(worker, stm)| {
            let share = crate::stats::share(plan.stm_transfers, workers, worker);
            tokio::spawn(transfers(
                stm,
                Arc::clone(keys),
                level,
                worker,
                share,
                deadline,
            ))
        })
        .collect();
    for task in tasks {
        match task.await {
            Ok(Ok((commits, attempts))) => {
                result.commits += commits;
                result.attempts += attempts;
            }
            Ok(Err(error)) => {
                result.error.get_or_insert(error.to_string());
            }
            Err(error) => {
                result
                    .error
                    .get_or_insert(format!("worker failed: {error}"));
            }
        }
    }
    result.elapsed = start.elapsed();
    let total = sum(target, keys, level).await?;
    let expected = OPENING * ACCOUNTS as u64;
    if total != expected {
        result.error.get_or_insert(format!(
            "the accounts sum to {total}, not {expected}: a transfer was lost or doubled"
        ));
    }
    Ok(())
}

/// Opens every account at [`OPENING`].
async fn open_accounts(target: &Target, keys: &Arc<Vec<String>>, level: Isolation) -> Result<()> {
    let opening = Arc::clone(keys);
    target
        .coordinator
        .stm()?
        .atomically(level, move |tx| {
            let keys = Arc::clone(&opening);
            async move {
                for key in keys.iter() {
                    tx.put(key, OPENING.to_string());
                }
                Ok(())
            }
        })
        .await?;
    Ok(())
}

/// One worker: up to `share` transfers between random accounts until `deadline`;
/// returns the commits and the attempts they took.
async fn transfers(
    stm: Stm,
    keys: Arc<Vec<String>>,
    level: Isolation,
    worker: usize,
    share: usize,
    deadline: Instant,
) -> Result<(usize, u64)> {
    let options = StmOptions::with_max_attempts(MAX_ATTEMPTS);
    let mut picker = Picker(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1));
    let (mut commits, mut attempts) = (0_usize, 0_u64);
    while commits < share && Instant::now() < deadline {
        let from = picker.below(keys.len());
        let to = (from + 1 + picker.below(keys.len() - 1)) % keys.len();
        let (from, to) = (keys[from].clone(), keys[to].clone());
        let committed = stm
            .atomically_with(level, &options, |tx| transfer(tx, from.clone(), to.clone()))
            .await?;
        commits += 1;
        attempts += u64::from(committed.attempts);
    }
    Ok((commits, attempts))
}

/// The sum of every account's balance.
async fn sum(target: &Target, keys: &Arc<Vec<String>>, level: Isolation) -> Result<u64> {
    let checked = Arc::clone(keys);
    Ok(target
        .coordinator
        .stm()?
        .atomically(level, move |tx| {
            let keys = Arc::clone(&checked);
            async move {
                let mut total = 0;
                for key in keys.iter() {
                    total += balance(key, tx.get(key).await?)?;
                }
                Ok(total)
            }
        })
        .await?)
}
