//! The whole conformance suite against the PostgreSQL server named by
//! `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`), with
//! fault hooks that hold locks in a child process.

mod support;

distsync_conformance::conformance_tests!(support::harness);

lock_holder_child!();
