//! `GET /metrics`: the process's metrics layer, then gauges read from the store, in
//! Prometheus's text format.

use std::time::UNIX_EPOCH;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use metrics::{describe_gauge, gauge, with_local_recorder};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::board::{dead_letters_of, member_of};
use crate::reading::Snapshot;
use crate::router::Console;

/// `GET /metrics`.
pub(crate) async fn scrape(State(console): State<Console>) -> Response {
    let snapshot = console.reading.latest().await;
    let mut text = console
        .options
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    text.push_str(&store_gauges(&snapshot, console.backend()));
    let mut response = text.into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The store's gauges of `snapshot`, rendered by a recorder of their own (so that they
/// never mix with, or linger in, the process's recorder: a name gone from the store is
/// gone from the next scrape).
fn store_gauges(snapshot: &Snapshot, backend: &'static str) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    with_local_recorder(&recorder, || {
        describe_gauge!(
            "distsync_store_up",
            "1 when the console's last read of the store succeeded"
        );
        describe_gauge!(
            "distsync_store_read_seconds",
            "how long the console's last read of the store took"
        );
        describe_gauge!(
            "distsync_store_holders",
            "holders of a lock, read-write lock, semaphore or election"
        );
        describe_gauge!(
            "distsync_store_waiters",
            "waiters of a lock, read-write lock, semaphore or election"
        );
        describe_gauge!("distsync_store_queue_ready", "items waiting in a queue");
        describe_gauge!(
            "distsync_store_queue_in_flight",
            "items of a queue handed out and not yet acknowledged"
        );
        describe_gauge!(
            "distsync_store_queue_oldest_age_seconds",
            "how long a queue's oldest ready item has waited, where the store records it"
        );
        describe_gauge!(
            "distsync_store_dead_letters",
            "items in a queue's dead-letter queue"
        );
        describe_gauge!("distsync_store_group_members", "live members of a group");
        describe_gauge!(
            "distsync_store_job_last_run_timestamp_seconds",
            "when a scheduled job's last run started (Unix time, the running replica's clock)"
        );
        describe_gauge!(
            "distsync_store_job_runs",
            "how many runs a scheduled job has had"
        );
        gauge!("distsync_store_up", "backend" => backend)
            .set(f64::from(u8::from(snapshot.outcome.is_ok())));
        gauge!("distsync_store_read_seconds", "backend" => backend)
            .set(snapshot.took.as_secs_f64());
        let Ok(store) = &snapshot.outcome else {
            return;
        };
        let mut members = std::collections::BTreeMap::<&str, usize>::new();
        for line in &store.report.lines {
            let labels = [
                ("backend", backend.to_owned()),
                ("kind", line.kind.as_str().to_owned()),
                ("name", line.name.clone()),
            ];
            gauge!("distsync_store_holders", &labels).set(line.holders.len() as f64);
            gauge!("distsync_store_waiters", &labels).set(line.waiters.len() as f64);
            if let Some((group, _)) = member_of(line) {
                *members.entry(group).or_default() += line.holders.len();
            }
        }
        for (group, count) in members {
            gauge!("distsync_store_group_members", "backend" => backend, "group" => group.to_owned()).set(count as f64);
        }
        for queue in &store.report.queues {
            if let Some(base) = dead_letters_of(&queue.name) {
                gauge!("distsync_store_dead_letters", "backend" => backend, "queue" => base.to_owned())
                    .set((queue.ready + queue.in_flight) as f64);
                continue;
            }
            let labels = [
                ("backend", backend.to_owned()),
                ("queue", queue.name.clone()),
            ];
            gauge!("distsync_store_queue_ready", &labels).set(queue.ready as f64);
            gauge!("distsync_store_queue_in_flight", &labels).set(queue.in_flight as f64);
            if let Some(age) = store.oldest.get(&queue.name) {
                gauge!("distsync_store_queue_oldest_age_seconds", &labels).set(age.as_secs_f64());
            }
        }
        for job in &store.jobs {
            let labels = [("backend", backend.to_owned()), ("job", job.name.clone())];
            let run = job.last_run.as_ref();
            gauge!("distsync_store_job_runs", &labels).set(run.map_or(0, |run| run.runs) as f64);
            if let Some(started) = run.and_then(|run| run.started.duration_since(UNIX_EPOCH).ok()) {
                gauge!("distsync_store_job_last_run_timestamp_seconds", &labels)
                    .set(started.as_secs_f64());
            }
        }
    });
    handle.render()
}
