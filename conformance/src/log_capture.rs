//! Every `tracing` event of the current thread, captured in memory as formatted lines,
//! for tests that read what the library logged or wait until it logged something.
//!
//! The subscriber is the current thread's default (not the process's), so tests of one
//! `cargo test` process do not see each other's events: run the test on a
//! current-thread runtime (`#[tokio::test]`), so that the tasks it spawns log through
//! it too.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::subscriber::DefaultGuard;

/// A `tracing` writer into memory.
#[derive(Clone, Debug, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The events captured since [`LogCapture::start`], at every level (TRACE included)
/// and from every crate, until the capture is dropped.
#[must_use = "the capture ends when it is dropped"]
pub struct LogCapture {
    buffer: Buffer,
    _guard: DefaultGuard,
}

impl std::fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCapture").finish_non_exhaustive()
    }
}

impl LogCapture {
    /// Starts capturing the current thread's events.
    pub fn start() -> Self {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Every line captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.0.lock().unwrap_or_else(PoisonError::into_inner))
            .into_owned()
    }

    /// How many captured lines contain every one of `needles`.
    pub fn count(&self, needles: &[&str]) -> usize {
        self.text()
            .lines()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .count()
    }

    /// Waits until at least `n` captured lines contain every one of `needles`, polling
    /// every 5 ms.
    ///
    /// Cancel-safety: cancel-safe; it only reads the capture.
    ///
    /// # Panics
    /// When `within` passes first, showing what was captured.
    pub async fn wait_for(&self, needles: &[&str], n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.count(needles) >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} lines with {needles:?} not logged within {within:?}; captured:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
