//! What the console costs with 1,000 held locks and 10 queues: the store read behind
//! each refresh, the board's JSON, and (given a running chromedriver) the page's load
//! in headless Chromium until it shows every lock's count.
//!
//! ```sh
//! eval "$(scripts/servers.sh env)"
//! chromedriver --port=9515 &
//! cargo run --release -p distsync-console --example load -- "$DISTSYNC_POSTGRES_URL" http://127.0.0.1:9515
//! ```
//!
//! Arguments: the store's URL (`memory://` by default) and, optionally, chromedriver's.

use std::time::{Duration, Instant};

use distsync::store::console::{serve, ConsoleOptions};
use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const LOCKS: usize = 1_000;
const SESSIONS: usize = 10;
const QUEUES: usize = 10;
const ITEMS: usize = 10;
const SAMPLES: usize = 9;
const REFRESH: Duration = Duration::from_millis(200);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "memory://".to_owned());
    let webdriver = args.next();
    let coordinator = distsync::connect(&url).await?;
    let backend = coordinator.capabilities().backend;
    let prefix = format!("console-load-{}/", std::process::id());

    let started = Instant::now();
    let mut sessions = Vec::new();
    let mut guards = Vec::new();
    for s in 0..SESSIONS {
        let session = coordinator.session().await?;
        for l in 0..LOCKS / SESSIONS {
            let name = format!("{prefix}locks/{s}/{l}");
            guards.push(coordinator.locker(&session, &name)?.lock().await?);
        }
        sessions.push(session);
    }
    for q in 0..QUEUES {
        let queue = coordinator.queue(&format!("{prefix}queues/{q}"))?;
        for i in 0..ITEMS {
            queue.enqueue(format!("item {i}")).await?;
        }
    }
    println!("{backend}: {LOCKS} locks held by {SESSIONS} sessions and {QUEUES} queues of {ITEMS} items in {:?}",
        started.elapsed());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/", listener.local_addr()?);
    let options = ConsoleOptions::new().prefix(&prefix).refresh(REFRESH);
    let server = tokio::spawn(serve(listener, coordinator.clone(), options));

    // Each sample waits out the refresh, so the console reads the store anew.
    let http =
        Client::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<bytes::Bytes>>();
    let (mut reads, mut answers, mut size) = (Vec::new(), Vec::new(), 0);
    for _ in 0..SAMPLES {
        tokio::time::sleep(REFRESH + Duration::from_millis(50)).await;
        let asked = Instant::now();
        let response = http.get(format!("{base}api/board").parse()?).await?;
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await?
            .to_bytes();
        answers.push(asked.elapsed());
        let board: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(board["locks"]["total"], LOCKS, "the board lists every lock");
        reads.push(Duration::from_millis(
            board["read_ms"].as_u64().unwrap_or_default(),
        ));
        size = body.len();
    }
    println!(
        "store read per refresh: median {:?} (status with time left, {QUEUES} oldest ages, jobs' index)",
        median(&mut reads)
    );
    println!(
        "GET api/board with a fresh read: median {:?}, {size} bytes (first page, 50 of each kind)",
        median(&mut answers)
    );

    if let Some(webdriver) = webdriver {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".to_owned(), serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        }));
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await?;
        let mut loads = Vec::new();
        for _ in 0..SAMPLES {
            client.goto("about:blank").await?;
            tokio::time::sleep(REFRESH + Duration::from_millis(50)).await;
            let asked = Instant::now();
            client.goto(&base).await?;
            loop {
                let count = client
                    .find(Locator::Css("#locks h2 small"))
                    .await?
                    .text()
                    .await?;
                if count == LOCKS.to_string() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            loads.push(asked.elapsed());
        }
        println!(
            "page load until it shows the {LOCKS} locks: median {:?}",
            median(&mut loads)
        );
        client.close().await?;
    }
    server.abort();
    drop(guards);
    for session in sessions {
        session.close().await?;
    }
    for q in 0..QUEUES {
        let queue = coordinator.queue(&format!("{prefix}queues/{q}"))?;
        while queue.try_dequeue().await?.is_some() {}
    }
    Ok(())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
