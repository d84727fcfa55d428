//! No password in any log line: every `tracing` event (at TRACE, from distsync and the
//! client crates) of a successful and of a refused login over TLS is captured and
//! searched for the passwords (`DISTSYNC_REDIS_TLS_URL`).

use distsync_conformance::connect_checks::assert_logs_never_show;

#[tokio::test]
async fn logs_never_show_the_password() {
    let Some(raw) = distsync_conformance::server_url("DISTSYNC_REDIS_TLS_URL") else {
        return;
    };
    let url = url::Url::parse(&raw).unwrap();
    let password = url.password().unwrap().to_owned();
    let wrong_password = "not-the-password-9d2e";
    let mut wrong = url.clone();
    wrong.set_password(Some(wrong_password)).unwrap();
    assert_logs_never_show(
        url.as_str(),
        &password,
        wrong.as_str(),
        wrong_password,
        |url| async move { distsync_redis::backend(&url).await },
    )
    .await;
}
