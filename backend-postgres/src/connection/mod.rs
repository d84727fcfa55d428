//! The backend's connections: their settings, bounds, liveness tests and checks, TLS,
//! the heartbeat that renews sessions, the releases awaiting a durable commit, and the
//! promotions that may have lost acknowledged commits.
//!
//! The backend opens no dedicated connection per session or per hold: holds and
//! waiters are rows ([`crate::waiter_line`]) and renewals are batched
//! ([`crate::connection::heartbeat`]), so every statement runs on one of its small
//! pools ([`crate::store::Pools`]) or the notification hub's one listening connection
//! ([`crate::notify`]).
//!
//! Settings are applied after connecting with `set_config` (one round trip), never as
//! startup parameters, which PgBouncer rejects: `synchronous_commit = on` (a fencing
//! counter or session id is acknowledged only once it survives a crash of the server)
//! and `idle_session_timeout = 0` (a pooled connection may idle between renewals).
//! Statements whose loss in a crash is harmless (a release that grants nobody, a join
//! or check that only waits) turn it off for their own transaction only: see
//! [`crate::waiter_line`], "Asynchronous commits"; under unflushed grants, so do grants
//! ([`crate::unflushed_grants`]).

/// The settings of pooled connections: commits acknowledged only once durable, no idle
/// timeout.
pub(crate) const POOL_SETUP: &str = "SELECT set_config('synchronous_commit', 'on', false), \
     set_config('idle_session_timeout', '0', false)";

/// The settings of pooled connections under unflushed grants with the bound `bound`
/// ([`crate::unflushed_grants`]): [`POOL_SETUP`]'s, and `distsync.unflushed_grants`,
/// the bound in milliseconds, which makes every grant pass the gate and commit without
/// waiting for the flush. Without the mode, [`POOL_SETUP`] alone: no setting the grant
/// paths would read.
pub(crate) fn pool_setup(unflushed_grants: Option<std::time::Duration>) -> String {
    match unflushed_grants {
        None => POOL_SETUP.to_owned(),
        Some(bound) => format!(
            "{POOL_SETUP}, set_config('distsync.unflushed_grants', '{}', false)",
            bound.as_millis()
        ),
    }
}

pub(crate) mod bounded;
pub(crate) mod checks;
pub(crate) mod config;
pub(crate) mod heartbeat;
pub(crate) mod liveness;
pub(crate) mod promotion;
pub(crate) mod reused;
pub(crate) mod tls;
pub(crate) mod transaction;
pub(crate) mod unflushed;
