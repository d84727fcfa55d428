//! Fault scenarios that cases of several groups share, each driven by what is held:
//! a holder killed (SIGKILL) in a child process ([`crash`]), a holder paused past its
//! TTL ([`pause`]), both on a lock or a semaphore permit ([`Target`]), and a holder
//! cut off from the store by a partition ([`partition`], on a lock, a write lock, a
//! leadership or a double-barrier entry: [`Held`]), and etcd's own Go recipes beside
//! distsync on every primitive they share ([`go_interop`]). The cases themselves are declared
//! in the files of their groups (`lock_holder_crash` in `lock.rs`,
//! `semaphore_holder_crash` in `semaphore.rs`), which name the scenario and what it
//! holds.

mod contender;
pub(super) mod crash;
pub(crate) mod first_grant;
pub(super) mod go_interop;
pub(super) mod mixed;
pub(super) mod mixed_queue;
pub(super) mod mixed_stm;
pub(super) mod partition;
pub(super) mod pause;
pub(crate) mod stay_leader;

pub(super) use contender::Target;
pub(super) use partition::Held;
