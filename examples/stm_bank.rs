//! The bank demo of etcd's STM: 5 accounts of 100, 10 workers each making 100
//! transfers of half a random account's balance to another; the sum stays 500.
//!
//! ```text
//! cargo run --example stm_bank                               # memory://
//! cargo run --example stm_bank --features etcd -- etcd://127.0.0.1:2379
//! ```

use std::hash::{BuildHasher, RandomState};

use distsync::stm::{Isolation, StmTx};
use distsync::Result;

const ACCOUNTS: usize = 5;
const WORKERS: usize = 10;
const TRANSFERS: usize = 100;

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".into());
    let coordinator = distsync::connect(&url).await?;
    println!(
        "connected to {} ({})",
        distsync::store::redact_url(&url),
        coordinator.capabilities().backend
    );
    let stm = coordinator.stm()?;

    stm.atomically(Isolation::SerializableSnapshot, |tx| async move {
        for account in 0..ACCOUNTS {
            tx.put(&key(account), "100");
        }
        Ok(())
    })
    .await?;

    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let stm = stm.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..TRANSFERS {
                stm.atomically(Isolation::SerializableSnapshot, exchange)
                    .await?;
            }
            Ok::<_, distsync::Error>(())
        }));
    }
    for worker in workers {
        worker.await.expect("a worker does not panic")?;
    }

    let balances = stm
        .atomically(Isolation::SerializableSnapshot, |tx| async move {
            let mut balances = Vec::new();
            for account in 0..ACCOUNTS {
                balances.push(balance(&tx, &key(account)).await?);
            }
            Ok(balances)
        })
        .await?;
    for (account, balance) in balances.iter().enumerate() {
        println!("account {}: {balance}", key(account));
    }
    let sum: u64 = balances.iter().sum();
    println!("account sum is {sum}");
    assert_eq!(sum, 100 * ACCOUNTS as u64);
    Ok(())
}

/// One transfer: half of a random account's balance to another random account.
async fn exchange(tx: StmTx) -> Result<()> {
    let (from, to) = (random_below(ACCOUNTS), random_below(ACCOUNTS));
    if from == to {
        return Ok(());
    }
    let from_balance = balance(&tx, &key(from)).await?;
    let to_balance = balance(&tx, &key(to)).await?;
    let amount = from_balance / 2;
    tx.put(&key(from), (from_balance - amount).to_string());
    tx.put(&key(to), (to_balance + amount).to_string());
    Ok(())
}

fn key(account: usize) -> String {
    format!("examples/accts/{account}")
}

async fn balance(tx: &StmTx, key: &str) -> Result<u64> {
    let value = tx.get(key).await?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&value).parse().unwrap_or(0))
}

/// A random number below `bound`, from the standard library's randomly keyed hasher.
fn random_below(bound: usize) -> usize {
    (RandomState::new().hash_one(0u8) % bound as u64) as usize
}
