//! Administrative break: a third party ends a holder's hold through
//! [`Backend::break_lock`](distsync_core::Backend::break_lock), safely.

use distsync_core::{Error, Fairness};
use tokio::time::Instant;

use super::held_and_awaited;
use crate::check::{ensure, ms, violated, Bounded, Check, Context, Holds, PROMPT};
use crate::harness::Harness;

/// A holds the lock (fault TTL), B waits. A third party breaks the lock: the answer
/// names A's session and grant; A's `lost()` fires within twice its TTL; B is granted
/// with a strictly higher token; A's guarded write (where the backend offers them) is
/// refused; a second break once B released finds nobody holding.
pub(super) async fn break_hold(h: Harness, fairness: Fairness) -> Check {
    let name = h.name("mutex").ctx("naming the lock")?;
    let (a, held, mut waiter) = held_and_awaited(&h, fairness).await?;
    let guarded = h.capabilities().guarded_writes;
    let key = h.key("guarded");
    if guarded {
        held.put_if_held(&key, "a")
            .bounded("A's guarded write while holding")
            .await?;
    }
    let broke_at = Instant::now();
    let Some(broken) = h
        .backend()
        .break_lock(&name)
        .bounded("a third party breaking the lock")
        .await?
    else {
        return violated("break_lock found nobody holding the lock A holds");
    };
    ensure!(
        broken.session == a.id(),
        "the break names session {} as the holder; A's session is {}",
        broken.session,
        a.id()
    );
    if let Some(token) = broken.token {
        ensure!(
            token == held.token(),
            "the break names token {token} as the broken grant's; A's guard has {}",
            held.token()
        );
    }
    let limit = h.fault_ttl() * 2 + PROMPT;
    if tokio::time::timeout(limit, held.lost()).await.is_err() {
        return violated(format!(
            "A's lost() had not fired {limit:?} after its lock was broken (TTL {:?})",
            h.fault_ttl()
        ));
    }
    let lost_after = broke_at.elapsed();
    let left = limit.saturating_sub(broke_at.elapsed());
    let (next, granted_at) = waiter.join(left.max(PROMPT)).await?;
    let granted_after = granted_at.saturating_duration_since(broke_at);
    ensure!(
        next.token() > held.token(),
        "B's token {} is not above the broken holder's {}",
        next.token(),
        held.token()
    );
    if guarded {
        match held.put_if_held(&key, "stale").await {
            Err(Error::NotHeld | Error::SessionLost) => {}
            Ok(()) => {
                return violated(
                    "A's guarded write committed after its lock was broken and B holds",
                )
            }
            Err(error) => {
                return violated(format!(
                    "A's guarded write after the break: unexpected error {error}"
                ))
            }
        }
    }
    next.unlock().bounded("B unlocking").await?;
    drop(held);
    let again = h
        .backend()
        .break_lock(&name)
        .bounded("breaking the lock nobody holds")
        .await?;
    ensure!(
        again.is_none(),
        "a break of the released lock found a holder: {again:?}"
    );
    Ok(Holds::figure(
        format!(
            "A lost() after {}, B granted after {}",
            ms(lost_after),
            ms(granted_after)
        ),
        if guarded {
            "the break named A's session and token; A saw lost(), B was granted with a higher \
             token, A's guarded write was refused"
        } else {
            "the break named A's session and token; A saw lost(), B was granted with a higher \
             token"
        },
    ))
}
