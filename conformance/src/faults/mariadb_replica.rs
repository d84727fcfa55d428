//! A private MariaDB primary with a promotable GTID replica ([`MariadbReplicaPair`]),
//! for the promoted-failover case (its hooks and harness are the store-neutral ones
//! of [`super::promoted_pair`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{Backend, Result};
use tokio::time::Instant;

use super::private::{available, Kind, Private, WAIT};
use super::private_mariadb::{self, MARIADB_USER};
use super::proxy::{rewrite_url, Proxy};
use super::store::StoreKind;
use super::tools::{self, free_port};
use super::{hook_error, Cluster, Connect, PrivateServer};

/// The user the replica reads the primary's binary log as: loopback only and without
/// a password (a private server of one case), so that no statement or error names one.
const REPLICATION_USER: &str = "distsync_repl";

/// How long a semi-synchronous primary waits for the replica's acknowledgement of a
/// commit before it falls back to asynchronous replication: an hour, so that a
/// commit waits for the replica rather than going on without it during a case, as
/// with PostgreSQL's synchronous standby.
const SEMI_SYNC_TIMEOUT: Duration = Duration::from_secs(3600);

/// A private MariaDB primary with a replica that follows it by GTID
/// (`MASTER_USE_GTID=slave_pos`, row-based binary log), reached through a TCP
/// [`Proxy`] as clients reach a virtual IP: killing the primary
/// ([`Cluster::kill_member`] of member 1) SIGKILLs it, lets the replica apply every
/// transaction it received, promotes it (`STOP SLAVE; RESET SLAVE ALL; SET GLOBAL
/// read_only = 0`) and points the proxy at it, closing every connection to the old
/// primary, as a failover manager would. The old primary stays down
/// ([`Cluster::start_member`] does nothing: what it committed that the replica never
/// received would make it diverge); the pair is the case's own and is removed when
/// dropped.
///
/// With `semi_sync`, the primary runs MariaDB's semi-synchronous replication with
/// the `AFTER_SYNC` wait point and an `rpl_semi_sync_master_timeout` of an hour: a
/// commit is acknowledged (and seen by other clients) only once the replica has it in
/// its relay log. Without, replication is asynchronous.
pub struct MariadbReplicaPair {
    primary: tokio::sync::Mutex<Private>,
    primary_socket: PathBuf,
    replica: Private,
    proxy: Proxy,
    url: String,
    leader: AtomicUsize,
    semi_sync: bool,
    /// Whether the replica's I/O thread is stopped, so that it lags.
    paused: AtomicBool,
}

impl std::fmt::Debug for MariadbReplicaPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariadbReplicaPair")
            .field("url", &distsync_core::redact_url(&self.url))
            .field("replica_port", &self.replica.port)
            .field("semi_sync", &self.semi_sync)
            .finish_non_exhaustive()
    }
}

/// A private MariaDB server's description, not started: its data in a fresh
/// directory, on a fresh port, with `args` after its usual options.
fn private_mariadb(what: &str, connect: Connect, args: Vec<String>) -> Result<Private> {
    let port = free_port()?;
    Ok(Private {
        kind: Kind::Mariadb { args },
        url: format!("mysql://{MARIADB_USER}:{MARIADB_USER}@127.0.0.1:{port}/{MARIADB_USER}"),
        dir: tools::temp_dir(what)?,
        port,
        child: None,
        connect,
        disk: None,
    })
}

/// The server's socket (see [`Private`]'s start of MariaDB).
fn socket(server: &Private) -> PathBuf {
    server.dir.join("mariadbd.sock")
}

impl MariadbReplicaPair {
    /// Whether a pair can be started here (MariaDB's server, installer and client),
    /// or why not.
    pub fn available() -> std::result::Result<(), String> {
        available(StoreKind::Mysql)
    }

    /// Starts the primary (binary log on, the clients' user and tables created), then
    /// the replica from an empty data directory, which replays the primary's whole
    /// binary log; waits until it has caught up (and, `semi_sync`, until the primary
    /// counts it as its semi-synchronous replica), and puts the proxy in front of the
    /// primary.
    ///
    /// # Errors
    /// When a server cannot be started or the replica does not catch up within a
    /// minute.
    pub async fn start(connect: Connect, semi_sync: bool) -> Result<Self> {
        Self::available().map_err(|reason| hook_error("a MariaDB replica pair", reason))?;
        // Semi-synchronous waiting is turned on once the replica follows: before, every
        // commit of the set-up would wait the whole timeout for a replica.
        let primary_args = vec![
            "--server-id=1".to_owned(),
            "--log-bin=mariadb-bin".to_owned(),
            "--binlog-format=ROW".to_owned(),
            "--rpl-semi-sync-master-wait-point=AFTER_SYNC".to_owned(),
            format!(
                "--rpl-semi-sync-master-timeout={}",
                SEMI_SYNC_TIMEOUT.as_millis()
            ),
        ];
        let mut primary = private_mariadb(
            "private-mariadb-primary",
            Arc::clone(&connect),
            primary_args,
        )?;
        primary.start().await?;
        let primary_socket = socket(&primary);
        private_mariadb::root_sql(
            &primary_socket,
            &format!(
                "CREATE USER IF NOT EXISTS '{REPLICATION_USER}'@'127.0.0.1'; \
                 GRANT REPLICATION SLAVE ON *.* TO '{REPLICATION_USER}'@'127.0.0.1';"
            ),
        )
        .await?;

        // Read-only for the clients' user until promoted; the replication threads
        // write regardless.
        let mut replica_args = vec!["--server-id=2".to_owned(), "--read-only=ON".to_owned()];
        if semi_sync {
            replica_args.push("--rpl-semi-sync-slave-enabled=ON".to_owned());
        }
        let mut replica =
            private_mariadb("private-mariadb-replica", connect, replica_args.clone())?;
        // Not started as a private server (whose readiness probe writes through the
        // backend): its users, database and tables come from the primary's log.
        private_mariadb::install(&replica.data()).await?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(replica.dir.join("mariadbd.log"))
            .map_err(|error| hook_error("opening the replica's log", error))?;
        let child = private_mariadb::spawn(
            &replica.data(),
            &socket(&replica),
            replica.port,
            log,
            &replica_args,
        )
        .await?;
        replica.child = Some(child);
        private_mariadb::root_sql_when_up(
            &socket(&replica),
            &format!(
                "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, \
                 MASTER_USER='{REPLICATION_USER}', MASTER_CONNECT_RETRY=1, \
                 MASTER_USE_GTID=slave_pos; START SLAVE;",
                primary.port
            ),
        )
        .await?;

        let proxy = Proxy::start(format!("127.0.0.1:{}", primary.port)).await?;
        let url = rewrite_url(&primary.url, &[proxy.address()])?;
        let pair = Self {
            primary: tokio::sync::Mutex::new(primary),
            primary_socket,
            replica,
            proxy,
            url,
            leader: AtomicUsize::new(1),
            semi_sync,
            paused: AtomicBool::new(false),
        };
        pair.wait_caught_up().await?;
        if semi_sync {
            pair.primary_sql("SET GLOBAL rpl_semi_sync_master_enabled = ON")
                .await?;
            // The replica asks for semi-synchronous replication when its I/O thread
            // connects: connect it again, now that the primary offers it.
            pair.replica_sql("STOP SLAVE IO_THREAD; START SLAVE IO_THREAD")
                .await?;
            pair.wait_semi_sync().await?;
        }
        Ok(pair)
    }

    async fn primary_sql(&self, sql: &str) -> Result<String> {
        private_mariadb::root_sql(&self.primary_socket, sql).await
    }

    async fn replica_sql(&self, sql: &str) -> Result<String> {
        private_mariadb::root_sql(&socket(&self.replica), sql).await
    }

    /// Waits (at most [`WAIT`]) until the replica has applied the GTID position
    /// `position`; `doing` names the wait in its error.
    async fn replica_reaches(&self, position: &str, doing: &str) -> Result<()> {
        let waited = self
            .replica_sql(&format!(
                "SELECT MASTER_GTID_WAIT('{position}', {})",
                WAIT.as_secs()
            ))
            .await?;
        if waited.trim() == "0" {
            Ok(())
        } else {
            Err(hook_error(
                doing,
                format!("it did not apply {position} within {WAIT:?}"),
            ))
        }
    }

    /// Waits until the replica has applied everything the primary logged so far.
    async fn wait_caught_up(&self) -> Result<()> {
        let position = self.primary_sql("SELECT @@gtid_binlog_pos").await?;
        self.replica_reaches(position.trim(), "waiting for the replica")
            .await
    }

    /// Waits until the primary counts the replica as its semi-synchronous replica
    /// and waits for its acknowledgements.
    async fn wait_semi_sync(&self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self
                .primary_sql(
                    "SELECT GROUP_CONCAT(VARIABLE_VALUE ORDER BY VARIABLE_NAME) FROM \
                     information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN \
                     ('Rpl_semi_sync_master_clients', 'Rpl_semi_sync_master_status')",
                )
                .await?;
            if status.trim() == "1,ON" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(hook_error(
                    "waiting for the semi-synchronous replica",
                    format!("clients and status are {} after {WAIT:?}", status.trim()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lets the replica apply every transaction its I/O thread received (the
    /// primary gone), reading nothing more.
    async fn drain_relay_log(&self) -> Result<()> {
        self.replica_sql("STOP SLAVE IO_THREAD").await?;
        let status =
            private_mariadb::root_sql_vertical(&socket(&self.replica), "SHOW SLAVE STATUS\\G")
                .await?;
        let received = field(&status, "Gtid_IO_Pos").unwrap_or_default();
        if received.is_empty() {
            return Ok(());
        }
        self.replica_reaches(received, "promoting the replica")
            .await
    }
}

/// The value of `name` in the vertical (`\G`) output of a statement.
fn field<'a>(vertical: &'a str, name: &str) -> Option<&'a str> {
    vertical.lines().find_map(|line| {
        let (key, value) = line.trim_start().split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

#[async_trait]
impl Cluster for MariadbReplicaPair {
    fn url(&self) -> &str {
        &self.url
    }

    fn members(&self) -> usize {
        2
    }

    async fn connect(&self) -> Result<Arc<dyn Backend>> {
        (self.replica.connect)(self.url.clone()).await
    }

    async fn leader(&self) -> Result<Option<usize>> {
        Ok(Some(self.leader.load(Ordering::SeqCst)))
    }

    async fn stop_member(&self, member: usize) -> Result<()> {
        self.kill_member(member).await
    }

    /// Does nothing: the old primary stays down (see the type's docs).
    async fn start_member(&self, _member: usize) -> Result<()> {
        Ok(())
    }

    /// Member 1 (the primary): SIGKILLed, the replica promoted once it has applied
    /// what it received, the proxy pointed at it.
    async fn kill_member(&self, member: usize) -> Result<()> {
        if member != 1 || self.leader.load(Ordering::SeqCst) != 1 {
            return Err(hook_error(
                format!("killing MariaDB member {member}"),
                "only the first primary (member 1) fails over",
            ));
        }
        let started = Instant::now();
        self.primary.lock().await.crash().await?;
        // What the replica received is applied; what it did not (all it missed while
        // paused, with asynchronous replication) is lost, as with a replica behind a
        // slow link.
        self.drain_relay_log().await?;
        self.replica_sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0")
            .await?;
        self.paused.store(false, Ordering::SeqCst);
        self.proxy
            .redirect(format!("127.0.0.1:{}", self.replica.port));
        self.leader.store(2, Ordering::SeqCst);
        tracing::info!(
            took = ?started.elapsed(),
            "MariaDB primary killed and its replica promoted"
        );
        Ok(())
    }

    /// Pauses the asynchronous replica's replication (its I/O thread stopped), so that
    /// what the primary commits from now on stays there. Unsupported with
    /// semi-synchronous replication (every commit would wait for it).
    async fn pause_member(&self, member: usize) -> Result<()> {
        if self.semi_sync || member != 2 {
            return Err(distsync_core::Error::unsupported(
                "mysql",
                "pausing a semi-synchronous replica (every commit would wait for it)",
            ));
        }
        self.replica_sql("STOP SLAVE IO_THREAD").await?;
        self.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Resumes a paused replica's replication, unless it was promoted meanwhile.
    async fn resume_member(&self, _member: usize) -> Result<()> {
        if self.paused.swap(false, Ordering::SeqCst) && self.leader.load(Ordering::SeqCst) == 1 {
            self.replica_sql("START SLAVE IO_THREAD").await?;
        }
        Ok(())
    }

    async fn connect_with(&self, _query: &str) -> Result<Arc<dyn Backend>> {
        Err(distsync_core::Error::unsupported(
            "mysql",
            "replica acknowledgement in the URL (wait_replicas) is Redis's; MariaDB's is \
             semi-synchronous replication on the server",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn a_field_of_vertical_output_is_found_by_its_name() {
        let status = "*************************** 1. row ***************************\n\
                      \x20               Slave_IO_State: \n\
                      \x20                  Gtid_IO_Pos: 0-1-42\n";
        assert_eq!(field(status, "Gtid_IO_Pos"), Some("0-1-42"));
        assert_eq!(field(status, "Slave_IO_State"), Some(""));
        assert_eq!(field(status, "Missing"), None);
    }
}
