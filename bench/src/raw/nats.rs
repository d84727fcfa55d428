//! NATS JetStream: a KV create of one key (a put that compares the key's last
//! sequence: none, or the tombstone the last release left), then a purge of it that
//! compares the create's sequence.

use async_nats::header::{HeaderMap, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_ROLLUP};
use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;

use crate::contender::{started, Cycler, Role, Started};
use crate::Result;

/// The label of the raw row.
pub const LABEL: &str = "raw: KV create + purge";

/// The raw NATS cycle on its own client, in the bucket of the distsync URL (which
/// the target's connect made).
struct RawNats {
    jetstream: jetstream::Context,
    kv: kv::Store,
    key: String,
    /// `$KV.<bucket>.<key>`, which the purge is published to.
    subject: String,
    /// The key's last sequence: 0 before the first create, then the last purge's.
    last: u64,
}

/// Connects to the servers of the distsync URL `url`; the key is derived from `name`.
pub async fn start(url: &str, name: &str) -> Started {
    let made = async {
        let config: distsync::store::nats::NatsConfig = url.parse()?;
        if config.user().is_some() || config.creds_file().is_some() || config.tls() {
            return Err("the raw sequence connects to a plain nats:// URL only \
                        (no login, credentials or TLS)"
                .into());
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(config.connect_timeout())
            .request_timeout(Some(config.request_timeout()))
            .connect(config.servers().to_vec())
            .await?;
        let jetstream = jetstream::new(client);
        let kv = jetstream.get_key_value(config.bucket()).await?;
        let key = key(name);
        Ok(RawNats {
            subject: format!("$KV.{}.{key}", config.bucket()),
            jetstream,
            kv,
            key,
            last: 0,
        })
    };
    started(LABEL, Role::Raw, made.await)
}

/// A KV key for `name`: the bench's names are paths, whose characters a key takes
/// (`/`, `-`, `_`, letters, digits), under a prefix of the raw sequence's own; any
/// other character becomes `_`.
pub fn key(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '/' | '=' => c,
            _ => '_',
        })
        .collect();
    format!("distsync-bench-raw/{name}")
}

#[async_trait]
impl Cycler for RawNats {
    async fn cycle(&mut self) -> Result<()> {
        let created = self
            .kv
            .update(&self.key, Bytes::from_static(b"held"), self.last)
            .await?;
        // The purge through the stream rather than `kv::Store::purge`, which does not
        // return the tombstone's sequence; the next create compares against it, so
        // a cycle costs two round trips (`kv::Store::create` reads the tombstone
        // again first once there is one).
        let mut headers = HeaderMap::new();
        headers.insert("KV-Operation", "PURGE");
        headers.insert(NATS_ROLLUP, "sub");
        headers.insert(
            NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            created.to_string().as_str(),
        );
        let purged = self
            .jetstream
            .publish_with_headers(self.subject.clone(), headers, Bytes::new())
            .await?
            .await?;
        self.last = purged.sequence;
        Ok(())
    }
}
