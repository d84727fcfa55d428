//! The console's tests: its board and actions over HTTP on every store the environment
//! names (memory always), its metrics parsed as Prometheus parses them, and the page in
//! a real browser (headless Chromium through chromedriver).

// The template's macro is found through the crate root.
#[allow(unused_imports)]
use rstest_reuse;

mod actions;
mod board;
mod browser;
mod metrics;
mod support;
