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
/// closes every connection and stops accepting.
async fn proxy(listener: TcpListener, upstream: String, cut: Arc<Notify>) {
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
    drop(listener);
    tasks.shutdown().await;
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
    let proxying = tokio::spawn(proxy(listener, upstream, Arc::clone(&cut)));

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_distsync-conformance"))
        .args([
            "--backend",
            through.as_str(),
            "--profile",
            "safe",
            "--case",
            "lock_mutual_exclusion",
            "--case",
            "queue_fifo",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the runner");
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
    proxying.await.expect("the proxy");
    let rest = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
        }
        seen
    });
    let output = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("the runner ends")
        .expect("the runner's output");
    let stderr = rest.await.expect("stderr").join("\n");
    let matrix = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stderr}\n{matrix}");
    assert!(matrix.contains("| **UNREACHABLE** |"), "{matrix}");
    assert!(!matrix.contains("| **VIOLATED**"), "{matrix}");
    assert!(
        stderr.contains("redis lock_mutual_exclusion: UNREACHABLE"),
        "{stderr}"
    );
    assert!(stderr.contains("could not reach the store"), "{stderr}");
}
