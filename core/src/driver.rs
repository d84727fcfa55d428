//! A backend as the facade, the CLI, the conformance runner and the bench find it.
//!
//! Each backend crate exports one [`Driver`] (`DRIVER`): its name, the URL schemes it
//! answers, how to connect to a URL and what its default configuration claims. The
//! facade (`distsync::store::DRIVERS`) lists them, and everything that turns a URL into a
//! store reads that one list, so adding a backend adds one line there.

use std::fmt;

use futures::future::BoxFuture;

use crate::capabilities::Capabilities;
use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::redact::redact_url;

/// Connects to the store a URL names (the backend's `connect`, boxed).
pub type ConnectFn = for<'url> fn(&'url str) -> BoxFuture<'url, Result<Coordinator>>;

/// One backend: its name, URL schemes, connect function and capabilities function.
///
/// ```
/// use distsync::store::Driver;
/// # fn connect(url: &str) -> futures::future::BoxFuture<'_, distsync::Result<distsync::Coordinator>> {
/// #     Box::pin(async move { Err(distsync::Error::unsupported("example", "connect")) })
/// # }
/// # fn capabilities() -> distsync::Capabilities {
/// #     distsync::Capabilities::all("example", std::time::Duration::from_secs(1))
/// # }
/// pub const DRIVER: Driver = Driver::new("example", &["example", "examples"], connect, capabilities);
/// assert!(DRIVER.answers("EXAMPLES://host:1"));
/// assert!(!DRIVER.answers("other://host"));
/// ```
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct Driver {
    /// The backend's name, as its [`Capabilities::backend`] says it.
    pub name: &'static str,
    /// The URL schemes it answers, lowercase, without `://`.
    pub schemes: &'static [&'static str],
    /// Connects to a URL of one of its schemes.
    pub connect: ConnectFn,
    /// What the backend offers and claims in its default configuration (a URL's
    /// options may claim less: the connected [`Coordinator::capabilities`] says).
    pub capabilities: fn() -> Capabilities,
    /// The URL forms it accepts and what their parameters do, for help texts: lines
    /// of `FORM` followed by indented description lines (empty: none given).
    pub url_forms: &'static str,
    /// Whether the backend is built into this binary: `false` for a facade's stand-in
    /// whose cargo feature is off (its `connect` answers [`Error::FeatureDisabled`]).
    pub built: bool,
}

impl Driver {
    /// A driver named `name` for the URL `schemes`.
    pub const fn new(
        name: &'static str,
        schemes: &'static [&'static str],
        connect: ConnectFn,
        capabilities: fn() -> Capabilities,
    ) -> Self {
        Self {
            name,
            schemes,
            connect,
            capabilities,
            url_forms: "",
            built: true,
        }
    }

    /// The same driver with `forms` as its [`Driver::url_forms`].
    #[must_use]
    pub const fn with_url_forms(self, forms: &'static str) -> Self {
        Self {
            url_forms: forms,
            ..self
        }
    }

    /// The same driver marked as not built into this binary ([`Driver::built`]).
    #[must_use]
    pub const fn not_built(self) -> Self {
        Self {
            built: false,
            ..self
        }
    }

    /// Whether `url`'s scheme is one of this driver's (case-insensitive).
    pub fn answers(&self, url: &str) -> bool {
        scheme_of(url).is_some_and(|scheme| {
            self.schemes
                .iter()
                .any(|known| known.eq_ignore_ascii_case(scheme))
        })
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("name", &self.name)
            .field("schemes", &self.schemes)
            .field("built", &self.built)
            .finish_non_exhaustive()
    }
}

/// The scheme of `url` (what comes before `://`), if it has one.
pub fn scheme_of(url: &str) -> Option<&str> {
    url.split_once("://").map(|(scheme, _)| scheme)
}

/// The driver among `drivers` that answers `url`.
///
/// # Errors
/// [`Error::InvalidUrl`] (the URL redacted) when `url` has no scheme or none of
/// `drivers` answers it, listing the schemes they do answer.
pub fn find<'a>(drivers: &'a [Driver], url: &str) -> Result<&'a Driver> {
    let known = || {
        drivers
            .iter()
            .flat_map(|driver| driver.schemes.iter().map(|scheme| format!("{scheme}://")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(scheme) = scheme_of(url) else {
        return Err(Error::InvalidUrl {
            url: redact_url(url),
            reason: format!("expected <scheme>://...; known schemes: {}", known()),
        });
    };
    drivers
        .iter()
        .find(|driver| driver.answers(url))
        .ok_or_else(|| Error::InvalidUrl {
            url: redact_url(url),
            reason: format!("unknown scheme `{scheme}`; known schemes: {}", known()),
        })
}
