//! No password in any log line: every `tracing` event (at TRACE, from distsync and the
//! client crates) of a successful and of a refused login over TLS is captured and
//! searched for the passwords (`DISTSYNC_REDIS_TLS_URL`).

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::info!("capture started");
    let backend = distsync_redis::backend(url.as_str()).await.unwrap();
    let session = distsync_core::Coordinator::new(backend)
        .session()
        .await
        .unwrap();
    session.close().await.unwrap();
    let error = distsync_redis::backend(wrong.as_str()).await.unwrap_err();
    tracing::warn!(%error, "refused");
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    // The backend's own "connected" event is captured (so the capture works), and
    // shows the server without the password.
    assert!(logs.contains("connected"), "{logs}");
    assert!(
        logs.contains("capture started") && logs.contains("refused"),
        "{logs}"
    );
    assert!(!logs.contains(&password), "the password is in the logs");
    assert!(
        !logs.contains(wrong_password),
        "the wrong password is in the logs"
    );
}
