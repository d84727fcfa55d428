//! A store the runner cannot reach is reported as such, with its own exit status (3),
//! never as a violated guarantee: at connect (a closed port: no matrix), and while
//! cases run (a proxy in front of the shared Redis that goes away after the runner
//! connected: the matrix shows `**UNREACHABLE**` cells).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A port nothing listens on: one this test bound and let go.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
    let port = listener.local_addr().expect("an address").port();
    drop(listener);
    port
}

fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_distsync-conformance"))
}

#[test]
fn a_closed_port_exits_3_naming_the_store_unreachable() {
    let port = closed_port();
    let mut urls = Vec::new();
    if cfg!(feature = "redis") {
        urls.push(format!("redis://127.0.0.1:{port}/0?connect_timeout=2s"));
    }
    if cfg!(feature = "postgres") {
        urls.push(format!(
            "postgres://conformance:secret-word@127.0.0.1:{port}/none?connect_timeout=2s"
        ));
    }
    for url in urls {
        let output = runner()
            .args([
                "--backend",
                &url,
                "--profile",
                "safe",
                "--case",
                "lock_try_lock",
            ])
            .output()
            .expect("running the runner");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{url}: {stderr}");
        assert!(output.stdout.is_empty(), "no matrix: {url}");
        assert!(
            stderr.contains("store unreachable: cannot connect to"),
            "{url}: {stderr}"
        );
        assert!(!stderr.contains("VIOLATED"), "{stderr}");
        assert!(
            !stderr.contains("secret-word"),
            "the password leaked: {stderr}"
        );
    }
}

/// Forwards connections from `listener` to `upstream` until `cut` is notified, then
/// closes every connection, tells `closed`, and from then on closes each new
/// connection at once. The port stays bound to the proxy, so that no other process
/// (another test's server or proxy) can take it and answer the runner in the store's
/// place.
async fn proxy(
    listener: TcpListener,
    upstream: String,
    cut: Arc<Notify>,
    closed: tokio::sync::oneshot::Sender<()>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = cut.notified() => break,
            accepted = listener.accept() => {
                let Ok((mut inbound, _)) = accepted else { break };
                let upstream = upstream.clone();
                tasks.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }
    }
    tasks.shutdown().await;
    let _ = closed.send(());
    while let Ok((refused, _)) = listener.accept().await {
        drop(refused);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_gone_while_cases_run_exits_3_with_unreachable_cells() {
    if !cfg!(feature = "redis") {
        return;
    }
    let Some(url) = distsync_conformance::server_url("DISTSYNC_REDIS_URL") else {
        return;
    };
    let parsed = url::Url::parse(&url).expect("a URL");
    let upstream = format!(
        "{}:{}",
        parsed.host_str().expect("a host"),
        parsed.port().unwrap_or(6379)
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
    let mut through = parsed.clone();
    through
        .set_port(Some(listener.local_addr().expect("an address").port()))
        .expect("a port");
    let query = through
        .query()
        .map(|query| format!("{query}&"))
        .unwrap_or_default();
    through.set_query(Some(&format!("{query}timeout=1s&connect_timeout=1s")));
    let cut = Arc::new(Notify::new());
    let (closed, proxy_closed) = tokio::sync::oneshot::channel();
    let proxying = tokio::spawn(proxy(listener, upstream, Arc::clone(&cut), closed));

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_distsync-conformance"))
        .args([
            "--backend",
            through.as_str(),
            "--profile",
            "safe",
            // One case: against a store gone, a case takes up to three tries of its
            // set-up, each bound stretched by the time the machine's tasks waited for
            // a CPU (up to 20 s more), then a probe: the run's length grows with its
            // cases, and one keeps it well inside this test's bound, loaded or not.
            "--case",
            "queue_fifo",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the runner");
    let mut stdout = child.stdout.take().expect("stdout");
    let matrix = tokio::spawn(async move {
        let mut matrix = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut matrix).await;
        String::from_utf8_lossy(&matrix).into_owned()
    });
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    // The store goes away once the runner has connected and starts its cases.
    let started = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let starting = line.starts_with("running the suite against");
            seen.push(line);
            if starting {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "{}", seen.join("\n"));
    cut.notify_one();
    proxy_closed
        .await
        .expect("the proxy closes its connections");
    let rest = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
        }
        seen
    });
    // A runner still going at the bound is killed, so that what it wrote is shown.
    let ended = tokio::time::timeout(Duration::from_secs(240), child.wait()).await;
    if ended.is_err() {
        child.kill().await.expect("killing the runner");
    }
    let stderr = rest.await.expect("stderr").join("\n");
    let status = ended.unwrap_or_else(|_| panic!("the runner did not end in 240 s:\n{stderr}"));
    let status = status.expect("the runner's status");
    proxying.abort();
    let matrix = matrix.await.expect("stdout");
    assert_eq!(status.code(), Some(3), "{stderr}\n{matrix}");
    assert!(matrix.contains("| **UNREACHABLE** |"), "{matrix}");
    assert!(!matrix.contains("| **VIOLATED**"), "{matrix}");
    assert!(stderr.contains("redis queue_fifo: UNREACHABLE"), "{stderr}");
    assert!(stderr.contains("could not reach the store"), "{stderr}");
}
