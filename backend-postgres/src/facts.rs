//! What the backend tells of its server beside the matrix
//! ([`Backend::describe_store`](distsync_core::Backend::describe_store)): the version
//! and the setting that decides whether a commit survives a crash or a failover.

use distsync_core::Result;

use crate::error::map;
use crate::store::Shared;

/// `server_version` and `synchronous_commit` (`current_setting`, which every role may
/// read); under unflushed grants, `grants` too, since grants then do not wait for the
/// flush whatever `synchronous_commit` says.
pub(crate) async fn describe(shared: &Shared) -> Result<Vec<(String, String)>> {
    let (version, synchronous_commit): (String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('synchronous_commit')",
    )
    .fetch_one(&shared.pool)
    .await
    .map_err(map)?;
    let mut facts = vec![
        ("server_version".to_owned(), version),
        ("synchronous_commit".to_owned(), synchronous_commit),
    ];
    if shared.sentinel.enabled() {
        facts.push((
            "grants".to_owned(),
            "unflushed: committed without waiting for the flush; a crash or a promotion \
             may lose an acknowledged grant, whose holder then gets lost()"
                .to_owned(),
        ));
    }
    Ok(facts)
}
