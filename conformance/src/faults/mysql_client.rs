//! Reaching a MySQL or MariaDB server out of band with its command line client
//! (`mariadb`), as the fault hooks reach the other stores with theirs: the target of a
//! `mysql://` URL, and a session ended behind its client's back.

use std::path::Path;

use distsync_core::{Error, Result, SessionId};

use super::hook_error;
use super::tools::run;

/// The table prefix a `mysql://` URL uses unless its `table_prefix=` says otherwise
/// (the backend's default).
const DEFAULT_TABLE_PREFIX: &str = "distsync_";

/// Where the `mariadb` client reaches the store of a `mysql://` URL.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct MysqlTarget {
    host: String,
    port: u16,
    user: String,
    /// Passed in the client's environment (`MYSQL_PWD`), never on its command line.
    password: String,
    database: String,
    table_prefix: String,
}

impl std::fmt::Debug for MysqlTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("table_prefix", &self.table_prefix)
            .finish_non_exhaustive()
    }
}

impl MysqlTarget {
    /// The target of `url` (`mysql://` or `mariadb://user[:password]@host[:port]/db`,
    /// `table_prefix=` in its query).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL without a host or a database, or whose table
    /// prefix is not an identifier.
    pub(super) fn parse(url: &str) -> Result<Self> {
        let invalid = Error::invalid_url(url);
        let parsed = url::Url::parse(url).map_err(|error| invalid(error.to_string()))?;
        // Percent-decoding, with a `+` kept as it is (form decoding would make it a space).
        let decode = |text: &str| {
            url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default()
        };
        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| invalid("no host".to_owned()))?
            .to_owned();
        let database = parsed.path().trim_start_matches('/').to_owned();
        if database.is_empty() {
            return Err(invalid("no database".to_owned()));
        }
        let table_prefix = parsed
            .query_pairs()
            .filter(|(key, _)| key == "table_prefix")
            .last()
            .map_or_else(
                || DEFAULT_TABLE_PREFIX.to_owned(),
                |(_, value)| value.into_owned(),
            );
        if !table_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(format!(
                "table prefix {table_prefix:?} is not an identifier"
            )));
        }
        Ok(Self {
            host,
            port: parsed.port().unwrap_or(3306),
            user: decode(parsed.username()),
            password: parsed.password().map(decode).unwrap_or_default(),
            database: decode(&database),
            table_prefix,
        })
    }

    /// Runs `sql` with the client (`tool`) and returns its output, tab-separated
    /// without column names.
    async fn query(&self, tool: &Path, sql: &str) -> Result<String> {
        let port = self.port.to_string();
        let user = format!("--user={}", self.user);
        let database = format!("--database={}", self.database);
        let args = [
            "--no-defaults",
            "--protocol=TCP",
            "--connect-timeout=5",
            "--batch",
            "--skip-column-names",
            "--host",
            self.host.as_str(),
            "--port",
            port.as_str(),
            user.as_str(),
            database.as_str(),
            "--execute",
            sql,
        ];
        let out = run(tool, args, &[("MYSQL_PWD", self.password.as_str())]).await?;
        Ok(out.stdout)
    }

    /// Ends session `session` as the server's clock would: its lease's row expires
    /// now, with a plain `UPDATE` from another process (not through the library), and
    /// every client's lease reaper then ends it as it ends any expired lease (its keys
    /// deleted in one revisioned transaction).
    pub(super) async fn expire_lease(&self, tool: &Path, session: SessionId) -> Result<String> {
        let id = i64::try_from(session.0).map_err(|_| {
            hook_error(
                "expiring a lease",
                format!("session {session} is out of range"),
            )
        })?;
        let sql = format!(
            "UPDATE {}leases SET expires_at = NOW(6) WHERE id = {id}; SELECT ROW_COUNT();",
            self.table_prefix
        );
        let out = self.query(tool, &sql).await?;
        if out.trim() != "1" {
            return Err(hook_error(
                "expiring a lease",
                format!("no lease row of session {session} found"),
            ));
        }
        Ok("lease row expired by an UPDATE (`mariadb`); the reapers end it".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_the_url() {
        let target =
            MysqlTarget::parse("mysql://app:p%40ss@127.0.0.1:24429/locks?table_prefix=t_").unwrap();
        assert_eq!(target.host, "127.0.0.1");
        assert_eq!(target.port, 24429);
        assert_eq!(target.user, "app");
        assert_eq!(target.password, "p@ss");
        assert_eq!(target.database, "locks");
        assert_eq!(target.table_prefix, "t_");
        assert!(!format!("{target:?}").contains("p@ss"));
        let target = MysqlTarget::parse("mariadb://app@db/locks").unwrap();
        assert_eq!((target.port, target.password.as_str()), (3306, ""));
        assert_eq!(target.table_prefix, DEFAULT_TABLE_PREFIX);
        assert!(MysqlTarget::parse("mysql://app@db").is_err());
        assert!(MysqlTarget::parse("mysql://app@db/x?table_prefix=a;b").is_err());
    }
}
