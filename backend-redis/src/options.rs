//! [`RedisOptions`]: what a [`crate::RedisBackend`] needs besides a client.

use std::time::Duration;

use distsync_core::raw::{MaxSessionTtl, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

use crate::capabilities::MIN_SESSION_TTL;

/// The key prefix used when neither the URL nor the options name one.
pub const DEFAULT_NAMESPACE: &str = "distsync:";

/// How long a write waits for its replica acknowledgement by default
/// ([`RedisOptions::replica_acknowledgement`]).
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(500);

/// The bound on session TTLs of a backend whose server does not keep every write (no
/// `appendfsync always`, or a failover without `wait_replicas`) when the URL or the
/// options give none: the default session TTL ([`distsync_core::DEFAULT_TTL`]), so
/// that a session opened without options fits under it while a store that forgot
/// waits as little as that allows before it grants again.
pub const DEFAULT_MAX_SESSION_TTL: Duration = distsync_core::DEFAULT_TTL;

/// The largest [`RedisOptions::max_session_ttl`]: a waiter line's epoch marker idles
/// out an hour after the line empties, and a marker recreated then must find the
/// server up for longer than every session TTL (see `src/amnesia.rs`).
pub const MAX_SESSION_TTL_LIMIT: Duration = Duration::from_secs(3600);

/// Options of a [`crate::RedisBackend`]: the key namespace, whether an evicting server
/// is accepted, and the timeouts. A URL sets them through its query
/// ([`crate::RedisConfig`]); [`crate::backend_from_client`] takes them with a client
/// of your own.
///
/// ```
/// # use std::time::Duration;
/// let options = distsync::store::redis::RedisOptions::new()
///     .namespace("myapp:")
///     .connect_timeout(Duration::from_secs(2))
///     .request_timeout(Duration::from_secs(3));
/// assert_eq!(options.get_namespace(), "myapp:");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    pub(crate) namespace: String,
    pub(crate) allow_eviction: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) wait_replicas: u32,
    pub(crate) wait_timeout: Duration,
    pub(crate) max_session_ttl: MaxSessionTtl,
    pub(crate) stale_claim: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            allow_eviction: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            wait_replicas: 0,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            max_session_ttl: MaxSessionTtl::Default,
            stale_claim: distsync_core::queue::STALE_CLAIM,
        }
    }
}

impl RedisOptions {
    /// The defaults: namespace [`DEFAULT_NAMESPACE`], no eviction accepted,
    /// [`DEFAULT_CONNECT_TIMEOUT`] and [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the key prefix (may be empty).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Accepts a server whose `maxmemory-policy` is not `noeviction`, with weaker
    /// guarantees ([`crate::capabilities_under_eviction`]).
    pub fn allow_eviction(mut self, allow: bool) -> Self {
        self.allow_eviction = allow;
        self
    }

    /// Sets how long connecting (TCP, TLS handshake, login and the first command) may
    /// take; a zero duration is replaced by one millisecond.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets how long one command may wait for its reply; a zero duration is replaced
    /// by one millisecond. Blocking calls (`lock`, `dequeue`, ...) wait on
    /// notifications, not on one command, so this does not bound them.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets how old an at-most-once dequeue's claim must be before any consumer of its
    /// queue puts the item back (the URL's `stale_claim=`; see
    /// [`distsync_core::queue::STALE_CLAIM`], the default, for why and for the second
    /// delivery a bound shorter than a live dequeuer's hand-over risks); a bound below
    /// [`distsync_core::queue::MIN_STALE_CLAIM`] or above
    /// [`distsync_core::queue::MAX_STALE_CLAIM`] becomes it.
    pub fn stale_claim(mut self, bound: Duration) -> Self {
        use distsync_core::queue::{MAX_STALE_CLAIM, MIN_STALE_CLAIM};
        self.stale_claim = bound.clamp(MIN_STALE_CLAIM, MAX_STALE_CLAIM);
        self
    }

    /// Asks for replica acknowledgement of every script run: each is followed, on the
    /// same connection, by `WAIT replicas timeout`, and a run that fewer than
    /// `replicas` replicas acknowledged within `timeout` counts as failed (a transient
    /// [`distsync_core::Error::Connection`]; see the crate docs, "Sentinel and replica
    /// acknowledgement"). `replicas = 0` turns it off (the default); a zero `timeout`
    /// is replaced by one millisecond (`WAIT` with 0 would wait forever).
    pub fn replica_acknowledgement(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_replicas = replicas;
        self.wait_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Bounds the session TTL of every client of this store to `ttl`, and turns on
    /// the lock-delay after the store forgets (see the crate docs, "When the store
    /// forgets"): a waiter line the store no longer knows grants nothing until `ttl`
    /// after the server started, so a holder whose hold the store forgot sees
    /// `lost()` before anyone else is granted. Opening a session with a longer TTL
    /// fails with [`distsync_core::Error::InvalidArgument`]. Every client of one
    /// namespace must give the same bound (or a larger one). A `ttl` below the shortest
    /// session TTL ([`crate::MIN_SESSION_TTL`], as the URL's `max_session_ttl` requires)
    /// is raised to it, one above [`MAX_SESSION_TTL_LIMIT`] lowered to that limit.
    ///
    /// Without this call the backend applies [`DEFAULT_MAX_SESSION_TTL`] to a server
    /// that does not keep every write and none to one that does
    /// ([`Self::without_max_session_ttl`] turns it off).
    ///
    /// ```
    /// # use std::time::Duration;
    /// use distsync::store::raw::MaxSessionTtl;
    /// let options = distsync::store::redis::RedisOptions::new().max_session_ttl(Duration::from_secs(60));
    /// assert_eq!(options.get_max_session_ttl(), MaxSessionTtl::At(Duration::from_secs(60)));
    /// ```
    pub fn max_session_ttl(mut self, ttl: Duration) -> Self {
        self.max_session_ttl = MaxSessionTtl::At(ttl.clamp(MIN_SESSION_TTL, MAX_SESSION_TTL_LIMIT));
        self
    }

    /// No bound on session TTLs and no lock-delay, even on a server that does not keep
    /// every write (`max_session_ttl=off` in the URL): after such a server restarts,
    /// or fails over without acknowledgement, a lock may be granted to a new client
    /// while its old holder acts on it until its next renewal. For a caller who
    /// accepts that to never wait out a lock-delay.
    pub fn without_max_session_ttl(mut self) -> Self {
        self.max_session_ttl = MaxSessionTtl::Off;
        self
    }

    /// The bound on session TTLs asked for ([`Self::max_session_ttl`],
    /// [`Self::without_max_session_ttl`]), or the backend's default.
    pub fn get_max_session_ttl(&self) -> MaxSessionTtl {
        self.max_session_ttl
    }

    /// How many replicas must acknowledge each script run (0: none asked).
    pub fn get_wait_replicas(&self) -> u32 {
        self.wait_replicas
    }

    /// How long a script run waits for its replica acknowledgement.
    pub fn get_wait_timeout(&self) -> Duration {
        self.wait_timeout
    }

    /// The key prefix.
    pub fn get_namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether an evicting server is accepted.
    pub fn get_allow_eviction(&self) -> bool {
        self.allow_eviction
    }

    /// The connect timeout.
    pub fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The request timeout.
    pub fn get_request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

/// The TCP settings of every connection the backend opens: `TCP_NODELAY` on, so that
/// a small request is sent at once even while an earlier one on the same multiplexed
/// connection awaits its acknowledgement (with Nagle's algorithm it would wait for
/// that ACK, which a delayed-ACK peer holds back for up to 40 ms).
pub(crate) fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeouts_in_code_become_one_millisecond() {
        let options = RedisOptions::new()
            .connect_timeout(Duration::ZERO)
            .request_timeout(Duration::ZERO);
        assert_eq!(options.get_connect_timeout(), Duration::from_millis(1));
        assert_eq!(options.get_request_timeout(), Duration::from_millis(1));
    }

    #[test]
    fn a_bound_in_code_is_held_to_the_urls_range() {
        let low = RedisOptions::new().max_session_ttl(Duration::ZERO);
        assert_eq!(
            low.get_max_session_ttl(),
            MaxSessionTtl::At(MIN_SESSION_TTL)
        );
        let high = RedisOptions::new().max_session_ttl(Duration::from_secs(7200));
        assert_eq!(
            high.get_max_session_ttl(),
            MaxSessionTtl::At(MAX_SESSION_TTL_LIMIT)
        );
        assert_eq!(
            RedisOptions::new().get_max_session_ttl(),
            MaxSessionTtl::Default
        );
        assert_eq!(
            high.without_max_session_ttl().get_max_session_ttl(),
            MaxSessionTtl::Off
        );
    }
}
