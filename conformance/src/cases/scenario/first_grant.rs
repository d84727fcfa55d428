//! A brand-new private server's first grant: the probe both the restart cases and the
//! mixed-fault cases wait on before their own first grant, so that the cases measure
//! the fault and not a store's start-up (a JVM warming up, a lock-delay a store with
//! `max_session_ttl` holds after it starts).

use std::sync::Arc;
use std::time::Duration;

use distsync_core::{Backend, Locker, Name, Session, SessionOptions};
use tokio::sync::Mutex;

use crate::check::{
    eventually, lapsed_when_lost, within_set_up, Bounded, Check, Context, Fail, PROMPT,
};

/// What the probe says while it waits, in evidence and in the slack table.
const DOING: &str = "the private server's first grant";

/// Locks and unlocks `name` on `backend` through a session of `options`, trying until
/// the store grants it, for at most `limit`.
///
/// The probe's session may be lost while it waits (a server that is still starting
/// answers a keep-alive late, a loaded machine misses one): a lost session can never
/// be granted anything, and its loss says nothing of the guarantee under test, so the
/// probe opens a new one and goes on within the same bound. A grant that never comes
/// is a violation, with what the last try answered; one whose session was lost at the
/// end is a lapsed set-up.
pub(crate) async fn first_grant(
    backend: &Arc<dyn Backend>,
    options: SessionOptions,
    name: Name,
    limit: Duration,
) -> Check<()> {
    let open = || async {
        let session = within_set_up(
            PROMPT,
            "opening the probe's session",
            backend.session(options.clone()),
        )
        .await?;
        let locker = backend
            .locker(&session, name.clone())
            .ctx("making the probe's locker")?;
        Ok::<_, Fail>((session, locker))
    };
    let probe: Mutex<(Session, Box<dyn Locker>)> = Mutex::new(open().await?);
    let granted = eventually(limit, DOING, || async {
        let mut probe = probe.lock().await;
        if probe.0.is_lost() {
            *probe = open().await?;
        }
        Ok(probe.1.try_lock().await.ok().flatten())
    })
    .await;
    let (session, locker) = probe.into_inner();
    let guard = match granted {
        Ok(guard) => guard,
        Err(Fail::Violated(why)) => {
            let last = match locker.try_lock().await {
                Ok(Some(_)) => "granted".to_owned(),
                Ok(None) => "held by another".to_owned(),
                Err(error) => error.to_string(),
            };
            let fail = Fail::Violated(format!("{why} (its last try: {last})"));
            return Err(lapsed_when_lost(fail, &session));
        }
        Err(other) => return Err(other),
    };
    guard.unlock().bounded("unlocking the probe").await?;
    session.close().bounded("closing the probe's session").await
}
