//! The whole conformance suite against a real nats-server with JetStream
//! (`DISTSYNC_NATS_URL`; skipped loudly when unset, a failure under `CI=true`), with the
//! fault hooks of a server (`distsync_conformance::ServerFaults`): holders in child
//! processes (this test binary re-run as `conformance_child`), second clients, the
//! partition proxy, and an out-of-band session end that purges the session's keys with
//! a plain NATS client (the conformance crate's `nats-client` feature). There is no
//! private nats-server to restart and no cluster yet, so the cases that need one are
//! reported unsupported, as is a primitive this backend does not build.

use distsync_conformance::{connector, server_url, Harness};

async fn nats() -> Option<Harness> {
    let url = server_url("DISTSYNC_NATS_URL")?;
    let connect = connector(|url| async move { distsync_nats::backend(&url).await });
    Some(
        Harness::connect(&url, connect)
            .await
            .unwrap_or_else(|error| panic!("connecting to nats at {url}: {error}")),
    )
}

distsync_conformance::conformance_tests!(nats);
