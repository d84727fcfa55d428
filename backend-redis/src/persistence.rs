//! The persistence read at connect.
//!
//! Redis keeps its data in memory; what a restart keeps is what the server wrote to
//! disk. Only an append-only file fsynced before every reply (`appendonly yes` with
//! `appendfsync always`) holds every acknowledged write: `appendfsync everysec` loses
//! up to a second of acknowledged writes (grants, releases, renewals, queue items) when
//! the server crashes, `appendfsync no` whatever the kernel had not flushed, and RDB
//! snapshots (`save`) everything since the last one. So the backend declares
//! `survives_restart` only for `appendonly yes` and `appendfsync always`
//! ([`Persistence::survives_restart`]).
//!
//! [`read`] asks in one round trip: a pipeline of `CONFIG GET appendonly`,
//! `CONFIG GET appendfsync`, `CONFIG GET save` and `INFO persistence`. Where `CONFIG`
//! is disabled or not permitted (renamed away, managed services, ACLs), `INFO
//! persistence` still says whether the append-only file is on (`aof_enabled`), but no
//! INFO field names the fsync policy: it is then unknown, which is not durable.

use std::fmt;

use distsync_core::Result;
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};

use crate::error::redis_error;
use crate::info::{config_value, info_field, info_text};

/// The persistence settings of a Redis server, read when the backend connects
/// ([`crate::RedisBackend::persistence`]). `None` is a setting the server did not
/// say (`CONFIG GET` refused, and no `INFO persistence` field for it).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// use distsync::store::raw::Primitives;
/// let backend = distsync::store::redis::backend("redis://127.0.0.1:6379/0").await?;
/// let persistence = backend.persistence();
/// // e.g. `appendonly=no appendfsync=everysec save=""`
/// tracing::info!(%persistence, "the store's persistence");
/// // A server that does not evict keys: what the backend declares follows the read.
/// assert_eq!(
///     backend.capabilities().survives_restart,
///     persistence.survives_restart(),
/// );
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persistence {
    appendonly: Option<bool>,
    appendfsync: Option<String>,
    save: Option<String>,
}

impl Persistence {
    /// Whether the append-only file is on (`appendonly`, or `aof_enabled` in `INFO
    /// persistence`).
    pub fn appendonly(&self) -> Option<bool> {
        self.appendonly
    }

    /// The append-only file's fsync policy (`always`, `everysec` or `no`), which only
    /// `CONFIG GET` reports.
    pub fn appendfsync(&self) -> Option<&str> {
        self.appendfsync.as_deref()
    }

    /// The RDB snapshot schedule (`save`: pairs of seconds and changes; empty for
    /// none), which only `CONFIG GET` reports.
    pub fn save(&self) -> Option<&str> {
        self.save.as_deref()
    }

    /// Whether every write the server acknowledges is on disk before its reply, so a
    /// restart (a crash included) keeps it: `appendonly yes` with `appendfsync always`.
    /// Anything else, an unknown setting included, is `false`.
    pub fn survives_restart(&self) -> bool {
        self.appendonly == Some(true) && self.appendfsync.as_deref() == Some("always")
    }

    /// Settings as given, for tests.
    #[cfg(test)]
    pub(crate) fn of(
        appendonly: Option<bool>,
        appendfsync: Option<&str>,
        save: Option<&str>,
    ) -> Self {
        Self {
            appendonly,
            appendfsync: appendfsync.map(str::to_owned),
            save: save.map(str::to_owned),
        }
    }

    /// The weaker of two servers' settings (under Redis Cluster, of the nodes read):
    /// `other` when it does not survive a restart and `self` does, else `self`.
    pub(crate) fn weaker(self, other: Self) -> Self {
        if self.survives_restart() && !other.survives_restart() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for Persistence {
    /// `appendonly=<yes|no|unknown> appendfsync=<policy|unknown> save="<schedule>"`
    /// (`save=unknown` when not read).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let appendonly = match self.appendonly {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        };
        write!(
            f,
            "appendonly={appendonly} appendfsync={}",
            self.appendfsync.as_deref().unwrap_or("unknown")
        )?;
        match &self.save {
            Some(save) => write!(f, " save={save:?}"),
            None => f.write_str(" save=unknown"),
        }
    }
}

/// The server's persistence settings, in one round trip (see the module docs).
/// Settings the server refuses to tell are `None`.
///
/// # Errors
/// A connection error, or a server that cannot answer for now (loading its data
/// after a restart, say), as a transient [`distsync_core::Error::Connection`].
pub(crate) async fn read(conn: &mut MultiplexedConnection) -> Result<Persistence> {
    let mut pipeline = redis::pipe();
    pipeline.ignore_errors();
    for setting in ["appendonly", "appendfsync", "save"] {
        pipeline.cmd("CONFIG").arg("GET").arg(setting);
    }
    pipeline.cmd("INFO").arg("persistence");
    let replies = pipeline
        .query_async::<Vec<Value>>(conn)
        .await
        .map_err(redis_error)?;
    for reply in &replies {
        if let Value::ServerError(error) = reply {
            let error = redis_error(RedisError::from(error.clone()));
            if error.is_transient() {
                return Err(error);
            }
            tracing::debug!(%error, "a persistence setting was refused; reading INFO persistence");
        }
    }
    Ok(from_replies(&replies))
}

/// The settings in the pipeline's replies: three `CONFIG GET` replies (or errors),
/// then `INFO persistence`'s.
fn from_replies(replies: &[Value]) -> Persistence {
    let config = |index: usize, name: &str| replies.get(index).and_then(|r| config_value(r, name));
    let info = replies.get(3).and_then(aof_enabled);
    let appendonly = match config(0, "appendonly").as_deref() {
        Some("yes") => Some(true),
        Some("no") => Some(false),
        _ => info,
    };
    Persistence {
        appendonly,
        appendfsync: config(1, "appendfsync"),
        save: config(2, "save"),
    }
}

/// Whether `INFO persistence` says the append-only file is on (a line
/// `aof_enabled:<0|1>`).
fn aof_enabled(reply: &Value) -> Option<bool> {
    match info_field(&info_text(reply)?, "aof_enabled")?.as_str() {
        "1" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn resp2(name: &str, value: &str) -> Value {
        Value::Array(vec![bulk(name), bulk(value)])
    }

    fn resp3(name: &str, value: &str) -> Value {
        Value::Map(vec![(bulk(name), bulk(value))])
    }

    /// The error reply of a server where `CONFIG` is renamed away.
    fn refused() -> Value {
        let reply = redis::parse_redis_value(b"-ERR unknown command 'CONFIG'\r\n").unwrap();
        assert!(matches!(reply, Value::ServerError(_)), "{reply:?}");
        reply
    }

    fn info(aof: &str) -> Value {
        bulk(&format!(
            "# Persistence\r\nloading:0\r\nrdb_saves:0\r\naof_enabled:{aof}\r\naof_rewrites:0\r\n"
        ))
    }

    fn settings(
        appendonly: Option<bool>,
        appendfsync: Option<&str>,
        save: Option<&str>,
    ) -> Persistence {
        Persistence::of(appendonly, appendfsync, save)
    }

    #[test]
    fn reads_the_settings_from_resp2_and_resp3_config_replies() {
        let replies = [
            resp2("appendonly", "yes"),
            resp2("appendfsync", "always"),
            resp2("save", "3600 1 300 100"),
            info("1"),
        ];
        assert_eq!(
            from_replies(&replies),
            settings(Some(true), Some("always"), Some("3600 1 300 100"))
        );
        let replies = [
            resp3("appendonly", "no"),
            resp3("appendfsync", "everysec"),
            resp3("save", ""),
            Value::VerbatimString {
                format: redis::VerbatimFormat::Text,
                text: "# Persistence\r\naof_enabled:0\r\n".to_owned(),
            },
        ];
        assert_eq!(
            from_replies(&replies),
            settings(Some(false), Some("everysec"), Some(""))
        );
    }

    #[test]
    fn falls_back_to_info_when_config_is_refused() {
        let replies = [refused(), refused(), refused(), info("1")];
        let read = from_replies(&replies);
        assert_eq!(read, settings(Some(true), None, None));
        // The fsync policy is unknown: not durable.
        assert!(!read.survives_restart());
        let replies = [refused(), refused(), refused(), info("0")];
        assert_eq!(from_replies(&replies), settings(Some(false), None, None));
        // Neither says: everything unknown.
        let replies = [refused(), refused(), refused(), refused()];
        assert_eq!(from_replies(&replies), Persistence::default());
        // A short or empty reply is no answer, not a panic.
        assert_eq!(from_replies(&[]), Persistence::default());
        assert_eq!(
            from_replies(&[Value::Array(vec![]), Value::Nil]),
            Persistence::default()
        );
        assert_eq!(
            aof_enabled(&bulk("# Persistence\r\naof_enabled:x\r\n")),
            None
        );
    }

    #[test]
    fn only_an_append_only_file_fsynced_on_every_write_survives_a_restart() {
        let table = [
            (settings(Some(false), Some("always"), Some("")), false),
            (
                settings(Some(false), Some("everysec"), Some("3600 1")),
                false,
            ),
            (settings(Some(true), Some("everysec"), Some("")), false),
            (settings(Some(true), Some("no"), Some("")), false),
            (settings(Some(true), Some("always"), Some("")), true),
            (settings(Some(true), Some("always"), None), true),
            (settings(Some(true), None, None), false),
            (settings(None, Some("always"), None), false),
            (Persistence::default(), false),
        ];
        for (persistence, durable) in table {
            assert_eq!(persistence.survives_restart(), durable, "{persistence}");
        }
    }

    #[test]
    fn the_weaker_of_two_nodes_wins() {
        let durable = settings(Some(true), Some("always"), Some(""));
        let everysec = settings(Some(true), Some("everysec"), Some(""));
        assert_eq!(durable.clone().weaker(everysec.clone()), everysec);
        assert_eq!(everysec.clone().weaker(durable.clone()), everysec);
        assert_eq!(durable.clone().weaker(durable.clone()), durable);
    }

    #[test]
    fn displays_every_setting_and_unknowns() {
        assert_eq!(
            settings(Some(true), Some("always"), Some("")).to_string(),
            r#"appendonly=yes appendfsync=always save="""#
        );
        assert_eq!(
            Persistence::default().to_string(),
            "appendonly=unknown appendfsync=unknown save=unknown"
        );
    }
}
