//! Sessions: a random id, a key with a PX TTL holding a random nonce, and a registry
//! of what the session holds, all renewed by one script call.
//!
//! `{<ns>session:<id>}` exists while the session lives; `<id>` is a random 63-bit
//! number drawn by the client (module `random`), never a server counter, so it does
//! not repeat after a restart without persistence or a failover (a counter would
//! start again from 1 and hand a dead session's id to a new one). The key holds a
//! random 128-bit nonce that only the owner knows: the renewal compares it, so a
//! holder whose session vanished never renews another session that took the same
//! key, and learns of the loss at its next renewal ([`KeepAlive::Gone`]). The renewal
//! also refuses a session key with less than the session's margin left of its TTL:
//! such a renewal arrives after the owner's client-side deadline (the reasoning is in
//! `RedisLease::keep_alive`), so nothing renews a session its owner gave up. `{<ns>session:<id>}:held` is a
//! hash from each key held through the session (a lock, rwlock or election entry, a
//! double-barrier participant) to the value it must hold. Every held key carries the
//! session's TTL as its own PX. The keepalive script renews the session key, the
//! registry and every held key in one round trip, and answers
//! [`KeepAlive::Gone`] when the session key is gone or a held key is gone or holds
//! another value, releasing what is left at once. Revoking runs every held key's
//! release (waking the next waiters), deletes the session key and publishes on
//! `<session key>:lost`, which the owner listens to: `lost()` then fires at once
//! rather than at the next renewal.
//!
//! Under Redis Cluster the session key and what it holds live in different hash
//! slots, which no script may span: the registry is then kept by the client
//! ([`HeldKeys`]), and a renewal is one call for the session key and one per
//! slot of held keys, sent at once (see [`crate::cluster`]).

use distsync_core::raw::{CleanUp, SessionStoreSide as _};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::raw::locked;
use distsync_core::{Error, KeepAlive, Lease, Result, Session, SessionId, SessionOptions};
use tokio_util::sync::CancellationToken;

use crate::call::{millis, Call};
use crate::capabilities::BACKEND;
use crate::error::{int, unexpected};
use crate::notify::Event;
use crate::scripts::SCRIPTS;
use crate::store::Shared;

/// The Redis side of a [`Session`].
pub(crate) struct RedisLease {
    shared: Arc<Shared>,
    id: u64,
    key: String,
    registry: Registry,
    /// The session key's value, compared by every renewal.
    nonce: String,
    ttl: Duration,
    /// The session's safety margin ([`SessionOptions::effective_margin`]): a renewal
    /// that finds less than this left of the session key's TTL is refused.
    margin: Duration,
    entries: AtomicU64,
}

/// How many ids [`RedisLease::open`] draws before giving up: a clash of random 63-bit
/// ids is not expected to happen even once.
const MAX_DRAWS: u32 = 8;

/// Under Redis Cluster, the keys a session holds and the value each must hold, listed
/// by its client: a key is listed once a script's reply says it is in the store, and
/// unlisted before it is released (an unlisted key is no longer renewed, so at worst
/// it expires with its TTL).
///
/// A key being taken (its script sent, its reply not yet handled) is not listed yet,
/// so a renewal sent meanwhile does not renew it: the store expires it one TTL after
/// the take's script ran (the script gives it the whole TTL under Cluster, see
/// `session_px` in `lua/lib.lua`), which may be earlier than the renewal's send time
/// plus the TTL. Such takes are counted as pending, with the instant before their
/// script was sent, and a renewal that runs while one is pending tells the session to
/// count from that instant ([`KeepAlive::RenewedSince`]). So for every key the session
/// may hold, the instant its deadline counts from is no later than the send time of
/// the last call that set the key's expiry to one TTL: a listed key's renewal, sent at
/// or after the renewal's own send time, or a pending key's take, sent after the
/// instant counted. The client-side deadline therefore never passes the store's
/// expiry of any key the session may hold, whatever the order in which the take, its
/// reply, the renewal and its reply come.
#[derive(Default)]
pub(crate) struct HeldKeys {
    listed: Mutex<HashMap<String, String>>,
    /// Keys being taken, each with the instant before its take was sent.
    pending: Mutex<HashMap<String, std::time::Instant>>,
}

impl HeldKeys {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        locked(&self.listed)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, std::time::Instant>> {
        locked(&self.pending)
    }

    /// What is listed now, and the instant before the oldest take still pending.
    fn snapshot(&self) -> (Vec<(String, String)>, Option<std::time::Instant>) {
        let oldest = self.pending().values().min().copied();
        let listed = self
            .map()
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        (listed, oldest)
    }
}

/// A take in flight (see [`HeldKeys`]): pending from [`Registry::taking`] until it is
/// dropped, which its owner does once the key is listed or known not to be held.
#[must_use = "the take stops being pending when this is dropped"]
pub(crate) struct PendingTake {
    held: Option<Arc<HeldKeys>>,
    key: String,
}

impl Drop for PendingTake {
    fn drop(&mut self) {
        if let Some(held) = &self.held {
            held.pending().remove(&self.key);
        }
    }
}

/// Where what a session holds is listed, for its renewals and its revoke: the hash
/// `{<ns>session:<id>}:held` in the store, which every script that adds or removes a
/// hold updates in the same call on one server (or a Sentinel primary). Under Redis
/// Cluster the held keys live in other slots than the registry: the client lists them
/// ([`HeldKeys`], for the renewals) and lists them in the store's registry with a call
/// of its own sent beside the one that takes the key ([`Registry::take`]), so that
/// a revoke from any client finds them.
#[derive(Clone)]
pub(crate) struct Registry {
    /// The store's registry key; empty for a call that holds nothing (a dequeue).
    key: String,
    /// Under Cluster, what the client lists.
    held: Option<Arc<HeldKeys>>,
}

impl Registry {
    /// The registry of the session whose registry key is `key`, on a cluster or not.
    fn new(key: String, cluster: bool) -> Self {
        Self {
            key,
            held: cluster.then(Arc::default),
        }
    }

    /// No registry: for calls that hold nothing through a session.
    pub(crate) fn none() -> Self {
        Self {
            key: String::new(),
            held: None,
        }
    }

    /// Declares the store's registry as the next key of `call` for a script that
    /// updates it itself; nothing under Cluster (the registry lives in another slot).
    pub(crate) fn key_into(&self, call: &mut Call<'_>) {
        if self.held.is_none() {
            call.key(&self.key);
        }
    }

    /// The store's registry as a script argument, for a script that updates it itself;
    /// `""` under Cluster or for no registry.
    pub(crate) fn arg(&self) -> &str {
        if self.held.is_none() {
            &self.key
        } else {
            ""
        }
    }

    /// Under Cluster, counts a take of `key` as pending from now until the returned
    /// guard is dropped (see [`HeldKeys`]); call it before sending the take, and drop
    /// the guard after [`Registry::listed`] or [`Registry::unlisted`].
    pub(crate) fn taking(&self, key: &str) -> PendingTake {
        if let Some(held) = &self.held {
            held.pending()
                .entry(key.to_owned())
                .or_insert_with(std::time::Instant::now);
        }
        // Nothing is pending on one server: no clone, no allocation on the hot path.
        PendingTake {
            held: self.held.clone(),
            key: if self.held.is_some() {
                key.to_owned()
            } else {
                String::new()
            },
        }
    }

    /// `key` holds `value` in the store (a script's reply said so): renewed from now
    /// on (under Cluster; on one server the script listed it).
    pub(crate) fn listed(&self, key: &str, value: &str) {
        if let Some(held) = &self.held {
            held.map().insert(key.to_owned(), value.to_owned());
        }
    }

    /// Under Cluster, lists `key` (holding `value`) in the store's registry, which
    /// lives `ttl_ms` and is renewed with the session: one call in the registry's slot,
    /// sent beside the call that takes the key. Nothing on one server.
    ///
    /// # Errors
    /// The store's.
    pub(crate) async fn register(
        &self,
        shared: &Shared,
        key: &str,
        value: &str,
        ttl_ms: u64,
    ) -> Result<()> {
        if self.held.is_none() {
            return Ok(());
        }
        let mut call = shared.script(&SCRIPTS.registry);
        call.key(&self.key)
            .arg("add")
            .arg(key)
            .arg(value)
            .arg(ttl_ms);
        shared.eval(&call).await.map(drop)
    }

    /// Under Cluster, unlists `key` from the store's registry; nothing on one server.
    ///
    /// # Errors
    /// The store's.
    pub(crate) async fn unregister(&self, shared: &Shared, key: &str) -> Result<()> {
        if self.held.is_none() {
            return Ok(());
        }
        let mut call = shared.script(&SCRIPTS.registry);
        call.key(&self.key).arg("del").arg(key);
        shared.eval(&call).await.map(drop)
    }

    /// Takes `key` through the session: sends `take`, the script call that takes it to
    /// hold `value`, and under Cluster lists the key in the store's registry beside it
    /// ([`Registry::register`], the registry living `ttl_ms`), the take pending for the
    /// session's renewals until the returned guard is dropped ([`Registry::taking`]).
    /// Every take listed beside its call goes through here, and one the store refuses
    /// while the session lives is unlisted again: through
    /// [`Registry::refused_in_background`] for a key that is the acquisition's alone,
    /// through [`Registry::refused`] for one the session's acquisitions share. A reply
    /// that the session is gone needs neither: the session ends, and its revoke
    /// deletes the registry.
    ///
    /// # Errors
    /// The take's error when it failed, whatever became of the listing: the take is
    /// what the caller asked about, and the caller's clean-up unlists what it may have
    /// listed. Otherwise the listing's: the key may then be held without being listed,
    /// and the caller's clean-up lets go of it as of a failed take.
    pub(crate) async fn take(
        &self,
        shared: &Shared,
        take: &Call<'_>,
        key: &str,
        value: &str,
        ttl_ms: u64,
    ) -> Result<(redis::Value, PendingTake)> {
        let pending = self.taking(key);
        let (reply, registered) =
            tokio::join!(shared.eval(take), self.register(shared, key, value, ttl_ms));
        let reply = reply?;
        registered?;
        Ok((reply, pending))
    }

    /// Lets go of `key` through the session: sends `release`, the script call that
    /// deletes it, and under Cluster unlists the key from the store's registry beside
    /// it; from here on the session's renewals no longer renew it. The mirror of
    /// [`Registry::take`], for every release unlisted beside its call.
    ///
    /// # Errors
    /// The release's error when it failed, whatever became of the unlisting: the
    /// release is what the caller asked about. Otherwise the unlisting's.
    pub(crate) async fn release(
        &self,
        shared: &Shared,
        release: &Call<'_>,
        key: &str,
    ) -> Result<redis::Value> {
        let (reply, unregistered) = self.release_apart(shared, release, key).await;
        let reply = reply?;
        unregistered?;
        Ok(reply)
    }

    /// [`Registry::release`], answering the release's result and the unlisting's
    /// apart: for a caller whose clean-up depends on which of them failed (the unfair
    /// lock's guard retries a failed release in the background, but not a failed
    /// unlisting of the holder key its session's next acquisition may list again).
    pub(crate) async fn release_apart(
        &self,
        shared: &Shared,
        release: &Call<'_>,
        key: &str,
    ) -> (Result<redis::Value>, Result<()>) {
        // The client's listing goes first, so that renewals stop renewing the key.
        self.unlisted(key);
        tokio::join!(shared.eval(release), self.unregister(shared, key))
    }

    /// Unlists `key`, whose take ([`Registry::take`]) the store refused, in the
    /// background: under Cluster the take listed it in the store's registry, and
    /// nothing else would unlist it before the session ends. For a key that is the
    /// acquisition's alone, so that the unlisting may land whenever, and a refused
    /// try answers without waiting for it. Retried through transient failures until
    /// the session ends, which deletes the registry; a failure is logged by the
    /// clean-up. Nothing in the store on one server, where the refusing script listed
    /// nothing.
    pub(crate) fn refused_in_background(&self, shared: &Arc<Shared>, session: &Session, key: &str) {
        self.unlisted(key);
        if self.held.is_none() {
            return;
        }
        let (registry, shared, key) = (self.clone(), Arc::clone(shared), key.to_owned());
        CleanUp::new(
            "unlisting a refused take from its session's registry",
            "its session's end deletes the registry",
        )
        .of(&key)
        .until_lost(session.lost_token().clone())
        .spawn(move |clean_up| async move {
            clean_up.retry(|| registry.unregister(&shared, &key)).await
        });
    }

    /// Unlists `key`, whose take ([`Registry::take`]) the store refused, and waits for
    /// it: for a key the session's acquisitions share, which the caller unlists while it
    /// has the session's gate (only the gate makes the listing this acquisition's).
    ///
    /// # Errors
    /// The unlisting's, logged here: the refusal is still the take's answer, and the
    /// caller hands the unlisting to its background clean-up.
    pub(crate) async fn refused(&self, shared: &Shared, key: &str) -> Result<()> {
        self.unlisted(key);
        let unregistered = self.unregister(shared, key).await;
        if let Err(error) = &unregistered {
            tracing::warn!(
                key,
                %error,
                "unlisting a refused take from its session's registry failed; retried in the background"
            );
        }
        unregistered
    }

    /// `key` is being released, or is gone: no longer renewed.
    pub(crate) fn unlisted(&self, key: &str) {
        if let Some(held) = &self.held {
            held.map().remove(key);
        }
    }
}

impl RedisLease {
    /// The lease of `session`, which the store of `shared` must have granted.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a session of another backend or another store.
    pub(crate) fn of<'s>(session: &'s Session, shared: &Shared) -> Result<&'s RedisLease> {
        session
            .lease_granted_here::<RedisLease>(BACKEND, |lease| lease.shared().store == shared.store)
    }

    /// The lease of `session`, while it is not lost.
    ///
    /// # Errors
    /// [`Error::SessionLost`] once it is lost.
    pub(crate) fn live(session: &Session) -> Result<&RedisLease> {
        if session.is_lost() {
            return Err(Error::SessionLost);
        }
        session.lease_for::<RedisLease>(BACKEND)
    }

    /// Opens a session of `options.ttl` and starts its keepalive.
    ///
    /// The id is drawn at random on the client ([`crate::random`]) and the session key
    /// is created only if absent (`SET NX`), drawing again in the (astronomically
    /// unlikely) case of a clash; the key's value is a random nonce that the renewals
    /// compare, so a session renews only its own key.
    pub(crate) async fn open(shared: &Arc<Shared>, options: &SessionOptions) -> Result<Session> {
        let ttl = options.ttl;
        crate::amnesia::check_ttl(shared, ttl)?;
        let ttl_ms = millis(ttl);
        let nonce = distsync_core::raw::call_id();
        let mut draws = 0;
        let (id, grant_sent) = loop {
            let id = crate::random::id();
            let grant_sent = tokio::time::Instant::now();
            let mut call = shared.script(&SCRIPTS.session_open);
            call.key(shared.keys.session(id))
                .key(shared.keys.registry(id))
                .arg(&nonce)
                .arg(ttl_ms);
            let reply = shared.eval(&call).await?;
            match int("session_open", &reply)? {
                1 => break (id, grant_sent),
                0 if draws < MAX_DRAWS => {
                    draws += 1;
                    tracing::debug!(session = id, "redis session id taken; drawing another");
                }
                _ => return Err(unexpected("session_open", &reply)),
            }
        };
        let registry = Registry::new(shared.keys.registry(id), shared.is_cluster());
        let lease = Self {
            shared: Arc::clone(shared),
            id,
            key: shared.keys.session(id),
            registry,
            nonce,
            ttl,
            margin: options.effective_margin(),
            entries: AtomicU64::new(0),
        };
        tracing::debug!(session = id, ?ttl, "redis session opened");
        let session = distsync_core::raw::start_session(
            BACKEND,
            SessionId(id),
            options,
            grant_sent,
            Arc::new(lease),
        );
        watch_revocation(shared, id, session.lost_token().clone());
        Ok(session)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The session id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The nonce the session key holds.
    pub(crate) fn nonce(&self) -> &str {
        &self.nonce
    }

    /// Where what the session holds is listed.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Declares the session's keys for a script that adds a hold through it (see
    /// `session_left` in `lua/lib.lua`): the session key and its registry; nothing
    /// under Cluster, where they live in another slot.
    pub(crate) fn session_keys(&self, call: &mut Call<'_>) {
        if self.registry.held.is_none() {
            call.key(&self.key).key(&self.registry.key);
        }
    }

    /// What such a script checks the session with: the nonce the session key must
    /// hold; under Cluster, the client's own bound on what is left of `session` (ms):
    /// its client-side deadline plus the margin, which is never later than the
    /// session key's expiry (0 once lost).
    pub(crate) fn session_check(&self, session: &Session) -> std::borrow::Cow<'_, str> {
        if self.registry.held.is_none() {
            return std::borrow::Cow::Borrowed(&self.nonce);
        }
        let left = session.valid_until().map_or(Duration::ZERO, |until| {
            until.saturating_duration_since(std::time::Instant::now()) + self.margin
        });
        std::borrow::Cow::Owned(left.as_millis().to_string())
    }

    /// The TTL in milliseconds, the PX of every held key.
    pub(crate) fn ttl_ms(&self) -> u64 {
        millis(self.ttl)
    }

    /// The margin in milliseconds: a session key with less than this left of its TTL
    /// is past its owner's client-side deadline (see [`RedisLease::keep_alive`]'s
    /// comment), so no script renews it or adds to what it holds.
    pub(crate) fn margin_ms(&self) -> u64 {
        u64::try_from(self.margin.as_millis()).unwrap_or(u64::MAX)
    }

    /// A fresh entry id, unique in the store: `<session id>.<n>`.
    pub(crate) fn next_entry_id(&self) -> String {
        let n = self.entries.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.id)
    }
}

#[async_trait]
impl Lease for RedisLease {
    async fn keep_alive(&self) -> Result<KeepAlive> {
        let mut call = self.shared.script(&SCRIPTS.keepalive);
        // The script refuses (answers gone, releasing everything) a renewal that finds
        // less than the margin left of the session key's TTL: nothing may renew a
        // session past its client-side deadline. Why that test suffices: the server
        // expires the key at (arrival of the last renewal that landed) + ttl, which is
        // at least (send time of the last acknowledged renewal, or of the grant) + ttl,
        // since a renewal lands after it is sent and the last one that landed is no
        // older than the last one acknowledged. The client's deadline is that send
        // time + ttl - margin. So when a renewal arrives with PTTL < margin, it
        // arrives after the deadline: the owner has already declared the session
        // lost (give or take the clocks' rate difference, which the margin also
        // covers), and renewing would keep its holds alive behind its back. A renewal
        // landing after the deadline with more than the margin left (because an
        // earlier renewal landed whose answer was lost) is not caught here; the core
        // revokes the session in the background after the loss, which ends it.
        call.key(&self.key)
            .key(&self.registry.key)
            .arg(self.ttl_ms())
            .arg(&self.nonce)
            .arg(self.margin_ms());
        if self.registry.held.is_some() {
            call.arg("cluster");
        }
        let renewal = async {
            let reply = self.shared.eval(&call).await?;
            match int("keepalive", &reply)? {
                1 => Ok(KeepAlive::Renewed),
                0 => Ok(KeepAlive::Gone),
                _ => Err(unexpected("keepalive", &reply)),
            }
        };
        let Some(keys) = &self.registry.held else {
            return renewal.await;
        };
        // Redis Cluster: the held keys slot by slot, all sent with the session key's
        // renewal (the same margin test applies to each key; see keepalive_held.lua).
        let (held, pending_since) = keys.snapshot();
        let slots = crate::cluster::by_slot(held.iter().map(|(key, value)| (key, value)))
            .into_iter()
            .map(|group| {
                let mut call = self.shared.script(&SCRIPTS.keepalive_held);
                call.arg(self.ttl_ms()).arg(self.margin_ms());
                for (key, value) in &group {
                    call.key(key).arg(value);
                }
                async move {
                    let reply = self.shared.eval(&call).await?;
                    held_slot_renewal(keys, &group, reply)
                }
            });
        let (renewal, slots) = tokio::join!(renewal, futures::future::join_all(slots));
        let mut outcome = match (renewal?, pending_since) {
            (KeepAlive::Renewed, Some(since)) => KeepAlive::RenewedSince(since),
            (outcome, _) => outcome,
        };
        for renewed in slots {
            if !renewed? {
                outcome = KeepAlive::Gone;
            }
        }
        if matches!(outcome, KeepAlive::Gone) {
            // What the session still holds in other slots goes now (on one server the
            // keepalive script releases it in the same call), and so does the session
            // key, should it still be this session's.
            if let Err(error) = self.revoke().await {
                tracing::debug!(
                    session = self.id,
                    %error,
                    "releasing a lost session's holds failed; they expire with their TTL"
                );
            }
        }
        Ok(outcome)
    }

    async fn revoke(&self) -> Result<()> {
        revoke(
            &self.shared,
            self.id,
            Some(&self.nonce),
            Some(&self.registry),
        )
        .await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Judges one slot's `keepalive_held.lua` reply for the keys of `group`: whether the
/// session still holds all of them. A key the script found gone or holding another
/// value is a loss only while `keys` still lists it with the same value: a hold
/// released while the renewal was on its way was unlisted before its release was
/// sent, so by the time the reply arrives it is no longer listed, and its absence
/// says nothing about the session.
fn held_slot_renewal(
    keys: &HeldKeys,
    group: &[(&String, &String)],
    reply: redis::Value,
) -> Result<bool> {
    let reply = crate::error::array("keepalive_held", reply)?;
    let Some((status, missing)) = reply.split_first() else {
        return Err(unexpected("keepalive_held", &redis::Value::Array(reply)));
    };
    if int("keepalive_held", status)? != 1 {
        return Ok(false);
    }
    let listed = keys.map();
    for reply in missing {
        let (key, value) = usize::try_from(int("keepalive_held", reply)?)
            .ok()
            .and_then(|position| group.get(position.checked_sub(1)?))
            .ok_or_else(|| unexpected("keepalive_held", reply))?;
        if listed.get(*key) == Some(*value) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Fires `lost` as soon as the store revokes session `id` (the revoke script
/// publishes on `<session key>:lost`), rather than at the next renewal. Best effort:
/// should the subscription fail, the keepalive still finds out within TTL/3. The task
/// ends with the session.
fn watch_revocation(shared: &Arc<Shared>, id: u64, lost: CancellationToken) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let channel = shared
            .keys
            .channel(&format!("{}:lost", shared.keys.session(id)));
        let subscribed = tokio::select! {
            () = lost.cancelled() => return,
            subscribed = shared.notifier.subscribe(channel) => subscribed,
        };
        let Ok(mut revoked) = subscribed else {
            return;
        };
        loop {
            tokio::select! {
                () = lost.cancelled() => return,
                event = revoked.recv() => match event {
                    Ok(Event::Message(_)) => {
                        tracing::debug!(session = id, "redis session revoked by the store");
                        lost.cancel();
                        return;
                    }
                    Ok(Event::Resync) => {}
                    Err(_) => return,
                },
            }
        }
    });
}

/// Ends session `id` in the store: releases all it holds, deletes its key. With a
/// `nonce` (the owner closing its own session), only if the session key still holds
/// it; without (a revoke by id, from any client), whatever session has that id.
///
/// Under Redis Cluster the held keys live in other slots than the session key: what
/// the store's registry lists, and what the owner's `registry` lists (a key whose
/// listing in the store was still on its way), is released first (one call each, sent
/// at once), then the session key and its registry are deleted.
pub(crate) async fn revoke(
    shared: &Shared,
    id: u64,
    nonce: Option<&str>,
    registry: Option<&Registry>,
) -> Result<()> {
    let mut failed = None;
    if shared.is_cluster() {
        let mut listed: HashMap<String, String> = registry
            .and_then(|registry| registry.held.as_ref())
            .map(|held| held.snapshot().0.into_iter().collect())
            .unwrap_or_default();
        let stored = shared
            .query(redis::cmd("HGETALL").arg(shared.keys.registry(id)))
            .await?;
        let stored = redis::from_redis_value::<HashMap<String, String>>(stored.clone())
            .map_err(|_| unexpected("HGETALL of a session registry", &stored))?;
        listed.extend(stored);
        let releases = listed.into_iter().map(|(key, value)| async move {
            let mut call = shared.script(&SCRIPTS.release);
            call.key(&key).arg(&value);
            let released = shared.eval(&call).await;
            if let Some(held) = registry.and_then(|registry| registry.held.as_ref()) {
                held.map().remove(&key);
            }
            released
        });
        // The session key goes even if a release failed (that entry then expires).
        failed = futures::future::join_all(releases)
            .await
            .into_iter()
            .find_map(Result::err);
    }
    let mut call = shared.script(&SCRIPTS.revoke);
    call.key(shared.keys.session(id))
        .key(shared.keys.registry(id))
        .arg(nonce.unwrap_or(""));
    if shared.is_cluster() {
        call.arg("cluster");
    }
    shared.eval(&call).await?;
    tracing::debug!(session = id, "redis session revoked");
    failed.map_or(Ok(()), Err)
}
