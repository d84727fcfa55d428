//! Exactly-once effects on PostgreSQL: an order service writes each order and its queue
//! item in one transaction (the outbox), and a worker applies each item to a ledger in
//! the transaction that acknowledges it (`ack_in`). A committed order reaches the ledger
//! once, a rolled-back one never, whatever crashes in between; the example checks both
//! at the end and fails if either does not hold.
//!
//! The first argument is the database that holds the orders, the ledger and the
//! coordination tables (default: the `DISTSYNC_POSTGRES_URL` environment variable).
//!
//! ```text
//! cargo run --example orders --features postgres -- postgres://me@127.0.0.1/app
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync::store::postgres::ack_in;

/// How many orders the service places.
const ORDERS: i64 = 20;
/// The order whose transaction the service rolls back.
const ROLLED_BACK: i64 = 7;
/// How long the worker waits for the next item before it gives up.
const RECEIVE_LIMIT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => std::env::var("DISTSYNC_POSTGRES_URL")
            .map_err(|_| "usage: orders POSTGRES_URL (or set DISTSYNC_POSTGRES_URL)")?,
    };
    let backend = distsync::store::postgres::backend(&url).await?;
    // The orders and the ledger live in the database the backend coordinates in, so the
    // backend's own pool runs their transactions.
    let pool = backend.pool().clone();
    // Rows and the queue belong to this run alone: a rerun starts from nothing.
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let run = format!("{}-{started}", std::process::id());
    let queue_name = format!("orders-example/{run}");
    let outbox = backend.outbox(&queue_name)?;
    let coordinator = distsync::Coordinator::new(backend);
    let queue = coordinator.queue(&queue_name)?;

    // The ledger has no unique key on the order: the check at the end, not a
    // constraint, shows that each order is applied once.
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS orders_example_orders (
             run text NOT NULL, id bigint NOT NULL, total_cents bigint NOT NULL,
             PRIMARY KEY (run, id));
         CREATE TABLE IF NOT EXISTS orders_example_ledger (
             entry bigserial PRIMARY KEY, run text NOT NULL, order_id bigint NOT NULL,
             amount_cents bigint NOT NULL)",
    )
    .execute(&pool)
    .await?;

    // The order service: the order row and its item commit together or not at all.
    let mut committed = Vec::new();
    for id in 1..=ORDERS {
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO orders_example_orders (run, id, total_cents) VALUES ($1, $2, $3)")
            .bind(&run)
            .bind(id)
            .bind(id * 100)
            .execute(&mut *tx)
            .await?;
        outbox.enqueue(&mut tx, id.to_string()).await?;
        if id == ROLLED_BACK {
            // Its item goes with the order: no consumer ever sees it.
            tx.rollback().await?;
        } else {
            tx.commit().await?;
            committed.push(id);
        }
    }

    // The worker: the ledger row and the removal of the item commit together. A worker
    // that dies before its commit leaves the item to be delivered again, with no ledger
    // row; one that dies after it leaves no item.
    let session = coordinator.session().await?;
    let mut applied = 0;
    while applied < committed.len() {
        let delivery = tokio::time::timeout(RECEIVE_LIMIT, queue.receive(&session))
            .await
            .map_err(|_| {
                format!(
                    "no item within {RECEIVE_LIMIT:?} with {applied} of {} orders applied",
                    committed.len()
                )
            })??;
        let id: i64 = std::str::from_utf8(delivery.item())?.parse()?;
        let mut tx = pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO orders_example_ledger (run, order_id, amount_cents)
             SELECT run, id, total_cents FROM orders_example_orders WHERE run = $1 AND id = $2",
        )
        .bind(&run)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // An item exists only for an order that committed.
        if inserted.rows_affected() != 1 {
            return Err(format!("item {id} has no order").into());
        }
        // Fenced by the delivery: had this session lost the item (to another worker, or
        // back to the queue), this fails with SessionLost and the ledger row rolls back.
        let pending = ack_in(&mut tx, delivery).await?;
        tx.commit().await?;
        pending.committed();
        applied += 1;
    }
    session.close().await?;

    // One ledger row per committed order, none for the rolled-back one, nothing queued.
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT order_id, count(*) FROM orders_example_ledger WHERE run = $1
          GROUP BY order_id ORDER BY order_id",
    )
    .bind(&run)
    .fetch_all(&pool)
    .await?;
    let expected: Vec<(i64, i64)> = committed.iter().map(|&id| (id, 1)).collect();
    if rows != expected {
        return Err(format!("ledger (order, rows) {rows:?}, expected {expected:?}").into());
    }
    let queued = queue.len().await?;
    if queued != 0 {
        return Err(format!("{queued} items left in {queue_name}").into());
    }
    println!(
        "orders: {} committed, order {ROLLED_BACK} rolled back; ledger: one row per committed order, \
         none for order {ROLLED_BACK}; queue {queue_name} empty",
        committed.len()
    );
    Ok(())
}
