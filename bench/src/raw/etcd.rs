//! etcd: a put-if-absent transaction with a lease, then a delete.

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::task::JoinHandle;

use crate::contender::{Cycler, Role, Unavailable};
use crate::Result;

/// The lease TTL, as a distsync session's default.
const LEASE_TTL_SECS: i64 = 60;

/// The label of the raw row.
pub const LABEL: &str = "raw: txn(create_revision==0 → put with lease) + delete";
/// The label of the diagnostic row.
pub const WATCHED_LABEL: &str = "raw + a watch on the key while held (as distsync's guard)";

/// The raw etcd cycle on its own client and lease; as a diagnostic, with a watch on
/// the key opened (in the background) once it is put, as distsync's guard does to
/// notice the loss of its key, and dropped at the release.
pub struct RawEtcd {
    client: Client,
    lease: i64,
    key: String,
    watched: bool,
}

impl std::fmt::Debug for RawEtcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEtcd")
            .field("lease", &self.lease)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RawEtcd {
    /// Connects to the endpoints of the distsync URL `url` and grants a lease.
    pub async fn start(
        url: &str,
        name: &str,
        watched: bool,
    ) -> std::result::Result<Box<dyn Cycler>, Unavailable> {
        let (label, role) = if watched {
            (WATCHED_LABEL, Role::Diagnostic)
        } else {
            (LABEL, Role::Raw)
        };
        Self::connect(url, name, watched)
            .await
            .map(|raw| Box::new(raw) as Box<dyn Cycler>)
            .map_err(|error| (label.to_owned(), role, error))
    }

    async fn connect(url: &str, name: &str, watched: bool) -> Result<Self> {
        let mut client = client(url).await?;
        let lease = client.lease_grant(LEASE_TTL_SECS, None).await?.id();
        Ok(Self {
            client,
            lease,
            key: format!("{name}/{lease:x}"),
            watched,
        })
    }

    /// Opens a watch on the key from `from` in the background, as distsync's guard
    /// does, and keeps it until aborted.
    fn watch(&self, from: i64) -> JoinHandle<()> {
        let mut watcher = self.client.watch_client();
        let key = self.key.clone();
        tokio::spawn(async move {
            let options = WatchOptions::new().with_start_revision(from);
            if let Ok(mut stream) = watcher.watch(key, Some(options)).await {
                while let Ok(Some(_)) = stream.message().await {}
            }
        })
    }
}

/// An `etcd-client` client for the endpoints of the distsync URL `url`.
///
/// # Errors
/// A URL distsync would reject, or the connection error.
pub async fn client(url: &str) -> Result<Client> {
    let config = distsync::etcd::EtcdConfig::parse(url)?;
    Ok(Client::connect(config.endpoints(), None).await?)
}

#[async_trait]
impl Cycler for RawEtcd {
    fn label(&self) -> String {
        if self.watched { WATCHED_LABEL } else { LABEL }.into()
    }

    fn role(&self) -> Role {
        if self.watched {
            Role::Diagnostic
        } else {
            Role::Raw
        }
    }

    async fn cycle(&mut self) -> Result<()> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                self.key.as_str(),
                "",
                Some(PutOptions::new().with_lease(self.lease)),
            )]);
        let put = self.client.txn(txn).await?;
        if !put.succeeded() {
            return Err(format!("{} already exists", self.key).into());
        }
        let watch = match (self.watched, put.header()) {
            (true, Some(header)) => Some(self.watch(header.revision() + 1)),
            _ => None,
        };
        self.client.delete(self.key.as_str(), None).await?;
        if let Some(watch) = watch {
            watch.abort();
        }
        Ok(())
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        self.client.lease_revoke(self.lease).await?;
        Ok(())
    }
}
