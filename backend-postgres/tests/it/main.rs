//! The integration tests of this crate as one test binary, a module per concern, so
//! that the workspace links one test binary per crate instead of one per file.
//! `.config/nextest.toml` says which of them run alone or in turns.

mod acknowledge_in;
mod amnesia;
mod bounded;
mod conflicts;
mod connect;
mod connections;
mod connections_ended;
mod failover;
mod fence;
mod gapless;
mod guarded;
mod outbox;
mod postgres;
mod queue_wake;
mod renewal_race;
mod restart;
mod semaphore;
mod status;
mod support;
mod tls_auth;
mod tls_logs;
mod transaction_lock;
mod unfair_lock;
mod unflushed_grants;

/// The child process of `postgres`'s lock-holder tests (the conformance suite's protocol,
/// which re-runs this binary with this test's name, so it sits at the binary's root).
#[test]
#[ignore = "the child process of the lock-holder tests; started by them"]
fn conformance_child() {
    distsync_conformance::faults::child::child_main(postgres::factory);
}
