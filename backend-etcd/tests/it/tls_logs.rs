//! No password in any log line: every `tracing` event (at TRACE, from distsync and the
//! client crates) of a successful and of a refused login over TLS is captured and
//! searched for the passwords (`DISTSYNC_ETCD_TLS_URL`).

use distsync_conformance::connect_checks::assert_logs_never_show;

#[tokio::test]
async fn logs_never_show_the_password() {
    let Some(raw) = distsync_conformance::server_url("DISTSYNC_ETCD_TLS_URL") else {
        return;
    };
    let (userinfo, _) = raw.split_once("://").unwrap().1.split_once('@').unwrap();
    let password = userinfo.split_once(':').unwrap().1.to_owned();
    let wrong_password = "not-the-password-9d2e";
    let wrong = raw.replace(&format!(":{password}@"), &format!(":{wrong_password}@"));
    let logs = assert_logs_never_show(&raw, &password, &wrong, wrong_password, |url| async move {
        distsync_etcd::backend(&url).await
    })
    .await;
    assert!(logs.contains(":***@"), "the URL is shown masked: {logs}");
}
