//! etcd: a put-if-absent transaction with a lease, then a delete.

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

use crate::cycle::{Cycler, Role, Unavailable};
use crate::Result;

/// The lease TTL, as a distsync session's default.
const LEASE_TTL_SECS: i64 = 60;

/// The raw etcd cycle on its own client and lease.
pub struct RawEtcd {
    client: Client,
    lease: i64,
    key: String,
}

/// The label of this row.
pub const LABEL: &str = "raw: txn(create_revision==0 → put with lease) + delete";

impl RawEtcd {
    /// Connects to the endpoints of the distsync URL `url` and grants a lease.
    pub async fn start(url: &str, name: &str) -> std::result::Result<Box<dyn Cycler>, Unavailable> {
        Self::connect(url, name)
            .await
            .map(|raw| Box::new(raw) as Box<dyn Cycler>)
            .map_err(|error| (LABEL.to_owned(), Role::Raw, error))
    }

    async fn connect(url: &str, name: &str) -> Result<Self> {
        let mut client = client(url).await?;
        let lease = client.lease_grant(LEASE_TTL_SECS, None).await?.id();
        Ok(Self {
            client,
            lease,
            key: format!("{name}/{lease:x}"),
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
        LABEL.into()
    }

    fn role(&self) -> Role {
        Role::Raw
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
        if !self.client.txn(txn).await?.succeeded() {
            return Err(format!("{} already exists", self.key).into());
        }
        self.client.delete(self.key.as_str(), None).await?;
        Ok(())
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        self.client.lease_revoke(self.lease).await?;
        Ok(())
    }
}
