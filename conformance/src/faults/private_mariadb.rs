//! A private MariaDB's life: its data directory installed, its server started, and the
//! user its clients log in as, as scripts/servers.sh makes the shared one's (no option
//! files, loopback only, root on the socket alone).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use distsync_core::Result;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::hook_error;
use super::private::WAIT;
use super::tools::{self, require};

/// The user, password and database of a private MariaDB's clients.
pub(super) const MARIADB_USER: &str = "distsync";

/// The system user `mariadbd` runs as: the runner's own (the server refuses to run as
/// root unless told so).
async fn system_user() -> Result<String> {
    let out = tools::run(Path::new("id"), ["-un"], &[]).await?;
    Ok(out.stdout.trim().to_owned())
}

/// Installs a fresh data directory at `data` unless one is there; whether it did.
/// Its temporary files go to `data` too (the installer passes `--tmpdir` to the
/// server it bootstraps with): installers run at once in the shared /tmp collide.
pub(super) async fn install(data: &Path) -> Result<bool> {
    if data.join("mysql").is_dir() {
        return Ok(false);
    }
    std::fs::create_dir_all(data)
        .map_err(|error| hook_error("creating MariaDB's data directory", error))?;
    let installer = require("mariadb-install-db", "mariadb-server")
        .map_err(|reason| hook_error("installing MariaDB", reason))?;
    let mut command = Command::new(installer);
    command
        .arg("--no-defaults")
        .arg(format!("--user={}", system_user().await?))
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", data.display()))
        .args(["--auth-root-authentication-method=socket", "--skip-test-db"]);
    tools::run_command(command, &[]).await?;
    Ok(true)
}

/// Starts `mariadbd` on `data`, listening on 127.0.0.1:`port` and on `socket`, its
/// output to `log`. The settings are the shared test server's (scripts/servers.sh),
/// smaller: a private server serves one case.
pub(super) async fn spawn(
    data: &Path,
    socket: &Path,
    port: u16,
    log: std::fs::File,
) -> Result<Child> {
    let server = require("mariadbd", "mariadb-server")
        .map_err(|reason| hook_error("starting mariadbd", reason))?;
    let errors = log
        .try_clone()
        .map_err(|error| hook_error("opening the server log", error))?;
    Command::new(server)
        .arg("--no-defaults")
        .arg(format!("--user={}", system_user().await?))
        .arg(format!("--datadir={}", data.display()))
        // Its temporary tables beside its data: servers installed at once in the
        // shared /tmp take the same temporary names.
        .arg(format!("--tmpdir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!(
            "--pid-file={}",
            data.join("mariadbd.pid").display()
        ))
        .args([
            "--skip-name-resolve",
            "--max-connections=200",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(errors)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| hook_error("starting mariadbd", error))
}

/// Creates the clients' user and database through root on `socket`, once the server
/// answers there.
pub(super) async fn create_user(socket: &Path) -> Result<()> {
    let client = require("mariadb", "mariadb-client")
        .map_err(|reason| hook_error("creating the user", reason))?;
    let socket = format!("--socket={}", socket.display());
    let sql = format!(
        "CREATE DATABASE IF NOT EXISTS {MARIADB_USER}; \
         CREATE USER IF NOT EXISTS '{MARIADB_USER}'@'127.0.0.1' IDENTIFIED BY '{MARIADB_USER}'; \
         GRANT ALL ON {MARIADB_USER}.* TO '{MARIADB_USER}'@'127.0.0.1'; \
         GRANT CONNECTION ADMIN ON *.* TO '{MARIADB_USER}'@'127.0.0.1';"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let args = [
            "--no-defaults",
            socket.as_str(),
            "--user=root",
            "--execute",
            &sql,
        ];
        match tools::run(&client, args, &[]).await {
            Ok(_) => return Ok(()),
            // The socket appears once the server has recovered and accepts clients.
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "the private MariaDB does not take root yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error),
        }
    }
}
