//! The counter and the count-down latch: one persistent node each, changed by
//! compare-and-swap on its data version.
//!
//! A counter `<name>` is `<root>/counter/<name>`, a latch `<root>/latch/<name>` (their
//! data: docs/ZOOKEEPER.md, "STM, guarded writes, counters and latches"); a counter
//! node with no data (the ancestor of a longer name) or no node reads 0. Every change
//! reads the node and writes it back with `setData` at the version read (or `create`
//! where it was missing): ZooKeeper applies it only if nobody wrote in between, so
//! concurrent changes are never lost; a lost race (`BadVersion`, `NodeExists`,
//! `NoNode`) wrote nothing and is tried again. A write whose answer is lost is never
//! sent again.
//!
//! Waiting on a latch, or for a counter to change ([`Counter::changed`]), sets a data
//! watch on its node (an existence watch while it is missing) in the same request that
//! reads it, so no write after the read is missed, and reads again on every event; a
//! counter waiter also reads again every [`CHANGED_SAFETY_NET`] without one. A watch
//! costs the server a table entry until it fires; one that the session's loss ends
//! fires with a session event, and the waiter reads again through the new session.
//!
//! A counter and a latch keep nothing ephemeral, so the end of their client's
//! ZooKeeper session (a cut longer than its timeout) is no failure of theirs: a wait
//! whose read the session's end fails reads again through a new session, as it does
//! after a transient error, and so does a read (`get`, `count`) once. A write failed
//! by it is returned, since it may have been applied.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::counter::{checked_add, Counter, CHANGED_SAFETY_NET};
use distsync_core::latch::{check_initial_count, CountDownLatch};
use distsync_core::raw::Make;
use distsync_core::{Error, Name, Result};
use zookeeper_client as zk;

use crate::direct::{
    bounded, parents, persistent, reads_again, request, request_found, Direct, RETRY_PAUSE,
};
use crate::error::map;
use crate::keys::{self, Kind};
use crate::store::Shared;
use crate::BACKEND;

/// A latch node's text, `<initial> <remaining>`, as numbers; `None` when it is not
/// one.
pub(crate) fn parse_latch(text: &str) -> Option<(u64, u64)> {
    let (initial, remaining) = text.split_once(' ')?;
    Some((initial.parse().ok()?, remaining.parse().ok()?))
}

/// A node's data as text and its version; `None` when the node is missing.
async fn read(shared: &Shared, client: &zk::Client, path: &str) -> Result<Option<(String, i32)>> {
    let Some((data, stat)) = request_found(shared, client.get_data(path)).await? else {
        return Ok(None);
    };
    let text = String::from_utf8(data)
        .map_err(|_| Error::backend(BACKEND, format!("{path} does not hold decimal text")))?;
    Ok(Some((text, stat.version)))
}

/// Runs `once` until it answers, waiting out the errors [`reads_again`] accepts; `what`
/// names the wait in its debug lines.
async fn wait_out<T, Fut>(what: &str, name: &Name, mut once: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    loop {
        match once().await {
            Ok(Some(answer)) => return Ok(answer),
            Ok(None) => {}
            Err(error) if reads_again(&error) => {
                tracing::debug!(%name, %error, "{what} wait: reading again");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// One look of a wait on the node at `path`: reads it with a watch set (an existence
/// watch while it is missing), and answers what `done` makes of its data (`None`:
/// missing) when that is `Some`; otherwise waits for the watch to fire (or
/// `safety_net` to pass) and answers `None`. `what` names the wait in its debug lines.
async fn watch_once<T>(
    direct: &Direct,
    what: &str,
    name: &Name,
    path: &str,
    safety_net: Option<Duration>,
    done: impl FnOnce(Option<&[u8]>) -> Result<Option<T>>,
) -> Result<Option<T>> {
    let client = direct.client().await?;
    let shared = &direct.shared;
    let watcher = match request_found(shared, client.get_and_watch_data(path)).await? {
        Some((data, _, watcher)) => match done(Some(&data))? {
            Some(answer) => return Ok(Some(answer)),
            None => watcher,
        },
        None => {
            if let Some(answer) = done(None)? {
                return Ok(Some(answer));
            }
            let (stat, watcher) = request(shared, client.check_and_watch_stat(path)).await?;
            if stat.is_some() {
                // Created between the two reads: read it again.
                return Ok(None);
            }
            watcher
        }
    };
    drop(client);
    let safety_net = async {
        match safety_net {
            Some(safety_net) => tokio::time::sleep(safety_net).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        event = watcher.changed() => {
            if event.event_type == zk::EventType::Session {
                tracing::debug!(%name, state = ?event.session_state, "{what} watch ended by the session");
            }
        }
        () = safety_net => {
            tracing::trace!(%name, "no {what} watch event within the safety net");
        }
    }
    Ok(None)
}

/// Writes `text` to `path` if it is still at `version` (`None`: still missing, created
/// with its parents). `Ok(false)` when it changed meanwhile (nothing written). The
/// compare-and-swap of every node that holds a value read and rewritten (counters, rate
/// limiters).
pub(crate) async fn swap(
    shared: &Shared,
    client: &zk::Client,
    path: &str,
    version: Option<i32>,
    text: &str,
) -> Result<bool> {
    let outcome = match version {
        Some(version) => bounded(
            shared,
            client.set_data(path, text.as_bytes(), Some(version)),
        )
        .await?
        .map(drop),
        None => {
            parents(shared, client, path).await?;
            bounded(shared, client.create(path, text.as_bytes(), &persistent()))
                .await?
                .map(drop)
        }
    };
    match outcome {
        Ok(()) => Ok(true),
        Err(zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode) => Ok(false),
        Err(error) => Err(map(error)),
    }
}

/// The counter `name`.
pub(crate) struct ZkCounter {
    /// The backend's client for requests of no session, shared by every handle.
    direct: Arc<Direct>,
    name: Name,
    path: String,
}

impl ZkCounter {
    /// The value and the node's version (`None`: missing).
    async fn current(&self, client: &zk::Client) -> Result<(i64, Option<i32>)> {
        match read(&self.direct.shared, client, &self.path).await? {
            None => Ok((0, None)),
            Some((text, version)) => Ok((self.value(text.as_bytes())?, Some(version))),
        }
    }

    /// The value a node's `data` holds: 0 when it holds nothing (the ancestor of a
    /// longer name).
    fn value(&self, data: &[u8]) -> Result<i64> {
        if data.is_empty() {
            return Ok(0);
        }
        std::str::from_utf8(data)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| Error::backend(BACKEND, format!("{} does not hold an i64", self.path)))
    }

    /// Replaces the value by `change(current)` atomically; `None` from `change`
    /// leaves it. Returns the value it was replaced by or left at, and whether it
    /// changed.
    async fn update(
        &self,
        mut change: impl FnMut(i64) -> Result<Option<i64>> + Send,
    ) -> Result<(i64, bool)> {
        let client = self.direct.client().await?;
        loop {
            let (value, version) = self.current(&client).await?;
            let Some(new) = change(value)? else {
                return Ok((value, false));
            };
            if swap(
                &self.direct.shared,
                &client,
                &self.path,
                version,
                &new.to_string(),
            )
            .await?
            {
                return Ok((new, true));
            }
        }
    }
}

#[async_trait]
impl Counter for ZkCounter {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn get(&self) -> Result<i64> {
        let (value, _) = self
            .direct
            .read(|client| async move { self.current(&client).await })
            .await?;
        Ok(value)
    }

    async fn add(&self, delta: i64) -> Result<i64> {
        let name = &self.name;
        Ok(self
            .update(|value| checked_add(name, value, delta).map(Some))
            .await?
            .0)
    }

    async fn compare_and_set(&self, expected: i64, new: i64) -> Result<bool> {
        Ok(self
            .update(|value| Ok((value == expected).then_some(new)))
            .await?
            .1)
    }

    async fn set(&self, value: i64) -> Result<()> {
        self.update(|_| Ok(Some(value))).await.map(drop)
    }

    /// Reads the node with a watch set until its value differs from `seen` (see the
    /// module docs); transient errors, timeouts and the end of the client's session
    /// are waited out.
    ///
    /// Cancel-safety: cancel-safe; it only reads and watches, and a watch left set
    /// fires once in the server and is forgotten.
    async fn changed(&self, seen: i64) -> Result<i64> {
        let (what, name) = ("counter", &self.name);
        wait_out(what, name, || {
            let safety_net = Some(CHANGED_SAFETY_NET);
            watch_once(&self.direct, what, name, &self.path, safety_net, |data| {
                let value = data.map_or(Ok(0), |data| self.value(data))?;
                Ok((value != seen).then_some(value))
            })
        })
        .await
    }
}

/// The count-down latch `name` of initial count `initial`.
pub(crate) struct ZkLatch {
    /// The backend's client for requests of no session, shared by every handle.
    direct: Arc<Direct>,
    name: Name,
    path: String,
    initial: u64,
}

impl ZkLatch {
    /// The remaining count and the node's version (`None`: not created yet).
    async fn current(&self, client: &zk::Client) -> Result<(u64, Option<i32>)> {
        let Some((text, version)) = read(&self.direct.shared, client, &self.path).await? else {
            return Ok((self.initial, None));
        };
        if text.is_empty() {
            return Ok((self.initial, Some(version)));
        }
        let Some((stored, remaining)) = parse_latch(&text) else {
            return Err(Error::backend(
                BACKEND,
                format!("{} does not hold a latch", self.path),
            ));
        };
        check_initial_count(&self.name, self.initial, stored)?;
        Ok((remaining, Some(version)))
    }

    /// Whether the latch whose node holds `data` (`None`: missing) is open; data that
    /// is no `<initial> <remaining>` pair reads as the initial count.
    fn is_open(&self, data: Option<&[u8]>) -> Result<bool> {
        let text = data.map_or("", |data| std::str::from_utf8(data).unwrap_or_default());
        let Some((initial, remaining)) = text.split_once(' ') else {
            return Ok(self.initial == 0);
        };
        let malformed = || Error::backend(BACKEND, format!("{} does not hold a latch", self.path));
        let stored = initial.parse().map_err(|_| malformed())?;
        check_initial_count(&self.name, self.initial, stored)?;
        Ok(remaining.parse::<u64>().map_err(|_| malformed())? == 0)
    }
}

#[async_trait]
impl CountDownLatch for ZkLatch {
    fn name(&self) -> &Name {
        &self.name
    }

    fn initial_count(&self) -> u64 {
        self.initial
    }

    async fn count(&self) -> Result<u64> {
        let (remaining, _) = self
            .direct
            .read(|client| async move { self.current(&client).await })
            .await?;
        Ok(remaining)
    }

    async fn count_down(&self) -> Result<u64> {
        let client = self.direct.client().await?;
        loop {
            let (remaining, version) = self.current(&client).await?;
            if remaining == 0 {
                return Ok(0);
            }
            let next = remaining - 1;
            let text = format!("{} {next}", self.initial);
            if swap(&self.direct.shared, &client, &self.path, version, &text).await? {
                return Ok(next);
            }
        }
    }

    /// Reads the node with a watch set until the count is zero (see the module docs);
    /// transient errors, timeouts and the end of the client's session are waited out.
    ///
    /// Cancel-safety: cancel-safe; it only reads and watches, and a watch left set
    /// fires once in the server and is forgotten.
    async fn wait(&self) -> Result<()> {
        let (what, name) = ("latch", &self.name);
        wait_out(what, name, || {
            watch_once(&self.direct, what, name, &self.path, None, |data| {
                Ok(self.is_open(data)?.then_some(()))
            })
        })
        .await
    }
}

impl Make<Arc<Direct>, Name> for ZkCounter {
    fn make(direct: &Arc<Direct>, name: Name) -> Result<Self> {
        Ok(Self {
            path: keys::path(direct.shared.config.root(), Kind::Counter, &name),
            direct: Arc::clone(direct),
            name,
        })
    }
}

impl Make<Arc<Direct>, (Name, u64)> for ZkLatch {
    fn make(direct: &Arc<Direct>, (name, count): (Name, u64)) -> Result<Self> {
        Ok(Self {
            path: keys::path(direct.shared.config.root(), Kind::Latch, &name),
            direct: Arc::clone(direct),
            name,
            initial: count,
        })
    }
}
