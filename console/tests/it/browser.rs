//! The page in a real browser: headless Chromium driven through chromedriver (Debian's
//! `chromium` and `chromium-driver`; `DISTSYNC_CHROMEDRIVER` names another driver).
//! A holder started here appears with its token, breaking it from the page makes its
//! `lost()` fire, a poisoned item shows in the dead letters and is requeued from the
//! page, names are shown as text, and a console without the token offers no action.
//!
//! With `DISTSYNC_CONSOLE_SCREENSHOTS=DIR` the test saves what the browser showed into
//! DIR (docs/console/ holds the ones docs/CONSOLE.md shows).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use distsync::queue::ConsumerOptions;
use distsync::replicas::{JobOptions, Schedule};
use distsync::store::console::ConsoleOptions;
use distsync::{Coordinator, SessionOptions};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use rstest::rstest;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{
    acting, coordinator, eventually, get_json, prefix, serve, within, Served, TOKEN,
};

/// chromedriver on a port of its choosing, and every Chromium it starts: all killed
/// when dropped, also when the test panics (a browser left behind would load every
/// later test on the machine).
struct Driver {
    url: String,
    /// The profile directory every Chromium of this driver runs with: how its
    /// processes are found again, whichever process group they moved to.
    profile: PathBuf,
    _process: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let marker = format!("--user-data-dir={}", self.profile.display());
        let Ok(processes) = std::fs::read_dir("/proc") else {
            return;
        };
        for process in processes.flatten() {
            let Some(pid) = process
                .file_name()
                .to_str()
                .and_then(|pid| pid.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(process.path().join("cmdline")) else {
                continue;
            };
            let started_here = cmdline
                .split(|byte| *byte == 0)
                .any(|argument| argument == marker.as_bytes());
            if let (true, Some(pid)) = (started_here, rustix::process::Pid::from_raw(pid)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Starts chromedriver, or `None` (the test skipping) where none is installed outside CI.
async fn driver() -> Option<Driver> {
    let path = std::env::var("DISTSYNC_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
    let spawned = Command::new(&path)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut process = match spawned {
        Ok(process) => process,
        Err(error) => {
            let ci = std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true"));
            assert!(
                !ci,
                "CI=true but {path} cannot be started ({error}): install chromium-driver"
            );
            eprintln!("\n!!! {path}: {error}: SKIPPING the browser test (apt-get install chromium-driver) !!!\n");
            return None;
        }
    };
    let mut lines = BufReader::new(process.stdout.take().expect("piped stdout")).lines();
    let port = within("chromedriver's port", async {
        while let Some(line) = lines.next_line().await.expect("chromedriver's output") {
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                return rest
                    .trim_end_matches('.')
                    .parse::<u16>()
                    .expect("a port number");
            }
        }
        panic!("chromedriver ended before it listened");
    })
    .await;
    // Its further output is not read: keep draining it so that it never blocks.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let profile = std::env::temp_dir().join(format!(
        "distsync-console-browser-{}-{port}",
        std::process::id()
    ));
    Some(Driver {
        url: format!("http://127.0.0.1:{port}"),
        profile,
        _process: process,
    })
}

/// A headless Chromium session of `driver`.
async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", format!("--user-data-dir={}", driver.profile.display())]
        }),
    );
    within(
        "a Chromium session",
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url),
    )
    .await
    .expect("chromedriver starts Chromium")
}

/// Waits until the element `css` shows `expected`; names what it showed instead when
/// the bound passes.
async fn text_becomes(client: &Client, css: &str, expected: &str) {
    let seen = std::sync::Mutex::new(None);
    let found = tokio::time::timeout(crate::support::BOUND, async {
        loop {
            if let Ok(element) = client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if text.trim() == expected {
                        return;
                    }
                    *seen.lock().unwrap() = Some(text);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if found.is_err() {
        let last = seen.lock().unwrap().clone();
        panic!(
            "{css} never showed {expected:?} (last seen: {last:?}); the page showed:\n{}",
            shown(client).await
        );
    }
}

/// Clicks the element `css`. The page redraws its tables at each read, so an element
/// found just before a redraw is replaced: it is found again, within the bound.
async fn click(client: &Client, css: &str) {
    let clicked = tokio::time::timeout(crate::support::BOUND, async {
        loop {
            if let Ok(element) = client.find(Locator::Css(css)).await {
                match element.click().await {
                    Ok(()) => return,
                    Err(error) if error.is_stale_element_reference() => {}
                    Err(error) => panic!("clicking {css}: {error}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if clicked.is_err() {
        panic!(
            "{css} never clickable; the page showed:\n{}",
            shown(client).await
        );
    }
}

/// What the page shows, as text: for the message of a wait that failed.
async fn shown(client: &Client) -> String {
    match client.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(error) => format!("(no page: {error})"),
    }
}

/// Saves what the browser shows as `name`.png when screenshots are asked for.
async fn screenshot(client: &Client, name: &str) {
    let Ok(dir) = std::env::var("DISTSYNC_CONSOLE_SCREENSHOTS") else {
        return;
    };
    let png = client.screenshot().await.expect("a screenshot");
    let path = PathBuf::from(dir).join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
}

/// Waits until the page has shown a read of the store.
async fn loaded(client: &Client, served: &Served) {
    within("the page", client.goto(&served.base))
        .await
        .expect("the page loads");
    eventually("the store shown up", || async {
        let store = client.find(Locator::Id("store")).await.ok()?;
        store.text().await.ok()?.ends_with(": up").then_some(())
    })
    .await;
}

/// Puts `item` in the dead-letter queue of the queue `jobs` (the one a consumer with
/// default options moves poison items to), and nowhere else. Directly, not by a
/// consumer whose handler fails: a consumer's move is at-least-once (enqueued there,
/// then acknowledged), so a consumer stopped once the dead letter shows may not have
/// acknowledged it yet, and its session's end then puts a second copy back in `jobs`.
async fn poison(coordinator: &Coordinator, jobs: &str, item: &str) {
    let consumer = coordinator
        .consumer(jobs, ConsumerOptions::default())
        .unwrap();
    consumer
        .dead_letter_queue()
        .enqueue(item.to_owned())
        .await
        .unwrap();
    assert_eq!(consumer.dead_letter_queue().len().await.unwrap(), 1);
    assert_eq!(consumer.queue().len().await.unwrap(), 0);
}

/// Two scheduled jobs under `prefix`: `reports/every-second`, running every second
/// until the returned tasks are dropped, and `reports/nightly`, which looks for its
/// first occurrence (and so is listed) but never runs in a test.
fn scheduled_jobs(coordinator: &Coordinator, prefix: &str) -> ([String; 2], [AbortOnDrop; 2]) {
    let names = [
        format!("{prefix}reports/every-second"),
        format!("{prefix}reports/nightly"),
    ];
    let mut often = coordinator
        .scheduled_job(
            &names[0],
            Schedule::every(Duration::from_secs(1)).unwrap(),
            JobOptions::default(),
        )
        .unwrap();
    let mut nightly = coordinator
        .scheduled_job(
            &names[1],
            Schedule::cron("0 3 * * *").unwrap(),
            JobOptions::default(),
        )
        .unwrap();
    let running = [
        AbortOnDrop(tokio::spawn(async move {
            let _ = often.run(|_occurrence| async {}).await;
        })),
        AbortOnDrop(tokio::spawn(async move {
            let _ = nightly.next().await;
        })),
    ];
    (names, running)
}

/// A task stopped when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[rstest]
#[case::memory("memory")]
#[case::redis("DISTSYNC_REDIS_URL")]
#[case::postgres("DISTSYNC_POSTGRES_URL")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_breaks_and_requeues_from_the_page(#[case] store: &str) {
    let Some(coordinator) = coordinator(store).await else {
        return;
    };
    let Some(driver) = driver().await else {
        return;
    };
    let label = coordinator.capabilities().backend;
    let p = prefix("browser");
    let served = serve(coordinator.clone(), acting(&p)).await;
    let read_only = serve(coordinator.clone(), ConsoleOptions::new().prefix(&p)).await;
    let session = coordinator
        .session_with(SessionOptions::default())
        .await
        .unwrap();
    let (held, other) = (format!("{p}orders/lock"), format!("{p}<b>bold</b>"));
    let guard = coordinator
        .locker(&session, &held)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let _other = coordinator
        .locker(&session, &other)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let jobs = format!("{p}jobs");
    poison(&coordinator, &jobs, "order 42: poisoned").await;
    let (scheduled, _running) = scheduled_jobs(&coordinator, &p);

    let client = browser(&driver).await;
    loaded(&client, &served).await;
    let row = format!("#locks tr[data-name=\"{held}\"]");
    text_becomes(
        &client,
        &format!("{row} td.token"),
        &guard.token().0.to_string(),
    )
    .await;
    text_becomes(
        &client,
        &format!("{row} td.session"),
        &session.id().to_string(),
    )
    .await;
    // A name that looks like markup is shown as its text, never as markup.
    let other_row = format!("#locks tr[data-name=\"{other}\"] td.name");
    text_becomes(&client, &other_row, &other).await;
    assert!(
        client
            .find_all(Locator::Css("#locks b"))
            .await
            .unwrap()
            .is_empty(),
        "markup from a name"
    );
    // The scheduled jobs: one that runs every second, one that has never run.
    for job in &scheduled {
        text_becomes(
            &client,
            &format!("#jobs tr[data-name=\"{job}\"] td.name"),
            job,
        )
        .await;
    }
    text_becomes(
        &client,
        &format!("#jobs tr[data-name=\"{}\"] td.job-state", scheduled[1]),
        "never ran",
    )
    .await;
    screenshot(&client, &format!("console-{label}-board")).await;

    client
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    client
        .find(Locator::Id("operator"))
        .await
        .unwrap()
        .send_keys("browser-test")
        .await
        .unwrap();
    click(&client, &format!("{row} button[data-action=\"break\"]")).await;
    // The confirmation lists what else the holder's session holds.
    eventually("the confirmation listing the other hold", || async {
        let list = client.find(Locator::Id("confirm-list")).await.ok()?;
        list.text().await.ok()?.contains(&other).then_some(())
    })
    .await;
    screenshot(&client, &format!("console-{label}-break")).await;
    click(&client, "#confirm-yes").await;
    within("the broken holder's loss", guard.lost()).await;
    eventually("the broken lock gone from the page", || async {
        client
            .find_all(Locator::Css(&row))
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;

    let queue_row = format!("#queues tr[data-name=\"{jobs}\"]");
    text_becomes(&client, &format!("{queue_row} td.dead-letter-count"), "1").await;
    click(
        &client,
        &format!("{queue_row} button[data-action=\"dead-letters\"]"),
    )
    .await;
    let letter = "#queues tr.dead-letter-row li[data-item]";
    text_becomes(&client, &format!("{letter} code"), "order 42: poisoned").await;
    screenshot(&client, &format!("console-{label}-dead-letters")).await;
    click(
        &client,
        &format!("{letter} button[data-action=\"requeue\"]"),
    )
    .await;
    click(&client, "#confirm-yes").await;
    text_becomes(&client, &format!("{queue_row} td.ready"), "1").await;
    text_becomes(&client, &format!("{queue_row} td.dead-letter-count"), "0").await;
    let queue = coordinator.queue(&jobs).unwrap();
    assert_eq!(
        queue.try_dequeue().await.unwrap().as_deref(),
        Some(&b"order 42: poisoned"[..])
    );

    // Without the token the page says it is read-only and offers no action.
    loaded(&client, &read_only).await;
    text_becomes(&client, "#mode", "read-only: actions are off").await;
    let bystander = coordinator.session().await.unwrap();
    let kept = format!("{p}kept");
    let _kept = coordinator
        .locker(&bystander, &kept)
        .unwrap()
        .lock()
        .await
        .unwrap();
    text_becomes(
        &client,
        &format!("#locks tr[data-name=\"{kept}\"] td.name"),
        &kept,
    )
    .await;
    assert!(client
        .find_all(Locator::Css("#locks button[data-action]"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(get_json(&read_only, "api/board").await["actions"], false);
    client.close().await.unwrap();
    bystander.close().await.unwrap();
}
