//! What the servers say about themselves
//! ([`Backend::describe_store`](distsync_core::Backend::describe_store)): ZooKeeper's
//! `srvr` four-letter command, the one ZooKeeper 3.5+ answers without any
//! `4lw.commands.whitelist` setting, asked of each server of the URL on the client
//! port.

use std::time::Duration;

use distsync_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::store::Shared;
use crate::BACKEND;

/// The most `srvr` answers: a few hundred bytes.
const MOST: u64 = 64 * 1024;

/// `srvr`'s answer from `host` (`host:port`), within `timeout`.
async fn srvr(host: &str, timeout: Duration) -> Result<String> {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        stream.write_all(b"srvr").await?;
        let mut answer = String::new();
        stream.take(MOST).read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(timeout, ask).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(Error::connection(BACKEND, error)),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

/// The value of the line `field: value` in a `srvr` answer.
fn field<'a>(answer: &'a str, field: &str) -> Option<&'a str> {
    answer.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == field).then(|| value.trim())
    })
}

/// `zookeeper_version` (without the build suffix), each server's `mode`
/// (standalone, leader or follower) as `mode <host>`, and `servers` (how many the URL
/// names). A server that does not answer is left out; none answering is the error.
/// Over TLS the client port takes only TLS, which this plain-TCP question does not
/// speak: [`Error::Unsupported`] at once rather than a wait for the request timeout.
pub(crate) async fn describe(shared: &Shared) -> Result<Vec<(String, String)>> {
    if shared.config.tls() {
        return Err(Error::unsupported(
            BACKEND,
            "reading the server settings (`srvr`) over TLS (`zks://`)",
        ));
    }
    let hosts = shared.config.hosts();
    let timeout = shared.config.request_timeout();
    let mut facts = vec![("servers".to_owned(), hosts.len().to_string())];
    let mut version = None;
    let mut last_error = None;
    for host in hosts {
        match srvr(host, timeout).await {
            Ok(answer) => {
                if version.is_none() {
                    version = field(&answer, "Zookeeper version").map(|version| {
                        version
                            .split(['-', ','])
                            .next()
                            .unwrap_or(version)
                            .to_owned()
                    });
                }
                if let Some(mode) = field(&answer, "Mode") {
                    facts.push((format!("mode {host}"), mode.to_owned()));
                }
            }
            Err(error) => {
                tracing::debug!(%host, %error, "zookeeper server did not answer srvr");
                last_error = Some(error);
            }
        }
    }
    match (version, last_error) {
        (Some(version), _) => {
            facts.insert(0, ("zookeeper_version".to_owned(), version));
            Ok(facts)
        }
        (None, Some(error)) if facts.len() == 1 => Err(error),
        (None, _) => Ok(facts),
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn srvr_fields_are_read_by_name() {
        let answer = "Zookeeper version: 3.8.0-abc, built on 2024-12-29 17:54 UTC\n\
                      Latency min/avg/max: 0/1.1/58\nMode: standalone\nNode count: 641\n";
        assert_eq!(
            field(answer, "Zookeeper version"),
            Some("3.8.0-abc, built on 2024-12-29 17:54 UTC")
        );
        assert_eq!(field(answer, "Mode"), Some("standalone"));
        assert_eq!(field(answer, "Zxid"), None);
    }
}
