//! Billing under a lock per customer, with the fencing token checked by PostgreSQL: each
//! charge runs in one transaction that first admits the lock's token for the account
//! (`distsync::store::postgres::fence::admit`), so a holder that paused past its lease and
//! woke up after a newer holder wrote is refused by the database, not by hope.
//!
//! The first argument is the coordination store (any URL), the second the database
//! that holds the accounts (a plain PostgreSQL URL).
//!
//! ```text
//! cargo run --example billing_postgres --features postgres -- memory:// postgres://me@127.0.0.1/app
//! ```

use distsync::store::postgres::fence::admit;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let coordinator = distsync::connect(&args.next().unwrap_or("memory://".into())).await?;
    let pool = sqlx::PgPool::connect(&args.next().ok_or("a PostgreSQL URL")?).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS billing_accounts (id text PRIMARY KEY, balance bigint);
         INSERT INTO billing_accounts VALUES ('alice', 100) ON CONFLICT DO NOTHING",
    )
    .execute(&pool)
    .await?;
    let session = coordinator.session().await?;
    let locker = coordinator.locker(&session, "billing/alice")?;
    let guard = locker.lock().await?;
    let (token, mut tx) = (guard.token(), pool.begin().await?);
    // The token is admitted in the transaction that charges: a stale holder rolls back.
    let admitted = admit(&mut tx, "billing_fences", "accounts/alice", token).await?;
    if admitted {
        sqlx::query("UPDATE billing_accounts SET balance = balance - 10 WHERE id = 'alice'")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    guard.unlock().await?;
    session.close().await?;
    println!("charged alice under token {token}: admitted {admitted}");
    Ok(())
}
