//! The session TTLs of this crate's tests that watch a session expire or live on.
//!
//! A client counts its session lost when it cannot show that a renewal landed within
//! the TTL (less the margin). On a loaded two-core runner a task can wait a few hundred
//! milliseconds for a CPU, so a session of 300–900 ms lapses for real during a test's
//! own set-up: the library is right, and the test measured the runner.

use std::time::Duration;

/// A holder that crashes, stalls or is taken over on purpose: long enough to outlive
/// its own set-up on a loaded runner, short enough that its hold expires soon.
pub(crate) const CRASH_TTL: Duration = Duration::from_secs(1);

/// A session whose renewals a test watches keep it (and what it holds) alive, for
/// several TTLs: renewals go every TTL/3 and the client-side deadline is TTL − TTL/5, so
/// a renewal may wait over two seconds for a CPU and still land, as it must on a slow
/// two-core runner while the other tests load it (a second was seen not to be enough).
pub(crate) const RENEWED_TTL: Duration = Duration::from_secs(5);
