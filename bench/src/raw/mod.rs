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
//!
//! Each store also gets a diagnostic row: the raw sequence plus the one extra step
//! distsync takes there (etcd: a watch on the held key; Redis: subscribing to a
//! wake-up channel per acquire; PostgreSQL: bumping a fencing counter row in the
//! granting statement), so the report can show where the library's overhead goes.
//! Redis has a second one: the raw cycle through distsync's own grant and release
//! scripts, without the library ([`redis_scripts`]), which splits its overhead into
//! the scripts' and the client's.

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redis")]
pub mod redis_scripts;

use crate::contender::{Cycler, Unavailable};
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
        BackendKind::Etcd => vec![
            etcd::RawEtcd::start(&target.url, name, false).await,
            etcd::RawEtcd::start(&target.url, &format!("{name}/watched"), true).await,
        ],
        #[cfg(feature = "redis")]
        BackendKind::Redis => vec![
            redis::RawRedis::start(&target.url, name, false).await,
            redis::RawRedis::start(&target.url, &format!("{name}/subscribed"), true).await,
            redis_scripts::RawRedisScripts::start(&target.url, &format!("{name}/scripts")).await,
        ],
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => vec![
            postgres::RawPostgres::start(&target.url, name, false).await,
            postgres::RawPostgres::start(&target.url, &format!("{name}/counted"), true).await,
        ],
        #[allow(unreachable_patterns)]
        _ => Vec::new(),
    }
}
