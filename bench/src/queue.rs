//! Queue throughput: items enqueued, then dequeued, by 1 and by 8 concurrent clients,
//! each client on a connection of its own (on `memory://`, one shared store).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distsync::Queue;

use crate::args::Plan;
use crate::stats::per_second;
use crate::target::Target;
use crate::Result;

/// The outcome for one client count.
#[derive(Debug)]
pub struct QueueResult {
    /// Concurrent clients.
    pub clients: usize,
    /// Items enqueued and the time it took.
    pub enqueued: (usize, Duration),
    /// Items dequeued and the time it took.
    pub dequeued: (usize, Duration),
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
}

impl QueueResult {
    /// Enqueued items per second, all clients together.
    pub fn enqueue_rate(&self) -> f64 {
        per_second(self.enqueued.0, self.enqueued.1)
    }

    /// Dequeued items per second, all clients together.
    pub fn dequeue_rate(&self) -> f64 {
        per_second(self.dequeued.0, self.dequeued.1)
    }
}

/// Measures a queue on `target` with `clients` clients.
pub async fn run(target: &Target, run_id: &str, clients: usize, plan: &Plan) -> QueueResult {
    let mut result = QueueResult {
        clients,
        enqueued: (0, Duration::ZERO),
        dequeued: (0, Duration::ZERO),
        error: None,
    };
    let name = format!("{run_id}/queue/{clients}");
    let mut queues: Vec<Arc<dyn Queue>> = Vec::with_capacity(clients);
    for _ in 0..clients {
        let opened =
            async { Ok::<Arc<dyn Queue>, crate::BoxError>(target.client().await?.queue(&name)?) }
                .await;
        match opened {
            Ok(queue) => queues.push(queue),
            Err(error) => {
                result.error = Some(format!("opening {clients} clients: {error}"));
                return result;
            }
        }
    }
    let deadline = Instant::now() + plan.case_time;

    let start = Instant::now();
    let producers: Vec<_> = queues
        .iter()
        .enumerate()
        .map(|(client, queue)| {
            let queue = Arc::clone(queue);
            let share = crate::stats::share(plan.queue_items, clients, client);
            tokio::spawn(async move {
                let mut done = 0;
                while done < share && Instant::now() < deadline {
                    queue.enqueue(format!("{client}-{done}")).await?;
                    done += 1;
                }
                Ok::<_, crate::BoxError>(done)
            })
        })
        .collect();
    let (enqueued, error) = join_counts(producers).await;
    result.enqueued = (enqueued, start.elapsed());
    result.error = error;

    // Exactly `enqueued` dequeues in all, so no client blocks on an empty queue.
    let tickets = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + plan.case_time;
    let start = Instant::now();
    let consumers: Vec<_> = queues
        .iter()
        .map(|queue| {
            let queue = Arc::clone(queue);
            let tickets = Arc::clone(&tickets);
            tokio::spawn(async move {
                let mut done = 0;
                while Instant::now() < deadline && tickets.fetch_add(1, Ordering::SeqCst) < enqueued
                {
                    queue.dequeue().await?;
                    done += 1;
                }
                Ok::<_, crate::BoxError>(done)
            })
        })
        .collect();
    let (dequeued, error) = join_counts(consumers).await;
    result.dequeued = (dequeued, start.elapsed());
    if result.error.is_none() {
        result.error = error;
    }
    // Leave the queue empty (untimed), and check nothing was lost or duplicated.
    let mut left = 0;
    while let Ok(Some(_)) = queues[0].try_dequeue().await {
        left += 1;
        if left > enqueued {
            break;
        }
    }
    if result.error.is_none() && left + dequeued != enqueued {
        result.error = Some(format!(
            "{enqueued} enqueued but {dequeued} dequeued and {left} left over"
        ));
    }
    result
}

async fn join_counts(
    tasks: Vec<tokio::task::JoinHandle<Result<usize>>>,
) -> (usize, Option<String>) {
    let mut total = 0;
    let mut error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(count)) => total += count,
            Ok(Err(failure)) => {
                error.get_or_insert(failure.to_string());
            }
            Err(failure) => {
                error.get_or_insert(format!("client failed: {failure}"));
            }
        }
    }
    (total, error)
}
