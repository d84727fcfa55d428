//! A store that forgot: a private server stopped, its data removed, and started
//! again at the same address (etcd: an empty data directory; PostgreSQL: a fresh
//! `initdb`; Redis: a restart without persistence forgets the same way).
//!
//! A holder's client keeps its session across the wipe; a new client, which never
//! knew the store before, locks the same name once the store is back. One holder at
//! a time means the holder's `lost()` has fired by the time the new client is
//! granted (a backend with a lock-delay after the store forgets holds the grant back
//! until every session the old store could have had has ended on its holder's
//! side), and the new token must be above the holder's (tokens keep growing across
//! the forgetting).
//!
//! Before the wipe the holder locks and unlocks a few times, so that its token is well
//! above the first ones the wiped store hands out.
//!
//! The clients carry the column's lock-delay ([`Bound::Column`]): where the column's
//! backend declares `exclusive_across_restart` and the private server's URL does not
//! carry a bound on session TTLs, they connect with [`PRIVATE_MAX_SESSION_TTL`] (as a
//! private Redis carries the column's, lowered to it). The sibling case
//! `server_wipe_one_holder_bounded` ([`Bound::Always`]) gives the bound to every
//! backend, whatever its column declares.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distsync_core::raw::GuardStoreSide as _;
use distsync_core::{Backend, Capabilities, LockGuard, Locker, Name, Session, SessionOptions};
use tokio::time::Instant;

use super::restart::{RECOVERY, TTL};
use crate::check::{
    ensure, eventually, secs, violated, within, Bounded, Check, Context, Fail, Holds, PROMPT,
};
use crate::faults::private::PRIVATE_MAX_SESSION_TTL;
use crate::faults::PrivateServer;
use crate::harness::Harness;

/// How many times the holder locks and unlocks before the wipe.
const CYCLES: usize = 20;

/// How long a private server may take to stop, be wiped and start.
const START: std::time::Duration = std::time::Duration::from_secs(120);

/// Which bound on session TTLs the case's clients carry (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bound {
    /// The column's: the bound where the column declares `exclusive_across_restart`.
    Column,
    /// Always the bound: the lock-delay after the store forgets is on.
    Always,
}

/// The query the case's clients add to the private server's URL (see the module
/// docs): a private Redis's URL carries the column's bound already, the others take it.
fn bound_query(server: &dyn PrivateServer, capabilities: &Capabilities, bound: Bound) -> String {
    let wanted = bound == Bound::Always || capabilities.exclusive_across_restart;
    if wanted && !server.url().contains("max_session_ttl") {
        format!("max_session_ttl={}ms", PRIVATE_MAX_SESSION_TTL.as_millis())
    } else {
        String::new()
    }
}

/// The case (see the module docs).
pub(super) async fn one_holder(h: Harness, bound: Bound) -> Check {
    let capabilities = h.backend().capabilities().clone();
    let mut server: Box<dyn PrivateServer> = within(
        START,
        "starting a private server",
        h.faults().private_server(&**h.backend()),
    )
    .await?;
    let query = bound_query(&*server, &capabilities, bound);
    let holder_client = connect_holder(&*server, &query, bound).await?;
    let ttl = holder_ttl(holder_client.capabilities());
    let Holder {
        session: holder,
        lock,
        _locker,
        guard,
    } = hold_before_the_wipe(&h, &*holder_client, ttl).await?;
    let first = guard.token();
    let lost_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let watch = {
        let lost = guard.lost_token().clone();
        let lost_at = Arc::clone(&lost_at);
        tokio::spawn(async move {
            lost.cancelled().await;
            *lost_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        })
    };

    within(START, "stopping the private server", server.stop()).await?;
    within(START, "wiping the private server's data", server.wipe()).await?;
    within(START, "starting the wiped server", server.start()).await?;
    let back = Instant::now();

    let newcomer_client = eventually(RECOVERY, "a new client connecting", || async {
        Ok(server.connect_with(&query).await.ok())
    })
    .await?;
    let newcomer = eventually(RECOVERY, "the new client's session", || async {
        Ok(newcomer_client
            .session(SessionOptions::with_ttl(ttl))
            .await
            .ok())
    })
    .await?;
    let locker = newcomer_client
        .locker(&newcomer, lock)
        .ctx("making the new client's locker")?;
    let granted = within(
        RECOVERY + ttl * 2,
        "the new client locking after the wipe",
        locker.lock(),
    )
    .await?;
    let granted_at = Instant::now();
    let granted_after = granted_at.duration_since(back);
    let holder_lost = *lost_at
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    watch.abort();
    let lock_delay = holder_client.capabilities().exclusive_across_restart;
    if let Some(lost) = holder_lost.filter(|lost| !lock_delay && *lost < back) {
        // Without a lock-delay, the grant is judged against a holder that still
        // believes it holds. Its session lapsed on its client while the store was down
        // (longer than even [`UNBOUNDED_TTL`]): nothing was forgotten under such a
        // holder, so the grant says nothing. (With a lock-delay, the grant must wait
        // for it and the tokens must grow however early the holder lapsed.)
        return Err(Fail::SetUpLapsed(format!(
            "the holder's lost() came {} before the wiped store was back (session TTL \
             {ttl:?}): the store was down longer than the holder's session",
            secs(back.duration_since(lost))
        )));
    }
    let Some(lost) = holder_lost else {
        return violated(format!(
            "a new client was granted the lock {} after the wiped store came back \
             (token {}) while its holder (token {first}) had not seen lost()",
            secs(granted_after),
            granted.token()
        ));
    };
    ensure!(
        granted.token() > first,
        "the token went back across the wipe: {} after the holder's {first}",
        granted.token()
    );
    if guard.unlock().await.is_ok() {
        return violated("the holder's unlock() returned Ok for a lock the wiped store forgot");
    }
    let token = granted.token();
    granted.unlock().bounded("the new client unlocking").await?;
    let _ = tokio::time::timeout(PROMPT, newcomer.close()).await;
    drop(holder);
    Ok(Holds::figure(
        format!(
            "granted {} after the store came back, {} after the holder's lost()",
            secs(granted_after),
            secs(granted_at.duration_since(lost))
        ),
        format!("tokens {first} → {token}; session TTL {ttl:?}"),
    ))
}

/// The holder's session TTL: [`TTL`] (at least the store's shortest) where its client
/// has a lock-delay after the store forgets, which holds the new client back for the
/// bound on session TTLs, so that the holder's TTL must stay under that bound;
/// [`UNBOUNDED_TTL`] where it has none. Such a store is judged by whether it grants the
/// new client while the holder still believes it holds, so the holder's session must
/// outlast the stop, the wipe and the start, which on a loaded machine take longer
/// than [`TTL`] (a fresh MariaDB data directory is installed before the start).
fn holder_ttl(holder: &Capabilities) -> Duration {
    if holder.exclusive_across_restart {
        TTL.max(holder.min_session_ttl)
    } else {
        UNBOUNDED_TTL.max(holder.min_session_ttl)
    }
}

/// The holder's session TTL where its client has no lock-delay after the store forgets
/// (see [`holder_ttl`]): longer than a private server's stop, wipe and start take.
const UNBOUNDED_TTL: Duration = Duration::from_secs(60);

/// Connects the holder's client to `server` with `query`; a bound the store's URL
/// does not take, or a client with it that declares no `exclusive_across_restart`,
/// leaves [`Bound::Always`] nothing to measure.
async fn connect_holder(
    server: &dyn PrivateServer,
    query: &str,
    bound: Bound,
) -> Check<Arc<dyn Backend>> {
    let connecting = within(
        PROMPT,
        "connecting the holder's client",
        server.connect_with(query),
    )
    .await;
    let holder_client: Arc<dyn Backend> = match connecting {
        // A store whose URL takes no bound has no lock-delay to turn on.
        Err(Fail::Violated(reason))
            if bound == Bound::Always && reason.contains("max_session_ttl") =>
        {
            return Err(Fail::Unsupported(format!(
                "no bound on session TTLs: {reason}"
            )))
        }
        connected => connected?,
    };
    if bound == Bound::Always && !holder_client.capabilities().exclusive_across_restart {
        return Err(Fail::Unsupported(
            "a client with max_session_ttl does not declare exclusive_across_restart: no \
             lock-delay after the store forgets"
                .to_owned(),
        ));
    }
    Ok(holder_client)
}

/// The holder before the wipe: its session, the lock's name, its locker and its guard.
struct Holder {
    session: Session,
    lock: Name,
    _locker: Box<dyn Locker>,
    guard: LockGuard,
}

/// The holder locks, then unlocks and locks [`CYCLES`] times.
async fn hold_before_the_wipe(h: &Harness, client: &dyn Backend, ttl: Duration) -> Check<Holder> {
    let holder = within(
        PROMPT,
        "opening the holder's session",
        client.session(SessionOptions::with_ttl(ttl)),
    )
    .await?;
    let lock = h.name("forgotten").ctx("naming the lock")?;
    let locker = client
        .locker(&holder, lock.clone())
        .ctx("making the holder's locker")?;
    // A store with a lock-delay grants a brand-new server's first lock only after it.
    let mut guard = eventually(RECOVERY, "the holder's first grant", || async {
        Ok(locker.try_lock().await.ok().flatten())
    })
    .await?;
    // Tokens well above the first ones a wiped store hands out: a token that went back
    // across the wipe then shows, whatever the store's counters start from.
    for _ in 0..CYCLES {
        guard
            .unlock()
            .bounded("the holder unlocking before the wipe")
            .await?;
        guard = within(
            PROMPT,
            "the holder locking again before the wipe",
            locker.lock(),
        )
        .await?;
    }
    Ok(Holder {
        session: holder,
        lock,
        _locker: locker,
        guard,
    })
}
