//! The Lua scripts (in `lua/`), each run as one `EVALSHA` round trip.
//!
//! Every grant, release and renewal is one script call, so it is atomic on the
//! server. The shared functions of `lua/lib.lua` are prepended to each script.

use std::sync::LazyLock;

use redis::Script;

const LIB: &str = include_str!("../lua/lib.lua");

/// A Lua script: its source (sent as `EVAL` after a `NOSCRIPT`, see [`crate::call`]) and
/// its redis-rs [`Script`] (its SHA1, for `EVALSHA`).
pub(crate) struct Lua {
    pub(crate) script: Script,
    pub(crate) code: String,
}

impl Lua {
    /// The script of `code`.
    pub(crate) fn new(code: &str) -> Self {
        Self {
            script: Script::new(code),
            code: code.to_owned(),
        }
    }

    /// The script of `body`, after the shared functions of `lua/lib.lua`.
    pub(crate) fn with_lib(body: &str) -> Self {
        Self::new(&format!("{LIB}\n{body}"))
    }
}

/// Every script, compiled (hashed) once per process.
pub(crate) struct Scripts {
    pub(crate) session_open: Lua,
    pub(crate) keepalive: Lua,
    pub(crate) keepalive_held: Lua,
    pub(crate) registry: Lua,
    pub(crate) revoke: Lua,
    pub(crate) fair_acquire: Lua,
    pub(crate) fair_count: Lua,
    pub(crate) release: Lua,
    pub(crate) leader: Lua,
    pub(crate) proclaim: Lua,
    pub(crate) queue_enqueue: Lua,
    pub(crate) queue_pop: Lua,
    pub(crate) queue_cancel: Lua,
    pub(crate) barrier_release: Lua,
    pub(crate) dbar_enter: Lua,
    pub(crate) dbar_leave: Lua,
    pub(crate) stm_read: Lua,
    pub(crate) stm_commit: Lua,
    pub(crate) export: Lua,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    session_open: Lua::new(include_str!("../lua/session_open.lua")),
    keepalive: Lua::with_lib(include_str!("../lua/keepalive.lua")),
    keepalive_held: Lua::new(include_str!("../lua/keepalive_held.lua")),
    registry: Lua::new(include_str!("../lua/registry.lua")),
    revoke: Lua::with_lib(include_str!("../lua/revoke.lua")),
    fair_acquire: Lua::with_lib(include_str!("../lua/fair_acquire.lua")),
    fair_count: Lua::with_lib(include_str!("../lua/fair_count.lua")),
    release: Lua::with_lib(include_str!("../lua/release.lua")),
    leader: Lua::with_lib(include_str!("../lua/leader.lua")),
    proclaim: Lua::with_lib(include_str!("../lua/proclaim.lua")),
    queue_enqueue: Lua::with_lib(include_str!("../lua/queue_enqueue.lua")),
    queue_pop: Lua::with_lib(include_str!("../lua/queue_pop.lua")),
    queue_cancel: Lua::with_lib(include_str!("../lua/queue_cancel.lua")),
    barrier_release: Lua::with_lib(include_str!("../lua/barrier_release.lua")),
    dbar_enter: Lua::with_lib(include_str!("../lua/dbar_enter.lua")),
    dbar_leave: Lua::with_lib(include_str!("../lua/dbar_leave.lua")),
    stm_read: Lua::new(include_str!("../lua/stm_read.lua")),
    stm_commit: Lua::new(include_str!("../lua/stm_commit.lua")),
    export: Lua::new(include_str!("../lua/export.lua")),
});
