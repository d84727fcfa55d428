//! What every console test needs: a store, the console served on a free loopback port,
//! HTTP calls to it, names of its own and bounded waits.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use distsync::store::console::{serve as serve_console, ActionsToken, ConsoleOptions};
use distsync::Coordinator;
use distsync_conformance::server_url;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rstest_reuse::template;
use serde_json::Value;
use tokio::task::JoinHandle;

/// How long a test waits for what a store or a browser does.
pub(crate) const BOUND: Duration = Duration::from_secs(30);

/// The actions token of the consoles that act.
pub(crate) const TOKEN: &str = "console-test-token-0123456789";

/// A coordinator of `store`: `memory`, or the server the environment variable `store`
/// names (`None`, the test skipping, when it names none outside CI).
pub(crate) async fn coordinator(store: &str) -> Option<Coordinator> {
    let url = match store {
        "memory" => "memory://".to_owned(),
        var => server_url(var)?,
    };
    Some(distsync::connect(&url).await.expect("the store answers"))
}

/// A name prefix no other test, and no earlier run against the same server, uses.
pub(crate) fn prefix(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .subsec_nanos();
    format!(
        "console-{test}-{}-{nanos}-{}/",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Options for a console over `prefix` that acts with [`TOKEN`] and reads at most
/// every 100 ms (so that a test sees a change soon after it is made).
pub(crate) fn acting(prefix: &str) -> ConsoleOptions {
    ConsoleOptions::new()
        .prefix(prefix)
        .refresh(Duration::from_millis(100))
        .actions(ActionsToken::new(TOKEN).expect("a valid token"))
}

/// A console served on a free loopback port until dropped.
pub(crate) struct Served {
    /// `http://127.0.0.1:PORT/`.
    pub(crate) base: String,
    task: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the console over `coordinator` with `options`.
pub(crate) async fn serve(coordinator: Coordinator, options: ConsoleOptions) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let address = listener.local_addr().expect("the bound address");
    let task = tokio::spawn(async move {
        serve_console(listener, coordinator, options)
            .await
            .expect("the console serves");
    });
    Served {
        base: format!("http://{address}/"),
        task,
    }
}

/// One HTTP request: `GET` without a body, else `POST` of the JSON `body` with the
/// token `token`. Returns the status and the body.
async fn call(url: &str, body: Option<&Value>, token: Option<&str>) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut request = axum::http::Request::builder().uri(url);
    let payload = match body {
        Some(body) => {
            request = request
                .method("POST")
                .header("content-type", "application/json")
                .header("x-distsync-operator", "console-tests");
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            body.to_string()
        }
        None => String::new(),
    };
    let request = request
        .body(Full::new(bytes::Bytes::from(payload)))
        .expect("a valid request");
    let response = tokio::time::timeout(BOUND, client.request(request))
        .await
        .unwrap_or_else(|_| panic!("{url} did not answer within {BOUND:?}"))
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the whole body")
        .to_bytes();
    (
        status,
        String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
    )
}

/// `GET base + path`: the status and the body.
pub(crate) async fn get(served: &Served, path: &str) -> (u16, String) {
    call(&format!("{}{path}", served.base), None, None).await
}

/// `GET base + path` answered with 200 and JSON.
pub(crate) async fn get_json(served: &Served, path: &str) -> Value {
    let (status, body) = get(served, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// `POST base + path` of `body` with `token`: the status and the JSON answer.
pub(crate) async fn post(
    served: &Served,
    path: &str,
    body: Value,
    token: Option<&str>,
) -> (u16, Value) {
    let (status, text) = call(&format!("{}{path}", served.base), Some(&body), token).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("POST {path}: not JSON: {text}")),
    )
}

/// Polls `check` until it answers `Some`, for at most [`BOUND`], and returns that; panics
/// naming `what` when the bound passes.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The board's section `section` entry named `name` (`name` field), if listed.
pub(crate) fn entry<'a>(board: &'a Value, section: &str, name: &str) -> Option<&'a Value> {
    board[section]["items"]
        .as_array()?
        .iter()
        .find(|item| item["name"] == name)
}

/// Waits for `future`, for at most [`BOUND`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {BOUND:?}"))
}

/// The stores every console test runs on: memory, and each server the environment
/// names (a case skips, loudly, when its variable is unset outside CI). Apply it with
/// `#[apply(every_store)]` above the test's `#[tokio::test]`.
#[template]
#[rstest]
#[case::memory("memory")]
#[case::etcd("DISTSYNC_ETCD_URL")]
#[case::redis("DISTSYNC_REDIS_URL")]
#[case::postgres("DISTSYNC_POSTGRES_URL")]
#[case::zookeeper("DISTSYNC_ZOOKEEPER_URL")]
#[case::mysql("DISTSYNC_MYSQL_URL")]
#[case::nats("DISTSYNC_NATS_URL")]
pub(crate) fn every_store(#[case] store: &str) {}
