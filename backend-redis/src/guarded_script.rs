//! A caller's own Lua script run only while a lock guard still holds
//! ([`GuardedScript`]): the write that Redisson users guard by hand, with a script that
//! reads the lock's key first, as one call.
//!
//! The script sent is `lua/guarded_eval.lua` with the caller's body in place of its
//! `-- @body` line: the hold's check (`hold_current` in `lua/lib.lua`, which
//! [`distsync_core::LockGuard::put_if_held`] runs too, with the same call prologue,
//! [`RedisGuardedWrite::call`]), then the body, in one script, hence atomically on the
//! server. The check comes first in the script's text, so no part of a body can run
//! before it, whatever the body holds.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, LazyLock};

use distsync_core::{Error, LockGuard, Result};
use redis::Value;

use crate::capabilities::BACKEND;
use crate::error::{redis_error, unexpected};
use crate::guarded::RedisGuardedWrite;
use crate::scripts::{compose, Lua};

/// The line of `lua/guarded_eval.lua` the caller's body takes the place of.
const BODY_LINE: &str = "\n-- @body\n";

/// `lua/guarded_eval.lua` after the library definitions it uses, composed once per
/// process; each [`GuardedScript`] puts its body in.
static TEMPLATE: LazyLock<String> =
    LazyLock::new(|| compose(include_str!("../lua/guarded_eval.lua")));

/// A caller's own Lua script that runs on the Redis server only while a lock guard
/// still holds its lock: the check and the script are one server-side script, so
/// they are atomic, and a holder whose session the store has ended (revoked, expired
/// while the process was paused) runs nothing, even before its own `lost()` fires.
///
/// Make one per script text, once (a `static` [`LazyLock`], or a field), and run it
/// with [`GuardedScript::eval_if_held`] on the guard of a Redis lock, or the write
/// guard of a Redis read-write lock.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// use std::sync::LazyLock;
///
/// use distsync::store::redis::redis::Value;
/// use distsync::store::redis::GuardedScript;
///
/// // Hashed once: every run is an EVALSHA.
/// static CREDIT: LazyLock<GuardedScript> = LazyLock::new(|| {
///     GuardedScript::new("return redis.call('INCRBY', KEYS[1], ARGV[1])")
/// });
///
/// let coordinator = distsync::connect("redis://127.0.0.1:6379/0").await?;
/// let session = coordinator.session().await?;
/// let guard = coordinator.locker(&session, "accounts/7")?.lock().await?;
/// match CREDIT
///     .eval_if_held(&guard, &["account:7:balance"], &[b"100"])
///     .await?
/// {
///     Some(Value::Int(balance)) => println!("credited: {balance}"),
///     Some(other) => println!("unexpected reply: {other:?}"),
///     None => println!("the lock is no longer ours: nothing was written"),
/// }
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
///
/// # The body
/// `body` is Lua as for `EVAL`, and sees the call's keys and arguments as its own
/// `KEYS` and `ARGV`, numbered from 1 (`KEYS[1]` is the first of `keys`): the check's
/// keys and arguments come first in the call and are hidden from the body. Its keys
/// are the caller's own Redis keys, as given (no distsync namespace is added), in the
/// server and database of the backend's URL; the backend's Redis user needs access to
/// them. Its reply is what `EVAL` of the body alone would give, including `nil` and
/// `false` as [`Value::Nil`].
///
/// As with any Redis script, the server does nothing else while the body runs, and
/// does not roll back: a body that fails part-way keeps the writes it made before
/// the failure. A body cannot start with a `#!lua` line (script flags: the script
/// around it carries none). The server's errors number the lines of the whole script
/// sent, the body after the check: [`GuardedScript::source`] is that script.
///
/// # Caching
/// The script is composed and hashed when the [`GuardedScript`] is made, and run by
/// its hash (`EVALSHA`); a server that does not know it yet is sent it whole once
/// (`EVAL`), and keeps it in its script cache. So the body is meant to be fixed per
/// call site, with what varies passed in `args`. A body made anew with each call's
/// values in its text is a new script each time: hashed by the client, sent whole,
/// compiled by the server, and kept in the server's script cache (memory, until
/// `SCRIPT FLUSH` or a restart; Redis 7.4 and later evict the least recently used
/// beyond 500, and an evicted script is sent whole again at its next run).
///
/// # Redis Cluster
/// Not available: the hold's keys and the caller's keys live in different hash slots,
/// and no script may touch two. [`GuardedScript::eval_if_held`] is
/// [`Error::Unsupported`] there, as [`distsync_core::LockGuard::put_if_held`] is
/// (`guarded_writes` is off in [`crate::capabilities_under_cluster`]).
#[derive(Clone)]
pub struct GuardedScript {
    lua: Arc<Lua>,
    /// Whether the body starts with a `#!` line, which cannot run inside the script.
    flags: bool,
}

impl fmt::Debug for GuardedScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedScript")
            .field("sha1", &self.lua.script.get_hash())
            .finish()
    }
}

impl GuardedScript {
    /// The script of `body` (see [`GuardedScript`]), composed and hashed now.
    pub fn new(body: &str) -> Self {
        let code = TEMPLATE.replacen(BODY_LINE, &format!("\n{body}\n"), 1);
        Self {
            lua: Arc::new(Lua::new(&code)),
            flags: body.starts_with("#!"),
        }
    }

    /// The whole Lua script sent to the server: the hold's check, then the body. For
    /// review, and for the line numbers in the server's errors.
    pub fn source(&self) -> &str {
        &self.lua.code
    }

    /// Runs the script with `keys` and `args` (the body's `KEYS` and `ARGV`) only while
    /// `guard` still holds its lock: `Some` of the body's reply, or `None` when the
    /// hold is no longer current (the store ended it, or it is known lost on this
    /// side), and then nothing ran. Under replica acknowledgement
    /// (`wait_replicas`), the run is acknowledged as every other script run is.
    ///
    /// # Errors
    /// - The body's error (a Lua error, a failed `redis.call`, a returned
    ///   `redis.error_reply`) or a body that does not compile, as
    ///   [`Error::Backend`], with the server's message; the writes the body made
    ///   before it failed stay.
    /// - [`Error::InvalidArgument`] for a guard of another backend, or a body that
    ///   starts with `#!`.
    /// - [`Error::Unsupported`] under Redis Cluster (see [`GuardedScript`]).
    /// - The connection's error: whether the body ran is then unknown.
    ///
    /// # Cancel safety
    /// One atomic script: dropped part-way, it ran whole or not at all.
    pub async fn eval_if_held(
        &self,
        guard: &LockGuard,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<Option<Value>> {
        let hold = redis_hold(guard)?;
        if self.flags {
            return Err(Error::InvalidArgument(
                "a guarded script's body cannot start with a `#!` line: the script around \
                 it carries no flags"
                    .into(),
            ));
        }
        if guard.session().is_lost() {
            return Ok(None);
        }
        let mut call = hold.call(&self.lua);
        for key in keys {
            call.key(*key);
        }
        for arg in args {
            call.arg(*arg);
        }
        body_reply(hold.shared().eval(&call).await?)
    }
}

/// The Redis side of `guard`'s hold.
fn redis_hold(guard: &LockGuard) -> Result<&RedisGuardedWrite> {
    if let Some(hold) = guard
        .guarded_write_side()
        .and_then(|side| (side as &dyn Any).downcast_ref::<RedisGuardedWrite>())
    {
        return Ok(hold);
    }
    let backend = guard.session().backend();
    if backend == BACKEND {
        // Every Redis lock guard has its guarded write, except under Redis Cluster
        // (`crate::guarded::lock_guard`).
        Err(Error::unsupported(
            BACKEND,
            "guarded scripts under Redis Cluster (the hold and the caller's keys are in \
             different hash slots)",
        ))
    } else {
        Err(Error::InvalidArgument(format!(
            "a guarded script runs on a lock guard of the redis backend, not of {backend}"
        )))
    }
}

/// The reply of `lua/guarded_eval.lua`: 0 when the hold is not current, else a table
/// of the body's reply (empty for a body that returned nil).
fn body_reply(reply: Value) -> Result<Option<Value>> {
    match reply {
        Value::Int(0) => Ok(None),
        Value::Array(items) if items.len() <= 1 => match items.into_iter().next() {
            None => Ok(Some(Value::Nil)),
            Some(Value::ServerError(error)) => Err(redis_error(error.into())),
            Some(value) => Ok(Some(value)),
        },
        other => Err(unexpected("a guarded script", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_comes_after_the_check_in_a_function_of_its_own() {
        let script = GuardedScript::new("return KEYS[1]");
        let source = script.source();
        let check = source
            .find("if not hold_current(KEYS[1], ARGV[2], ARGV[3])")
            .expect("no check");
        let function = source
            .find("local function guarded_body(KEYS, ARGV)\nreturn KEYS[1]\nend\n")
            .expect("no body");
        assert!(check < function, "{source}");
        assert!(!source.contains(BODY_LINE), "{source}");
        // The check's definition, and nothing else of the library.
        assert_eq!(source.matches("local function ").count(), 2, "{source}");
        assert!(source.contains("local function hold_current"), "{source}");
    }

    #[test]
    fn put_if_held_checks_the_hold_with_the_same_lua() {
        let put = compose(include_str!("../lua/guarded_put.lua"));
        let definition = |script: &str| {
            let start = script.find("local function hold_current").unwrap();
            script[start..].split("\nend\n").next().unwrap().to_owned()
        };
        assert_eq!(
            definition(&put),
            definition(GuardedScript::new("").source())
        );
        assert_eq!(put.matches("local function ").count(), 1, "{put}");
    }

    #[test]
    fn a_body_is_one_script_by_its_text() {
        let a = GuardedScript::new("return 1");
        assert_eq!(
            a.lua.script.get_hash(),
            GuardedScript::new("return 1").lua.script.get_hash()
        );
        assert_ne!(
            a.lua.script.get_hash(),
            GuardedScript::new("return 2").lua.script.get_hash()
        );
        assert!(format!("{a:?}").contains(a.lua.script.get_hash()));
    }

    #[test]
    fn replies_read_as_the_bodys() {
        assert_eq!(body_reply(Value::Int(0)).unwrap(), None);
        assert_eq!(body_reply(Value::Array(vec![])).unwrap(), Some(Value::Nil));
        assert_eq!(
            body_reply(Value::Array(vec![Value::Int(0)])).unwrap(),
            Some(Value::Int(0))
        );
        assert!(matches!(
            body_reply(Value::Int(1)),
            Err(Error::Backend { .. })
        ));
        assert!(matches!(
            body_reply(Value::Array(vec![Value::Int(1), Value::Int(2)])),
            Err(Error::Backend { .. })
        ));
    }
}
