//! The resource side of fencing: admitting a write only if its token is not stale.
//!
//! A lock cannot stop a holder paused past its lease from acting on its belief that
//! it still holds (see [`crate::LockGuard`]); the protected resource can refuse its
//! writes. A [`Fence`] remembers the highest [`FencingToken`] it has admitted and
//! refuses lower ones (equal ones pass: one holder writes many times with its
//! grant's token). Keep the fence *with* the resource, and check and write under one
//! critical section of the resource (a mutex, a database transaction): [`Fenced`] does
//! that for a value in this process. For a table in PostgreSQL, the same rule is one
//! statement (see `distsync_postgres`'s docs and `docs/FENCING.md`):
//! `UPDATE t SET …, fence = $token WHERE id = $id AND fence <= $token`.
//!
//! ```
//! use distsync::fence::Fenced;
//! use distsync::FencingToken;
//!
//! let balance = Fenced::new(100_u64);
//! // The holder of token 7 writes; then a newer holder (token 9) writes.
//! balance.write(FencingToken(7), |b| *b += 1).unwrap();
//! balance.write(FencingToken(9), |b| *b += 1).unwrap();
//! // The holder of token 7 wakes from a pause and writes again: refused.
//! let stale = balance.write(FencingToken(7), |b| *b += 1).unwrap_err();
//! assert_eq!(stale.highest, FencingToken(9));
//! assert_eq!(balance.read(|b| *b), 102);
//! ```

use std::fmt;
use std::sync::Mutex;

use crate::raw::locked;
use crate::token::FencingToken;

/// A write refused because its token is below the highest admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleToken {
    /// The token the write carried.
    pub token: FencingToken,
    /// The highest token admitted before it.
    pub highest: FencingToken,
}

impl fmt::Display for StaleToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stale fencing token {}: {} was admitted already",
            self.token, self.highest
        )
    }
}

impl std::error::Error for StaleToken {}

/// The highest token admitted so far, and the rule (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fence {
    highest: Option<FencingToken>,
    admitted: u64,
    refused: u64,
}

impl Fence {
    /// A fence that has admitted nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits `token` unless it is below the highest admitted; remembers it.
    ///
    /// # Errors
    /// [`StaleToken`] for a token below the highest admitted.
    pub fn admit(&mut self, token: FencingToken) -> Result<(), StaleToken> {
        if let Some(highest) = self.highest
            && token < highest
        {
            self.refused += 1;
            return Err(StaleToken { token, highest });
        }
        self.highest = Some(token);
        self.admitted += 1;
        Ok(())
    }

    /// The highest token admitted, if any.
    pub fn highest(&self) -> Option<FencingToken> {
        self.highest
    }

    /// How many tokens were admitted.
    pub fn admitted(&self) -> u64 {
        self.admitted
    }

    /// How many were refused.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// A value in this process guarded by a [`Fence`]: a write runs only if its token is
/// admitted, under one lock with the check.
#[derive(Debug, Default)]
pub struct Fenced<T> {
    inner: Mutex<(Fence, T)>,
}

impl<T> Fenced<T> {
    /// `value`, with a fence that has admitted nothing.
    pub fn new(value: T) -> Self {
        Self {
            inner: Mutex::new((Fence::new(), value)),
        }
    }

    /// Runs `write` on the value if `token` is admitted; returns its output.
    ///
    /// # Errors
    /// [`StaleToken`] (and `write` is not run) for a stale token.
    pub fn write<R>(
        &self,
        token: FencingToken,
        write: impl FnOnce(&mut T) -> R,
    ) -> Result<R, StaleToken> {
        let mut inner = locked(&self.inner);
        inner.0.admit(token)?;
        Ok(write(&mut inner.1))
    }

    /// Reads the value.
    pub fn read<R>(&self, read: impl FnOnce(&T) -> R) -> R {
        let inner = locked(&self.inner);
        read(&inner.1)
    }

    /// The fence's state.
    pub fn fence(&self) -> Fence {
        locked(&self.inner).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_tokens_are_refused_and_equal_ones_admitted() {
        let mut fence = Fence::new();
        fence.admit(FencingToken(5)).unwrap();
        fence.admit(FencingToken(5)).unwrap();
        fence.admit(FencingToken(9)).unwrap();
        let stale = fence.admit(FencingToken(5)).unwrap_err();
        assert_eq!(
            stale,
            StaleToken {
                token: FencingToken(5),
                highest: FencingToken(9)
            }
        );
        assert_eq!((fence.admitted(), fence.refused()), (3, 1));
        assert_eq!(fence.highest(), Some(FencingToken(9)));
    }
}
