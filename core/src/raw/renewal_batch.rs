//! Session renewals batched: [`RenewalBatch`] (its docs say why and how; the module is
//! private).

use std::collections::HashSet;
use std::future::Future;
use std::hash::Hash;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// What renewing one batch gave: the keys renewed (every other key of the batch has
/// expired or is gone), or why the batch failed; and work to finish before the next
/// batch is taken, once every session of this one has its answer.
pub struct BatchRenewed<K> {
    /// The keys renewed, or the failure's message (every key of the batch gets it).
    pub renewed: std::result::Result<HashSet<K>, String>,
    /// Run after the answers are sent and before the next batch (e.g. repairs the
    /// batch's readings of the server called for), or `None`.
    pub then: Option<BoxFuture<'static, ()>>,
}

impl<K: std::fmt::Debug> std::fmt::Debug for BatchRenewed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRenewed")
            .field("renewed", &self.renewed)
            .field("then", &self.then.is_some())
            .finish()
    }
}

type Reply = oneshot::Sender<std::result::Result<bool, String>>;

/// One backend's renewal task: it renews together every session whose renewal was
/// handed to it while its previous batch ran. Dropping it stops the task; renewals
/// waiting then fail.
///
/// Each session keeps its own keepalive (`Session::start`: a renewal every TTL/3, its
/// own client-side deadline, its own `lost()`), but a backend whose renewal is a
/// statement need not run one statement per session: its [`Lease::keep_alive`] hands
/// the session's key to a `RenewalBatch` and waits for the answer. So 10,000 sessions
/// cost a few statements a second, not 2,000 (one each per TTL/3), and no renewal waits
/// behind thousands of others for a connection.
///
/// Partition safety is unchanged: the keepalive records its send time *before* it
/// hands the key over, and the batch is sent after that, so the server's expiry (its
/// clock at the renewal + TTL) is never earlier than the client-side deadline the
/// answer extends. A batch that fails answers every session in it with the error, and
/// each keepalive retries on its own schedule, as with a statement of its own. Every
/// later renewal waits for the batch in flight, so a backend bounds each batch (a
/// connection that stops answering must not hold every session's renewal).
///
/// [`Lease::keep_alive`]: crate::raw::Lease::keep_alive
pub struct RenewalBatch<K> {
    requests: mpsc::UnboundedSender<(K, Reply)>,
    task: AbortHandle,
}

impl<K> Drop for RenewalBatch<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> std::fmt::Debug for RenewalBatch<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenewalBatch").finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone + Send + 'static> RenewalBatch<K> {
    /// Starts the task, which calls `renew` with up to `max` keys at a time (at least
    /// one): every key handed over while the previous call ran, in the order handed
    /// over, a key handed over twice listed twice. Must be called within a tokio
    /// runtime.
    pub fn start<F, Fut>(max: usize, mut renew: F) -> Self
    where
        F: FnMut(Vec<K>) -> Fut + Send + 'static,
        Fut: Future<Output = BatchRenewed<K>> + Send + 'static,
    {
        let max = max.max(1);
        let (requests, mut receiver) = mpsc::unbounded_channel::<(K, Reply)>();
        let task = tokio::spawn(async move {
            let mut batch: Vec<(K, Reply)> = Vec::new();
            while let Some(first) = receiver.recv().await {
                batch.push(first);
                while batch.len() < max {
                    match receiver.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                let keys = batch.iter().map(|(key, _)| key.clone()).collect();
                let BatchRenewed { renewed, then } = renew(keys).await;
                for (key, reply) in batch.drain(..) {
                    let answer = match &renewed {
                        Ok(renewed) => Ok(renewed.contains(&key)),
                        Err(message) => Err(message.clone()),
                    };
                    let _ = reply.send(answer);
                }
                if let Some(then) = then {
                    then.await;
                }
            }
        })
        .abort_handle();
        Self { requests, task }
    }

    /// Renews `key` in the next batch: `Ok(true)` renewed, `Ok(false)` it has expired
    /// or is gone, `Err` the batch's failure (or the task's end), to retry later.
    ///
    /// Cancel-safety: cancel-safe; a dropped call may still renew the key (its batch
    /// runs anyway), which only extends the lease, the safe side.
    ///
    /// # Errors
    /// The message of the batch's failure, or that the task has stopped.
    pub async fn renew(&self, key: K) -> std::result::Result<bool, String> {
        let stopped = || "the session renewal task has stopped".to_owned();
        let (reply, answer) = oneshot::channel();
        self.requests.send((key, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn renewals_handed_over_while_a_batch_runs_go_together_in_the_next() {
        let calls: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let release = Arc::new(Notify::new());
        let started = Arc::new(Notify::new());
        let (log, gate, begun) = (calls.clone(), release.clone(), started.clone());
        let batch = Arc::new(RenewalBatch::start(10, move |keys: Vec<u32>| {
            log.lock().unwrap().push(keys.clone());
            let (gate, begun) = (gate.clone(), begun.clone());
            async move {
                begun.notify_one();
                gate.notified().await;
                // Odd keys are gone.
                BatchRenewed {
                    renewed: Ok(keys.into_iter().filter(|key| key % 2 == 0).collect()),
                    then: None,
                }
            }
        }));
        let first = tokio::spawn({
            let batch = batch.clone();
            async move { batch.renew(2).await }
        });
        started.notified().await;
        // Three renewals handed over (a first poll sends each) while the first batch runs.
        let mut later: Vec<_> = [3, 4, 6]
            .into_iter()
            .map(|key| Box::pin(batch.renew(key)))
            .collect();
        for renewal in &mut later {
            assert!(futures::poll!(renewal.as_mut()).is_pending());
        }
        release.notify_one();
        assert_eq!(first.await.unwrap(), Ok(true));
        started.notified().await;
        release.notify_one();
        let answers = futures::future::join_all(later).await;
        assert_eq!(answers, vec![Ok(false), Ok(true), Ok(true)]);
        assert_eq!(*calls.lock().unwrap(), vec![vec![2], vec![3, 4, 6]]);
    }

    #[tokio::test]
    async fn a_failed_batch_answers_each_of_its_renewals_with_the_failure_then_runs_its_then() {
        let followed = Arc::new(Notify::new());
        let done = followed.clone();
        let batch = RenewalBatch::start(10, move |_keys: Vec<u32>| {
            let done = done.clone();
            async move {
                BatchRenewed {
                    renewed: Err("the server went away".to_owned()),
                    then: Some(Box::pin(async move { done.notify_one() }) as BoxFuture<'static, ()>),
                }
            }
        });
        assert_eq!(batch.renew(1).await, Err("the server went away".to_owned()));
        followed.notified().await;
        drop(batch);
    }
}
