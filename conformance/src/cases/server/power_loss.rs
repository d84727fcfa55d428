//! `server_power_loss_*`: a private server whose disk loses power right after its
//! clients' writes were acknowledged ([`Faults::power_loss_server`]): what it keeps is
//! what it synced before it acknowledged, which is what a store's durability setting
//! decides. Once at the store's default setting (the claim `survives_restart`, which a
//! store that acknowledges before it syncs does not make), once with every write synced
//! before its acknowledgement (every store's contract at that setting).
//!
//! The acknowledged state is a counter at [`ADDS`] and the tokens of a lock, a write
//! lock and an election term; after the power comes back the counter must read
//! [`ADDS`] and every token must be above its counterpart before.
//!
//! [`Faults::power_loss_server`]: crate::faults::Faults::power_loss_server

use std::sync::Arc;

use distsync_core::{Backend, Counter};

use super::restart::{grant_tokens, RECOVERY, START};
use crate::check::{eventually, violated, within, Bounded, Check, Context, Holds, PROMPT};
use crate::harness::Harness;

/// The counter's acknowledged adds.
const ADDS: i64 = 20;

/// Counts to [`ADDS`] and takes tokens on a private server on a loop disk (its writes
/// synced before they are acknowledged when `synchronous`), takes the power, starts
/// it again on what the disk kept and reads both back.
pub(super) async fn acknowledged_writes(h: Harness, synchronous: bool) -> Check {
    let mut server = within(
        START,
        "starting a private server on a loop disk",
        h.faults().power_loss_server(&**h.backend(), synchronous),
    )
    .await?;
    let backend = within(PROMPT, "connecting to the private server", server.connect()).await?;
    let name = h.name("power").ctx("naming the counter")?;
    let counter: Arc<dyn Counter> =
        Arc::from(backend.counter(name.clone()).ctx("making a counter")?);
    for _ in 0..ADDS {
        counter.add(1).bounded("adding").await?;
    }
    let before = grant_tokens(&h, &backend).await?;
    drop(counter);
    drop(backend);
    within(START, "taking the power", server.lose_power()).await?;
    within(START, "starting the server again", server.start()).await?;
    let backend: Arc<dyn Backend> = within(RECOVERY, "connecting again", server.connect()).await?;
    let counter: Arc<dyn Counter> =
        Arc::from(backend.counter(name).ctx("making the counter again")?);
    let value = eventually(RECOVERY, "reading the counter", || {
        let counter = Arc::clone(&counter);
        async move { Ok(counter.get().await.ok()) }
    })
    .await?;
    let after = grant_tokens(&h, &backend).await?;
    let setting = if synchronous {
        "every write synced before its acknowledgement"
    } else {
        "the store's default durability"
    };
    let lower: Vec<&str> = ["lock", "write lock", "election term"]
        .into_iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (before, after))| **before != 0 && *after <= **before)
        .map(|(kind, _)| kind)
        .collect();
    if value != ADDS || !lower.is_empty() {
        return violated(format!(
            "after the power loss ({setting}) the counter read {value} of {ADDS} acknowledged \
             adds; tokens before {before:?}, after {after:?} (lock, write lock, term){}",
            if lower.is_empty() {
                String::new()
            } else {
                format!(": the {} went back", lower.join(", "))
            }
        ));
    }
    Ok(Holds::figure(
        format!(
            "{ADDS} of {ADDS} adds kept, token {} → {}",
            before[0], after[0]
        ),
        format!(
            "{setting}: the counter read {ADDS} after the power came back; tokens before \
             {before:?}, after {after:?} (lock, write lock, term; 0 = not offered)"
        ),
    ))
}
