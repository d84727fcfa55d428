//! The rate limiter: GCRA in one Lua script that reads the server's clock (`TIME`)
//! and updates the limiter's one hash `{<ns><name>}:ratelimit` (fields `tat`, the
//! theoretical arrival time in µs of server time, and `rate`, the rate it was stored
//! with); see [`distsync_core::rate_limiter`].
//!
//! The key expires when the TAT passes (`PEXPIRE`): an idle limiter's state says
//! nothing a missing key would not. On a server without persistence a restart
//! forgets every TAT, so a limiter grants a fresh burst after it
//! ([`distsync_core::Capabilities::survives_restart`] is `false` there).

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use distsync_core::rate_limiter::{Admission, Rate};
use distsync_core::raw::{Make, RateStep, RateStepLimiter};
use distsync_core::{Name, Result};
use redis::Value;

use crate::error::{array, int, unexpected};
use crate::keys::Kind;
use crate::scripts::Lua;
use crate::store::Shared;

/// `KEYS[1]` the limiter's hash; `ARGV[1]` the channel prefix every call carries
/// (unused), `ARGV[2]` the emission interval (µs), `ARGV[3]` the burst, `ARGV[4]` the
/// permits asked for, `ARGV[5]` the rate's fingerprint. Replies `{1}` granted,
/// `{0, retry after µs}` denied, `{2, stored fingerprint}` another rate is live.
///
/// `TIME` before a write needs effect replication, the default from Redis 5 on (and
/// the only mode from 7): the replicas apply the `HSET`, never re-run `TIME`. Numbers
/// are written with `%d`: Lua's `tostring` keeps 14 digits, and µs since 1970 have 16.
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local permits = tonumber(ARGV[4])
local stored = redis.call('HMGET', KEYS[1], 'tat', 'rate')
local tat = tonumber(stored[1])
if tat ~= nil and tat > now then
  if stored[2] ~= ARGV[5] then
    return {2, stored[2] or ''}
  end
else
  tat = now
end
local new_tat = tat + permits * interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, string.format('%d', allow_at - now)}
end
redis.call('HSET', KEYS[1], 'tat', string.format('%d', new_tat), 'rate', ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.ceil((new_tat - now) / 1000))
return {1}
";

static RATE_LIMIT: LazyLock<Lua> = LazyLock::new(|| Lua::new(SCRIPT));

/// A Redis rate limiter (see the module docs).
pub(crate) type RedisRateLimiter = RateStepLimiter<RedisRateStep>;

/// A limiter's hash, decided by the script.
pub(crate) struct RedisRateStep {
    shared: Arc<Shared>,
    key: String,
}

#[async_trait]
impl RateStep for RedisRateStep {
    async fn step(&self, name: &Name, rate: &Rate, permits: u32) -> Result<Admission> {
        let mut call = self.shared.script(&RATE_LIMIT);
        call.key(&self.key)
            .arg(rate.emission_interval_micros())
            .arg(rate.burst())
            .arg(permits)
            .arg(rate.fingerprint());
        let reply = array("rate limit", self.shared.eval(&call).await?)?;
        let what = "rate limit";
        match reply.as_slice() {
            [granted] if int(what, granted)? == 1 => Ok(Admission::Granted),
            [denied, wait] if int(what, denied)? == 0 => Ok(Admission::Denied {
                retry_after: std::time::Duration::from_micros(
                    u64::try_from(int(what, wait)?).unwrap_or(0),
                ),
            }),
            [_, Value::BulkString(theirs)] => {
                Err(rate.in_use_at_another_rate(name, &String::from_utf8_lossy(theirs)))
            }
            _ => Err(unexpected(what, &Value::Array(reply.clone()))),
        }
    }
}

impl Make<Arc<Shared>, Name> for RedisRateStep {
    fn make(shared: &Arc<Shared>, name: Name) -> Result<Self> {
        Ok(Self {
            key: shared.keys.primitive(&name, Kind::RateLimit),
            shared: Arc::clone(shared),
        })
    }
}
