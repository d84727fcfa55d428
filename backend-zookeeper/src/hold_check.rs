//! A caller's own ZooKeeper `multi` guarded by a distsync lock: a check that the
//! guard's hold node still exists, as one operation of the caller's transaction, so
//! that the caller's writes commit only while the lock is still this guard's.
//!
//! This is the check Curator users write by hand
//! (`transactionOp().check().forPath(lockNode)` ahead of their own operations), and
//! the one [`distsync_core::LockGuard::put_if_held`] makes for STM keys. Why the hold
//! node's existence is the hold, and what a chroot needs, is in [`add_hold_check`]'s
//! docs.

use std::any::Any;

use distsync_core::{Error, LockGuard, Result};
use zookeeper_client as zk;

use crate::stm::ZkGuardedWrite;

/// The hold node of `guard`, from the server's root, or [`Error::InvalidArgument`]
/// for a guard that is not a ZooKeeper lock's.
fn hold_node(guard: &LockGuard) -> Result<&str> {
    guard
        .guarded_write_side()
        .and_then(|side| (side as &dyn Any).downcast_ref::<ZkGuardedWrite>())
        .map(ZkGuardedWrite::node)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "a hold check takes the guard of a zookeeper lock, not one granted by the {} \
                 backend",
                guard.session().backend()
            ))
        })
}

/// Adds to `writer` a check that `guard`'s lock is still held: a `check` at version
/// -1 of the guard's hold node, which fails the whole `multi` with `NoNode` once the
/// node is gone.
///
/// The node's existence is the hold: the node is ephemeral (a fair lock's or a
/// read-write lock's writer's sequential contender node, or an unfair lock's holder
/// node), named with a protected prefix made fresh for each acquisition, deleted by an
/// unlock, a break or the end of the guard's session, and never made again under its
/// name (the next holder gets a node of its own). Version -1 passes whatever the
/// node's data version, since a release request (`distsync revoke`, Curator's
/// `Revoker`) writes `__REVOKE__` into the holder's node without taking the lock away;
/// ZooKeeper's `check` compares the data version alone (not the `czxid`, the fencing
/// token), and the path already names one hold. The server decides at the commit: a
/// commit while the node exists is a commit while the lock is held, even when the
/// guard's session is past its client-side deadline; once the node is gone it fails,
/// even when the guard has not heard yet.
///
/// Add it first: ZooKeeper stops a `multi` at its first failing operation, so a first
/// check is the failure reported whenever the hold is gone, and [`hold_was_lost`] with
/// index 0 tells it from the failures of the caller's own operations. Added later, an
/// earlier operation's failure hides it (nothing is written either way).
///
/// `writer` must be of a client without a chroot (the node's path is from the
/// server's root, the backend's `root` included: distsync's clients have none); with
/// one, the check names a node that does not exist and the commit fails as if the hold
/// were lost. [`hold_check_writer`] handles chroots.
///
/// ```no_run
/// # async fn f(
/// #     client: distsync::store::zookeeper::zookeeper_client::Client,
/// #     guard: distsync::LockGuard,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use distsync::store::zookeeper::{add_hold_check, hold_was_lost};
///
/// let mut writer = client.new_multi_writer();
/// add_hold_check(&mut writer, &guard)?; // operation 0
/// writer.add_set_data("/app/config", b"v2", None)?; // operation 1
/// match writer.commit().await {
///     Ok(_) => {} // written while the lock was this guard's
///     Err(error) if hold_was_lost(&error, 0) => {
///         // The lock is gone (perhaps someone else's now): nothing was written.
///     }
///     Err(error) => return Err(error.into()),
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] for a guard that is not a ZooKeeper lock's (another
/// backend's); nothing is added to `writer` then.
pub fn add_hold_check(writer: &mut zk::MultiWriter<'_>, guard: &LockGuard) -> Result<()> {
    let node = hold_node(guard)?;
    // Version -1: the check passes whatever the node's version, if it exists.
    writer
        .add_check_version(node, -1)
        .map_err(crate::error::map)
}

/// Whether a failed commit of a `multi` with [`add_hold_check`]'s check as its
/// operation `check_index` (counted from 0) failed because the hold was gone:
/// [`zk::MultiWriteError::OperationFailed`] at that index with [`zk::Error::NoNode`].
/// Nothing of the `multi` was written then, and the lock may be someone else's.
///
/// `false` for every other failure: one of the caller's own operations (nothing was
/// written either), or [`zk::MultiWriteError::RequestFailed`], whose outcome is
/// unknown (a connection loss may come after the commit applied): read back before
/// trying again.
pub fn hold_was_lost(error: &zk::MultiWriteError, check_index: usize) -> bool {
    matches!(
        error,
        zk::MultiWriteError::OperationFailed {
            index,
            source: zk::Error::NoNode,
        } if *index == check_index
    )
}

/// A [`zk::CheckWriter`] on `client` whose check is that `guard`'s lock is still held
/// (the check [`add_hold_check`] adds, named relative to `client`'s chroot): the
/// operations added to it commit only while the hold node exists.
///
/// Its commit reports a lost hold on its own, as
/// [`zk::CheckWriteError::CheckFailed`] with [`zk::Error::NoNode`] (nothing was
/// written); a failure of the caller's operations is
/// [`zk::CheckWriteError::OperationFailed`], indexed from the first of them.
///
/// ```no_run
/// # async fn f(
/// #     client: distsync::store::zookeeper::zookeeper_client::Client,
/// #     guard: distsync::LockGuard,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use distsync::store::zookeeper::{hold_check_writer, zookeeper_client as zk};
///
/// let mut writer = hold_check_writer(&client, &guard)?;
/// writer.add_set_data("/app/config", b"v2", None)?;
/// match writer.commit().await {
///     Ok(_) => {} // written while the lock was this guard's
///     Err(zk::CheckWriteError::CheckFailed { source: zk::Error::NoNode }) => {
///         // The lock is gone (perhaps someone else's now): nothing was written.
///     }
///     Err(error) => return Err(error.into()),
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidArgument`] for a guard that is not a ZooKeeper lock's, or a
/// `client` whose chroot does not contain the hold node (it cannot name it).
pub fn hold_check_writer<'a>(
    client: &'a zk::Client,
    guard: &LockGuard,
) -> Result<zk::CheckWriter<'a>> {
    let node = hold_node(guard)?;
    let path = under_chroot(client.path(), node).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the hold node {node} lies outside the client's chroot {}",
            client.path()
        ))
    })?;
    client
        .new_check_writer(path, None)
        .map_err(crate::error::map)
}

/// `node` (a path from the server's root) as a client chrooted at `chroot` (`/` for
/// none) names it, or `None` when it lies outside the chroot.
fn under_chroot<'a>(chroot: &str, node: &'a str) -> Option<&'a str> {
    if chroot == "/" {
        return Some(node);
    }
    node.strip_prefix(chroot)
        .filter(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_named_under_a_chroot_that_contains_them() {
        let node = "/distsync/lock/a/_c_x-lock-0000000001";
        assert_eq!(under_chroot("/", node), Some(node));
        assert_eq!(
            under_chroot("/distsync", node),
            Some("/lock/a/_c_x-lock-0000000001")
        );
        assert_eq!(
            under_chroot("/distsync/lock", node),
            Some("/a/_c_x-lock-0000000001")
        );
        assert_eq!(under_chroot("/dist", node), None);
        assert_eq!(under_chroot("/app", node), None);
        assert_eq!(under_chroot(node, node), None);
    }

    #[test]
    fn only_a_missing_node_at_the_check_is_a_lost_hold() {
        let failed = |index, source| zk::MultiWriteError::OperationFailed { index, source };
        assert!(hold_was_lost(&failed(0, zk::Error::NoNode), 0));
        assert!(hold_was_lost(&failed(2, zk::Error::NoNode), 2));
        assert!(!hold_was_lost(&failed(1, zk::Error::NoNode), 0));
        assert!(!hold_was_lost(&failed(0, zk::Error::BadVersion), 0));
        let request = zk::MultiWriteError::RequestFailed {
            source: zk::Error::ConnectionLoss,
        };
        assert!(!hold_was_lost(&request, 0));
    }
}
