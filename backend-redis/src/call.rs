//! One script or command run, and its replica acknowledgement.
//!
//! Every script of [`crate::scripts`] runs through [`Call`] and
//! [`crate::store::Shared::eval`] (and single commands through
//! [`crate::store::Shared::query`]), which come here: `EVALSHA`, loading the script
//! on `NOSCRIPT` (a restarted server, or a newly promoted replica, has an empty
//! script cache): the call is then sent once more as `EVAL`, which runs it where
//! `EVALSHA` would have and caches it there (a `SCRIPT LOAD` would take a round trip
//! more, and under Redis Cluster redis-rs sends it to every node, failing while one
//! is down).
//!
//! **Replica acknowledgement** ([`Ack`], `wait_replicas=N&wait_timeout=T` in the URL):
//! the script is followed, in one pipeline on the same connection, by a `PUBLISH` on
//! a channel nobody listens to and `WAIT N T`. `WAIT` counts the replicas that have
//! acknowledged this connection's last write, and the `PUBLISH` (replicated like any
//! write; under Redis Cluster, where `PUBLISH` goes over the cluster bus instead, a
//! `SET` of `{<hash tag>}:ack` in the call's slot) makes that last write come after the
//! script and after every write other clients made before it: so a re-check that only reads a grant another client's
//! release script made is acknowledged only once that grant is on the replicas too.
//! Fewer than `N` acknowledgements make the run fail with a transient
//! [`Error::Connection`] *after* the script took effect on the primary: the caller
//! treats it as any connection error (a waiting acquisition re-checks, and only
//! returns a grant whose re-check was acknowledged; a first join, a `try_*`, an
//! enqueue or a release report the error; a renewal that fails this way does not
//! extend the session's deadline).

use std::time::Duration;

use distsync_core::{Error, Result};
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, RedisError, RedisWrite, ServerErrorKind, ToRedisArgs, Value};

use crate::capabilities::BACKEND;
use crate::error::{int, redis_error};
use crate::scripts::Lua;
use crate::target::Connection;

/// A script call being built: `key`s and `arg`s as with redis-rs's
/// `ScriptInvocation`, run with [`crate::store::Shared::eval`]. It borrows its script:
/// distsync's own scripts are statics, a caller's guarded script
/// ([`crate::GuardedScript`]) is the caller's.
///
/// Keys and arguments are encoded once, as they are added, into one buffer (each
/// through [`ToRedisArgs::write_redis_args`], so a number or a string costs no
/// allocation of its own): a grant carries a dozen of them, and a vector per value was
/// a sixth of a lock cycle's client work. The command copies them out, keys first.
pub(crate) struct Call<'a> {
    script: &'a Lua,
    /// Every key's and argument's bytes, in the order they were added.
    data: Vec<u8>,
    /// Where each one ends in `data`, and whether it is a key.
    ends: Vec<(usize, bool)>,
    /// How many of them are keys.
    keys: usize,
}

/// Room for a typical call's keys and arguments, so that building one seldom grows
/// its buffers.
const DATA_CAPACITY: usize = 256;
const VALUES_CAPACITY: usize = 16;

impl<'a> Call<'a> {
    pub(crate) fn new(script: &'a Lua) -> Self {
        Self {
            script,
            data: Vec::with_capacity(DATA_CAPACITY),
            ends: Vec::with_capacity(VALUES_CAPACITY),
            keys: 0,
        }
    }

    /// Adds a key (`KEYS[i]`).
    pub(crate) fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut Values {
            call: self,
            key: true,
        });
        self
    }

    /// Adds an argument (`ARGV[i]`).
    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut Values {
            call: self,
            key: false,
        });
        self
    }

    /// The keys or the arguments (`keys`), in the order they were added.
    fn values(&self, keys: bool) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().filter_map(move |&(end, key)| {
            let value = &self.data[start..end];
            start = end;
            (key == keys).then_some(value)
        })
    }

    /// The first key: under Redis Cluster, the one whose slot the call goes to.
    fn first_key(&self) -> Option<&[u8]> {
        self.values(true).next()
    }

    /// `EVALSHA`: the script by its SHA1.
    fn evalsha(&self) -> Cmd {
        self.command("EVALSHA", self.script.script.get_hash())
    }

    /// `EVAL`: the script's source, which the server runs and caches (after a
    /// `NOSCRIPT`).
    fn eval(&self) -> Cmd {
        self.command("EVAL", &self.script.code)
    }

    fn command(&self, name: &str, script: &str) -> Cmd {
        let mut cmd = Cmd::with_capacity(
            self.ends.len() + 3,
            name.len() + script.len() + self.data.len() + 4,
        );
        cmd.arg(name).arg(script).arg(self.keys);
        for key in self.values(true) {
            cmd.arg(key);
        }
        for arg in self.values(false) {
            cmd.arg(arg);
        }
        cmd
    }
}

/// The writer [`ToRedisArgs`] encodes a call's key or argument with: into the call's
/// buffer, marked as a key or not.
struct Values<'c, 'a> {
    call: &'c mut Call<'a>,
    key: bool,
}

impl Values<'_, '_> {
    /// Marks the end of the value just written.
    fn end(&mut self) {
        let call = &mut *self.call;
        call.ends.push((call.data.len(), self.key));
        if self.key {
            call.keys += 1;
        }
    }
}

impl RedisWrite for Values<'_, '_> {
    fn write_arg(&mut self, arg: &[u8]) {
        self.call.data.extend_from_slice(arg);
        self.end();
    }

    fn write_arg_fmt(&mut self, arg: impl std::fmt::Display) {
        use std::io::Write as _;
        // Writing into a vector cannot fail.
        let _ = write!(self.call.data, "{arg}");
        self.end();
    }

    fn writer_for_next_arg(&mut self) -> impl std::io::Write + '_ {
        ValueWriter(self)
    }
}

/// [`RedisWrite::writer_for_next_arg`]'s writer: appends to the value being written,
/// which ends when it is dropped.
struct ValueWriter<'v, 'c, 'a>(&'v mut Values<'c, 'a>);

impl std::io::Write for ValueWriter<'_, '_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.call.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ValueWriter<'_, '_, '_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Replica acknowledgement of every run: `WAIT replicas timeout`.
#[derive(Clone, Debug)]
pub(crate) struct Ack {
    pub(crate) replicas: u32,
    pub(crate) timeout: Duration,
    /// The channel of the `PUBLISH` that precedes `WAIT` (within the namespace's
    /// channels, which an ACL user may publish on).
    pub(crate) channel: String,
}

impl Ack {
    /// `None` when `replicas` is 0.
    pub(crate) fn new(replicas: u32, timeout: Duration, channel: String) -> Option<Self> {
        (replicas > 0).then_some(Self {
            replicas,
            timeout,
            channel,
        })
    }
}

/// Runs `call` on `conn`: `EVALSHA`, and on `NOSCRIPT` once more as `EVAL` (which
/// caches the script where it ran); with `ack`, acknowledged by replicas (see the
/// module docs).
///
/// # Errors
/// The script's or connection's error ([`redis_error`]); a transient
/// [`Error::Connection`] when fewer replicas than asked acknowledged it.
pub(crate) async fn eval(
    conn: &mut Connection,
    call: &Call<'_>,
    ack: Option<&Ack>,
) -> Result<Value> {
    let command = call.evalsha();
    let key = call.first_key();
    match run(conn, &command, key, ack).await {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            run(conn, &call.eval(), key, ack).await.map_err(redis_error)
        }
        other => other.map_err(redis_error),
    }
    .and_then(|reply| acknowledged(ack, reply))
}

/// Runs one command on `conn`, acknowledged by replicas with `ack`.
///
/// # Errors
/// As [`eval`].
pub(crate) async fn query(
    conn: &mut Connection,
    command: &Cmd,
    ack: Option<&Ack>,
) -> Result<Value> {
    // The first argument after the command's name is its key (the commands run this
    // way take one: `EXISTS`, `SET`, `HDEL`, `ZREM`, `SCAN`'s cursor aside).
    let key = match command.args_iter().nth(1) {
        Some(redis::Arg::Simple(key)) => Some(key),
        _ => None,
    };
    acknowledged(
        ack,
        run(conn, command, key, ack).await.map_err(redis_error)?,
    )
}

/// `command`'s reply and, with `ack`, how many replicas acknowledged it. Under Redis
/// Cluster the pipeline of the acknowledgement goes, whole, to the master of `key`
/// (the command's first key): `WAIT` counts the replicas of the node it runs on.
async fn run(
    conn: &mut Connection,
    command: &Cmd,
    key: Option<&[u8]>,
    ack: Option<&Ack>,
) -> std::result::Result<(Value, Option<i64>), RedisError> {
    let Some(ack) = ack else {
        return Ok((command.query_async::<Value>(conn).await?, None));
    };
    let mut pipeline = redis::pipe();
    pipeline.ignore_errors().add_command(command.clone());
    match (&*conn, key) {
        // Under Cluster `PUBLISH` goes over the cluster bus, not the replication
        // stream, so it would not make the connection's last write come after the
        // call: a write in the call's own slot does (`{<hash tag>}:ack`, which no
        // primitive's key is, gone after a second).
        (Connection::Cluster(_), Some(key)) => pipeline
            .cmd("SET")
            .arg(ack_key(key))
            .arg("")
            .arg("PX")
            .arg(1000),
        _ => pipeline.cmd("PUBLISH").arg(&ack.channel).arg(""),
    };
    pipeline
        .cmd("WAIT")
        .arg(ack.replicas)
        .arg(millis(ack.timeout));
    let replies = match (conn, key) {
        (Connection::Cluster(link), Some(key)) => {
            let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
            let (generation, mut cluster) = link.connection();
            match cluster.route_pipeline(pipeline, 0, 3, route).await {
                Ok(replies) => replies,
                Err(error) => {
                    link.after(generation, &error).await;
                    return Err(error);
                }
            }
        }
        (conn, _) => match pipeline.query_async::<Value>(conn).await? {
            Value::Array(replies) => replies,
            other => {
                return Err(RedisError::from((
                    ErrorKind::UnexpectedReturnType,
                    "a pipeline answered with no array",
                    format!("{other:?}"),
                )))
            }
        },
    };
    let mut replies = replies.into_iter();
    let (Some(value), Some(waited)) = (replies.next(), replies.nth(1)) else {
        return Err(RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "a pipeline answered with too few replies",
        )));
    };
    for reply in [&value, &waited] {
        if let Value::ServerError(error) = reply {
            return Err(error.clone().into());
        }
    }
    let acknowledged = int("WAIT", &waited).map_err(|error| {
        RedisError::from((ErrorKind::UnexpectedReturnType, "WAIT", error.to_string()))
    })?;
    Ok((value, Some(acknowledged)))
}

/// The key whose write precedes `WAIT` under Cluster: `{<hash tag of key>}:ack`, in
/// `key`'s slot (the whole key is the tag of a key without one).
fn ack_key(key: &[u8]) -> Vec<u8> {
    [b"{".as_slice(), crate::keys::hash_tag(key), b"}:ack"].concat()
}

/// A run's reply ([`run`]'s), unless fewer replicas than `ack` asks for acknowledged it.
fn acknowledged(ack: Option<&Ack>, (value, acknowledged): (Value, Option<i64>)) -> Result<Value> {
    match (ack, acknowledged) {
        (Some(ack), Some(acknowledged)) if acknowledged < i64::from(ack.replicas) => {
            Err(not_acknowledged(ack, acknowledged))
        }
        _ => Ok(value),
    }
}

fn not_acknowledged(ack: &Ack, acknowledged: i64) -> Error {
    Error::connection(
        BACKEND,
        format!(
            "replica acknowledgement: {acknowledged} of the {} replicas asked for \
             (wait_replicas) acknowledged the write within {:?} (wait_timeout); it took \
             effect on the primary but may not survive a failover",
            ack.replicas, ack.timeout
        ),
    )
}

/// `duration` in milliseconds, at least 1 (`PX 0` is refused, and `WAIT`'s 0 waits forever).
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_ack_key_shares_the_calls_slot() {
        assert_eq!(ack_key(b"{ns:jobs}:lock:e:1.0"), b"{ns:jobs}:ack");
        assert_eq!(ack_key(b"{ns:session:7}"), b"{ns:session:7}:ack");
        assert_eq!(ack_key(b"plain"), b"{plain}:ack");
        assert_eq!(ack_key(b"{}x"), b"{{}x}:ack");
        for key in [&b"{ns:jobs}:lock:e:1.0"[..], b"{ns:session:7}"] {
            assert_eq!(
                redis::cluster_routing::Slot::for_key(key),
                redis::cluster_routing::Slot::for_key(ack_key(key))
            );
        }
    }

    #[test]
    fn no_acknowledgement_asked_for_zero_replicas() {
        assert!(Ack::new(0, Duration::from_millis(5), "c".into()).is_none());
        let ack = Ack::new(1, Duration::from_millis(5), "c".into()).unwrap();
        let error = not_acknowledged(&ack, 0);
        assert!(error.is_transient(), "{error}");
        assert!(error.to_string().contains("0 of the 1"), "{error}");
    }

    #[test]
    fn a_call_is_an_evalsha_of_its_keys_and_args() {
        static SCRIPT: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new("return 1"));
        let mut call = Call::new(&SCRIPT);
        // Keys and arguments interleaved: the command lists the keys first, each side in
        // the order it was added; a value of many (a vector) adds each.
        call.arg(7)
            .key("k1")
            .arg(vec!["x", ""])
            .key(b"k2".as_slice());
        assert_eq!(call.first_key(), Some(&b"k1"[..]));
        let packed = call.evalsha().get_packed_command();
        let expected = [
            b"EVALSHA".as_slice(),
            SCRIPT.script.get_hash().as_bytes(),
            b"2",
            b"k1",
            b"k2",
            b"7",
            b"x",
            b"",
        ];
        assert_eq!(packed, redis::pack_command(&expected.map(<[u8]>::to_vec)));
        let mut eval = expected;
        eval[0] = b"EVAL";
        eval[1] = SCRIPT.code.as_bytes();
        assert_eq!(
            call.eval().get_packed_command(),
            redis::pack_command(&eval.map(<[u8]>::to_vec))
        );
    }

    #[test]
    fn a_value_written_in_pieces_or_formatted_is_one_value() {
        static SCRIPT: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| Lua::new("return 1"));
        let mut call = Call::new(&SCRIPT);
        {
            use std::io::Write as _;
            let mut values = Values {
                call: &mut call,
                key: false,
            };
            values.write_arg_fmt(1.5);
            let mut writer = values.writer_for_next_arg();
            writer.write_all(b"ab").unwrap();
            writer.write_all(b"cd").unwrap();
        }
        call.key("k");
        let args: Vec<&[u8]> = call.values(false).collect();
        assert_eq!(args, [b"1.5".as_slice(), b"abcd"]);
        assert_eq!(call.values(true).collect::<Vec<_>>(), [b"k".as_slice()]);
        assert_eq!(call.keys, 1);
    }
}
