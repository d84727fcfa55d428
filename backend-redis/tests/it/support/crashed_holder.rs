//! A holder that crashes: a hold taken in a "process" whose runtime then stops (no
//! keepalive, no release, no revoke), through a session of [`CRASH_TTL`].
//!
//! A loaded runner may let so short a session lapse before the hold is granted: that
//! set-up, which no test measures, is tried again (three times at most); a lapse after
//! the grant is what the tests measure.

use std::future::Future;

use distsync_core::{Coordinator, Error, Session, SessionOptions};

use super::CRASH_TTL;

/// Connects to `url` on a runtime of its own, opens a session of [`CRASH_TTL`] and
/// runs `take` with it; `take` takes the hold, forgets it (`std::mem::forget`) and
/// returns what the test needs of it. The session is forgotten too, and the runtime
/// stops. A `take` that fails with [`Error::SessionLost`] runs again with a new session.
///
/// # Panics
/// On any other error, or a third lapse.
pub(crate) fn crashed_holder<T, F, Fut>(url: String, take: F) -> T
where
    T: Send + 'static,
    F: Fn(Coordinator, Session) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Error>>,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let coordinator = distsync::connect(&url).await.unwrap();
            let mut attempt = 1;
            loop {
                let session = coordinator
                    .session_with(SessionOptions::with_ttl(CRASH_TTL))
                    .await
                    .unwrap();
                match take(coordinator.clone(), session.clone()).await {
                    Ok(held) => {
                        std::mem::forget(session);
                        return held;
                    }
                    Err(Error::SessionLost) if attempt < 3 => attempt += 1,
                    Err(error) => panic!("the crashed holder's hold: {error}"),
                }
            }
        })
    })
    .join()
    .unwrap()
}
