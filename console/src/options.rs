//! What a console shows and allows.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::actions_token::ActionsToken;

/// How often the console reads the store by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

/// How many names of each kind a page shows by default.
pub const DEFAULT_PER_PAGE: usize = 50;

/// What a [`router`](crate::router) shows and allows: the names under a prefix, read
/// at most once per refresh, read-only unless an [`ActionsToken`] is given.
#[derive(Clone, Debug)]
pub struct ConsoleOptions {
    pub(crate) prefix: String,
    pub(crate) refresh: Duration,
    pub(crate) per_page: usize,
    pub(crate) actions: Option<ActionsToken>,
    pub(crate) metrics: Option<PrometheusHandle>,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleOptions {
    /// Every name, read at most every [`DEFAULT_REFRESH`], [`DEFAULT_PER_PAGE`] names
    /// of each kind to a page, read-only, and only the store's gauges at `/metrics`.
    pub fn new() -> Self {
        Self {
            prefix: String::new(),
            refresh: DEFAULT_REFRESH,
            per_page: DEFAULT_PER_PAGE,
            actions: None,
            metrics: None,
        }
    }

    /// Shows only the names that start with `prefix` (the page filters further).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Reads the store at most once per `refresh` (the page asks as often): every
    /// viewer and every scrape within it shares one read. A zero refresh is taken as
    /// 100 ms, so that no number of viewers reads the store in a loop.
    #[must_use]
    pub fn refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh.max(Duration::from_millis(100));
        self
    }

    /// Shows up to `per_page` names of each kind on a page (at least 1).
    #[must_use]
    pub fn per_page(mut self, per_page: usize) -> Self {
        self.per_page = per_page.max(1);
        self
    }

    /// Turns the actions on for requests that carry `token`.
    #[must_use]
    pub fn actions(mut self, token: ActionsToken) -> Self {
        self.actions = Some(token);
        self
    }

    /// Serves, at `/metrics` before the store's gauges, what the process's Prometheus
    /// recorder holds: the metrics layer's counters and histograms (see
    /// `distsync::instrument`), once the process installed the recorder
    /// (`PrometheusBuilder::install_recorder`) whose handle this is.
    #[must_use]
    pub fn metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }
}
