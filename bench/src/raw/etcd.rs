//! etcd: a put-if-absent transaction with a lease, then a delete.

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

use crate::contender::{started, Cycler, Role, Started};
use crate::Result;

/// The lease TTL: etcd's `concurrency` default, and longer than a measurement
/// (`--case-secs`), since the lease is granted once and never renewed.
const LEASE_TTL_SECS: i64 = 60;

/// The label of the raw row.
pub const LABEL: &str = "raw: txn(create_revision==0 → put with lease) + delete";

/// The raw etcd cycle on its own client and lease.
struct RawEtcd {
    client: Client,
    lease: i64,
    key: String,
}

/// Connects to the endpoints of the distsync URL `url` and grants a lease.
pub async fn start(url: &str, name: &str) -> Started {
    let made = async {
        let mut client = client(url).await?;
        let lease = client.lease_grant(LEASE_TTL_SECS, None).await?.id();
        let key = format!("{name}/{lease:x}");
        Ok(RawEtcd { client, lease, key })
    };
    started(LABEL, Role::Raw, made.await)
}

/// An `etcd-client` client for the endpoints of the distsync URL `url`.
///
/// # Errors
/// A URL distsync would reject, or the connection error.
pub async fn client(url: &str) -> Result<Client> {
    let config = distsync::store::etcd::EtcdConfig::parse(url)?;
    Ok(Client::connect(config.endpoints(), None).await?)
}

#[async_trait]
impl Cycler for RawEtcd {
    async fn cycle(&mut self) -> Result<()> {
        let key = self.key.as_str();
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                "",
                Some(PutOptions::new().with_lease(self.lease)),
            )]);
        if !self.client.txn(txn).await?.succeeded() {
            return Err(format!("{key} already exists").into());
        }
        self.client.delete(key, None).await?;
        Ok(())
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        self.client.lease_revoke(self.lease).await?;
        Ok(())
    }
}
