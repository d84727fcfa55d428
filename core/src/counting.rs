//! [`Coordinator::counter`] and [`Coordinator::latch`], in a file of their own: the
//! backend trait names the [`Counter`] and [`CountDownLatch`] traits, and the
//! coordinator names the backend, so factories kept beside the traits would tie
//! `counter.rs` and `latch.rs` into a circle with `coordinator.rs` and `backend.rs`.

use std::sync::Arc;

use crate::coordinator::Coordinator;
use crate::counter::Counter;
use crate::error::Result;
use crate::latch::CountDownLatch;
use crate::name::Name;

impl Coordinator {
    /// The shared counter `name` (see [`crate::counter`]). No I/O.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] for a bad name, one ending in
    /// `/`[`crate::lock_delay::RECORD_SEGMENT`] or
    /// `/`[`crate::revocation::REQUEST_SEGMENT`] or one of the hand-over records'
    /// segments ([`crate::hand_over_record`]);
    /// [`crate::Error::Unsupported`] where the backend
    /// has no counter.
    pub fn counter(&self, name: &str) -> Result<Arc<dyn Counter>> {
        if crate::lock_delay::is_reserved(name) {
            return Err(crate::Error::InvalidName {
                name: name.to_owned(),
                reason: "is reserved for lock-delay records",
            });
        }
        if crate::revocation::is_reserved(name) {
            return Err(crate::Error::InvalidName {
                name: name.to_owned(),
                reason: "is reserved for release requests",
            });
        }
        if crate::hand_over_record::is_reserved(name) {
            return Err(crate::Error::InvalidName {
                name: name.to_owned(),
                reason: "is reserved for leadership hand-over records",
            });
        }
        Ok(Arc::from(self.backend().counter(Name::new(name)?)?))
    }
}

impl Coordinator {
    /// The count-down latch `name` of initial count `count` (see [`crate::latch`]).
    /// No I/O.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] for a bad name; [`crate::Error::Unsupported`] where the backend
    /// has no latch.
    pub fn latch(&self, name: &str, count: u64) -> Result<Arc<dyn CountDownLatch>> {
        Ok(Arc::from(self.backend().latch(Name::new(name)?, count)?))
    }
}
