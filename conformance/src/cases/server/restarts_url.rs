//! `server_restarts_url_as_written` and `server_restarts_url_off`: a private server
//! restarted again and again while [`CLIENTS`] clients (as many `distsync lock -- CMD`
//! processes would) take turns at one lock and hold it for [`HOLD`], each connected
//! with the private server's URL as README writes it, with no option
//! (`redis://host:port`, [`Form::AsWritten`]), or with `max_session_ttl=off`
//! ([`Form::Off`]).
//!
//! One holder at a time means no client is granted while another's hold is still
//! valid on its holder's side: its guard has not reported `lost()` and its session's
//! client-side deadline has not passed (a holder whose task the machine starved is
//! judged by that deadline, not by when its task ran). A store that keeps every write
//! gives it across a restart by itself; one that forgets (Redis without `appendfsync
//! always`) gives it only with the lock-delay after it forgot, which the Redis backend
//! turns on by default for such a server and which `off` turns off. The restarts are
//! aimed at a hold in progress, so that a store that forgets without a lock-delay is
//! caught granting the lock again while its holder still works.
//!
//! The figure: grants, restarts, and the longest wait from a server back to the next
//! grant (the lock-delay, where there is one).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::{Backend, Error, LockGuard, Name, SessionOptions};
use tokio::time::Instant;

use super::restart::TTL;
use crate::check::{
    eventually, join_all, lock_vec, secs, violated, within, Check, Context, Fail, Holds, Task,
    LONG, PROMPT,
};
use crate::harness::Harness;

/// Clients taking turns at the lock, each with its own connection.
const CLIENTS: usize = 3;
/// How long a holder works in its critical section: longer than a private server
/// takes to restart, so that a restart lands inside a hold.
const HOLD: Duration = Duration::from_secs(2);
/// One timed lock wait; a waiter that times out waits again.
const WAIT: Duration = Duration::from_secs(2);
/// How long a private server may take to be created, stopped or started.
const START: Duration = Duration::from_secs(120);

/// The URL the clients connect with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Form {
    /// The private server's address with no option, as README writes a URL: the
    /// backend's defaults, the lock-delay among them where the store forgets.
    AsWritten,
    /// The same with `max_session_ttl=off`: no lock-delay, whatever the store keeps.
    Off,
}

impl Form {
    /// How many restarts the case makes: the defaults' row waits out a lock-delay
    /// after each on a store that forgets; the row without one stops at the first
    /// second holder.
    fn restarts(self) -> usize {
        match self {
            Self::AsWritten => 2,
            Self::Off => 4,
        }
    }

    /// The URL of `address` in this form.
    fn url(self, address: &str) -> String {
        match self {
            Self::AsWritten => address.to_owned(),
            Self::Off => format!("{address}?max_session_ttl=off"),
        }
    }
}

/// A hold in progress, as other clients judge it.
struct Held {
    client: usize,
    guard: Arc<LockGuard>,
}

impl Held {
    /// Whether its holder may still act on it: no `lost()`, its session's deadline
    /// ahead.
    fn valid(&self) -> bool {
        !self.guard.is_lost()
    }
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    holding: Mutex<Vec<Held>>,
    grants: Mutex<Vec<Instant>>,
    second_holders: Mutex<Vec<String>>,
    sessions: AtomicUsize,
}

impl Seen {
    fn grants(&self) -> usize {
        lock_vec(&self.grants).len()
    }

    /// The first grant at or after `since`.
    fn first_grant_since(&self, since: Instant) -> Option<Instant> {
        lock_vec(&self.grants)
            .iter()
            .copied()
            .find(|at| *at >= since)
    }
}

/// One client: sessions of [`TTL`], timed lock waits, [`HOLD`] in the critical
/// section; a new session whenever one is lost, errors of a server that is down
/// waited out.
async fn take_turns(
    client: usize,
    backend: Arc<dyn Backend>,
    lock: Name,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
) -> Check<()> {
    let ttl = TTL.max(backend.capabilities().min_session_ttl);
    while !stop.load(Ordering::SeqCst) {
        let session = match backend.session(SessionOptions::with_ttl(ttl)).await {
            Ok(session) => session,
            Err(error) if error.is_transient() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(error) => return violated(format!("client {client} opening a session: {error}")),
        };
        seen.sessions.fetch_add(1, Ordering::SeqCst);
        let locker = backend
            .locker(&session, lock.clone())
            .ctx("making a locker")?;
        while !stop.load(Ordering::SeqCst) && !session.is_lost() {
            let guard = match distsync_core::timeout(WAIT, locker.lock()).await {
                Ok(guard) => guard,
                Err(Error::Timeout(_)) => continue,
                Err(Error::SessionLost) => break,
                Err(error) if error.is_transient() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(error) => return violated(format!("client {client} locking: {error}")),
            };
            let granted = Instant::now();
            let guard = Arc::new(guard);
            {
                let mut holding = lock_vec(&seen.holding);
                if let Some(other) = holding.iter().find(|held| held.valid()) {
                    lock_vec(&seen.second_holders).push(format!(
                        "client {client} was granted the lock while client {} still held it \
                         (no lost(), its session's deadline ahead)",
                        other.client
                    ));
                }
                holding.push(Held {
                    client,
                    guard: Arc::clone(&guard),
                });
            }
            lock_vec(&seen.grants).push(granted);
            // The work: until it is done, or the hold is lost.
            tokio::select! {
                () = tokio::time::sleep(HOLD) => {}
                () = guard.lost() => {}
            }
            lock_vec(&seen.holding).retain(|held| held.client != client);
            // A release the restart cut off is the store's to forget; the hold is over
            // for this client either way.
            if let Ok(guard) = Arc::try_unwrap(guard) {
                let _ = tokio::time::timeout(PROMPT, guard.unlock()).await;
            }
        }
        let _ = tokio::time::timeout(PROMPT, session.close()).await;
    }
    Ok(())
}

/// The case (see the module docs).
pub(super) async fn restarts(h: Harness, form: Form) -> Check {
    let mut server = within(
        START,
        "starting a private server",
        h.faults().private_server(&**h.backend()),
    )
    .await?;
    let Some(connector) = server.connector() else {
        return Err(Fail::Unsupported(
            "the private server is not reached by URL".to_owned(),
        ));
    };
    // The address alone: what the suite adds to a private server's URL is dropped.
    let address = server.url().split('?').next().unwrap_or_default();
    let url = form.url(address);
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(within(PROMPT, "connecting a client", connector(url.clone())).await?);
    }
    // The row's claim is the column's: the URL as written must give the same.
    let claimed = h.capabilities().exclusive_across_restart;
    if form == Form::AsWritten && claimed && !clients[0].capabilities().exclusive_across_restart {
        return violated(
            "a client with the URL as written (no option) does not declare \
             exclusive_across_restart, which the column's URL does: no lock-delay by default",
        );
    }
    let lock = h.name("turns").ctx("naming the lock")?;
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks: Vec<Task<()>> = clients
        .into_iter()
        .enumerate()
        .map(|(client, backend)| {
            Task::spawn(
                format!("client {client}"),
                take_turns(
                    client,
                    backend,
                    lock.clone(),
                    Arc::clone(&seen),
                    Arc::clone(&stop),
                ),
            )
        })
        .collect();

    // A brand-new server of a store with a lock-delay grants nothing until it has been
    // up for the bound.
    eventually(LONG, "a first grant", || async {
        Ok((seen.grants() > 0).then_some(()))
    })
    .await?;
    let mut waits = Vec::new();
    for restart in 0..form.restarts() {
        if !lock_vec(&seen.second_holders).is_empty() {
            break;
        }
        // Aimed at a hold in progress, begun a moment ago.
        eventually(LONG, "a hold in progress before the restart", || async {
            let holding = lock_vec(&seen.holding);
            Ok(holding.iter().any(Held::valid).then_some(()))
        })
        .await?;
        within(
            START,
            format!("stopping the server ({restart})"),
            server.stop(),
        )
        .await?;
        within(
            START,
            format!("starting the server ({restart})"),
            server.start(),
        )
        .await?;
        let back = Instant::now();
        let next = eventually(LONG, "a grant after the restart", || async {
            Ok(seen.first_grant_since(back))
        })
        .await?;
        waits.push(next.saturating_duration_since(back));
    }
    stop.store(true, Ordering::SeqCst);
    join_all(&mut tasks, WAIT + HOLD + 3 * PROMPT).await?;

    let second = std::mem::take(&mut *lock_vec(&seen.second_holders));
    let longest = waits.iter().copied().max().unwrap_or_default();
    let detail = format!(
        "{} grants to {CLIENTS} clients ({} sessions) across {} restarts; the next grant came \
         {} after the server was back at the longest",
        seen.grants(),
        seen.sessions.load(Ordering::SeqCst),
        waits.len(),
        secs(longest)
    );
    if let Some(first) = second.first() {
        return violated(format!(
            "{} grants while another client held the lock (first: {first}); {detail}",
            second.len()
        ));
    }
    Ok(Holds::figure(
        format!("next grant {} after a restart", secs(longest)),
        detail,
    ))
}
