//! The backend's side of a session: the lease it renews and revokes, its id, and the
//! answer to one renewal. Backends implement [`Lease`]; users only meet
//! [`Session`](crate::Session).

use std::any::Any;
use std::fmt;

use async_trait::async_trait;

use crate::error::Result;

/// A session's identity in its store (etcd: the lease id).
///
/// Displayed in lowercase hexadecimal, as etcd's Go client writes lease ids into keys.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The answer to one renewal of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// The lease was renewed for another TTL.
    Renewed,
    /// The lease was renewed, but part of what it covers was last renewed (or granted)
    /// by a call sent at this instant, before the renewal: the session counts its
    /// validity from this instant instead of the renewal's send time. For a backend
    /// whose renewal cannot cover a hold whose grant is still in flight (Redis
    /// Cluster, where a hold lives in another slot than the session).
    RenewedSince(std::time::Instant),
    /// The store no longer knows the lease: it expired or was revoked.
    Gone,
}

/// A backend's side of a session: renewing and revoking its lease.
///
/// Backends implement this; users only meet [`Session`](crate::Session).
#[async_trait]
pub trait Lease: Send + Sync + 'static {
    /// Renews the lease once. The session cancels the call (drops the future) when its
    /// client-side deadline passes first.
    async fn keep_alive(&self) -> Result<KeepAlive>;
    /// Ends the lease in the store, releasing everything held through it.
    async fn revoke(&self) -> Result<()>;
    /// The concrete lease, for the backend to downcast.
    fn as_any(&self) -> &dyn Any;
}
