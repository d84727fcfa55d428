//! The whole conformance suite against the PostgreSQL server named by
//! `DISTSYNC_POSTGRES_URL` (skipped loudly when unset; a failure under `CI=true`), with
//! the fault hooks of a server (`distsync_conformance::ServerFaults`): holders in child
//! processes (this test binary re-run as `conformance_child`), session rows ended out
//! of band through `psql` (the schema's `end_sessions`; sessions hold no connection),
//! and a private PostgreSQL cluster to restart.

use distsync_conformance::{connector, server_url, Harness};

async fn postgres() -> Option<Harness> {
    let url = server_url("DISTSYNC_POSTGRES_URL")?;
    let connect = connector(|url| async move { distsync_postgres::backend(&url).await });
    Some(
        Harness::connect(&url, connect)
            .await
            .unwrap_or_else(|error| panic!("connecting to postgres at {url}: {error}")),
    )
}

distsync_conformance::conformance_tests!(postgres);
