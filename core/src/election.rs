//! Leader election.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::{Error, Result};
use crate::guard::{Held, ReleaseFn};
use crate::hand_over_record::HandOverRecord;
use crate::name::Name;
use crate::session::Session;
use crate::token::FencingToken;

/// The current leader of an election, as seen by [`Election::leader`] and
/// [`Election::observe`].
///
/// `#[non_exhaustive]`, so that what a store reports of a leader can grow: backends
/// outside this crate build it with [`LeaderInfo::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderInfo {
    /// The leader's proclaimed value.
    pub value: Bytes,
    /// The leadership term (fencing token): strictly increases with every new leader.
    pub term: FencingToken,
    /// The leader's key in the store (etcd: `<ns><name>/<lease hex>`).
    pub key: String,
}

impl LeaderInfo {
    /// The leader whose key is `key`, proclaiming `value` in `term`. For backends.
    pub fn new(value: impl Into<Bytes>, term: FencingToken, key: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            term,
            key: key.into(),
        }
    }
}

/// Leader election, as etcd's `concurrency.Election`; candidacies are held through a
/// session. Created by [`crate::raw::Primitives::election`].
#[async_trait]
pub trait Election: Send + Sync {
    /// The election's name.
    fn name(&self) -> &Name;

    /// Stands for election with `value` and waits until elected: what a backend
    /// implements; users call [`Election::campaign`](#method.campaign),
    /// which takes any `impl Into<Bytes>`.
    ///
    /// # Errors
    /// [`Error::SessionLost`] if the session ends while waiting, or the store's error.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe: dropping the future withdraws the candidacy (or leaves it to
    /// the lease) and never leaves this candidate leader.
    async fn campaign_bytes(&self, value: Bytes) -> Result<Leadership>;

    /// The current leader, if any.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it only reads.
    async fn leader(&self) -> Result<Option<LeaderInfo>>;

    /// A stream of leaders: the current one first (if any), then every change of
    /// leader and every proclaim, in order, never a stale value after a newer one.
    /// While there is no leader, the stream waits. It ends only with an error item.
    fn observe(&self) -> BoxStream<'static, Result<LeaderInfo>>;
}

/// What users call on an election handle (`Arc<dyn Election>`, from
/// [`crate::Coordinator::election`]): the value is any `impl Into<Bytes>` (a `&str`, a
/// `String`, a `Vec<u8>`, [`Bytes`]), passed as is.
impl<'a> dyn Election + 'a {
    /// Stands for election with `value` and waits until elected.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
    /// let coordinator = distsync::connect("memory://").await?;
    /// let session = coordinator.session().await?;
    /// let leadership = coordinator.election(&session, "scheduler")?.campaign("node-1").await?;
    /// println!("leading in term {}", leadership.term());
    /// leadership.resign().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a value above the store's
    /// [`max_value_size`](crate::Capabilities::max_value_size) (nothing sent);
    /// [`Error::SessionLost`] if the session ends while waiting, or the store's error.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. Dropping the future withdraws the candidacy (or
    /// leaves it to the lease) and never leaves this candidate leader.
    pub async fn campaign(&self, value: impl Into<Bytes> + Send) -> Result<Leadership> {
        self.campaign_bytes(value.into()).await
    }
}

/// The part of a leadership a backend provides.
#[async_trait]
pub trait Proclaim: Send + Sync {
    /// Replaces the leader's value, failing with [`Error::NotLeader`] if this candidate
    /// no longer leads: what a backend implements; users call [`Leadership::proclaim`].
    async fn proclaim_bytes(&self, value: Bytes) -> Result<()>;
}

/// Leadership won by a campaign ([`Election`]'s `campaign`).
///
/// Dropping it without [`Leadership::resign`] resigns in the background where a tokio
/// runtime is present, and by lease expiry otherwise. The [`Leadership::term`] is a
/// fencing token: see [`crate::LockGuard`] for why a leader should pass it to what it
/// writes, and for [`Leadership::while_held`], which runs work only while leader.
#[must_use = "leadership is resigned in the background as soon as it is dropped"]
pub struct Leadership {
    held: Held,
    term: FencingToken,
    proclaim: Arc<dyn Proclaim>,
    /// The election's hand-over records, where the coordinator's election layer
    /// offers hand-overs (see [`crate::hand_over`]).
    hand_over: Option<Arc<HandOverRecord>>,
    /// The store's limit on [`Leadership::proclaim`]'s value, where a
    /// [`crate::Coordinator`] handed the leadership out (see [`crate::value_size`]).
    value_limit: Option<crate::value_size::ValueLimit>,
}

impl fmt::Debug for Leadership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leadership")
            .field("key", &self.key())
            .field("term", &self.term)
            .field("lost", &self.held.known_lost())
            .finish()
    }
}

impl Leadership {
    /// Leadership over `key` in `term`. For backends, through `raw::leadership`.
    pub(crate) fn new(
        key: String,
        term: FencingToken,
        session: &Session,
        proclaim: Arc<dyn Proclaim>,
        resign: ReleaseFn,
    ) -> Self {
        Self {
            held: Held::new(key, session, resign),
            term,
            proclaim,
            hand_over: None,
            value_limit: None,
        }
    }

    /// This leadership, able to hand over through `record` (see [`crate::hand_over`]).
    pub(crate) fn with_hand_over(mut self, record: Arc<HandOverRecord>) -> Self {
        self.hand_over = Some(record);
        self
    }

    /// This leadership, its [`Leadership::proclaim`] refusing a value above `limit`.
    pub(crate) fn with_value_limit(mut self, limit: crate::value_size::ValueLimit) -> Self {
        self.value_limit = Some(limit);
        self
    }

    /// The election's hand-over records, if hand-overs are offered.
    pub(crate) fn hand_over_record(&self) -> Option<&Arc<HandOverRecord>> {
        self.hand_over.as_ref()
    }

    /// The term of this leadership (fencing token).
    pub fn term(&self) -> FencingToken {
        self.term
    }

    crate::guard::guard_accessors!(held);

    /// Publishes a new value while still leader.
    ///
    /// # Errors
    /// [`Error::NotLeader`] once the leadership is lost; [`Error::TooLarge`] for a value
    /// above the store's [`max_value_size`](crate::Capabilities::max_value_size)
    /// (nothing sent).
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it is one guarded write, so a dropped future has
    /// either published the value or not.
    pub async fn proclaim(&self, value: impl Into<Bytes> + Send) -> Result<()> {
        let value = value.into();
        crate::value_size::check(self.value_limit, "leader value", value.len())?;
        // Known losses only: asking would start the backend's loss watch, and the
        // store checks the hold in the same step as the write anyway.
        if self.held.known_lost() {
            return Err(Error::NotLeader);
        }
        self.proclaim.proclaim_bytes(value).await
    }

    /// Gives up leadership, letting the next candidate in.
    ///
    /// # Errors
    /// [`Error::SessionLost`] if leadership had already been lost, or the store's error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future part-way does not stop the resignation: it goes on in the
    /// background, as when the leadership is dropped.
    pub async fn resign(self) -> Result<()> {
        self.held.release().await
    }
}

/// A store's follower of one election: the leaders it finds, one at a time, which
/// [`observe_leaders`] makes into the stream of [`Election::observe`].
pub trait LeaderObserver: Send + 'static {
    /// The next leader to yield, waiting while there is none; an error ends the
    /// stream.
    ///
    /// # Cancel safety
    /// Must be cancel safe: it only reads and watches, writing nothing, so a dropped
    /// call (the stream drops one only when it is dropped itself) leaves nothing
    /// behind in the store.
    fn next_leader(&mut self) -> impl std::future::Future<Output = Result<LeaderInfo>> + Send;
}

/// The stream of [`Election::observe`] from a store's `observer`: its leaders in turn,
/// up to and including its first error, after which the stream ends (the observer is
/// dropped then), as the contract of `observe` says.
pub fn observe_leaders(observer: impl LeaderObserver) -> BoxStream<'static, Result<LeaderInfo>> {
    use futures::StreamExt as _;
    futures::stream::unfold(Some(observer), |state| async move {
        let mut observer = state?;
        match observer.next_leader().await {
            Ok(info) => Some((Ok(info), Some(observer))),
            Err(error) => Some((Err(error), None)),
        }
    })
    .boxed()
}
