//! `distsync stm-bank`: the bank-transfer demo of etcd's STM.
//!
//! ACCOUNTS accounts start with 100 each; WORKERS concurrent workers each make
//! TRANSFERS transactions moving half of a random account's balance to another random
//! account. Every level but ReadCommitted promises that the total never changes.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use distsync::stm::{Isolation, Stm, StmOptions, StmTx};
use distsync::Error;
use tokio::task::JoinSet;

use crate::args::StmBankArgs;
use crate::context::Ctx;
use crate::exit::{self, Failure};
use crate::output::say;
use crate::wait::{race, Raced};

/// Every account's opening balance.
const OPENING_BALANCE: u64 = 100;

/// Runs the demo and prints `account <key> balance=<n>` per account, then
/// `sum=<n> expected=<n> commits=<n> retries=<n> isolation=<level>`.
///
/// # Errors
/// Exit code 4 when the sum changed under a level that promises it does not, or a
/// transfer gave up on conflicts; 2 for a level the backend does not offer.
pub(super) async fn run(ctx: &mut Ctx, args: StmBankArgs) -> Result<u8, Failure> {
    let isolation = Isolation::from(args.isolation);
    let stm = ctx.coordinator.stm()?;
    let keys: Arc<Vec<String>> = Arc::new(
        (0..args.accounts)
            .map(|i| format!("{}/{i}", args.prefix))
            .collect(),
    );
    ctx.wait(open_accounts(&stm, isolation, &keys), None)
        .await?;

    let options = StmOptions::with_max_attempts(args.max_attempts);
    let mut workers = JoinSet::new();
    for _ in 0..args.workers {
        let (stm, keys, options) = (stm.clone(), Arc::clone(&keys), options.clone());
        let transfers = args.transfers;
        workers.spawn(async move {
            let mut retries = 0u64;
            for _ in 0..transfers {
                let committed = stm
                    .atomically_with(isolation, &options, |tx| transfer(tx, Arc::clone(&keys)))
                    .await?;
                retries += u64::from(committed.attempts.saturating_sub(1));
            }
            Ok::<_, Error>(retries)
        });
    }
    let retries = match race(join_all(&mut workers), &mut ctx.interrupts, None).await {
        Raced::Done(retries) => retries?,
        Raced::Interrupted | Raced::Lost => return Err(Failure::interrupted()),
    };
    let commits = u64::from(args.workers) * u64::from(args.transfers);

    let balances = ctx
        .wait(read_balances(&stm, isolation, &keys), None)
        .await?;
    for (key, balance) in keys.iter().zip(&balances) {
        say!("account {key} balance={balance}");
    }
    let sum: u64 = balances.iter().sum();
    let expected = OPENING_BALANCE * u64::from(args.accounts);
    say!("sum={sum} expected={expected} commits={commits} retries={retries} isolation={isolation}");
    if sum == expected {
        Ok(exit::OK)
    } else if isolation == Isolation::ReadCommitted {
        eprintln!(
            "distsync: the sum changed from {expected} to {sum}: ReadCommitted checks nothing \
             at commit, so concurrent transfers can overwrite each other (lost updates)"
        );
        Ok(exit::OK)
    } else {
        Err(Failure::failed(format!(
            "the sum changed from {expected} to {sum} under {isolation}, which promises it does not"
        )))
    }
}

async fn open_accounts(
    stm: &Stm,
    isolation: Isolation,
    keys: &Arc<Vec<String>>,
) -> distsync::Result<()> {
    stm.atomically(isolation, |tx| {
        let keys = Arc::clone(keys);
        async move {
            for key in keys.iter() {
                tx.put(key, OPENING_BALANCE.to_string());
            }
            Ok(())
        }
    })
    .await
}

/// One transaction: half of a random account's balance to another random account (a
/// no-op when both picks are the same account, as in etcd's example).
async fn transfer(tx: StmTx, keys: Arc<Vec<String>>) -> distsync::Result<()> {
    let from = random_below(keys.len());
    let to = random_below(keys.len());
    if from == to {
        return Ok(());
    }
    let from_balance = balance(&tx, &keys[from]).await?;
    let to_balance = balance(&tx, &keys[to]).await?;
    let amount = from_balance / 2;
    tx.put(&keys[from], (from_balance - amount).to_string());
    tx.put(&keys[to], (to_balance + amount).to_string());
    Ok(())
}

async fn read_balances(
    stm: &Stm,
    isolation: Isolation,
    keys: &Arc<Vec<String>>,
) -> distsync::Result<Vec<u64>> {
    stm.atomically(isolation, |tx| {
        let keys = Arc::clone(keys);
        async move {
            let mut balances = Vec::with_capacity(keys.len());
            for key in keys.iter() {
                balances.push(balance(&tx, key).await?);
            }
            Ok(balances)
        }
    })
    .await
}

/// An account's balance; a missing account holds 0.
async fn balance(tx: &StmTx, key: &str) -> distsync::Result<u64> {
    match tx.get(key).await? {
        None => Ok(0),
        Some(value) => {
            let text = String::from_utf8_lossy(&value);
            text.trim().parse().map_err(|_| {
                Error::InvalidArgument(format!("account {key} holds {text:?}, not a balance"))
            })
        }
    }
}

/// Sums the workers' retries; the first error aborts the others.
async fn join_all(workers: &mut JoinSet<distsync::Result<u64>>) -> Result<u64, Failure> {
    let mut retries = 0;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(worker_retries)) => retries += worker_retries,
            Ok(Err(error)) => {
                workers.abort_all();
                return Err(error.into());
            }
            Err(error) => {
                workers.abort_all();
                return Err(Failure::failed(format!(
                    "a transfer worker failed: {error}"
                )));
            }
        }
    }
    Ok(retries)
}

/// A random number below `bound` (non-zero), from the standard library's randomly keyed
/// hasher: plenty for picking accounts, and no dependency.
fn random_below(bound: usize) -> usize {
    let random = RandomState::new().hash_one(0u8);
    (random % bound.max(1) as u64) as usize
}
