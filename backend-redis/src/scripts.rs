//! The Lua scripts (in `lua/`), each run as one `EVALSHA` round trip.
//!
//! Every grant, release and renewal is one script call, so it is atomic on the
//! server. The shared functions of `lua/lib.lua` are prepended to each script.

use std::sync::LazyLock;

use redis::Script;

const LIB: &str = include_str!("../lua/lib.lua");

fn with_lib(body: &str) -> Script {
    Script::new(&format!("{LIB}\n{body}"))
}

/// Every script, compiled (hashed) once per process.
pub(crate) struct Scripts {
    pub(crate) session_open: Script,
    pub(crate) keepalive: Script,
    pub(crate) revoke: Script,
    pub(crate) fair_acquire: Script,
    pub(crate) fair_count: Script,
    pub(crate) release: Script,
    pub(crate) leader: Script,
    pub(crate) proclaim: Script,
    pub(crate) queue_enqueue: Script,
    pub(crate) queue_pop: Script,
    pub(crate) queue_cancel: Script,
    pub(crate) barrier_release: Script,
    pub(crate) dbar_enter: Script,
    pub(crate) dbar_leave: Script,
    pub(crate) stm_read: Script,
    pub(crate) stm_commit: Script,
    pub(crate) export: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    session_open: Script::new(include_str!("../lua/session_open.lua")),
    keepalive: with_lib(include_str!("../lua/keepalive.lua")),
    revoke: with_lib(include_str!("../lua/revoke.lua")),
    fair_acquire: with_lib(include_str!("../lua/fair_acquire.lua")),
    fair_count: with_lib(include_str!("../lua/fair_count.lua")),
    release: with_lib(include_str!("../lua/release.lua")),
    leader: with_lib(include_str!("../lua/leader.lua")),
    proclaim: with_lib(include_str!("../lua/proclaim.lua")),
    queue_enqueue: with_lib(include_str!("../lua/queue_enqueue.lua")),
    queue_pop: with_lib(include_str!("../lua/queue_pop.lua")),
    queue_cancel: with_lib(include_str!("../lua/queue_cancel.lua")),
    barrier_release: with_lib(include_str!("../lua/barrier_release.lua")),
    dbar_enter: with_lib(include_str!("../lua/dbar_enter.lua")),
    dbar_leave: with_lib(include_str!("../lua/dbar_leave.lua")),
    stm_read: Script::new(include_str!("../lua/stm_read.lua")),
    stm_commit: Script::new(include_str!("../lua/stm_commit.lua")),
    export: Script::new(include_str!("../lua/export.lua")),
});
