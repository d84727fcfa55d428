//! The reaper: what it logs while its rounds fail.

use std::time::Duration;

use distsync_conformance::log_capture::LogCapture;

use crate::common::*;

/// How long the rounds below may take: each failed round is followed by a second's
/// sleep.
const PATIENCE: Duration = Duration::from_secs(15);

/// A reaper whose rounds fail (its tables dropped under it) warns once, logs the
/// failures after the first at debug level, and says at info level when a round
/// succeeds again (the tables made again by another client's connect).
#[tokio::test]
async fn a_run_of_failed_rounds_warns_once_and_tells_when_rounds_succeed_again() {
    let capture = LogCapture::start();
    let Some((kv, url)) = store("").await else {
        return;
    };
    drop_tables(&kv, &url).await;
    capture
        .wait_for(&["reaper: a round failed again"], 2, PATIENCE)
        .await;
    let warnings = || capture.count(&[" WARN ", "reaper"]);
    assert_eq!(warnings(), 1, "{}", capture.text());
    let again = connect(&url).await;
    capture
        .wait_for(&["reaper: rounds succeed again"], 1, PATIENCE)
        .await;
    assert_eq!(warnings(), 1, "{}", capture.text());
    drop(kv);
    drop_tables(&again, &url).await;
}
