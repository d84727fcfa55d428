//! The integration tests of this crate as one test binary, a module per concern,
//! against a real MySQL or MariaDB server (`DISTSYNC_MYSQL_URL`, and the TLS one,
//! `DISTSYNC_MYSQL_TLS_URL`; skipped loudly when unset). Each test works in tables of
//! its own (a fresh `table_prefix=`), dropped when it passes.

mod clock;
mod common;
mod compaction;
mod connect;
mod failover;
mod guesses;
mod key_bell;
mod lease;
mod queue_age;
mod rate_limiter;
mod reaper;
mod status;
mod tls_auth;
mod tls_logs;
mod txn;
mod watch;
