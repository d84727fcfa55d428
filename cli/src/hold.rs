//! A held lock, write lock, read lock or permit, and keeping it while CMD runs or until
//! interrupted.

use std::ffi::OsString;
use std::time::Duration;

use distsync::session::Lost;
use distsync::{FencingToken, LockGuard, Name, Permit, ReadGuard, Session};

use crate::child::{self, ChildEnd, Stop};
use crate::exit::{self, Failure};
use crate::output::say;
use crate::signals::Interrupts;

/// The environment variable that tells CMD the store key of its hold.
pub(crate) const ENV_KEY: &str = "DISTSYNC_LOCK_KEY";
/// The environment variable that tells CMD the fencing token of its hold.
pub(crate) const ENV_TOKEN: &str = "DISTSYNC_FENCING_TOKEN";

/// What a lock command holds.
pub(crate) enum Hold {
    /// A lock or write lock, with its fencing token.
    Exclusive(LockGuard),
    /// A semaphore's permit, with its fencing token.
    Permit(Permit),
    /// A read lock.
    Shared(ReadGuard),
}

impl Hold {
    /// The store key.
    pub(crate) fn key(&self) -> &str {
        match self {
            Hold::Exclusive(guard) => guard.key(),
            Hold::Permit(permit) => permit.key(),
            Hold::Shared(guard) => guard.key(),
        }
    }

    /// The fencing token (exclusive holds only).
    pub(crate) fn token(&self) -> Option<FencingToken> {
        match self {
            Hold::Exclusive(guard) => Some(guard.token()),
            Hold::Permit(permit) => Some(permit.token()),
            Hold::Shared(_) => None,
        }
    }

    /// Resolves when the hold is lost.
    pub(crate) fn lost(&self) -> Lost {
        match self {
            Hold::Exclusive(guard) => guard.lost(),
            Hold::Permit(permit) => permit.lost(),
            Hold::Shared(guard) => guard.lost(),
        }
    }

    /// The session the hold is held through.
    pub(crate) fn session(&self) -> &Session {
        match self {
            Hold::Exclusive(guard) => guard.session(),
            Hold::Permit(permit) => permit.session(),
            Hold::Shared(guard) => guard.session(),
        }
    }

    /// Releases the hold.
    ///
    /// # Errors
    /// [`distsync::Error::SessionLost`] if it had been lost, or the store's error.
    pub(crate) async fn release(self) -> distsync::Result<()> {
        match self {
            Hold::Exclusive(guard) => guard.unlock().await,
            Hold::Permit(permit) => permit.release().await,
            Hold::Shared(guard) => guard.unlock().await,
        }
    }

    /// `key=<key> token=<token>` (without the token for a read lock).
    pub(crate) fn describe(&self) -> String {
        match self.token() {
            Some(token) => format!("key={} token={token}", self.key()),
            None => format!("key={}", self.key()),
        }
    }

    /// CMD's environment: the key, and the token of an exclusive hold.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![(ENV_KEY, self.key().to_owned())];
        if let Some(token) = self.token() {
            env.push((ENV_TOKEN, token.to_string()));
        }
        env
    }
}

/// Announces `hold` (`NAME key=<key> [token=<token>]` on standard output), keeps it
/// while `command` runs (or, without a command, until SIGINT/SIGTERM), then releases
/// it. Returns the exit code: CMD's, or 130 when interrupted.
///
/// # Errors
/// Exit code 3 when the hold is lost (CMD is then terminated, see [`child::run`]), or
/// the code of a failure to run CMD or to release.
pub(crate) async fn keep(
    name: &Name,
    hold: Hold,
    command: &[OsString],
    grace: Duration,
    interrupts: &mut Interrupts,
) -> Result<u8, Failure> {
    keep_revocable(name, hold, command, grace, interrupts, None).await
}

/// [`keep`], also ending the hold when `requested` resolves (someone asked for it
/// back, `lock --revocable`): CMD gets SIGTERM and its exit code is returned as usual;
/// without CMD, the hold is released and the exit code is 0.
///
/// # Errors
/// As [`keep`].
pub(crate) async fn keep_revocable(
    name: &Name,
    hold: Hold,
    command: &[OsString],
    grace: Duration,
    interrupts: &mut Interrupts,
    requested: Option<futures::future::BoxFuture<'static, ()>>,
) -> Result<u8, Failure> {
    say!("{name} {}", hold.describe());
    let code = if command.is_empty() {
        let requested = async move {
            match requested {
                Some(requested) => requested.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupts.recv() => exit::INTERRUPTED,
            () = hold.lost() => return Err(Failure::session_lost("while holding the lock")),
            () = requested => {
                tracing::warn!("release requested: releasing the lock");
                exit::OK
            }
        }
    } else {
        let stop = Stop {
            lost: hold.lost(),
            health: hold.session().health_watch(),
            grace,
            requested,
        };
        match child::run(command, &hold.env(), None, stop, interrupts).await {
            Ok(ChildEnd::Exited(code)) => code,
            Ok(ChildEnd::Interrupted) => exit::INTERRUPTED,
            Ok(ChildEnd::Lost) => {
                return Err(Failure::session_lost(
                    "while the command was running (or its renewals failed); it was stopped",
                ))
            }
            Err(failure) => {
                release(hold).await?;
                return Err(failure);
            }
        }
    };
    release(hold).await?;
    Ok(code)
}

async fn release(hold: Hold) -> Result<(), Failure> {
    hold.release().await.map_err(|error| match error {
        distsync::Error::SessionLost => {
            Failure::session_lost("before the lock was released: it may not have been exclusive")
        }
        other => Failure::from(other),
    })
}
