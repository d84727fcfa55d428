//! The Kv contract's checks that run on a shared server, against etcd itself
//! (`DISTSYNC_ETCD_URL`): the behaviour the other stores' checks hold them to is
//! etcd's own.

use crate::common::{endpoints_of, etcd_url, unique};

use distsync::store::etcd::EtcdKv;
use distsync_kv::contract_tests as contract;

#[tokio::test]
async fn compares_over_a_prefix_are_etcds() {
    let Some(url) = etcd_url() else {
        return;
    };
    let endpoints = endpoints_of(&url);
    let kv = EtcdKv::connect(&endpoints.split(',').collect::<Vec<_>>())
        .await
        .unwrap();
    let root = format!("distsync-test/kv-contract/{}/", unique("prefix"));
    contract::compares_over_a_prefix_hold_for_every_key_under_it(&kv, &root).await;
}
