//! Who holds one name ([`distsync_core::Backend::status_of`]) on Redis: the lines of
//! the lock, read-write lock, election and semaphore of that name, read by one call of
//! the status script (`lua/status.lua`, as [`crate::status`] reads every line it
//! finds) with no scan of the store.
//!
//! Every key of one primitive lies under the hash tag `{<ns><escaped name>}`
//! ([`crate::keys`]), and the four kinds of one name share that tag: the call declares
//! the first prefix as its key, so under Redis Cluster it goes to the master of that
//! one slot, and the script reads the four lines at one instant. This is what serves
//! lock breaks, release requests and leadership hand-overs under Redis Cluster, where
//! a store-wide listing spans every master.
//!
//! On one server the same call reads each entry's session time left
//! ([`HoldStatus::expires_in`](distsync_core::status::HoldStatus::expires_in)), as a
//! listing does. Under Redis Cluster, where a session key lies in another slot, the
//! entries carry none: their readers act on holders and tokens alone, and a read in
//! each session's slot would add a round trip to every break and hand-over.

use distsync_core::status::{LineKind, StatusReport};
use distsync_core::{Name, Result};

use crate::capabilities::BACKEND;
use crate::error::array;
use crate::keys::Kind;
use crate::status::{line, read};
use crate::store::Shared;

/// The kinds of primitive a waiter line serves, as the status report names them.
const LINES: [(Kind, LineKind); 4] = [
    (Kind::Lock, LineKind::Lock),
    (Kind::RwLock, LineKind::RwLock),
    (Kind::Election, LineKind::Election),
    (Kind::Semaphore, LineKind::Semaphore),
];

/// The report of the lines named `name`: one per kind with a holder or a waiter (a
/// name nobody uses has none, as in a listing of the store).
pub(crate) async fn status_of(shared: &Shared, name: &Name) -> Result<StatusReport> {
    let prefixes = LINES.map(|(kind, _)| shared.keys.primitive(name, kind));
    // The first prefix, declared, routes the call to the slot every prefix shares.
    let answers = read(shared, &prefixes.each_ref().map(|p| ("line", p.as_str()))).await?;
    let mut report = StatusReport::new(BACKEND, name.as_str());
    for (((_, kind), p), answer) in LINES.iter().zip(&prefixes).zip(answers) {
        let status = line(*kind, name.as_str().to_owned(), p, array("status", answer)?)?;
        if !status.holders.is_empty() || !status.waiters.is_empty() {
            report.lines.push(status);
        }
    }
    report.sort();
    Ok(report)
}
