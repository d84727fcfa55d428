//! The minimal raw command sequence that does what one lock+unlock cycle does, on the
//! client crate the backend itself uses, so the library's overhead can be read off as
//! a ratio.
//!
//! - etcd (`etcd-client`): a put-if-absent transaction (create revision 0 → put with
//!   a lease), then a delete;
//! - Redis (`redis`): `SET key token NX PX ttl`, then a compare-and-delete script;
//! - PostgreSQL (`sqlx`): `pg_advisory_lock`, then `pg_advisory_unlock`, on one
//!   connection;
//! - memory: none (there is no client crate beneath it).

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;

use crate::cycle::{Cycler, Unavailable};
use crate::target::Target;

/// The raw sequence for `target`'s store, on a key derived from `name`.
#[allow(unused_variables)]
pub async fn contenders(
    target: &Target,
    name: &str,
) -> Vec<std::result::Result<Box<dyn Cycler>, Unavailable>> {
    use crate::target::BackendKind;
    match target.kind {
        BackendKind::Memory => Vec::new(),
        #[cfg(feature = "etcd")]
        BackendKind::Etcd => vec![etcd::RawEtcd::start(&target.url, name).await],
        #[cfg(feature = "redis")]
        BackendKind::Redis => vec![redis::RawRedis::start(&target.url, name).await],
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => vec![postgres::RawPostgres::start(&target.url, name).await],
        #[allow(unreachable_patterns)]
        _ => Vec::new(),
    }
}
