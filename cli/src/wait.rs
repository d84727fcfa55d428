//! Waiting for an operation while watching for an interrupt and for the session's end.

use std::future::Future;

use distsync::Session;

use crate::signals::Interrupts;

/// How a raced operation ended.
pub(crate) enum Raced<T> {
    /// The operation finished with this output.
    Done(T),
    /// SIGINT or SIGTERM arrived first; the operation's future was dropped.
    Interrupted,
    /// The session was lost first; the operation's future was dropped.
    Lost,
}

/// Runs `op` until it finishes, an interrupt arrives, or `session` (if any) is lost.
/// When several are ready at once, the operation's output wins, so nothing it acquired
/// is dropped unnoticed; a pending signal is then seen by the next wait.
///
/// Cancel-safety: as cancel-safe as `op` (which is dropped when something else wins).
pub(crate) async fn race<T>(
    op: impl Future<Output = T>,
    interrupts: &mut Interrupts,
    session: Option<&Session>,
) -> Raced<T> {
    let lost = async {
        match session {
            Some(session) => session.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        output = op => Raced::Done(output),
        _ = interrupts.recv() => Raced::Interrupted,
        () = lost => Raced::Lost,
    }
}
