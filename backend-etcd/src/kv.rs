//! [`EtcdKv`]: distsync's revisioned key-value model ([`Kv`]) on etcd's v3 API.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use distsync_core::{Error, KeepAlive, Result};
use distsync_kv::kv::{
    Compare, CompareOp, CompareTarget, Kv, LeaseId, Range, RangeResponse, Revision, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchResponse,
};
use etcd_client::{Client, ConnectOptions, DeleteOptions, GetOptions, PutOptions};
use futures::stream::BoxStream;

use crate::error::{classify, is_lease_not_found, protocol, to_error, BACKEND};
use crate::keepalive::KeepAlives;
use crate::key_value::key_value;
use crate::watch::Watches;
use distsync_core::raw::DEFAULT_REQUEST_TIMEOUT;
use distsync_core::raw::{Idempotence, RetryPolicy};

/// How long connecting to one member may take before the client tries another.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 keepalive pings on connections with open streams: a member that stops
/// answering is given up after `KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT`. etcd refuses
/// pings more often than every 5 s (`--grpc-keepalive-min-time`), and pings on idle
/// connections altogether, so neither is configured tighter.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The revisioned store of [`distsync_kv::kv`] on an etcd cluster, through the
/// `etcd-client` crate.
///
/// Requests are balanced over every endpoint given. A request that could not be sent
/// (its member is down) is retried on another member, as is a read, lease or watch
/// request that failed on a broken connection; transactions that may have been applied
/// are not repeated, and fail with [`Error::Connection`]. Retries stop after a few
/// seconds.
///
/// Every watch of one `EtcdKv` and its clones shares one gRPC watch stream, and every
/// lease renewal one gRPC keepalive stream (as Go's `clientv3`); a renewal unanswered
/// within the request timeout (10 s; the URL's `timeout=`) gives its stream up.
///
/// Every request requires a leader (gRPC metadata `hasleader: true`, as Go's
/// `clientv3.WithRequireLeader`): a member cut off from the raft leader refuses new
/// requests at once, so they are retried on another member, and cancels open watch
/// streams after a few election timeouts without a leader, instead of keeping them
/// open and silent. Waiters then re-read and watch again (riding out the errors while
/// their session lives), so they make progress as soon as a member with a leader
/// answers. [`EtcdKv::connect`] sets this; a client given to [`EtcdKv::from_client`]
/// should be built with `ConnectOptions::with_require_leader(true)` for the same.
///
/// Keys are full store keys; the namespace is added by
/// [`KvBackend`](distsync_kv::recipes::KvBackend). Keys that are not UTF-8 (written
/// by another program) are read lossily. Revisions are the store's own: the backend
/// puts it under a [`ForgetfulKv`](distsync_kv::forgetful::ForgetfulKv), which tells
/// a store that forgot from them, from the cluster id ([`Kv::identity`]) and from its
/// epoch marker (see the crate docs, "When the store forgets").
#[derive(Clone)]
pub struct EtcdKv {
    client: Client,
    retry: RetryPolicy,
    watches: Arc<Watches>,
    keepalives: Arc<KeepAlives>,
    /// The cluster id of the latest answer with a header (0: none yet).
    cluster_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdKv")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl EtcdKv {
    /// Connects to the members at `endpoints` (`host:port` each) and checks that one
    /// of them answers.
    ///
    /// Cancel-safe: dropping the future drops the connection attempt.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no endpoints, [`Error::Connection`] when no
    /// member answers within a few seconds.
    pub async fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::InvalidArgument(
                "etcd: at least one endpoint is needed".into(),
            ));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(false)
            // Go's `clientv3.WithRequireLeader` (see the type's docs).
            .with_require_leader(true);
        let client =
            Client::connect(endpoints, Some(options))
                .await
                .map_err(|error| match error {
                    etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_) => {
                        Error::InvalidArgument(format!("etcd endpoints: {error}"))
                    }
                    error => to_error(error),
                })?;
        let kv = Self::from_client(client);
        kv.probe().await?;
        Ok(kv)
    }

    /// Wraps an already connected client (no check is made that it answers), built as
    /// the type's docs say.
    pub fn from_client(client: Client) -> Self {
        Self {
            watches: Arc::new(Watches::new(client.clone())),
            keepalives: Arc::new(KeepAlives::new(client.clone(), DEFAULT_REQUEST_TIMEOUT)),
            client,
            retry: RetryPolicy::default(),
            cluster_id: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bounds how long a lease renewal waits for etcd's answer (the URL's `timeout=`);
    /// a renewal unanswered by then discards the shared keepalive stream.
    pub(crate) fn with_keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalives = Arc::new(KeepAlives::new(self.client.clone(), timeout));
        self
    }

    /// Records the cluster id of an answer's header ([`Kv::identity`]).
    fn seen(&self, header: Option<&etcd_client::ResponseHeader>) {
        let id = header.map(etcd_client::ResponseHeader::cluster_id);
        if let Some(id) = id.filter(|&id| id != 0) {
            self.cluster_id.store(id, Ordering::Relaxed);
        }
    }

    /// The underlying client, e.g. to compact or to inspect the cluster.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sets how failing requests are retried across members before their error is
    /// returned (default [`RetryPolicy::default`]: a 3 s one-shot budget, which
    /// [`RetryPolicy::with_budget`] and [`RetryPolicy::within`] change).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// One cheap linearizable read, to learn whether a member answers.
    async fn probe(&self) -> Result<()> {
        self.request("connect", Idempotence::Idempotent, || {
            read_count(&self.client, "\0")
        })
        .await
    }

    /// Sends a request through [`EtcdKv::with_retry`]'s policy; `what` names it in
    /// debug logs.
    async fn request<T, F>(
        &self,
        what: &'static str,
        idempotence: Idempotence,
        call: impl FnMut() -> F,
    ) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.retry
            .one_shot(what, idempotence, classify, call)
            .await
            .map_err(to_error)
    }
}

/// One cheap linearizable read of `key` (its count alone), to learn whether a member
/// answers.
pub(crate) async fn read_count(
    client: &Client,
    key: &str,
) -> std::result::Result<(), etcd_client::Error> {
    let options = GetOptions::new().with_count_only();
    client.kv_client().get(key, Some(options)).await.map(drop)
}

fn get_options(range: &Range) -> Result<GetOptions> {
    let mut options = GetOptions::new();
    if let Some(end) = &range.range_end {
        options = options.with_range(end.as_str());
    } else if range.prefix {
        options = options.with_prefix();
    }
    if let Some((target, order)) = range.sort {
        let target = match target {
            SortTarget::Key => etcd_client::SortTarget::Key,
            SortTarget::CreateRevision => etcd_client::SortTarget::Create,
            SortTarget::ModRevision => etcd_client::SortTarget::Mod,
        };
        let order = match order {
            SortOrder::Ascend => etcd_client::SortOrder::Ascend,
            SortOrder::Descend => etcd_client::SortOrder::Descend,
        };
        options = options.with_sort(target, order);
    }
    if let Some(limit) = range.limit {
        // `Some(0)` means no limit, in distsync's model as in etcd.
        let limit = i64::try_from(limit)
            .map_err(|_| Error::InvalidArgument(format!("range limit {limit} is too large")))?;
        options = options.with_limit(limit);
    }
    if let Some(revision) = range.max_create_revision {
        options = options.with_max_create_revision(revision);
    }
    if let Some(revision) = range.max_mod_revision {
        options = options.with_max_mod_revision(revision);
    }
    if let Some(revision) = range.revision {
        options = options.with_revision(revision);
    }
    Ok(options)
}

fn range_response(
    response: &etcd_client::GetResponse,
    fallback_revision: Revision,
) -> RangeResponse {
    RangeResponse {
        kvs: response.kvs().iter().map(key_value).collect(),
        count: usize::try_from(response.count()).unwrap_or(0),
        revision: response
            .header()
            .map_or(fallback_revision, |header| header.revision()),
    }
}

/// `compare` as etcd's client sends it: what every transaction of this client
/// compares, and what a caller's own transaction compares to agree with it.
pub(crate) fn compare(compare: &Compare) -> etcd_client::Compare {
    let op = match compare.op {
        CompareOp::Equal => etcd_client::CompareOp::Equal,
        CompareOp::NotEqual => etcd_client::CompareOp::NotEqual,
        CompareOp::Less => etcd_client::CompareOp::Less,
        CompareOp::Greater => etcd_client::CompareOp::Greater,
    };
    let key = compare.key.as_str();
    let sent = match compare.target {
        CompareTarget::CreateRevision => {
            etcd_client::Compare::create_revision(key, op, compare.value)
        }
        CompareTarget::ModRevision => etcd_client::Compare::mod_revision(key, op, compare.value),
        CompareTarget::Version => etcd_client::Compare::version(key, op, compare.value),
    };
    if compare.prefix {
        sent.with_prefix()
    } else {
        sent
    }
}

fn txn_op(op: &TxnOp) -> Result<etcd_client::TxnOp> {
    Ok(match op {
        TxnOp::Put {
            key,
            value,
            lease,
            ignore_lease,
        } => {
            let mut options = PutOptions::new();
            if *ignore_lease {
                options = options.with_ignore_lease();
            } else if *lease != 0 {
                options = options.with_lease(*lease);
            }
            etcd_client::TxnOp::put(key.as_str(), value.as_ref(), Some(options))
        }
        TxnOp::Delete { key, prefix } => {
            let options = if *prefix {
                DeleteOptions::new().with_prefix()
            } else {
                DeleteOptions::new()
            };
            etcd_client::TxnOp::delete(key.as_str(), Some(options))
        }
        TxnOp::Range(range) => {
            etcd_client::TxnOp::get(range.key.as_str(), Some(get_options(range)?))
        }
    })
}

/// Whole seconds, rounded up, at least one.
fn ttl_seconds(ttl: Duration) -> Result<i64> {
    let seconds = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(seconds.max(1))
        .map_err(|_| Error::InvalidArgument(format!("lease ttl {ttl:?} is too long")))
}

#[async_trait]
impl Kv for EtcdKv {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The version of the member that answers (`etcd_version`) and the number of
    /// members (`cluster_size`); a read the member refuses (no permission) is left out.
    async fn describe(&self) -> Result<Vec<(String, String)>> {
        let mut facts = Vec::new();
        match self.client.maintenance_client().status().await {
            Ok(status) => facts.push(("etcd_version".to_owned(), status.version().to_owned())),
            Err(error) => tracing::debug!(%error, "etcd status refused"),
        }
        match self.client.cluster_client().member_list().await {
            Ok(members) => {
                facts.push((
                    "cluster_size".to_owned(),
                    members.members().len().to_string(),
                ));
            }
            Err(error) => tracing::debug!(%error, "etcd member list refused"),
        }
        Ok(facts)
    }

    fn identity(&self) -> u64 {
        self.cluster_id.load(Ordering::Relaxed)
    }

    async fn range(&self, range: Range) -> Result<RangeResponse> {
        let options = get_options(&range)?;
        let response = self
            .request("range", Idempotence::Idempotent, || {
                let mut kv = self.client.kv_client();
                let options = options.clone();
                let key = range.key.clone();
                async move { kv.get(key, Some(options)).await }
            })
            .await?;
        self.seen(response.header());
        Ok(range_response(&response, 0))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let success = txn.success.iter().map(txn_op).collect::<Result<Vec<_>>>()?;
        let failure = txn.failure.iter().map(txn_op).collect::<Result<Vec<_>>>()?;
        let request = etcd_client::Txn::new()
            .when(txn.compares.iter().map(compare).collect::<Vec<_>>())
            .and_then(success)
            .or_else(failure);
        let read_only = txn
            .success
            .iter()
            .chain(&txn.failure)
            .all(|op| matches!(op, TxnOp::Range(_)));
        let idempotence = if read_only {
            Idempotence::Idempotent
        } else {
            Idempotence::Mutation
        };
        let response = self
            .request("txn", idempotence, || {
                let mut kv = self.client.kv_client();
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await?;
        self.seen(response.header());
        let revision = response.header().map_or(0, |header| header.revision());
        let responses = response
            .op_responses()
            .into_iter()
            .map(|op| match op {
                etcd_client::TxnOpResponse::Put(_) => Ok(TxnOpResponse::Put),
                etcd_client::TxnOpResponse::Delete(delete) => {
                    Ok(TxnOpResponse::Delete(delete.deleted()))
                }
                etcd_client::TxnOpResponse::Get(get) => {
                    Ok(TxnOpResponse::Range(range_response(&get, revision)))
                }
                etcd_client::TxnOpResponse::Txn(_) => Err(protocol(
                    "etcd answered a nested transaction that was not sent",
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TxnResponse {
            succeeded: response.succeeded(),
            responses,
            revision,
        })
    }

    async fn watch(
        &self,
        key: &str,
        prefix: bool,
        start_revision: Revision,
    ) -> Result<BoxStream<'static, Result<WatchResponse>>> {
        self.watches
            .open(&self.retry, key, prefix, start_revision)
            .await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let seconds = ttl_seconds(ttl)?;
        // Repeating a grant whose answer was lost leaks a lease nobody renews; it
        // expires after its TTL, holding nothing.
        let response = self
            .request("lease grant", Idempotence::Idempotent, || {
                let mut lease = self.client.lease_client();
                async move { lease.grant(seconds, None).await }
            })
            .await?;
        if !response.error().is_empty() {
            return Err(protocol(format!("lease grant: {}", response.error())));
        }
        self.seen(response.header());
        Ok(response.id())
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<KeepAlive> {
        // On the client's shared keepalive stream (see `keepalive`); a renewal whose
        // stream broke is retried on a new one.
        let outcome = self
            .request("lease keepalive", Idempotence::Idempotent, || {
                self.keepalives.renew(lease)
            })
            .await?;
        if outcome == KeepAlive::Gone {
            tracing::debug!(
                backend = BACKEND,
                lease = format_args!("{lease:x}"),
                "lease is gone"
            );
        }
        Ok(outcome)
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.request("lease revoke", Idempotence::Idempotent, || {
            let mut client = self.client.lease_client();
            async move {
                match client.revoke(lease).await {
                    Ok(_) => Ok(()),
                    Err(error) if is_lease_not_found(&error) => Ok(()),
                    Err(error) => Err(error),
                }
            }
        })
        .await
    }

    /// etcd's `LeaseTimeToLive`: whole seconds, rounded down by the leader (the lease
    /// ends within a second after), and a `TTL` of -1 for a lease it does not know.
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>> {
        let response = self
            .request("lease time to live", Idempotence::Idempotent, || {
                let mut client = self.client.lease_client();
                async move {
                    match client.time_to_live(lease, None).await {
                        Ok(response) => Ok(Some(response)),
                        Err(error) if is_lease_not_found(&error) => Ok(None),
                        Err(error) => Err(error),
                    }
                }
            })
            .await?;
        let Some(response) = response else {
            return Ok(None);
        };
        self.seen(response.header());
        Ok(u64::try_from(response.ttl()).ok().map(Duration::from_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::ZERO).unwrap(), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1)).unwrap(), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)).unwrap(), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(60)).unwrap(), 60);
        assert!(ttl_seconds(Duration::MAX).is_err());
    }

    #[test]
    fn limits_and_bounds_pass_through() {
        let range = Range::prefix("a")
            .sorted(SortTarget::CreateRevision, SortOrder::Descend, 0)
            .max_create_revision(0);
        assert!(get_options(&range).is_ok());
    }
}
