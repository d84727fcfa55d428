//! A private PostgreSQL primary with a promotable streaming standby
//! ([`PostgresStandbyPair`]), for the promoted-failover case: the fault hooks that
//! start one per case and the harness over them are the store-neutral ones of
//! [`super::promoted_pair`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{Backend, Result};
use tokio::time::Instant;

use super::private::{available, stop_postgres_now, Kind, Private, WAIT};
use super::proxy::{rewrite_url, Proxy};
use super::store::StoreKind;
use super::tools::{self, free_port, pg_bin};
use super::{hook_error, Cluster, Connect, PrivateServer};

/// A private PostgreSQL primary with a streaming standby (`pg_basebackup -R`),
/// reached through a TCP [`Proxy`] as clients reach a virtual IP: killing the primary
/// ([`Cluster::kill_member`] of member 1) stops it with `pg_ctl stop -m immediate`,
/// promotes the standby (`pg_ctl promote`) and points the proxy at it, closing every
/// connection to the old primary, as a failover manager would. The old primary stays
/// down ([`Cluster::start_member`] does nothing: it would need `pg_rewind` to follow
/// the new primary); the pair is the case's own and is removed when dropped.
///
/// With `synchronous`, the primary names the standby in `synchronous_standby_names`
/// with `synchronous_commit = on`: a commit is acknowledged only once the standby has
/// it. Without, replication is asynchronous.
pub struct PostgresStandbyPair {
    primary: Private,
    standby_port: u16,
    bin: PathBuf,
    proxy: Proxy,
    url: String,
    leader: std::sync::atomic::AtomicUsize,
    synchronous: bool,
    /// The standby's WAL receiver, while paused (SIGSTOP).
    paused: std::sync::Mutex<Option<u32>>,
}

impl std::fmt::Debug for PostgresStandbyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStandbyPair")
            .field("url", &distsync_core::redact_url(&self.url))
            .field("standby_port", &self.standby_port)
            .field("synchronous", &self.synchronous)
            .finish_non_exhaustive()
    }
}

/// The standby's `application_name`, named by the primary's
/// `synchronous_standby_names`.
const STANDBY_NAME: &str = "distsync_standby";

impl PostgresStandbyPair {
    /// Whether a pair can be started here (PostgreSQL's binaries, `pg_basebackup`
    /// included), or why not.
    pub fn available() -> std::result::Result<(), String> {
        available(StoreKind::Postgres)?;
        let bin = pg_bin().ok_or_else(|| "no PostgreSQL binaries".to_owned())?;
        if bin.join("pg_basebackup").is_file() {
            Ok(())
        } else {
            Err(format!("no pg_basebackup in {}", bin.display()))
        }
    }

    /// Starts the primary, clones the standby from it and starts it, waits until it
    /// streams (and, `synchronous`, is the synchronous standby), and puts the proxy in
    /// front of the primary.
    ///
    /// # Errors
    /// When a server cannot be started or the standby does not stream within a minute.
    pub async fn start(connect: Connect, synchronous: bool) -> Result<Self> {
        Self::available().map_err(|reason| hook_error("a PostgreSQL standby pair", reason))?;
        let bin = pg_bin().ok_or_else(|| hook_error("starting postgres", "no binaries"))?;
        let dir = tools::temp_dir("private-postgres-pair")?;
        let port = free_port()?;
        let standby_port = free_port()?;
        let mut primary = Private {
            kind: Kind::Postgres { bin: bin.clone() },
            url: format!("postgres://distsync@127.0.0.1:{port}/distsync"),
            dir,
            port,
            child: None,
            connect,
            disk: None,
        };
        primary.initdb().await?;
        // The standby is named in `synchronous_standby_names` once it runs (before, a
        // commit would wait for it forever).
        let replication = if synchronous {
            "\nsynchronous_commit = on\n".to_owned()
        } else {
            "\nsynchronous_commit = off\n".to_owned()
        };
        append(&primary.data().join("postgresql.conf"), &replication)?;
        primary.start().await?;

        let standby = primary.dir.join("standby");
        let mut clone = Private::postgres_command(&bin.join("pg_basebackup"));
        clone
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .arg("-D")
            .arg(&standby)
            .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"]);
        tools::run_command(clone, &[]).await?;
        // Its own port; no synchronous standby of its own once promoted (it would
        // wait for one forever); its name, which the primary waits for.
        append(
            &standby.join("postgresql.conf"),
            &format!("\nport = {standby_port}\nsynchronous_standby_names = ''\n"),
        )?;
        append(
            &standby.join("postgresql.auto.conf"),
            &format!(
                "\nprimary_conninfo = 'host=127.0.0.1 port={port} user=postgres \
                 application_name={STANDBY_NAME}'\n"
            ),
        )?;
        let mut start = Private::postgres_command(&bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&standby)
            .arg("-l")
            .arg(primary.dir.join("standby.log"))
            .args(["-w", "-t", "60", "start"]);
        tools::run_command(start, &[]).await?;

        let proxy = Proxy::start(format!("127.0.0.1:{port}")).await?;
        let url = rewrite_url(&primary.url, &[proxy.address()])?;
        let pair = Self {
            primary,
            standby_port,
            bin,
            proxy,
            url,
            leader: std::sync::atomic::AtomicUsize::new(1),
            synchronous,
            paused: std::sync::Mutex::new(None),
        };
        if synchronous {
            pair.psql(&format!(
                "ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"
            ))
            .await?;
            pair.psql("SELECT pg_reload_conf()").await?;
        }
        pair.wait_streaming().await?;
        Ok(pair)
    }

    /// Runs `sql` on the primary as `postgres`; its output.
    async fn psql(&self, sql: &str) -> Result<String> {
        self.psql_at(self.primary.port, sql).await
    }

    /// Runs `sql` on the server at `port` as `postgres`; its output.
    async fn psql_at(&self, port: u16, sql: &str) -> Result<String> {
        let psql = super::store::psql().map_err(|reason| hook_error("asking postgres", reason))?;
        let port = port.to_string();
        let out = tools::run(
            &psql,
            [
                "-X",
                "-q",
                "-At",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
            &[],
        )
        .await?;
        Ok(out.stdout)
    }

    /// Waits until the primary sees the standby streaming (as its synchronous
    /// standby, if it should be).
    async fn wait_streaming(&self) -> Result<()> {
        let want = if self.synchronous { "sync" } else { "async" };
        let query = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = \
             '{STANDBY_NAME}' AND state = 'streaming' AND sync_state = '{want}'"
        );
        let deadline = Instant::now() + WAIT;
        loop {
            if self.psql(&query).await?.trim() == "1" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(hook_error(
                    "waiting for the standby",
                    format!("not streaming ({want}) after {WAIT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lets a paused WAL receiver run again.
    fn unpause(&self) -> Result<()> {
        let paused = self
            .paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match paused {
            Some(pid) => tools::signal(pid, libc::SIGCONT),
            None => Ok(()),
        }
    }

    fn standby_data(&self) -> PathBuf {
        self.primary.dir.join("standby")
    }

    async fn pg_ctl(&self, data: &Path, args: &[&str]) -> Result<()> {
        let mut command = Private::postgres_command(&self.bin.join("pg_ctl"));
        command.arg("-D").arg(data).args(args);
        tools::run_command(command, &[]).await.map(drop)
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|error| hook_error(format!("writing {}", path.display()), error))
}

impl Drop for PostgresStandbyPair {
    fn drop(&mut self) {
        // The standby lives in the primary's directory, which the primary's drop
        // removes: stop it first (its WAL receiver running again).
        let _ = self.unpause();
        stop_postgres_now(&self.bin, &self.standby_data());
    }
}

#[async_trait]
impl Cluster for PostgresStandbyPair {
    fn url(&self) -> &str {
        &self.url
    }

    fn members(&self) -> usize {
        2
    }

    async fn connect(&self) -> Result<Arc<dyn Backend>> {
        (self.primary.connect)(self.url.clone()).await
    }

    async fn leader(&self) -> Result<Option<usize>> {
        Ok(Some(self.leader.load(std::sync::atomic::Ordering::SeqCst)))
    }

    async fn stop_member(&self, member: usize) -> Result<()> {
        self.kill_member(member).await
    }

    /// Does nothing: the old primary stays down (see the type's docs).
    async fn start_member(&self, _member: usize) -> Result<()> {
        Ok(())
    }

    /// Member 1 (the primary): stopped with `pg_ctl stop -m immediate`, the standby
    /// promoted, the proxy pointed at it.
    async fn kill_member(&self, member: usize) -> Result<()> {
        if member != 1 || self.leader.load(std::sync::atomic::Ordering::SeqCst) != 1 {
            return Err(hook_error(
                format!("killing PostgreSQL member {member}"),
                "only the first primary (member 1) fails over",
            ));
        }
        let primary = self.primary.data();
        self.pg_ctl(&primary, &["-m", "immediate", "-w", "-t", "60", "stop"])
            .await?;
        // A paused WAL receiver runs again (it finds the primary gone): what it had
        // not received is lost, as with a standby behind a slow link.
        self.unpause()?;
        let standby = self.standby_data();
        self.pg_ctl(&standby, &["-w", "-t", "60", "promote"])
            .await?;
        self.proxy
            .redirect(format!("127.0.0.1:{}", self.standby_port));
        self.leader.store(2, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Pauses the asynchronous standby's replication: its WAL receiver stopped
    /// (SIGSTOP) and its connection to the primary ended, so that what the primary
    /// commits from now on stays there. Unsupported with a synchronous standby (every
    /// commit would wait for it).
    async fn pause_member(&self, member: usize) -> Result<()> {
        if self.synchronous || member != 2 {
            return Err(distsync_core::Error::unsupported(
                "postgres",
                "pausing a synchronous standby (every commit would wait for it)",
            ));
        }
        let pid: u32 = self
            .psql_at(self.standby_port, "SELECT pid FROM pg_stat_wal_receiver")
            .await?
            .trim()
            .parse()
            .map_err(|error| hook_error("finding the WAL receiver", error))?;
        tools::signal(pid, libc::SIGSTOP)?;
        *self
            .paused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(pid);
        self.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
            .await
            .map(drop)
    }

    /// Resumes a paused standby (already done when the primary was killed).
    async fn resume_member(&self, _member: usize) -> Result<()> {
        self.unpause()
    }

    async fn connect_with(&self, _query: &str) -> Result<Arc<dyn Backend>> {
        Err(distsync_core::Error::unsupported(
            "postgres",
            "replica acknowledgement in the URL (wait_replicas) is Redis's; PostgreSQL's \
             is synchronous_standby_names on the server",
        ))
    }
}
