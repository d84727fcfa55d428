//! The server's clock, which queue ages go by: the server's time in microseconds since
//! the Unix epoch, one clock for every client.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distsync_kv::kv::Kv;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_is_the_servers_in_microseconds_since_the_epoch() {
    let Some((kv, url)) = store("").await else {
        return;
    };
    let first = kv.clock().await.unwrap().expect("the server has a clock");
    let other = connect(&url).await;
    let second = other
        .clock()
        .await
        .unwrap()
        .expect("the server has a clock");
    assert!(second >= first, "{second:?} before {first:?}");
    // The server runs beside the tests: a unit or epoch mistake is off by years, a
    // skewed machine clock by far less than an hour.
    let here = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let apart = here.abs_diff(second);
    assert!(apart < Duration::from_secs(3600), "{apart:?} apart");
    drop_tables(&kv, &url).await;
}
