//! MySQL/MariaDB: `GET_LOCK(name, timeout)`, then `RELEASE_LOCK(name)`, on one
//! connection.

use async_trait::async_trait;
use sqlx::{Connection, MySqlConnection};

use super::session_lock::{SessionLock, Statements};
use crate::contender::{started, Role, Started};
use crate::Result;

/// The label of the raw row.
pub const LABEL: &str = "raw: GET_LOCK + RELEASE_LOCK";

/// How long `GET_LOCK` waits for a taken name, in seconds: as a distsync session's
/// default TTL, far above any wait of the contended case, so a timeout is an error.
const WAIT_SECS: u32 = 60;

/// The named lock of one name.
struct Named {
    lock: String,
}

/// Connects to the database of the distsync URL `url`; the lock's name is derived
/// from `name`.
pub async fn start(url: &str, name: &str) -> Started {
    let made = async {
        let conn = MySqlConnection::connect_with(&options(url)?).await?;
        let lock = lock_name(name);
        Ok(SessionLock::new(conn, Named { lock }))
    };
    started(LABEL, Role::Raw, made.await)
}

/// The connection options of the distsync URL `url`.
///
/// # Errors
/// A URL distsync would reject.
pub fn options(url: &str) -> Result<sqlx::mysql::MySqlConnectOptions> {
    Ok(distsync::store::mysql::MysqlConfig::parse(url)?
        .connect_options()
        .clone())
}

/// A `GET_LOCK` name for `name`: the server takes at most 64 characters, which the
/// bench's names (a run id and a path) can exceed, so it is a hash of it.
pub fn lock_name(name: &str) -> String {
    format!("distsync-bench/{:016x}", super::name_hash(name))
}

#[async_trait]
impl Statements<MySqlConnection> for Named {
    async fn lock(&self, conn: &mut MySqlConnection) -> Result<()> {
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(&self.lock)
            .bind(WAIT_SECS)
            .fetch_one(conn)
            .await?;
        if locked != Some(1) {
            return Err(format!("GET_LOCK: not granted within {WAIT_SECS} s").into());
        }
        Ok(())
    }

    async fn unlock(&self, conn: &mut MySqlConnection) -> Result<()> {
        let released: Option<i64> = sqlx::query_scalar("SELECT RELEASE_LOCK(?)")
            .bind(&self.lock)
            .fetch_one(conn)
            .await?;
        if released != Some(1) {
            return Err("RELEASE_LOCK: the lock was not held".into());
        }
        Ok(())
    }
}
