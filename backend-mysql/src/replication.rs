//! What the connected primary promises its replicas: MariaDB's semi-synchronous
//! replication ([`SemiSync`]), read once at connect, which decides whether the
//! backend declares `survives_failover`.

use sqlx::MySqlConnection;

use crate::error::{is_unknown_variable, map};

/// The primary's semi-synchronous replication settings; what they promise a promoted
/// replica, and when they stop holding, is in the crate docs ("Failover to a replica").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SemiSync {
    enabled: bool,
    wait_point: String,
    timeout_ms: i64,
}

impl SemiSync {
    /// The settings of the server `conn` is connected to; `None` on a server without
    /// MariaDB's semi-synchronous variables.
    pub(crate) async fn read(conn: &mut MySqlConnection) -> distsync_core::Result<Option<Self>> {
        let read: Result<(i64, String, i64), sqlx::Error> = sqlx::query_as(
            // The server answers its unsigned variables as BIGINT UNSIGNED.
            "SELECT CAST(@@rpl_semi_sync_master_enabled AS SIGNED), \
             CAST(@@rpl_semi_sync_master_wait_point AS CHAR), \
             CAST(@@rpl_semi_sync_master_timeout AS SIGNED)",
        )
        .fetch_one(conn)
        .await;
        match read {
            Ok((enabled, wait_point, timeout_ms)) => Ok(Some(Self {
                enabled: enabled != 0,
                wait_point,
                timeout_ms,
            })),
            // MySQL without its plugin, or MySQL 8.0.26 and later, which names it
            // `rpl_semi_sync_source_*`.
            Err(error) if is_unknown_variable(&error) => Ok(None),
            Err(error) => Err(map(error)),
        }
    }

    /// Whether every acknowledged commit is on a replica (while the primary has not
    /// fallen back to asynchronous replication): enabled, with the `AFTER_SYNC` wait
    /// point.
    pub(crate) fn lossless(&self) -> bool {
        self.enabled && self.wait_point.eq_ignore_ascii_case("AFTER_SYNC")
    }

    /// The settings as [`Kv::describe`](distsync_kv::kv::Kv::describe) lists them.
    pub(crate) fn describe(&self) -> [(&'static str, String); 3] {
        let enabled = if self.enabled { "ON" } else { "OFF" };
        [
            ("rpl_semi_sync_master_enabled", enabled.to_owned()),
            ("rpl_semi_sync_master_wait_point", self.wait_point.clone()),
            (
                "rpl_semi_sync_master_timeout",
                format!("{} ms", self.timeout_ms),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::SemiSync;

    fn semi_sync(enabled: bool, wait_point: &str) -> SemiSync {
        SemiSync {
            enabled,
            wait_point: wait_point.to_owned(),
            timeout_ms: 10_000,
        }
    }

    #[test]
    fn only_an_enabled_after_sync_primary_is_lossless() {
        assert!(semi_sync(true, "AFTER_SYNC").lossless());
        assert!(!semi_sync(true, "AFTER_COMMIT").lossless());
        assert!(!semi_sync(false, "AFTER_SYNC").lossless());
    }
}
