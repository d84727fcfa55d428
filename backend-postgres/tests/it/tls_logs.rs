//! No password in any log line: every `tracing` event (at TRACE, from distsync and
//! sqlx) of a successful and of a refused login over TLS is captured and searched for
//! the passwords (`DISTSYNC_POSTGRES_TLS_URL`).

use distsync_conformance::connect_checks::assert_logs_never_show;

// One thread: the subscriber is the thread's default, and the backend's tasks run on it.
#[tokio::test]
async fn logs_never_show_the_password() {
    let Some(url) = crate::tls_auth::tls_url_to_connect() else {
        return;
    };
    let password = url.password().unwrap().to_owned();
    let wrong_password = "not-the-password-0e6b";
    let mut wrong = url.clone();
    wrong.set_password(Some(wrong_password)).unwrap();
    assert_logs_never_show(
        url.as_str(),
        &password,
        wrong.as_str(),
        wrong_password,
        |url| async move { distsync_postgres::backend(&url).await },
    )
    .await;
}
