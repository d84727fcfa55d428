//! The whole conformance suite against the MySQL or MariaDB server named by
//! `DISTSYNC_MYSQL_URL` (skipped loudly when unset; a failure under `CI=true`), with the
//! fault hooks of a server (`distsync_conformance::ServerFaults`): holders in child
//! processes (this test binary re-run as `conformance_child`), second clients, the
//! partition proxy, a lease's row expired out of band through the `mariadb` client, and
//! private MariaDB servers to restart.

use distsync_conformance::{connector, server_url, Harness};

async fn mysql() -> Option<Harness> {
    let url = server_url("DISTSYNC_MYSQL_URL")?;
    let connect = connector(|url| async move { distsync_mysql::backend(&url).await });
    Some(
        Harness::connect(&url, connect)
            .await
            .unwrap_or_else(|error| panic!("connecting to mysql at {url}: {error}")),
    )
}

distsync_conformance::conformance_tests!(mysql);
