//! Guarded writes ([`distsync_core::LockGuard::put_if_held`]) on Redis: one script
//! (`lua/guarded_put.lua`) writes the STM key only while the guard's entry is still
//! the current grant of its line. A caller's own script guarded by a hold
//! ([`crate::GuardedScript`]) makes the same check, through the same call prologue
//! ([`RedisGuardedWrite::call`]) and the same Lua (`hold_current` in `lua/lib.lua`).
//!
//! A hold is current while its entry key `p:e:<id>` still holds the value it was
//! created with (the key expires with the session, and a release or a revoke deletes
//! it) and the line's grant table `p:g` records the entry's grant with the guard's
//! fencing token (see [`crate::waiter_line`] for the layout). The check and the write run in
//! one script, hence atomically on the server: a holder whose session the store has
//! ended (revoked, expired while it was paused) writes nothing, even before its own
//! `lost()` fires. The write itself is an STM commit of one key (its value and the
//! next STM revision, as `lua/stm_commit.lua` writes), so [`distsync_core::Stm`]
//! reads it and STM transactions see it as a change.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use bytes::Bytes;
use distsync_core::raw::GuardedWrite;
use distsync_core::{LockGuard, Name, Result};

use crate::call::Call;
use crate::error::{int, unexpected};
use crate::scripts::Lua;
use crate::store::Shared;
use crate::waiter_line::{Granted, WaiterLine};

/// The script, compiled (hashed) once per process.
static GUARDED_PUT: LazyLock<Lua> =
    LazyLock::new(|| Lua::with_lib(include_str!("../lua/guarded_put.lua")));

/// The guarded write of one granted entry (a lock, a write lock or a permit).
pub(crate) struct RedisGuardedWrite {
    shared: Arc<Shared>,
    /// The entry key `p:e:<id>`.
    entry: String,
    /// The value the entry key was created with.
    value: String,
    /// The grant's fencing token, as `p:g` records it.
    token: String,
}

/// The guard over `granted`, an entry of `line` (a lock, a write lock or a permit):
/// its key, fencing token and release, with the guarded write attached, except under
/// Redis Cluster, where the grant and the STM key live in different hash slots and no
/// script may check one and write the other (`put_if_held` is then
/// [`distsync_core::Error::Unsupported`], as `capabilities_under_cluster` declares).
pub(crate) fn lock_guard(line: &WaiterLine, granted: &Granted) -> LockGuard {
    let session = line.session();
    let guard = distsync_core::raw::lock_guard(
        granted.key(),
        granted.token,
        session,
        granted.release_fn(session),
    );
    if line.shared().is_cluster() {
        guard
    } else {
        distsync_core::raw::with_guarded_write(guard, hook(line.shared(), granted))
    }
}

/// The hook for a guard over `granted`: attach it with
/// [`distsync_core::LockGuard::with_guarded_write`].
pub(crate) fn hook(shared: &Arc<Shared>, granted: &Granted) -> Arc<dyn GuardedWrite> {
    Arc::new(RedisGuardedWrite {
        shared: Arc::clone(shared),
        entry: granted.hold.key().to_owned(),
        value: granted.hold.value().to_owned(),
        token: granted.token.0.to_string(),
    })
}

impl RedisGuardedWrite {
    /// A call of `script`, a script that checks the hold with `hold_current`
    /// (`lua/lib.lua`) before it writes: the entry key as `KEYS[1]`, and the channel
    /// prefix, the entry's value and the grant's token as `ARGV[1..=3]`. The script's
    /// own keys and arguments follow.
    pub(crate) fn call<'a>(&self, script: &'a Lua) -> Call<'a> {
        let mut call = self.shared.script(script);
        call.key(&self.entry).arg(&self.value).arg(&self.token);
        call
    }

    /// The store the hold is in.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

#[async_trait]
impl GuardedWrite for RedisGuardedWrite {
    async fn put_if_held_bytes(&self, key: &Name, value: Bytes) -> Result<bool> {
        let mut call = self.call(&GUARDED_PUT);
        call.key(self.shared.keys.stm_revision())
            .key(self.shared.keys.stm_key(key))
            .arg(value.as_ref());
        let reply = self.shared.eval(&call).await?;
        match int("guarded_put", &reply)? {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(unexpected("guarded_put", &reply)),
        }
    }
}
