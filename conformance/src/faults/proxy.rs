//! A TCP proxy between one client and its store, for partition faults.
//!
//! The client under test connects to the proxy instead of the server; the proxy
//! forwards bytes both ways until told otherwise:
//! - [`PartitionMode::Silent`]: bytes stop passing, connections stay open (a network
//!   that drops packets, a hung middlebox): the client's requests get no answer, and
//!   the server sees an idle client;
//! - [`PartitionMode::Reset`]: every connection is closed at once (with a TCP reset
//!   where the platform allows) and new ones are closed as soon as accepted (a
//!   restarted proxy or firewall).
//!
//! - [`PartitionMode::LoseReply`]: bytes pass both ways until the store's answer after
//!   `after` more answers: that one is dropped and its connection reset, so the request
//!   reached the store whole and may have been applied while the client never learns
//!   it (a lost reply); the proxy forwards again from then on.
//!
//! [`Proxy::heal`] lets bytes pass again (for connections still open).
//! [`Proxy::set_on_request`] switches the mode when a chosen request passes, for a
//! fault that must start at one request of a call that sends several.
//!
//! [`Proxy::redirect`] points the proxy at another upstream, closing the connections
//! to the old one (as a virtual IP moved to a promoted standby, or a pooler
//! reconfigured after a failover): clients reconnect and reach the new server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};

use distsync_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::hook_error;

/// How the proxy treats traffic. `#[non_exhaustive]`: more network faults (delays,
/// one-way loss) may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartitionMode {
    /// Bytes pass both ways.
    Forward,
    /// Bytes stop passing; connections stay open.
    Silent,
    /// Connections are closed, new ones refused.
    Reset,
    /// Bytes pass, except the store's answer after `after` more answers (an answer is
    /// what one read from the store's side of any connection brings): it is dropped and
    /// its connection reset, then the mode is [`PartitionMode::Forward`] again.
    LoseReply {
        /// How many answers pass before the one lost.
        after: u8,
    },
    /// As [`PartitionMode::LoseReply`], but the mode then becomes
    /// [`PartitionMode::Reset`] instead of forwarding: a partition that starts between a
    /// request reaching the store and its answer, and lasts until healed.
    LoseReplyThenReset {
        /// How many answers pass before the one lost.
        after: u8,
    },
}

impl PartitionMode {
    /// The mode in a few words, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Forward => "forwarding",
            Self::Silent => "silent partition (bytes stop, connections stay open)",
            Self::Reset => "reset partition (connections closed, new ones refused)",
            Self::LoseReply { .. } => "a lost reply (a request forwarded, its answer cut)",
            Self::LoseReplyThenReset { .. } => {
                "a lost reply, then a reset partition (a request forwarded, its answer and \
                 everything after cut)"
            }
        }
    }
}

/// A running proxy to one upstream address. Dropping it closes every connection it
/// carries and refuses every new one from then on, as [`PartitionMode::Reset`] does.
///
/// A dropped proxy keeps its port while the runtime that started it runs: a client
/// dropped by a case can still have background work that dials it (a cancelled claim's
/// put-back retrying, a renewal), and a port handed out again could put such a client
/// through another case's proxy, to another store. A client that takes another store
/// for its own one judges that its store forgot and writes that into the other store
/// (a new epoch marker), which would wrongly fail the cases running there. The price
/// is one socket and one idle task per proxy the run starts.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    mode: Arc<watch::Sender<PartitionMode>>,
    upstream: Arc<std::sync::Mutex<String>>,
    /// Bumped by [`Proxy::redirect`]: every connection of an older epoch ends.
    epoch: Arc<watch::Sender<u64>>,
    /// Answers passed since the mode was last set (for [`PartitionMode::LoseReply`]).
    answers: Arc<AtomicU32>,
    /// The mode [`Proxy::set_on_request`] armed, with the bytes that set it.
    armed: Armed,
    /// When the proxy was dropped, for the accept loop's log of late connections.
    dropped: Arc<OnceLock<std::time::Instant>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Closes every forwarded connection (their pumps watch the mode), and the
        // accept loop, left running, refuses every new one.
        let _ = self.dropped.set(std::time::Instant::now());
        self.mode.send_replace(PartitionMode::Reset);
    }
}

impl Proxy {
    /// Starts a proxy on a free loopback port, forwarding to `upstream`
    /// (`host:port`).
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(upstream: String) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| hook_error("binding the partition proxy", e))?;
        let address = listener
            .local_addr()
            .map_err(|e| hook_error("binding the partition proxy", e))?;
        let (mode, _) = watch::channel(PartitionMode::Forward);
        let mode = Arc::new(mode);
        let upstream = Arc::new(std::sync::Mutex::new(upstream));
        let epoch = Arc::new(watch::channel(0u64).0);
        let answers = Arc::new(AtomicU32::new(0));
        let armed = Armed::default();
        let dropped = Arc::new(OnceLock::new());
        tokio::spawn(accept_loop(
            listener,
            Arc::clone(&upstream),
            Arc::clone(&mode),
            Arc::clone(&epoch),
            Arc::clone(&answers),
            Arc::clone(&armed),
            Arc::clone(&dropped),
        ));
        Ok(Self {
            address,
            mode,
            upstream,
            epoch,
            answers,
            armed,
            dropped,
        })
    }

    /// A proxy in front of the one server `url` names, and `url` sent through it.
    ///
    /// Cancel-safe: a proxy started before the future is dropped is dropped with it,
    /// which stops it.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL that does not name exactly one server (a cluster's
    /// need a proxy each, see [`upstreams`]); when no loopback port can be bound.
    pub async fn front(url: &str) -> Result<(Self, String)> {
        let [upstream] = <[String; 1]>::try_from(upstreams(url)?).map_err(|servers| {
            Error::invalid_url(url)(format!("{} servers: a proxy fronts one", servers.len()))
        })?;
        let proxy = Self::start(upstream).await?;
        let through = rewrite_url(url, &[proxy.address()])?;
        Ok((proxy, through))
    }

    /// Where clients connect (`127.0.0.1:port`).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Switches the proxy to `mode`; takes effect at once on every connection.
    pub fn set(&self, mode: PartitionMode) {
        self.answers.store(0, Ordering::SeqCst);
        self.mode.send_replace(mode);
    }

    /// Switches the proxy to `mode` as a request from a client carrying `needle` passes,
    /// before it is forwarded; until then the mode is unchanged. The needle must come
    /// in one read of the client's bytes (a short protocol line does).
    pub fn set_on_request(&self, needle: &[u8], mode: PartitionMode) {
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = Some((needle.to_vec(), mode));
    }

    /// Lets bytes pass again.
    pub fn heal(&self) {
        self.set(PartitionMode::Forward);
    }

    /// Points the proxy at `upstream` (`host:port`): the connections it carries are
    /// closed (reset), and new ones go to `upstream`.
    pub fn redirect(&self, upstream: String) {
        *self
            .upstream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = upstream;
        self.epoch.send_modify(|epoch| *epoch += 1);
    }
}

/// How long the accept loop waits after a failed accept before the next.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

async fn accept_loop(
    listener: TcpListener,
    upstream: Arc<std::sync::Mutex<String>>,
    mode: Arc<watch::Sender<PartitionMode>>,
    epoch: Arc<watch::Sender<u64>>,
    answers: Arc<AtomicU32>,
    armed: Armed,
    dropped: Arc<OnceLock<std::time::Instant>>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors, say: the next accept waits a little rather than
            // spin.
            tokio::time::sleep(ACCEPT_RETRY).await;
            continue;
        };
        if *mode.borrow() == PartitionMode::Reset {
            if let Some(at) = dropped.get() {
                // A client its case dropped still dials (see `Proxy`): worth knowing
                // when a case's clients outlive it, and by how much.
                tracing::debug!(
                    proxy = ?listener.local_addr().ok(),
                    since_drop = ?at.elapsed(),
                    "a connection to a dropped partition proxy refused"
                );
            }
            reset(client);
            continue;
        }
        let upstream = upstream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let switch = Arc::clone(&mode);
        let mode = mode.subscribe();
        let mut epoch = epoch.subscribe();
        let answers = Arc::clone(&answers);
        let armed = Arc::clone(&armed);
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                reset(client);
                return;
            };
            for stream in [&client, &server] {
                let _ = stream.set_nodelay(true);
                abortive_close(stream);
            }
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let trigger = (armed, (Arc::clone(&switch), Arc::clone(&answers)));
            let up = pump(client_read, server_write, mode.clone(), None, Some(trigger));
            let down = pump(
                server_read,
                client_write,
                mode,
                Some((switch, answers)),
                None,
            );
            // Either direction ending (EOF, error, reset) ends the connection, and so
            // does a redirect (closed with a reset: SO_LINGER is zero).
            tokio::select! {
                () = up => {}
                () = down => {}
                _ = epoch.changed() => {}
            }
        });
    }
}

/// Closes `stream` with a TCP reset rather than an orderly shutdown.
fn reset(stream: TcpStream) {
    abortive_close(&stream);
    drop(stream);
}

/// Sets `SO_LINGER` to zero, so that closing the stream sends a reset.
fn abortive_close(stream: &TcpStream) {
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(std::time::Duration::ZERO));
}

/// The mode's sender and the answers counter, which the store-to-client pump of a
/// connection uses to lose one answer.
type AnswerLoss = (Arc<watch::Sender<PartitionMode>>, Arc<AtomicU32>);

/// The mode [`Proxy::set_on_request`] armed, and the needle that sets it.
type Armed = Arc<std::sync::Mutex<Option<(Vec<u8>, PartitionMode)>>>;

/// Sets the armed mode if `request` carries its needle (see [`Proxy::set_on_request`]).
fn fire(request: &[u8], (armed, (switch, answers)): &(Armed, AnswerLoss)) {
    let mut armed = armed.lock().unwrap_or_else(PoisonError::into_inner);
    let carried = armed.as_ref().is_some_and(|(needle, _)| {
        request
            .windows(needle.len().max(1))
            .any(|window| window == needle.as_slice())
    });
    if let Some((_, mode)) = armed.take_if(|_| carried) {
        answers.store(0, Ordering::SeqCst);
        switch.send_replace(mode);
    }
}

/// Copies bytes from `from` to `to` while the mode lets them pass: holds them while
/// silent, and returns (closing both halves) on reset, EOF or error. With `answers`
/// (the store-to-client direction), a [`PartitionMode::LoseReply`] due drops what was
/// read and returns, after switching the proxy back to forwarding (so one connection
/// loses one answer), or to a reset partition for
/// [`PartitionMode::LoseReplyThenReset`]. With `armed` (the client-to-store direction),
/// a request carrying the armed needle sets the armed mode before it is forwarded.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<PartitionMode>,
    answers: Option<AnswerLoss>,
    armed: Option<(Armed, AnswerLoss)>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            () = until_reset(&mut mode) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if let Some(armed) = &armed {
            fire(&buffer[..n], armed);
        }
        // Silent: hold the bytes (the kernel buffers fill behind them) until healed.
        loop {
            let current = *mode.borrow_and_update();
            match current {
                PartitionMode::Forward => break,
                PartitionMode::LoseReply { after }
                | PartitionMode::LoseReplyThenReset { after } => {
                    let Some((switch, answers)) = &answers else {
                        break;
                    };
                    if answers.fetch_add(1, Ordering::SeqCst) < u32::from(after) {
                        break;
                    }
                    // Only the connection that switches the mode on loses its answer.
                    let lost = switch.send_if_modified(|mode| match mode {
                        PartitionMode::LoseReply { .. } => {
                            *mode = PartitionMode::Forward;
                            true
                        }
                        PartitionMode::LoseReplyThenReset { .. } => {
                            *mode = PartitionMode::Reset;
                            true
                        }
                        _ => false,
                    });
                    if lost {
                        return;
                    }
                    break;
                }
                PartitionMode::Reset => return,
                PartitionMode::Silent => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

async fn until_reset(mode: &mut watch::Receiver<PartitionMode>) {
    loop {
        if *mode.borrow_and_update() == PartitionMode::Reset {
            return;
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
}

/// The servers (`host:port`) `url` names, in its order: one, or the list of a cluster
/// (`nats://a:1,b:2`, `zk://a:1,b:2`), each of which a partitioned client reaches
/// through a proxy of its own.
///
/// # Errors
/// [`Error::InvalidUrl`] for a URL without an authority, or with an empty server.
pub fn upstreams(url: &str) -> Result<Vec<String>> {
    Ok(parts(url)?.hosts)
}

/// `url` with its servers replaced, one for one and in order, by `addresses`: how a
/// client is sent through the proxies in front of them. User info, path and query are
/// kept.
///
/// # Errors
/// [`Error::InvalidUrl`] as [`upstreams`], or when `addresses` are not as many as the
/// servers `url` names.
pub fn rewrite_url(url: &str, addresses: &[SocketAddr]) -> Result<String> {
    let parts = parts(url)?;
    if parts.hosts.len() != addresses.len() {
        return Err(Error::invalid_url(url)(format!(
            "{} proxies for {} servers",
            addresses.len(),
            parts.hosts.len()
        )));
    }
    let addresses: Vec<String> = addresses.iter().map(SocketAddr::to_string).collect();
    Ok(format!(
        "{}://{}{}{}",
        parts.scheme,
        parts.user,
        addresses.join(","),
        parts.tail
    ))
}

/// A URL cut around its servers.
struct UrlParts<'a> {
    scheme: &'a str,
    /// `user:password@`, or empty.
    user: &'a str,
    hosts: Vec<String>,
    /// Path, query and fragment.
    tail: &'a str,
}

fn parts(url: &str) -> Result<UrlParts<'_>> {
    let invalid = |reason: &str| Error::invalid_url(url)(reason.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let hosts: Vec<String> = hosts.split(',').map(str::to_owned).collect();
    if hosts.iter().any(String::is_empty) {
        return Err(invalid(
            "a partition proxy needs a host:port for every server",
        ));
    }
    Ok(UrlParts {
        scheme,
        user,
        hosts,
        tail,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn urls_are_rewritten_to_the_proxies() {
        let proxy: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let url = "postgres://distsync@127.0.0.1:25432/distsync?schema=x";
        assert_eq!(upstreams(url).unwrap(), ["127.0.0.1:25432"]);
        assert_eq!(
            rewrite_url(url, &[proxy]).unwrap(),
            "postgres://distsync@127.0.0.1:4000/distsync?schema=x"
        );
        assert_eq!(
            rewrite_url("redis://127.0.0.1:26379", &[proxy]).unwrap(),
            "redis://127.0.0.1:4000"
        );
        let cluster = "nats://u:p@a:1,b:2,c:3?replicas=3";
        assert_eq!(upstreams(cluster).unwrap(), ["a:1", "b:2", "c:3"]);
        let proxies: Vec<SocketAddr> = ["127.0.0.1:4001", "127.0.0.1:4002", "127.0.0.1:4003"]
            .iter()
            .map(|address| address.parse().unwrap())
            .collect();
        assert_eq!(
            rewrite_url(cluster, &proxies).unwrap(),
            "nats://u:p@127.0.0.1:4001,127.0.0.1:4002,127.0.0.1:4003?replicas=3"
        );
        assert!(rewrite_url(cluster, &[proxy]).is_err());
        assert!(upstreams("etcd://a:1,,b:2/ns").is_err());
        assert!(upstreams("etcd:///ns").is_err());
        assert!(upstreams("nonsense").is_err());
    }

    /// An echo server behind the proxy: bytes pass, stop when silent, pass again when
    /// healed, and the connection dies on reset.
    #[tokio::test]
    async fn silent_holds_bytes_and_reset_closes() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(upstream).await.unwrap();
        let mut client = TcpStream::connect(proxy.address()).await.unwrap();
        let mut answer = [0u8; 4];
        client.write_all(b"ping").await.unwrap();
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ping");

        proxy.set(PartitionMode::Silent);
        client.write_all(b"held").await.unwrap();
        let silent =
            tokio::time::timeout(Duration::from_millis(300), client.read_exact(&mut answer)).await;
        assert!(silent.is_err(), "no byte passes a silent partition");
        proxy.heal();
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut answer))
            .await
            .expect("bytes pass once healed")
            .unwrap();
        assert_eq!(&answer, b"held");

        proxy.set(PartitionMode::Reset);
        let closed = tokio::time::timeout(Duration::from_secs(5), client.read(&mut answer))
            .await
            .expect("a reset connection ends at once");
        assert!(matches!(closed, Ok(0) | Err(_)));
        let mut again = TcpStream::connect(proxy.address()).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(5), again.read(&mut answer))
            .await
            .expect("a new connection is closed at once");
        assert!(matches!(refused, Ok(0) | Err(_)));
    }

    /// A dropped proxy closes its connections and keeps its port, refusing: nothing can
    /// listen there while the runtime runs, so a client that dials it late reaches no
    /// other store.
    #[tokio::test]
    async fn a_dropped_proxy_keeps_its_port_and_refuses() {
        let (upstream, mut heard) = recording_echo().await;
        let proxy = Proxy::start(upstream).await.unwrap();
        let address = proxy.address();
        let mut client = TcpStream::connect(address).await.unwrap();
        let mut answer = [0u8; 4];
        client.write_all(b"ping").await.unwrap();
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(heard.recv().await.unwrap(), b"ping");

        drop(proxy);
        let closed = tokio::time::timeout(Duration::from_secs(5), client.read(&mut answer))
            .await
            .expect("a dropped proxy's connection ends at once");
        assert!(matches!(closed, Ok(0) | Err(_)));
        assert!(
            std::net::TcpListener::bind(address).is_err(),
            "the port of a dropped proxy is still taken"
        );
        let mut late = TcpStream::connect(address).await.unwrap();
        let _ = late.write_all(b"late").await;
        let refused = tokio::time::timeout(Duration::from_secs(5), late.read(&mut answer))
            .await
            .expect("a late connection is closed at once");
        assert!(matches!(refused, Ok(0) | Err(_)));
        assert!(
            heard.try_recv().is_err(),
            "nothing reached the store after the drop"
        );
    }

    /// An echo server that also sends what it reads to the returned receiver; its
    /// address.
    async fn recording_echo() -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap().to_string();
        let (seen, heard) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = echo.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        let _ = seen.send(buffer[..n].to_vec());
                        if stream.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (upstream, heard)
    }

    /// A lost reply: the request reaches the server, its answer is dropped and the
    /// connection reset; the proxy forwards again afterwards.
    #[tokio::test]
    async fn lose_reply_forwards_the_request_and_cuts_its_answer() {
        let (upstream, mut heard) = recording_echo().await;
        let proxy = Proxy::start(upstream).await.unwrap();
        let mut client = TcpStream::connect(proxy.address()).await.unwrap();
        let mut answer = [0u8; 4];
        proxy.set(PartitionMode::LoseReply { after: 1 });
        client.write_all(b"one!").await.unwrap();
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"one!", "the first answer passes");
        client.write_all(b"two!").await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), heard.recv()).await;
        assert_eq!(got.unwrap().unwrap(), b"one!");
        let got = tokio::time::timeout(Duration::from_secs(5), heard.recv()).await;
        assert_eq!(
            got.unwrap().unwrap(),
            b"two!",
            "the request reached the server"
        );
        let closed = tokio::time::timeout(Duration::from_secs(5), client.read(&mut answer))
            .await
            .expect("the connection is cut");
        assert!(matches!(closed, Ok(0) | Err(_)), "its answer is lost");
        let mut again = TcpStream::connect(proxy.address()).await.unwrap();
        again.write_all(b"ok?!").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), again.read_exact(&mut answer))
            .await
            .expect("forwarding again")
            .unwrap();
        assert_eq!(&answer, b"ok?!");
    }

    /// A mode set on a request: the requests before it pass with their answers; the
    /// one carrying the needle reaches the server, and its answer is lost.
    #[tokio::test]
    async fn a_mode_set_on_a_request_starts_at_that_request() {
        let (upstream, mut heard) = recording_echo().await;
        let proxy = Proxy::start(upstream).await.unwrap();
        let mut client = TcpStream::connect(proxy.address()).await.unwrap();
        let mut answer = [0u8; 4];
        proxy.set_on_request(b"tw", PartitionMode::LoseReplyThenReset { after: 0 });
        for request in [b"one!", b"uno!"] {
            client.write_all(request).await.unwrap();
            client.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, request, "an answer before the needle passes");
        }
        client.write_all(b"two!").await.unwrap();
        for request in [b"one!", b"uno!", b"two!"] {
            let got = tokio::time::timeout(Duration::from_secs(5), heard.recv()).await;
            assert_eq!(
                got.unwrap().unwrap(),
                request,
                "every request reached the server"
            );
        }
        let closed = tokio::time::timeout(Duration::from_secs(5), client.read(&mut answer))
            .await
            .expect("the connection is cut");
        assert!(
            matches!(closed, Ok(0) | Err(_)),
            "the needle's answer is lost"
        );
        let mut again = TcpStream::connect(proxy.address()).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(5), again.read(&mut answer))
            .await
            .expect("then a reset partition: a new connection is closed at once");
        assert!(matches!(refused, Ok(0) | Err(_)));
    }

    /// A server that answers every connection with its name.
    async fn namer(name: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = stream.write_all(name).await;
                    let mut buffer = [0u8; 8];
                    // Held open until the client goes.
                    while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
                });
            }
        });
        address
    }

    /// After a redirect, open connections end and new ones reach the new upstream.
    #[tokio::test]
    async fn redirect_closes_old_connections_and_sends_new_ones_elsewhere() {
        let (a, b) = (namer(b"a").await, namer(b"b").await);
        let proxy = Proxy::start(a).await.unwrap();
        let mut first = TcpStream::connect(proxy.address()).await.unwrap();
        let mut name = [0u8; 1];
        first.read_exact(&mut name).await.unwrap();
        assert_eq!(&name, b"a");
        proxy.redirect(b);
        let closed = tokio::time::timeout(Duration::from_secs(5), first.read(&mut name))
            .await
            .expect("the old connection ends at once");
        assert!(matches!(closed, Ok(0) | Err(_)));
        let mut second = TcpStream::connect(proxy.address()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut name))
            .await
            .expect("the new upstream answers")
            .unwrap();
        assert_eq!(&name, b"b");
    }
}
