//! The minimal raw command sequence that does what one lock+unlock cycle does, on the
//! client crate the backend itself uses, so the library's overhead can be read off as
//! a ratio.
//!
//! - etcd (`etcd-client`): a put-if-absent transaction (create revision 0 → put with
//!   a lease), then a delete;
//! - Redis (`redis`): `SET key token NX PX ttl`, then a compare-and-delete script;
//! - PostgreSQL (`sqlx`): `pg_advisory_lock`, then `pg_advisory_unlock`, on one
//!   connection;
//! - ZooKeeper (`zookeeper-client`): create an ephemeral sequential node under the
//!   lock's node, list the children (it is the lowest), delete it;
//! - MySQL/MariaDB (`sqlx`): `GET_LOCK(name, timeout)`, then `RELEASE_LOCK(name)`, on
//!   one connection;
//! - NATS (`async-nats`): a JetStream KV create of one key, then a purge of it;
//! - memory: none (there is no client crate beneath it).
//!
//! Beside them, the SQL stores' durable floor ([`durable_floor`]): one row update and
//! a synchronous commit per grant, the fewest a durable grant can cost.

pub mod durable_floor;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod session_lock;
#[cfg(feature = "zookeeper")]
pub mod zookeeper;

use crate::contender::Started;
use crate::target::Target;

/// The raw sequence for `target`'s store on a key derived from `name`, or `None` on
/// memory (and on a backend not compiled in).
#[allow(unused_variables)]
pub async fn contender(target: &Target, name: &str) -> Option<Started> {
    let url = target.url.as_str();
    match target.kind {
        #[cfg(feature = "etcd")]
        crate::target::BackendKind::Etcd => Some(etcd::start(url, name).await),
        #[cfg(feature = "redis")]
        crate::target::BackendKind::Redis => Some(redis::start(url, name).await),
        #[cfg(feature = "postgres")]
        crate::target::BackendKind::Postgres | crate::target::BackendKind::PostgresUnflushed => {
            Some(postgres::start(url, name).await)
        }
        #[cfg(feature = "zookeeper")]
        crate::target::BackendKind::Zookeeper => Some(zookeeper::start(url, name).await),
        #[cfg(feature = "mysql")]
        crate::target::BackendKind::Mysql => Some(mysql::start(url, name).await),
        #[cfg(feature = "nats")]
        crate::target::BackendKind::Nats => Some(nats::start(url, name).await),
        _ => None,
    }
}

/// A stable 64-bit hash of `name` (FNV-1a), for stores whose lock keys are numbers or
/// short names rather than the bench's paths.
pub fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
