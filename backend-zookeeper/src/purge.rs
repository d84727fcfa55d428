//! Counting and removing everything under a name prefix
//! ([`Backend::count_prefix`](distsync_core::Backend::count_prefix),
//! [`Backend::purge_prefix`](distsync_core::Backend::purge_prefix)).
//!
//! A name prefix `p` covers the names `p` and `p/...`, which keys.rs maps to the
//! subtree of `<root>/<kind>/<p>` for every kind: the count is the number of nodes in
//! those subtrees (the name's node included), and a purge deletes them children first,
//! since ZooKeeper refuses to delete a node that has children. The ancestors of the
//! prefix's nodes (`<root>/<kind>` and the nodes of shorter names) belong to other
//! names and stay.
//!
//! Both run on a short session of their own, closed when they return: they hold
//! nothing, and a purge must not depend on a caller's session.

use distsync_core::{Error, Name, Result};
use zookeeper_client as zk;

use crate::error::map;
use crate::keys::{self, Kind};
use crate::store::Shared;

/// How many times a purge walks a subtree again when a node gained a child between
/// the listing and its delete (a contender still entering).
const PURGE_ROUNDS: usize = 5;

/// The nodes of the subtree at `path` (`path` included), children before their
/// parent: the status walk's order (parents first) reversed. Empty if `path` does not
/// exist.
async fn subtree(client: &zk::Client, path: &str) -> Result<Vec<String>> {
    let walked = crate::status::walk(client, path).await?;
    Ok(walked.into_iter().rev().map(|(node, _)| node).collect())
}

/// The subtree roots of `prefix`, one per kind.
fn roots(shared: &Shared, prefix: &Name) -> Vec<String> {
    Kind::ALL
        .iter()
        .map(|kind| keys::path(shared.config.root(), *kind, prefix))
        .collect()
}

/// How many nodes [`purge_prefix`] would delete.
pub(crate) async fn count_prefix(shared: &Shared, prefix: &Name) -> Result<u64> {
    let client = shared.connect(crate::MIN_SESSION_TTL * 4).await?;
    let mut count = 0;
    for root in roots(shared, prefix) {
        count += subtree(&client, &root).await?.len() as u64;
    }
    Ok(count)
}

/// Deletes every node under `prefix`'s subtrees, children first; returns how many it
/// deleted.
pub(crate) async fn purge_prefix(shared: &Shared, prefix: &Name) -> Result<u64> {
    let client = shared.connect(crate::MIN_SESSION_TTL * 4).await?;
    let mut deleted = 0;
    for root in roots(shared, prefix) {
        for round in 1.. {
            let mut again = false;
            for node in subtree(&client, &root).await? {
                match client.delete(&node, None).await {
                    Ok(()) => deleted += 1,
                    // Gone meanwhile: an ephemeral contender's session ended.
                    Err(zk::Error::NoNode) => {}
                    // A child appeared since the listing: walk again.
                    Err(zk::Error::NotEmpty) => again = true,
                    Err(error) => return Err(map(error)),
                }
            }
            if !again {
                break;
            }
            if round == PURGE_ROUNDS {
                return Err(Error::backend(
                    crate::BACKEND,
                    format!("{root} kept gaining children while it was purged"),
                ));
            }
        }
    }
    tracing::debug!(%prefix, deleted, "zookeeper prefix purged");
    Ok(deleted)
}
