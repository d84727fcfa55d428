//! The coordinator's calls about an election's succession: who is in line
//! ([`Coordinator::candidates`]) and asking the leader to hand over
//! ([`Coordinator::prefer`]); the hand-over itself is in [`crate::hand_over`].

use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::hand_over::{record_for, Candidates, PreferenceRequest};
use crate::hand_over_record::Record;
use crate::name::Name;
use crate::session::Session;

impl Coordinator {
    /// The candidates of the election `name`: the leader with its term, then the
    /// others in the order they are to lead, each with the session id that names it in
    /// [`Leadership::resign_to`](crate::Leadership::resign_to). A snapshot as far as the
    /// store's status report is one (see [`crate::status`]).
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::Unsupported`] on a backend without
    /// [`Capabilities::hand_over`](crate::Capabilities::hand_over); the store's error.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn candidates(&self, name: &str) -> Result<Candidates> {
        record_for(self.backend(), &Name::new(name)?)?
            .candidates()
            .await
    }

    /// Asks the current leader of the election `name` to hand over to the candidate
    /// campaigning through `session` (which must be waiting in line): the leader sees
    /// it through
    /// [`Leadership::preference_requested`](crate::Leadership::preference_requested) and
    /// decides. Returns the request made, or `None` when the election has no leader
    /// (nothing is recorded). A request is for the leader of the moment only; see
    /// [`crate::hand_over`].
    ///
    /// ```
    /// # async fn demo(coordinator: distsync_core::Coordinator, session: distsync_core::Session)
    /// # -> distsync_core::Result<()> {
    /// let election = coordinator.election(&session, "scheduler")?;
    /// let campaign = election.campaign("node-2");
    /// // While the campaign waits in line (in a task or a `select!`):
    /// coordinator.prefer(&session, "scheduler").await?;
    /// # drop(campaign);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidName`]; [`Error::InvalidArgument`] when `session` has no
    /// candidacy waiting in the election; [`Error::Unsupported`] on a backend without
    /// [`Capabilities::hand_over`](crate::Capabilities::hand_over); the store's error.
    ///
    /// # Cancel safety
    /// Dropped part-way, the request was made or it was not; repeating it is harmless.
    pub async fn prefer(&self, session: &Session, name: &str) -> Result<Option<PreferenceRequest>> {
        let record = record_for(self.backend(), &Name::new(name)?)?;
        let line = record.candidates().await?;
        let Some(term) = line.term() else {
            return Ok(None);
        };
        if line.position(session.id()).is_none() {
            return Err(Error::InvalidArgument(format!(
                "session {} has no candidacy waiting in election {name:?}",
                session.id()
            )));
        }
        let request = Record {
            term,
            candidate: session.id(),
        };
        record.write_preference(request).await?;
        tracing::info!(
            backend = record.backend(),
            election = name,
            term = term.0,
            candidate = %session.id(),
            "asked the leader to hand over"
        );
        Ok(Some(PreferenceRequest {
            candidate: session.id(),
            term,
        }))
    }
}
