//! A lock holder (on any store) paused past its lease, whose write to a PostgreSQL
//! table, fenced by `fence::admit` in the writer's own transaction, is refused once a
//! newer holder has written.

use crate::check::{ensure, within, Bounded, Check, Context, Holds, Task, PROMPT};
use crate::faults::caller_transactions::scope_of;
use crate::faults::HoldKind;
use crate::harness::Harness;

/// The case body (see the module docs).
pub(super) async fn paused_holder(h: Harness) -> Check {
    let transactions = h.caller_transactions().ctx("the caller's database")?;
    let scope = scope_of(&h.key("fences"));
    transactions
        .prepare(&scope)
        .bounded("creating the fenced table")
        .await?;
    let ttl = h.holder_ttl();
    let mut holder = h
        .spawn_holder(HoldKind::Lock, "fenced")
        .await
        .set_up_ctx("starting an external holder")?;
    let stale = holder.token();
    let resource = "accounts/42";
    ensure!(
        transactions
            .fenced_write(&scope, resource, stale, "first")
            .bounded("the holder's write while it holds")
            .await?,
        "the holder's write with its token {stale} was refused while it held the lock"
    );
    let session = h.session().set_up("opening the waiter's session").await?;
    let locker = h
        .backend()
        .locker(&session, h.name("fenced").ctx("the lock's name")?)
        .ctx("the waiter's locker")?;
    let mut waiter = Task::spawn("the waiter", async move {
        let guard = locker.lock().await.ctx("the waiter locking")?;
        Ok((guard, locker))
    });
    holder.pause().await.ctx("pausing the holder")?;
    let (guard, _locker) = waiter.join(ttl * 3 + PROMPT).await?;
    ensure!(
        guard.token() > stale,
        "the new holder's token {} is not above the paused holder's {stale}",
        guard.token()
    );
    ensure!(
        transactions
            .fenced_write(&scope, resource, guard.token(), "second")
            .bounded("the new holder's write")
            .await?,
        "the new holder's write with token {} was refused",
        guard.token()
    );
    holder.resume().await.ctx("resuming the holder")?;
    let written = within(PROMPT, "the woken holder's write", holder.write()).await?;
    let admitted = transactions
        .fenced_write(&scope, resource, written, "stale")
        .bounded("the woken holder's write")
        .await?;
    ensure!(
        !admitted,
        "the PostgreSQL fence admitted the woken holder's write (token {written}) after the \
         new holder's (token {})",
        guard.token()
    );
    let last = transactions
        .last_writer(&scope, resource)
        .bounded("reading the resource")
        .await?;
    ensure!(
        last.as_deref() == Some("second"),
        "the resource's last writer is {last:?}, not the new holder"
    );
    // The tables go with the case; one left behind (a failed drop) holds nothing that
    // another case reads.
    if let Err(error) = transactions.forget(&scope).await {
        tracing::debug!(%error, scope, "dropping a case's tables");
    }
    let token = guard.token();
    guard.unlock().bounded("the new holder unlocking").await?;
    drop(holder);
    Ok(Holds::figure(
        "the stale write refused",
        format!(
            "holder TTL {ttl:?}; the paused holder's token {written} was refused by the fence \
             table in {} after the new holder's {}",
            transactions.describe(),
            token
        ),
    ))
}
