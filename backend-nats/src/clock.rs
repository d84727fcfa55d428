//! The store's clock: the time stamp JetStream gives a message it stores, on the
//! server's clock (a replicated stream's leader's), read back from the message.
//!
//! JetStream has no request that reads the time, and an acknowledgement carries no
//! time stamp. A write to the bucket's clock key, [`CLOCK`], then a listing that
//! includes it, reads "now": the listing is answered at or above the write's sequence
//! (the read floor, see `src/store.rs`), so its clock message is this write's or a
//! later one, stamped no earlier than the write and no later than any write the
//! caller sends after the listing. Keys read in the same listing are as of that
//! moment or later too.
//!
//! The bucket keeps one message a key, so the clock key is one message whatever the
//! number of readings. It belongs to no kind (`src/keys.rs`): listings of every name,
//! purges and exports never see it.

use distsync_core::{Error, Result};

use crate::store::{Entry, Store, Write};
use crate::BACKEND;

/// The clock key: written to read the time (see the [module docs](self)).
pub(crate) const CLOCK: &str = "clock";

/// The server's time in µs since the Unix epoch and the last messages of `keys`, read
/// in one listing after a write to [`CLOCK`] (two round trips).
///
/// # Errors
/// The store's error; [`Error::Backend`] when the clock's message is missing from the
/// listing or has no time stamp.
pub(crate) async fn now_with(store: &Store, keys: &[String]) -> Result<(u64, Vec<Entry>)> {
    store.publish(Write::put(CLOCK, "")).await?.compared()?;
    let filters: Vec<String> = keys.iter().cloned().chain([CLOCK.to_owned()]).collect();
    let (mut entries, _) = store.list(&filters).await?;
    let at = entries
        .iter()
        .position(|entry| entry.key == CLOCK)
        .ok_or_else(|| Error::backend(BACKEND, "the clock key was missing after its write"))?;
    let now = entries.swap_remove(at).stamp_us()?;
    Ok((now, entries))
}
