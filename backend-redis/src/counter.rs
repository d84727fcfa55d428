//! The counter and the count-down latch.
//!
//! | what | key |
//! |---|---|
//! | counter | `{<ns><escaped name>}:counter`: a string holding the decimal value; its waiters listen on `{<ns><escaped name>}:counter:ch` |
//! | latch | `{<ns><escaped name>}:latch`: a hash of `initial` and `remaining`; its waiters listen on `{<ns><escaped name>}:latch:ch` |
//!
//! Every change is one script, hence atomic on the server: an add runs `INCRBY`
//! (which refuses an overflow and changes nothing), a set `SET`, a compare-and-set
//! compares first; each publishes on the counter's channel when it changed the value,
//! so [`Counter::changed`] waits on pub/sub instead of polling. A `PUBLISH` that nobody
//! listens to costs the server a lookup in its channel table (and, on a cluster, a
//! broadcast to the other nodes); there is no cheaper way for a script to know whether
//! anyone listens (`PUBSUB NUMSUB` is itself that lookup). None is sent twice by the
//! client, so an add whose reply is lost is applied at most once (the error says it
//! may have been, [`distsync_core::Error::may_have_applied`]). The keys have no TTL; whether they
//! survive a restart is the server's persistence ([`crate::Persistence`]).

use distsync_core::raw::Make;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use distsync_core::counter::{Counter, CHANGED_SAFETY_NET};
use distsync_core::latch::{check_initial_count, CountDownLatch};
use distsync_core::raw::Look::{NotYet, Ready};
use distsync_core::{Error, Name, Result};
use redis::Value;

use crate::capabilities::BACKEND;
use crate::error::{array, bytes, int, unexpected};
use crate::scripts::Lua;
use crate::store::Shared;
use crate::waiting;

/// `KEYS[1]` the counter; `ARGV[2]` the expected value, `ARGV[3]` the new one, both
/// canonical decimals (as `INCRBY` and `SET` of an `i64` write them). A counter never
/// written holds `0`. Answers 1 when it swapped, and then publishes the change
/// (unless the new value is the old one).
static COMPARE_AND_SET: LazyLock<Lua> = LazyLock::new(|| {
    Lua::with_lib(
        "local current = redis.call('GET', KEYS[1]) or '0'\n\
         if current ~= ARGV[2] then return 0 end\n\
         redis.call('SET', KEYS[1], ARGV[3])\n\
         if ARGV[3] ~= current then publish(KEYS[1] .. ':ch', 'c') end\n\
         return 1\n",
    )
});

/// `KEYS[1]` the counter; `ARGV[2]` the delta. `INCRBY` (an overflow is its error, and
/// the script stops before any write), a publish of the change, and the new value as
/// the stored decimal text: Lua numbers are doubles, so the integer `INCRBY` answers
/// would lose precision above 2^53 on its way back.
static ADD: LazyLock<Lua> = LazyLock::new(|| {
    Lua::with_lib(
        "redis.call('INCRBY', KEYS[1], ARGV[2])\n\
         if ARGV[2] ~= '0' then publish(KEYS[1] .. ':ch', 'c') end\n\
         return redis.call('GET', KEYS[1])\n",
    )
});

/// `KEYS[1]` the counter; `ARGV[2]` the value. Sets it and publishes when it changed.
static SET: LazyLock<Lua> = LazyLock::new(|| {
    Lua::with_lib(
        "local old = redis.call('GET', KEYS[1]) or '0'\n\
         redis.call('SET', KEYS[1], ARGV[2])\n\
         if old ~= ARGV[2] then publish(KEYS[1] .. ':ch', 'c') end\n\
         return 1\n",
    )
});

/// `KEYS[1]` the latch; `ARGV[2]` the handle's initial count. Creates the latch with
/// that count if absent; answers `{0, stored initial}` when the stored initial count
/// differs (changing nothing), else `{1, remaining}` after one decrement (none at 0).
/// The decrement that reaches 0 wakes the waiters.
static COUNT_DOWN: LazyLock<Lua> = LazyLock::new(|| {
    Lua::with_lib(
        "local initial = redis.call('HGET', KEYS[1], 'initial')\n\
         if not initial then\n\
           redis.call('HSET', KEYS[1], 'initial', ARGV[2], 'remaining', ARGV[2])\n\
           initial = ARGV[2]\n\
         end\n\
         if initial ~= ARGV[2] then return {0, initial} end\n\
         if redis.call('HGET', KEYS[1], 'remaining') == '0' then return {1, 0} end\n\
         local left = redis.call('HINCRBY', KEYS[1], 'remaining', -1)\n\
         if left == 0 then publish(KEYS[1] .. ':ch', 'open') end\n\
         return {1, left}\n",
    )
});

/// A Redis counter.
pub(crate) struct RedisCounter {
    shared: Arc<Shared>,
    name: Name,
    key: String,
}

/// `{<ns><escaped name>}:<kind>`, as [`crate::keys::Keys::primitive`] builds every
/// primitive's prefix: the kind word after the tag keeps it apart from every other
/// kind's keys of the same name.
fn primitive(shared: &Shared, name: &Name, kind: &str) -> String {
    format!(
        "{{{}{}}}:{kind}",
        shared.namespace(),
        crate::keys::escape_name(name.as_str())
    )
}

/// A decimal counter value, or a typed error for anything else.
pub(crate) fn parse_value(name: &Name, value: Option<Vec<u8>>) -> Result<i64> {
    match value {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                Error::backend(
                    BACKEND,
                    format!(
                        "counter {:?} holds a value that is not an integer",
                        name.as_str()
                    ),
                )
            }),
    }
}

#[async_trait]
impl Counter for RedisCounter {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn get(&self) -> Result<i64> {
        let reply = self.shared.query(redis::cmd("GET").arg(&self.key)).await?;
        parse_value(&self.name, bytes("GET", reply)?)
    }

    async fn add(&self, delta: i64) -> Result<i64> {
        let mut call = self.shared.script(&ADD);
        call.key(&self.key).arg(delta.to_string());
        match self.shared.eval(&call).await {
            Ok(reply) => int("counter add", &reply),
            // Redis refuses, changing nothing, an increment that would overflow: the
            // caller's input, reported as core's `checked_add` reports it.
            Err(error) if error.to_string().contains("would overflow") => {
                Err(Error::InvalidArgument(format!(
                    "counter {:?}: adding {delta} overflows a 64-bit signed integer",
                    self.name.as_str()
                )))
            }
            Err(error) => Err(error),
        }
    }

    async fn compare_and_set(&self, expected: i64, new: i64) -> Result<bool> {
        let mut call = self.shared.script(&COMPARE_AND_SET);
        call.key(&self.key)
            .arg(expected.to_string())
            .arg(new.to_string());
        let reply = self.shared.eval(&call).await?;
        Ok(int("counter compare_and_set", &reply)? == 1)
    }

    async fn set(&self, value: i64) -> Result<()> {
        let mut call = self.shared.script(&SET);
        call.key(&self.key).arg(value.to_string());
        self.shared.eval(&call).await.map(drop)
    }

    /// Subscribes to the counter's channel, then reads: a write after the subscription
    /// publishes to it, one before is seen by the read, so no change is missed. Reads
    /// again after every message, after every resubscription of the pub/sub
    /// connection (messages may have been lost while it was down), and every
    /// [`CHANGED_SAFETY_NET`] without one. Transient errors are waited out.
    ///
    /// Cancel-safety: cancel-safe; the subscription ends with the future.
    async fn changed(&self, seen: i64) -> Result<i64> {
        let channel = format!("{}:ch", self.key);
        waiting::wait_until(
            &self.shared,
            &channel,
            "a counter change",
            None,
            |_| async {
                let value = self.get().await?;
                Ok(if value == seen {
                    NotYet(Some(CHANGED_SAFETY_NET))
                } else {
                    Ready(value)
                })
            },
        )
        .await
    }
}

/// A Redis count-down latch.
pub(crate) struct RedisLatch {
    shared: Arc<Shared>,
    name: Name,
    key: String,
    initial: u64,
}

impl RedisLatch {
    fn number(&self, what: &str, value: Value) -> Result<u64> {
        let text = bytes(what, value.clone())?;
        text.and_then(|text| std::str::from_utf8(&text).ok()?.parse().ok())
            .ok_or_else(|| unexpected(what, &value))
    }
}

#[async_trait]
impl CountDownLatch for RedisLatch {
    fn name(&self) -> &Name {
        &self.name
    }

    fn initial_count(&self) -> u64 {
        self.initial
    }

    async fn count(&self) -> Result<u64> {
        let reply = self
            .shared
            .query(
                redis::cmd("HMGET")
                    .arg(&self.key)
                    .arg("initial")
                    .arg("remaining"),
            )
            .await?;
        let mut fields = array("HMGET", reply)?.into_iter();
        match (fields.next(), fields.next()) {
            (Some(Value::Nil), _) => Ok(self.initial),
            (Some(initial), Some(remaining)) => {
                check_initial_count(&self.name, self.initial, self.number("HMGET", initial)?)?;
                self.number("HMGET", remaining)
            }
            _ => Err(Error::backend(
                BACKEND,
                "HMGET answered fewer than two fields",
            )),
        }
    }

    async fn count_down(&self) -> Result<u64> {
        let mut call = self.shared.script(&COUNT_DOWN);
        call.key(&self.key).arg(self.initial);
        let reply = array("latch count_down", self.shared.eval(&call).await?)?;
        let mut fields = reply.into_iter();
        let (Some(joined), Some(count)) = (fields.next(), fields.next()) else {
            return Err(Error::backend(
                BACKEND,
                "latch count_down answered fewer than two fields",
            ));
        };
        if int("latch count_down", &joined)? == 1 {
            Ok(u64::try_from(int("latch count_down", &count)?).unwrap_or(0))
        } else {
            check_initial_count(
                &self.name,
                self.initial,
                self.number("latch count_down", count)?,
            )?;
            Err(Error::backend(
                BACKEND,
                "latch count_down refused a matching count",
            ))
        }
    }

    /// Subscribes to the latch's channel, then reads the count: the publish of the
    /// decrement that reaches zero comes after the subscription or before the read,
    /// so it is never missed. Reads after every message and every resubscription.
    ///
    /// Cancel-safety: cancel-safe; waiting leaves nothing in the store.
    async fn wait(&self) -> Result<()> {
        let channel = format!("{}:ch", self.key);
        waiting::wait_until(&self.shared, &channel, "latch wait", None, |_| async {
            Ok(if self.count().await? == 0 {
                Ready(())
            } else {
                NotYet(None)
            })
        })
        .await
    }
}

impl Make<Arc<Shared>, Name> for RedisCounter {
    fn make(shared: &Arc<Shared>, name: Name) -> Result<Self> {
        Ok(Self {
            key: primitive(shared, &name, "counter"),
            shared: Arc::clone(shared),
            name,
        })
    }
}

impl Make<Arc<Shared>, (Name, u64)> for RedisLatch {
    fn make(shared: &Arc<Shared>, (name, initial): (Name, u64)) -> Result<Self> {
        Ok(Self {
            key: primitive(shared, &name, "latch"),
            shared: Arc::clone(shared),
            name,
            initial,
        })
    }
}
