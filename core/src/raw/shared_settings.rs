//! The settings every store's configuration shares, with their accessors written once.

use std::time::Duration;

use super::url_options::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, UrlOptions};
use crate::queue::STALE_CLAIM;

/// The settings a store's configuration holds from the URL's shared keys
/// ([`UrlOptions`]), the defaults filled in: a configuration keeps them in one field,
/// and [`config_accessors!`](crate::config_accessors) writes their accessors on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedSettings {
    /// How long connecting may take in all (`connect_timeout=`).
    pub connect_timeout: Duration,
    /// How long one request may wait for its answer (`timeout=`).
    pub request_timeout: Duration,
    /// The bound on session TTLs (`max_session_ttl=`), if any.
    pub max_session_ttl: Option<Duration>,
    /// How old an at-most-once dequeue's claim must be before a consumer puts the item
    /// back (`stale_claim=`; [`STALE_CLAIM`] by default).
    pub stale_claim: Duration,
}

impl Default for SharedSettings {
    /// The defaults: [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_REQUEST_TIMEOUT`], no bound,
    /// [`STALE_CLAIM`].
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_session_ttl: None,
            stale_claim: STALE_CLAIM,
        }
    }
}

impl SharedSettings {
    /// The settings a URL's shared `options` give, each default where the URL gives
    /// none (a URL's `max_session_ttl=` left empty, or `off`, is no bound).
    pub fn from_url(options: &UrlOptions) -> Self {
        Self {
            connect_timeout: options.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            request_timeout: options.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            max_session_ttl: options.max_session_ttl.or(None),
            stale_claim: options.stale_claim.unwrap_or(STALE_CLAIM),
        }
    }
}

/// Writes the accessors of the shared URL options ([`UrlOptions`](crate::raw::UrlOptions))
/// on a store's configuration type, so that every store's configuration reads and sets
/// them with the same methods, documented alike: an application that moves to another
/// store keeps its code.
///
/// The type keeps the settings in the field named after the dot: a [`SharedSettings`],
/// or any type with its `connect_timeout`, `request_timeout` and `stale_claim` fields
/// (Redis's options). `timeouts` writes `connect_timeout`, `request_timeout`,
/// `stale_claim`, `with_connect_timeout`, `with_request_timeout` and
/// `with_stale_claim`; `max_session_ttl >= MIN` adds
/// `max_session_ttl` and `with_max_session_ttl`, a bound below `MIN` (the store's
/// shortest session TTL) becoming `MIN`, as in the URL.
/// A store whose bound on session TTLs is not a plain option (Redis's depends on the
/// server it finds) writes those two itself.
///
/// ```ignore
/// distsync::store::raw::config_accessors!(EtcdConfig.settings {
///     timeouts,
///     max_session_ttl >= crate::MIN_SESSION_TTL,
/// });
/// distsync::store::raw::config_accessors!(RedisConfig.options { timeouts });
/// ```
#[macro_export]
macro_rules! config_accessors {
    ($config:ident . $field:ident { timeouts $(, max_session_ttl >= $min:expr)? $(,)? }) => {
        impl $config {
            /// How long connecting may take in all (the URL's `connect_timeout=`).
            pub fn connect_timeout(&self) -> ::std::time::Duration {
                self.$field.connect_timeout
            }

            /// How long one request to the store may wait for its answer (the URL's
            /// `timeout=`). A blocking call (a lock, a dequeue) is made of many
            /// requests and is not bounded by it.
            pub fn request_timeout(&self) -> ::std::time::Duration {
                self.$field.request_timeout
            }

            /// The same configuration with `timeout` for connecting (a zero duration
            /// becomes 1 ms).
            #[must_use]
            pub fn with_connect_timeout(mut self, timeout: ::std::time::Duration) -> Self {
                self.$field.connect_timeout =
                    timeout.max(::std::time::Duration::from_millis(1));
                self
            }

            /// The same configuration with `timeout` for one request (a zero duration
            /// becomes 1 ms).
            #[must_use]
            pub fn with_request_timeout(mut self, timeout: ::std::time::Duration) -> Self {
                self.$field.request_timeout =
                    timeout.max(::std::time::Duration::from_millis(1));
                self
            }

            /// How old an at-most-once `dequeue`'s claim must be before any consumer
            /// of its queue puts the item back (the URL's `stale_claim=`; by default
            /// [`STALE_CLAIM`](distsync_core::queue::STALE_CLAIM), whose docs say why
            /// the bound exists). A dequeuer that died between its claim and the
            /// hand-over loses its item for this long. A bound shorter than the time a
            /// live dequeuer may still take to hand its item over (its request timeout,
            /// times its retries) delivers the item twice.
            pub fn stale_claim(&self) -> ::std::time::Duration {
                self.$field.stale_claim
            }

            /// The same configuration with `bound` for stale claims (see
            /// [`Self::stale_claim`]); a bound below
            /// [`MIN_STALE_CLAIM`](distsync_core::queue::MIN_STALE_CLAIM) or above
            /// [`MAX_STALE_CLAIM`](distsync_core::queue::MAX_STALE_CLAIM) becomes it
            /// (the URL refuses one).
            #[must_use]
            pub fn with_stale_claim(mut self, bound: ::std::time::Duration) -> Self {
                self.$field.stale_claim =
                    bound.clamp($crate::queue::MIN_STALE_CLAIM, $crate::queue::MAX_STALE_CLAIM);
                self
            }

            $(
                /// The bound on session TTLs (the URL's `max_session_ttl=`), which
                /// turns on the lock-delay after the store forgets (see the crate
                /// docs, "When the store forgets"): sessions with a longer TTL are
                /// refused.
                pub fn max_session_ttl(&self) -> ::std::option::Option<::std::time::Duration> {
                    self.$field.max_session_ttl
                }

                /// The same configuration with a bound on session TTLs (see
                /// [`Self::max_session_ttl`]); a bound below the store's shortest
                /// session TTL becomes it, as in the URL.
                #[must_use]
                pub fn with_max_session_ttl(mut self, ttl: ::std::time::Duration) -> Self {
                    self.$field.max_session_ttl = ::std::option::Option::Some(ttl.max($min));
                    self
                }
            )?
        }
    };
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::SharedSettings;
    use crate::queue::STALE_CLAIM;
    use crate::raw::{MaxSessionTtl, UrlOptions};

    #[test]
    fn a_url_s_settings_fill_in_the_defaults_it_leaves_out() {
        let none = SharedSettings::from_url(&UrlOptions::default());
        assert_eq!(none, SharedSettings::default());
        assert_eq!(none.connect_timeout, Duration::from_secs(5));
        assert_eq!(none.max_session_ttl, None);
        assert_eq!(none.stale_claim, STALE_CLAIM);
        let mut options = UrlOptions::default();
        options.connect_timeout = Some(Duration::from_secs(1));
        options.request_timeout = Some(Duration::from_millis(250));
        options.max_session_ttl = MaxSessionTtl::At(Duration::from_secs(30));
        options.stale_claim = Some(Duration::from_secs(2));
        let given = SharedSettings::from_url(&options);
        assert_eq!(given.connect_timeout, Duration::from_secs(1));
        assert_eq!(given.request_timeout, Duration::from_millis(250));
        assert_eq!(given.max_session_ttl, Some(Duration::from_secs(30)));
        assert_eq!(given.stale_claim, Duration::from_secs(2));
        let shown = format!("{given:?}");
        assert!(shown.contains("stale_claim: 2s"), "{shown}");
        options.max_session_ttl = MaxSessionTtl::Off;
        let off = SharedSettings::from_url(&options);
        assert_eq!(off.max_session_ttl, None);
    }
}
