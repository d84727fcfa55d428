//! The store side of noticing that ZooKeeper forgot (see [`crate::amnesia`] for the
//! design): reading and writing the marker and hold nodes, the check when a session
//! opens, the re-read after a session is lost, and the wait before a grant. The state
//! those reads feed lives in [`crate::amnesia::Amnesia`], beside the store's shared
//! parts ([`Shared`]), which hold it.

use std::time::Duration;

use distsync_core::raw::EpochMarker;
use distsync_core::{Error, Result, Session};
use tokio::time::Instant;
use zookeeper_client as zk;

use crate::amnesia::{RECHECK_FOR, WRITE_ATTEMPTS};
use crate::direct::{persistent, timed};
use crate::error::map;
use crate::store::Shared;
use crate::BACKEND;

/// The marker as stored (`None`: missing, or a node another program wrote) and the
/// node's version.
async fn read_marker(
    shared: &Shared,
    client: &zk::Client,
) -> Result<(Option<EpochMarker>, Option<i32>)> {
    let amnesia = &shared.amnesia;
    match timed(shared, client.get_data(&amnesia.marker_path)).await? {
        Ok((data, stat)) => {
            amnesia.seen(stat.mzxid);
            Ok((EpochMarker::parse(&data), Some(stat.version)))
        }
        Err(zk::Error::NoNode) => Ok((None, None)),
        Err(error) => Err(map(error)),
    }
}

/// Reads the marker through `client` and acts on it: a store that forgot ends this
/// backend's sessions (`true` is returned); a missing marker is written (with the hold
/// node) by a client with the bound or one that saw the store forget; a marker that
/// records a shorter TTL or a lower offset than this client knows is raised; a live
/// hold node starts the lock-delay.
async fn check(shared: &Shared, client: &zk::Client, ttl: Duration) -> Result<bool> {
    let amnesia = &shared.amnesia;
    let mut forgot = false;
    for _ in 0..WRITE_ATTEMPTS {
        let (marker, version) = read_marker(shared, client).await?;
        if amnesia.observe_marker(marker.as_ref()) {
            forgot = true;
            shared.end_sessions().await;
        }
        if marker.is_none() && amnesia.book(|book| book.bound().is_none() && !book.detected()) {
            // A new store or one that forgot: without the bound, no way to tell.
            return Ok(forgot);
        }
        let Some(next) = amnesia.book(|book| book.marker_to_write(marker.as_ref(), ttl)) else {
            break;
        };
        let written = match version {
            None => write_new_marker(shared, client, &next).await?,
            Some(version) => timed(
                shared,
                client.set_data(
                    &amnesia.marker_path,
                    next.encode().as_bytes(),
                    Some(version),
                ),
            )
            .await?
            .map(drop),
        };
        match written {
            Ok(()) => {
                amnesia.book(|book| book.wrote_marker(&next));
                if version.is_none() {
                    amnesia.hold_for_longest();
                }
                break;
            }
            // Another client wrote it meanwhile: read it again.
            Err(zk::Error::NodeExists | zk::Error::BadVersion | zk::Error::NoNode) => {}
            Err(error) => return Err(map(error)),
        }
    }
    if amnesia.book(|book| book.bound().is_some()) {
        match timed(shared, client.check_stat(&amnesia.hold_path)).await? {
            Ok(Some(stat)) if amnesia.book(|book| book.new_hold(stat.czxid)) => {
                amnesia.hold_for_longest()
            }
            Ok(_) | Err(zk::Error::NoNode) => {}
            Err(error) => return Err(map(error)),
        }
    }
    amnesia.book(|book| book.record_ttl(ttl));
    Ok(forgot)
}

/// Creates the hold node, then the marker node (the root first if missing).
///
/// The hold node goes first: a client that finds the new marker, as every client
/// reading after the create does, then finds the hold node too while it lives (a
/// ZooKeeper client's reads never go back in zxid), so none can take the marker for
/// one whose hold has ended and grant before the lock-delay. The other order leaves a
/// window, between the two creates, in which a newcomer finds the marker, no hold
/// node, and grants at once.
async fn write_new_marker(
    shared: &Shared,
    client: &zk::Client,
    marker: &EpochMarker,
) -> Result<std::result::Result<(), zk::Error>> {
    write_hold(shared).await?;
    let path = &shared.amnesia.marker_path;
    let data = marker.encode();
    let created = create_in_root(shared, client, path, data.as_bytes(), &persistent()).await?;
    Ok(created.map(drop))
}

/// Creates the node at `path`; should its parent be missing, creates the root's nodes
/// (`mkdir -p`; nothing for the empty root) and the node again. The root, made by
/// another client (the hold's), may not be seen yet by this one's server: `mkdir`
/// goes through the leader and brings it up to date.
async fn create_in_root(
    shared: &Shared,
    client: &zk::Client,
    path: &str,
    data: &[u8],
    options: &zk::CreateOptions<'_>,
) -> Result<std::result::Result<(zk::Stat, zk::CreateSequence), zk::Error>> {
    let answer = timed(shared, client.create(path, data, options)).await?;
    if !matches!(answer, Err(zk::Error::NoNode)) {
        return Ok(answer);
    }
    let root = shared.config.root();
    if !root.is_empty() {
        timed(shared, client.mkdir(root, &persistent()))
            .await?
            .map_err(map)?;
    }
    timed(shared, client.create(path, data, options)).await
}

/// Creates the hold node (the root first if missing), ephemeral on a session of the
/// lock-delay's length that is left open as the client goes (see the module docs), and
/// starts this client's lock-delay. One already there is another client's hold, which
/// does as well.
async fn write_hold(shared: &Shared) -> Result<()> {
    let delay = shared.amnesia.book(|book| book.delay());
    let client = shared.connect_detached(delay).await?;
    let granted = client.session_timeout();
    if granted < delay {
        return Err(Error::InvalidArgument(format!(
            "the zookeeper server grants sessions of at most {granted:?}, below the \
             lock-delay of {delay:?} the hold node must last: raise the server's \
             maxSessionTimeout or lower max_session_ttl"
        )));
    }
    let options = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    let path = &shared.amnesia.hold_path;
    match create_in_root(shared, &client, path, &[], &options).await? {
        // This client's own hold: it waits the lock-delay out too, whoever then wins
        // the marker's create (a client that created the hold and lost that race
        // would otherwise take the hold for one it had waited out, and grant at once).
        Ok((stat, _)) => {
            if shared.amnesia.book(|book| book.new_hold(stat.czxid)) {
                shared.amnesia.hold_for_longest();
            }
            Ok(())
        }
        Err(zk::Error::NodeExists) => Ok(()),
        Err(error) => Err(map(error)),
    }
}

/// Reads the marker on a new session's `client`, as every session does (see the
/// module docs).
///
/// # Errors
/// The store's, or [`Error::InvalidArgument`] for a server that grants too short a
/// session for the hold node.
pub(crate) async fn on_session(shared: &Shared, client: &zk::Client, ttl: Duration) -> Result<()> {
    check(shared, client, ttl).await.map(drop)
}

/// After one of this backend's sessions lost its connection, or was lost without being
/// closed: reads the marker on a connection of its own, to tell a store that forgot
/// (and end the other sessions) as soon as the store answers again, trying again while
/// it does not (for [`RECHECK_FOR`]); the next session reads it anyway. Nothing to
/// do before the marker was ever read, or while another such read is under way.
pub(crate) async fn recheck(shared: &Shared) {
    let amnesia = &shared.amnesia;
    if !amnesia.start_recheck() {
        return;
    }
    let deadline = Instant::now() + RECHECK_FOR;
    let mut backoff =
        distsync_core::raw::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        let checking = async {
            let client = shared.connect(crate::MIN_SESSION_TTL * 4).await?;
            check(shared, &client, Duration::ZERO).await
        };
        match checking.await {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(backend = BACKEND, %error, "reading the epoch marker again");
                tokio::time::sleep(backoff.next_pause()).await;
            }
            Err(error) => {
                tracing::warn!(
                    backend = BACKEND,
                    %error,
                    "the epoch marker could not be read again; the next session reads it"
                );
                break;
            }
        }
    }
    amnesia.end_recheck();
}

/// Waits out the lock-delay, if one runs, before a contender node of `session` is
/// created through `client`; reads the marker again once it ends (adopting the token
/// offset an old holder may have written meanwhile).
///
/// # Errors
/// [`Error::SessionLost`] when the session is lost first, or the marker read's.
///
/// # Cancel safety
/// Cancel safe: nothing is written while waiting.
pub(crate) async fn before_grant(
    shared: &Shared,
    session: &Session,
    client: &zk::Client,
) -> Result<()> {
    let amnesia = &shared.amnesia;
    loop {
        while let Some(until) = amnesia.book(|book| book.hold()) {
            let wait = until.saturating_duration_since(Instant::now());
            tracing::debug!(
                backend = BACKEND,
                ?wait,
                "lock-delay after the store forgot"
            );
            tokio::select! {
                () = session.lost() => return Err(Error::SessionLost),
                () = tokio::time::sleep_until(until) => {}
            }
        }
        if !amnesia.book(|book| book.take_reread()) {
            return Ok(());
        }
        if check(shared, client, Duration::ZERO).await? {
            return Err(Error::SessionLost);
        }
    }
}
