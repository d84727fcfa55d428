//! `server_wipe_one_holder_bounded`: the store that forgot of `server_wipe_one_holder`
//! ([`super::wipe`]), with the lock-delay on: every client's URL bounds session TTLs
//! (`max_session_ttl=`), whatever the column's URL says, so that a backend whose
//! column runs without the bound (a client that never knew the old store cannot tell
//! it from a new one) is measured in the configuration that declares
//! `exclusive_across_restart`. A backend whose URL takes no bound, or whose bounded
//! client does not declare it, refuses the case: measured not to hold, and claimed
//! only by the backends whose URL takes the bound
//! ([`Capabilities::session_bound`]).

use super::super::boxed;
use super::wipe::{one_holder, Bound};
use distsync_core::Capabilities;

use crate::case::{Case, Claim, Group, Need};
use crate::faults::Hook;

/// The case, registered in the server group's list.
pub(super) const CASE: Case = Case {
    id: "server_wipe_one_holder_bounded",
    group: Group::Server,
    guarantee: "a store that forgot, lock-delay on (max_session_ttl): the holder's lost() \
                before a new client is granted, tokens grow",
    needs: &[Need::Lock],
    // The case's clients carry the bound, with which these backends declare
    // `exclusive_across_restart` (the column's flag says what the column's own URL
    // gives, often without the bound).
    claim: Claim::Flag(
        "exclusive_across_restart with max_session_ttl=",
        |c: &Capabilities| c.session_bound,
    ),
    hooks: &[Hook::PrivateServer],
    run: |h| boxed(one_holder(h, Bound::Always)),
};
