//! What the backend tells of its server beside the matrix
//! ([`Backend::describe_store`](distsync_core::Backend::describe_store)): the version
//! and the setting that decides whether a commit survives a crash or a failover.

use distsync_core::Result;

use crate::error::map;
use crate::store::Shared;

/// `server_version` and `synchronous_commit` (`current_setting`, which every role may
/// read).
pub(crate) async fn describe(shared: &Shared) -> Result<Vec<(String, String)>> {
    let (version, synchronous_commit): (String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('synchronous_commit')",
    )
    .fetch_one(&shared.pool)
    .await
    .map_err(map)?;
    Ok(vec![
        ("server_version".to_owned(), version),
        ("synchronous_commit".to_owned(), synchronous_commit),
    ])
}
