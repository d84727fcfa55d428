//! The integration tests of this crate as one test binary, a module per concern,
//! against a real nats-server with JetStream (`DISTSYNC_NATS_URL`; skipped loudly
//! when unset, a failure under `CI=true`).

mod amnesia;
mod bucket;
mod common;
mod connect;
mod dropped_connection;
mod ended_create;
mod export;
mod killed_holder;
mod names;
mod queue_age;
mod queue_dropped;
mod rate_limiter;
mod scale;
mod status;
mod stm;
