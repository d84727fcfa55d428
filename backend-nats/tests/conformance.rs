//! The whole conformance suite against a real nats-server with JetStream
//! (`DISTSYNC_NATS_URL`; skipped loudly when unset, a failure under `CI=true`).
//!
//! The conformance crate's server fault hooks ([`ServerFaults`]) know no NATS server
//! yet, so this test gives the hooks that need nothing of the server's kind:
//! holders in child processes (this test binary re-run as `conformance_child`),
//! paused by SIGSTOP; second clients; clients cut off by the partition proxy; and an
//! out-of-band session kill, which purges the session's keys with a plain NATS
//! client, not through the library.
//! A case that needs another hook (an out-of-band kill, a private server to restart,
//! a cluster) is reported not run: its absence says nothing about NATS. Primitives
//! this backend does not build are declared unsupported by its capabilities.
//!
//! [`ServerFaults`]: distsync_conformance::ServerFaults

use std::sync::Arc;

use async_trait::async_trait;
use distsync_conformance::faults::proxy::{self, Proxy};
use distsync_conformance::faults::{child, PartitionMode, Partitioned};
use distsync_conformance::{
    connector, server_url, Connect, ExternalHolder, Faults, Harness, HolderSpec, Hook,
};
use distsync_core::{Backend, Error, Result, SessionId};
use futures::StreamExt;

/// The hooks of the NATS server at `url`.
struct NatsFaults {
    url: String,
    connect: Connect,
}

/// `url` with the query parameters `settings` (`key=value&...`) added.
fn with_settings(url: &str, settings: &str) -> String {
    match (settings.is_empty(), url.contains('?')) {
        (true, _) => url.to_owned(),
        (false, true) => format!("{url}&{settings}"),
        (false, false) => format!("{url}/?{settings}"),
    }
}

/// A client whose every connection goes through one partition proxy.
struct ProxiedClient {
    backend: Arc<dyn Backend>,
    proxy: Proxy,
}

impl Partitioned for ProxiedClient {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.backend)
    }

    fn set(&self, mode: PartitionMode) {
        self.proxy.set(mode);
    }
}

#[async_trait]
impl Faults for NatsFaults {
    fn describe(&self) -> String {
        "nats server: store-side revoke, child-process holders, second clients, partition proxy"
            .to_owned()
    }

    fn offers(&self, hook: Hook) -> std::result::Result<(), String> {
        match hook {
            Hook::ChildHolder | Hook::PausedHolder | Hook::AnyExternalHolder => {
                child::launcher().map(drop)
            }
            Hook::SecondClient | Hook::KillSession => Ok(()),
            Hook::Partition => proxy::rewrite_url(&self.url, ([127, 0, 0, 1], 0).into())
                .map(drop)
                .map_err(|error| error.to_string()),
            other => Err(format!("{other}: not offered by the nats harness yet")),
        }
    }

    fn connector(&self) -> Option<Connect> {
        Some(Arc::clone(&self.connect))
    }

    fn child_url(&self) -> Option<&str> {
        Some(&self.url)
    }

    async fn spawn_holder(
        &self,
        backend: &dyn Backend,
        spec: &HolderSpec,
    ) -> Result<Box<dyn ExternalHolder>> {
        let launcher = child::launcher()
            .map_err(|reason| Error::unsupported(backend.capabilities().backend, reason))?;
        Ok(Box::new(child::spawn(launcher, &self.url, spec).await?))
    }

    /// Purges every key of the session (its own key and its contender keys, found by
    /// the session's id in their subjects) with KV purge messages sent by a plain
    /// NATS client, as an operator would with the `nats` tool.
    async fn kill_session(&self, _backend: &dyn Backend, session: SessionId) -> Result<String> {
        let failed = |error: String| Error::backend("nats", error);
        let bucket = self
            .url
            .split_once("bucket=")
            .map_or("distsync", |(_, rest)| {
                rest.split('&').next().unwrap_or(rest)
            });
        let server = self
            .url
            .split_once("/?")
            .map_or(self.url.as_str(), |(s, _)| s);
        let client = async_nats::connect(server)
            .await
            .map_err(|error| failed(error.to_string()))?;
        let jetstream = async_nats::jetstream::new(client.clone());
        let stream = jetstream
            .get_stream(format!("KV_{bucket}"))
            .await
            .map_err(|error| failed(error.to_string()))?;
        let id = format!("{:016x}", session.0);
        let mut subjects = Vec::new();
        for filter in [
            format!("$KV.{bucket}.session.{id}"),
            format!("$KV.{bucket}.*.*.q.{id}.*"),
        ] {
            let mut found = stream
                .info_with_subjects(filter)
                .await
                .map_err(|error| failed(error.to_string()))?;
            while let Some(subject) = found.next().await {
                subjects.push(subject.map_err(|error| failed(error.to_string()))?.0);
            }
        }
        for subject in &subjects {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("KV-Operation", "PURGE");
            headers.insert("Nats-Rollup", "sub");
            client
                .request_with_headers(subject.clone(), headers, Default::default())
                .await
                .map_err(|error| failed(error.to_string()))?;
        }
        Ok(format!(
            "{} keys of the session purged by KV purge messages from a plain nats client",
            subjects.len()
        ))
    }

    async fn second_client(&self, _backend: &dyn Backend) -> Result<Arc<dyn Backend>> {
        (self.connect)(self.url.clone()).await
    }

    async fn partitioned_client_with(
        &self,
        _backend: &dyn Backend,
        settings: &str,
    ) -> Result<Box<dyn Partitioned>> {
        let (_, upstream) = proxy::rewrite_url(&self.url, ([127, 0, 0, 1], 0).into())?;
        let proxy = Proxy::start(upstream).await?;
        let (url, _) = proxy::rewrite_url(&self.url, proxy.address())?;
        let backend = (self.connect)(with_settings(&url, settings)).await?;
        Ok(Box::new(ProxiedClient { backend, proxy }))
    }
}

async fn nats() -> Option<Harness> {
    let url = server_url("DISTSYNC_NATS_URL")?;
    let connect = connector(|url| async move { distsync_nats::backend(&url).await });
    let backend = connect(url.clone())
        .await
        .unwrap_or_else(|error| panic!("connecting to nats at {url}: {error}"));
    let faults = NatsFaults { url, connect };
    Some(
        Harness::new(backend)
            .with_faults(Arc::new(faults))
            .with_absent_hooks_not_run(),
    )
}

distsync_conformance::conformance_tests!(nats);
