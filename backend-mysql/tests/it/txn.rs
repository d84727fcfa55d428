//! Revisions, versions, compares, branches and ranges, as etcd's.

use bytes::Bytes;
use distsync_kv::kv::{Compare, CompareOp, Kv, Range, Txn, TxnOp, TxnOpResponse};

use crate::common::*;

/// The Kv contract every store runs ([`distsync_kv::contract_tests`]), each check on
/// tables of its own.
#[tokio::test]
async fn the_kv_contract_holds() {
    use distsync_kv::contract_tests as contract;
    macro_rules! on_fresh_tables {
        ($check:expr) => {{
            let Some((kv, url)) = store("").await else {
                return;
            };
            $check(&kv).await;
            drop_tables(&kv, &url).await;
        }};
    }
    on_fresh_tables!(contract::revisions_and_versions_follow_etcd);
    on_fresh_tables!(contract::one_txn_is_one_revision_and_no_change_is_no_revision);
    on_fresh_tables!(contract::compares_choose_the_branch_and_missing_keys_are_zero);
    on_fresh_tables!(contract::a_branch_sees_its_own_writes_under_one_revision);
    on_fresh_tables!(|kv| contract::invalid_transactions_fail_typed_and_apply_nothing(kv, "mysql"));
    on_fresh_tables!(contract::ranges_sort_limit_count_and_bound_as_etcd);
    on_fresh_tables!(|kv| contract::compares_over_a_prefix_hold_for_every_key_under_it(kv, ""));
}

/// Writers from two clients, each a compare-and-swap loop on one counter: commits in
/// revision order and compares under the revision lock lose no increment.
#[tokio::test]
async fn concurrent_compare_and_swaps_lose_nothing() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    let other = connect(&url).await;
    put_one(&kv, "n", "0").await;
    tokio::join!(increments(&kv), increments(&other), increments(&kv));
    let n = get(&kv, "n").await.unwrap();
    assert_eq!(n.value, Bytes::from("75"));
    assert_eq!(n.version, 76);
    drop_tables(&kv, &url).await;
}

/// 25 increments of `n` by compare-and-swap.
async fn increments(kv: &distsync_mysql::MysqlKv) {
    let mut done = 0;
    while done < 25 {
        let current = get(kv, "n").await.unwrap();
        let value: u64 = std::str::from_utf8(&current.value)
            .unwrap()
            .parse()
            .unwrap();
        let swapped = kv
            .txn(
                Txn::when(vec![Compare::mod_revision(
                    "n",
                    CompareOp::Equal,
                    current.mod_revision,
                )])
                .and_then(vec![put("n", &(value + 1).to_string())]),
            )
            .await
            .unwrap();
        if swapped.succeeded {
            done += 1;
        }
    }
}

/// Prefix deletes from one client racing puts of new keys under the prefix from
/// four others: every key put is either counted by exactly one delete or still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefix_deletes_racing_puts_count_every_key_once() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    let mut writers = Vec::new();
    for writer in 0..4 {
        let client = connect(&url).await;
        writers.push(tokio::spawn(async move {
            for i in 0..PUTS {
                put_one(&client, &format!("p/{writer}/{i}"), "v").await;
            }
        }));
    }
    let mut deleted = 0;
    while writers.iter().any(|writer| !writer.is_finished()) {
        let response = kv
            .txn(Txn::default().and_then(vec![TxnOp::Delete {
                key: "p/".to_owned(),
                prefix: true,
            }]))
            .await
            .unwrap();
        if let TxnOpResponse::Delete(count) = response.responses[0] {
            deleted += count;
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let left = kv.range(Range::prefix("p/")).await.unwrap().count;
    assert_eq!(deleted + i64::try_from(left).unwrap(), 4 * PUTS);
    drop_tables(&kv, &url).await;
}

/// How many keys each writer of [`prefix_deletes_racing_puts_count_every_key_once`] puts.
const PUTS: i64 = 100;
