//! No password in any log line: every `tracing` event (at TRACE, from distsync and the
//! client crates) of a successful and of a refused SASL login over TLS is captured and
//! searched for the passwords (`DISTSYNC_ZOOKEEPER_TLS_URL`).
#![cfg(all(feature = "tls", feature = "sasl"))]

use distsync_conformance::connect_checks::assert_logs_never_show;

#[tokio::test]
async fn logs_never_show_the_password() {
    let Some(raw) = distsync_conformance::server_url("DISTSYNC_ZOOKEEPER_TLS_URL") else {
        return;
    };
    let url = url::Url::parse(&raw).unwrap();
    let password = url.password().unwrap().to_owned();
    let wrong_password = "not-the-password-3b8a";
    let mut wrong = url.clone();
    wrong.set_password(Some(wrong_password)).unwrap();
    let logs = assert_logs_never_show(
        url.as_str(),
        &password,
        wrong.as_str(),
        wrong_password,
        |url| async move { distsync_zookeeper::backend(&url).await },
    )
    .await;
    // The backend's "connected" event says the login went over TLS (its field is
    // read without the terminal colours a formatter may put around it).
    let plain = without_colours(&logs);
    assert!(
        plain.contains("tls = true") || plain.contains("tls=true"),
        "{logs}"
    );
}

/// `text` without ANSI SGR sequences (`ESC [ ... m`).
fn without_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}
