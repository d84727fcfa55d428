//! The out-of-band session end of a NATS JetStream column: every key of the session
//! purged by KV purge messages from a plain NATS client, as an operator would with
//! the `nats` tool, never through the backend.
//!
//! A session of the NATS backend is its key `session.<id>` in the bucket, and every
//! key it holds carries its id as the subject token after `q`
//! (`<kind>.<name>.q.<id>.<n>`, where `<name>` is the name's segments and a closing
//! `=`), so its keys are the session key and the subjects of the bucket whose tokens
//! end `….=.q.<id>.<n>`. No NATS command line tool installs from the package
//! registries here, so the hook is a client of the NATS authors' own crate (the
//! `nats-client` feature); without it the hook is declared unsupported.

use distsync_core::{Error, Result, SessionId};

/// The bucket a NATS URL names when its query has no `bucket=`: the backend's default.
const DEFAULT_BUCKET: &str = "distsync";

/// Where the hook reaches a NATS column's keys: the servers of its URL, the bucket,
/// and the credentials file (`creds=`), if any.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct NatsTarget {
    /// `[user:password@]host:port[,host:port...]`, as the client takes them.
    servers: String,
    /// The key-value bucket (the stream `KV_<bucket>`).
    bucket: String,
    /// A NATS credentials file.
    creds: Option<String>,
}

impl NatsTarget {
    /// How many servers the URL names.
    pub(super) fn server_count(&self) -> usize {
        self.servers.split(',').count()
    }

    /// Each server as a client address (`nats://[user:password@]host:port`): the URL's
    /// user and password, written once before its first server, go with every one.
    #[cfg_attr(not(feature = "nats-client"), allow(dead_code))]
    fn addresses(&self) -> Vec<String> {
        let (user, hosts) = match self.servers.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), self.servers.as_str()),
        };
        hosts
            .split(',')
            .map(|host| format!("nats://{user}{host}"))
            .collect()
    }
}

impl NatsTarget {
    /// The target of a `nats://` URL.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when `url` is not a `nats://` URL or names no server.
    pub(super) fn of_url(url: &str) -> Result<Self> {
        let invalid_url = Error::invalid_url(url);
        let invalid = |reason: &str| invalid_url(reason.to_owned());
        let rest = url
            .strip_prefix("nats://")
            .ok_or_else(|| invalid("not a nats:// URL"))?;
        let (servers, query) = rest.split_once('?').unwrap_or((rest, ""));
        let servers = servers.trim_end_matches('/');
        if servers.is_empty() || servers.contains('/') {
            return Err(invalid("no server, or a path (a nats URL has none)"));
        }
        let mut target = Self {
            servers: servers.to_owned(),
            bucket: DEFAULT_BUCKET.to_owned(),
            creds: None,
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "bucket" => target.bucket = value.into_owned(),
                "creds" => target.creds = Some(value.into_owned()),
                _ => {}
            }
        }
        Ok(target)
    }
}

/// Whether this build can end a NATS session out of band, or why not.
pub(super) fn available() -> std::result::Result<(), String> {
    if cfg!(feature = "nats-client") {
        Ok(())
    } else {
        Err(
            "built without the conformance crate's `nats-client` feature (the NATS client \
             that purges a session's keys)"
                .to_owned(),
        )
    }
}

/// How long the purge may take: connecting, listing the session's subjects, one
/// acknowledged purge per key.
#[cfg(feature = "nats-client")]
const KILL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Purges every key of `session` (its own key and its contender keys) at `url`.
///
/// # Errors
/// [`Error::Unsupported`] without the `nats-client` feature; a connection, listing or
/// purge failure, or no key of the session found.
pub(super) async fn kill_session(url: &str, session: SessionId) -> Result<String> {
    let target = NatsTarget::of_url(url)?;
    #[cfg(feature = "nats-client")]
    {
        let purged = tokio::time::timeout(KILL_TIMEOUT, purge_session(&target, session))
            .await
            .map_err(|_| Error::Timeout(KILL_TIMEOUT))??;
        if purged == 0 {
            return Err(super::hook_error(
                "purging the session's keys",
                format!("no key of session {session} found"),
            ));
        }
        Ok(format!(
            "{purged} keys of the session purged by KV purge messages from a plain nats client"
        ))
    }
    #[cfg(not(feature = "nats-client"))]
    {
        let _ = (target, session);
        Err(Error::unsupported(
            "nats",
            available().err().unwrap_or_default(),
        ))
    }
}

/// How long asking for the stream's leader may take: connecting, and one request.
#[cfg(feature = "nats-client")]
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The server name of the member leading the bucket's stream at `target`, or `None`
/// while the stream has no leader (the request unanswered or refused, as during an
/// election).
///
/// # Errors
/// [`Error::Unsupported`] without the `nats-client` feature; no server of the URL
/// reached.
pub(super) async fn stream_leader(target: &NatsTarget) -> Result<Option<String>> {
    #[cfg(feature = "nats-client")]
    {
        let client = tokio::time::timeout(ASK_TIMEOUT, connect(target))
            .await
            .map_err(|_| Error::Timeout(ASK_TIMEOUT))??;
        let jetstream = async_nats::jetstream::new(client);
        let asked = tokio::time::timeout(ASK_TIMEOUT, async {
            let mut stream = jetstream
                .get_stream(format!("KV_{}", target.bucket))
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(stream.info().await?.cluster.clone())
        })
        .await;
        match asked {
            Ok(Ok(cluster)) => Ok(cluster.and_then(|cluster| cluster.leader)),
            Ok(Err(error)) => {
                tracing::debug!(%error, "asking for the stream's leader");
                Ok(None)
            }
            Err(_) => Ok(None),
        }
    }
    #[cfg(not(feature = "nats-client"))]
    {
        let _ = target;
        Err(Error::unsupported(
            "nats",
            available().err().unwrap_or_default(),
        ))
    }
}

/// A plain NATS client of `target`'s servers, with its credentials file.
#[cfg(feature = "nats-client")]
async fn connect(target: &NatsTarget) -> Result<async_nats::Client> {
    let failed = |doing: &str, error: &dyn std::fmt::Display| super::hook_error(doing, error);
    let mut options = async_nats::ConnectOptions::new();
    if let Some(creds) = &target.creds {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|error| failed("reading the credentials file", &error))?;
    }
    options
        .connect(target.addresses())
        .await
        .map_err(|error| failed("connecting to nats", &error))
}

/// Lists the subjects of `session`'s keys in the bucket's stream and sends each a KV
/// purge message (a rollup of its subject), acknowledged by the stream; the number
/// purged.
#[cfg(feature = "nats-client")]
async fn purge_session(target: &NatsTarget, session: SessionId) -> Result<usize> {
    use futures::StreamExt as _;

    let failed = |doing: &str, error: &dyn std::fmt::Display| super::hook_error(doing, error);
    let client = connect(target).await?;
    let jetstream = async_nats::jetstream::new(client);
    let bucket = &target.bucket;
    let stream = jetstream
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|error| failed("finding the bucket's stream", &error))?;
    let id = format!("{:016x}", session.0);
    let own = format!("$KV.{bucket}.session.{id}");
    let held = |subject: &str| {
        let tokens: Vec<&str> = subject.rsplitn(5, '.').collect();
        matches!(tokens.as_slice(), [_n, found, "q", "=", _] if *found == id)
    };
    let mut subjects = Vec::new();
    let mut found = stream
        .info_with_subjects(format!("$KV.{bucket}.>"))
        .await
        .map_err(|error| failed("listing the session's keys", &error))?;
    while let Some(subject) = found.next().await {
        let (subject, _count) =
            subject.map_err(|error| failed("listing the session's keys", &error))?;
        if subject == own || held(&subject) {
            subjects.push(subject);
        }
    }
    for subject in &subjects {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("KV-Operation", "PURGE");
        headers.insert("Nats-Rollup", "sub");
        jetstream
            .publish_with_headers(subject.clone(), headers, bytes::Bytes::new())
            .await
            .map_err(|error| failed("purging a key", &error))?
            .await
            .map_err(|error| failed("purging a key", &error))?;
    }
    Ok(subjects.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_comes_from_the_url() {
        assert_eq!(
            NatsTarget::of_url("nats://u:p@127.0.0.1:1,127.0.0.1:2/?bucket=conf&ttl=5s").unwrap(),
            NatsTarget {
                servers: "u:p@127.0.0.1:1,127.0.0.1:2".to_owned(),
                bucket: "conf".to_owned(),
                creds: None,
            }
        );
        let cluster = NatsTarget::of_url("nats://u:p@h:1,h:2?replicas=3").unwrap();
        assert_eq!(cluster.server_count(), 2);
        assert_eq!(cluster.addresses(), ["nats://u:p@h:1", "nats://u:p@h:2"]);
        let plain = NatsTarget::of_url("nats://127.0.0.1:4222").unwrap();
        assert_eq!(
            (plain.servers.as_str(), plain.bucket.as_str()),
            ("127.0.0.1:4222", "distsync")
        );
        assert!(NatsTarget::of_url("nats:///?bucket=b").is_err());
        assert!(NatsTarget::of_url("nats://h:1/path").is_err());
        assert!(NatsTarget::of_url("redis://h:1").is_err());
    }
}
