//! What the server says about itself
//! ([`Backend::describe_store`](distsync_core::Backend::describe_store)): its `INFO`
//! and the bucket's stream configuration.

use distsync_core::Result;

use crate::shared::Shared;

/// `nats_server_version`, `servers` (how many the URL names), the bucket's stream,
/// its replicas and storage, and the cluster the connected server belongs to, if any.
pub(crate) async fn describe(shared: &Shared) -> Result<Vec<(String, String)>> {
    let store = &shared.store;
    let info = store.client.server_info();
    let mut facts = vec![
        ("nats_server_version".to_owned(), info.version.clone()),
        (
            "servers".to_owned(),
            shared.config.servers().len().to_string(),
        ),
        ("stream".to_owned(), store.stream.clone()),
    ];
    if let Some(cluster) = info.cluster.clone() {
        facts.push(("cluster".to_owned(), cluster));
    }
    let config = store.stream_info().await?.config;
    facts.push(("replicas".to_owned(), config.num_replicas.to_string()));
    facts.push((
        "storage".to_owned(),
        format!("{:?}", config.storage).to_lowercase(),
    ));
    Ok(facts)
}
