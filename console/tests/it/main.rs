//! The console's tests: its board and actions over HTTP on every store the environment
//! names (memory always), its metrics parsed as Prometheus parses them, and the page in
//! a real browser (headless Chromium through chromedriver).

mod actions;
mod board;
mod browser;
mod metrics;
mod support;
