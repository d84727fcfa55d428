//! The eviction check at connect.
//!
//! A Redis server with a `maxmemory` limit and an evicting `maxmemory-policy` deletes
//! keys when memory runs short: the `allkeys-*` policies any key, the `volatile-*`
//! ones keys with a TTL, which is every session key and every held entry. Evicting a
//! held entry grants the lock to the next waiter while its holder still believes it
//! holds (until its next renewal); evicting a waiter line or a fencing-token counter
//! breaks FIFO order and lets tokens start again; evicting a queue loses its items.
//! So [`check`] refuses any policy but `noeviction` unless the URL opts in with
//! `allow_eviction=true` ([`crate::RedisConfig::allow_eviction`]), in which case the
//! backend declares [`crate::capabilities_under_eviction`].

use distsync_core::{Error, Result};
use redis::aio::MultiplexedConnection;
use redis::Value;

#[cfg(test)]
use crate::config::RedisConfig;
use crate::error::redis_error;
use crate::options::RedisOptions;

/// The one policy that never deletes a key.
const NOEVICTION: &str = "noeviction";

/// The server's `maxmemory-policy`: from `CONFIG GET`, or, where `CONFIG` is disabled
/// or not permitted (renamed away, managed services, ACLs), from `INFO memory`.
/// `Ok(None)` when neither says.
///
/// # Errors
/// A connection error ([`Error::Connection`]) while asking.
pub(crate) async fn policy(conn: &mut MultiplexedConnection) -> Result<Option<String>> {
    let config = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async::<Value>(conn)
        .await;
    let refused = "CONFIG GET maxmemory-policy refused; reading INFO memory";
    if let Some(policy) = unless_refused(config, refused)?.and_then(from_config) {
        return Ok(Some(policy));
    }
    let info = redis::cmd("INFO")
        .arg("memory")
        .query_async::<Value>(conn)
        .await;
    Ok(unless_refused(info, "INFO memory refused")?.and_then(|reply| from_info(&reply)))
}

/// A reply, or `None` (logged as `refused`) when the server refused the command.
///
/// # Errors
/// A transient (connection) error.
fn unless_refused(reply: redis::RedisResult<Value>, refused: &str) -> Result<Option<Value>> {
    match reply {
        Ok(reply) => Ok(Some(reply)),
        Err(error) => {
            let error = redis_error(error);
            if error.is_transient() {
                return Err(error);
            }
            tracing::debug!(%error, "{refused}");
            Ok(None)
        }
    }
}

/// The policy in a `CONFIG GET maxmemory-policy` reply.
fn from_config(reply: Value) -> Option<String> {
    crate::info::config_value(&reply, "maxmemory-policy")
}

/// The policy in an `INFO memory` reply (a line `maxmemory_policy:<policy>`).
fn from_info(reply: &Value) -> Option<String> {
    crate::info::info_field(&crate::info::info_text(reply)?, "maxmemory_policy")
}

/// Whether the backend may run on a server with `policy`: `Ok(false)` for
/// `noeviction`, `Ok(true)` (the guarantees eviction takes away are then not
/// declared) for another or an unknown policy when the URL allows eviction.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the setting and the fix, for another or an
/// unknown policy without `allow_eviction=true`.
pub(crate) fn check(options: &RedisOptions, server: &str, policy: Option<&str>) -> Result<bool> {
    if policy == Some(NOEVICTION) {
        return Ok(false);
    }
    let found = match policy {
        Some(policy) => format!("its maxmemory-policy is `{policy}`"),
        None => "its maxmemory-policy could not be read (CONFIG GET and INFO memory \
                 were both refused)"
            .to_owned(),
    };
    if options.get_allow_eviction() {
        tracing::warn!(
            server,
            policy = policy.unwrap_or("unknown"),
            "redis server may evict keys; allow_eviction=true: fencing and FIFO \
             waiters are not claimed, and two holders of one lock are possible"
        );
        return Ok(true);
    }
    Err(Error::InvalidArgument(format!(
        "the Redis server at {} may evict keys: {found}. Eviction can delete held locks, \
         waiter lines, fencing-token counters and queue items (two holders, tokens going \
         backwards, lost items). Set `maxmemory-policy noeviction` (in redis.conf, or \
         `CONFIG SET maxmemory-policy noeviction`), or accept the weaker guarantees with \
         `allow_eviction=true` in the URL",
        server
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn reads_the_policy_from_config_and_info_replies() {
        let resp2 = Value::Array(vec![bulk("maxmemory-policy"), bulk("allkeys-lru")]);
        assert_eq!(from_config(resp2).as_deref(), Some("allkeys-lru"));
        let resp3 = Value::Map(vec![(bulk("maxmemory-policy"), bulk("noeviction"))]);
        assert_eq!(from_config(resp3).as_deref(), Some("noeviction"));
        assert_eq!(from_config(Value::Array(vec![])), None);
        let info = bulk("# Memory\r\nused_memory:1000\r\nmaxmemory_policy:volatile-lru\r\n");
        assert_eq!(from_info(&info).as_deref(), Some("volatile-lru"));
        assert_eq!(from_info(&bulk("# Memory\r\n")), None);
    }

    #[test]
    fn only_noeviction_passes_without_the_opt_in() {
        let strict = RedisConfig::parse("redis://user:secret@h/0").unwrap();
        assert!(!check(strict.options(), strict.server(), Some("noeviction")).unwrap());
        for policy in [Some("allkeys-lru"), Some("volatile-ttl"), None] {
            match check(strict.options(), strict.server(), policy) {
                Err(Error::InvalidArgument(message)) => {
                    assert!(message.contains("maxmemory-policy"), "{message}");
                    assert!(message.contains("noeviction"), "{message}");
                    assert!(message.contains("allow_eviction=true"), "{message}");
                    assert!(!message.contains("secret"), "{message}");
                }
                other => panic!("{policy:?}: {other:?}"),
            }
        }
        let lenient = RedisConfig::parse("redis://h/0?allow_eviction=true").unwrap();
        assert!(!check(lenient.options(), lenient.server(), Some("noeviction")).unwrap());
        assert!(check(lenient.options(), lenient.server(), Some("allkeys-lru")).unwrap());
        assert!(check(lenient.options(), lenient.server(), None).unwrap());
    }
}
