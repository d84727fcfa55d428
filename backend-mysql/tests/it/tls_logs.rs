//! No password in any log line: every `tracing` event (at TRACE, from distsync and
//! sqlx) of a successful and of a refused login over TLS is captured and searched for
//! the passwords (`DISTSYNC_MYSQL_TLS_URL`).
//!
//! The capture is the test thread's subscriber: run the test in a process of its own,
//! as nextest does. Beside other tests' threads, `tracing`'s cache of which event
//! sites are enabled can miss a subscriber that only one thread has, and the events
//! the capture checks for go unseen.

use distsync_conformance::connect_checks::assert_logs_never_show;
use distsync_mysql::MysqlConfig;

use crate::tls_auth::{cipher_then_drop_tables, password, tls_url};

// One thread: the subscriber is the thread's default, and the backend's tasks run on it.
#[tokio::test]
async fn logs_never_show_the_password() {
    let Some(url) = tls_url() else { return };
    let password = password(&url);
    let wrong_password = "not-the-password-c41d";
    let mut wrong = url.clone();
    wrong.set_password(Some(wrong_password)).unwrap();
    assert_logs_never_show(
        url.as_str(),
        &password,
        wrong.as_str(),
        wrong_password,
        |url| async move { distsync_mysql::backend(&url).await },
    )
    .await;
    cipher_then_drop_tables(&MysqlConfig::parse(url.as_str()).unwrap()).await;
}
