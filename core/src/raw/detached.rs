//! A store step whose result must outlive its caller: a queue's claim or hold.

use std::future::Future;

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Runs `step` to its end in a task of its own and returns its answer.
///
/// A queue's claim or hold takes an item in the store; a caller that goes away while
/// the step is in flight (a dropped `dequeue` or `receive`, a timeout around this call)
/// must not lose it. The step runs on regardless, and an answer nobody receives is
/// dropped where the caller would have received it. So `T` gives back what it holds
/// when dropped: a [`Delivery`](crate::Delivery) nacks, and a store's claimed item puts
/// itself back. Each store writes only the step and that drop.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distsync::Result<()> {
/// use distsync::store::raw::detached;
///
/// let answer = detached("example", async { Ok(7) }).await?;
/// assert_eq!(answer, 7);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// The step's error; [`Error::Backend`] (naming `backend`) outside a Tokio runtime or
/// when the step's task ends without an answer (it panicked).
///
/// # Cancel safety
/// Cancel-safe: dropping the future leaves the step running, and its answer is dropped
/// unreceived, which gives back what it holds.
pub async fn detached<T, F>(backend: &'static str, step: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let runtime =
        tokio::runtime::Handle::try_current().map_err(|error| Error::backend(backend, error))?;
    let (answer, outcome) = oneshot::channel::<Result<T>>();
    runtime.spawn(async move {
        // A send to a receiver that is gone hands the answer back, dropped here.
        drop(answer.send(step.await));
    });
    match outcome.await {
        Ok(result) => result,
        Err(_) => Err(Error::backend(
            backend,
            "a detached store step ended without an answer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::detached;

    /// Counts its drops: the stand-in for an item that puts itself back.
    #[derive(Debug)]
    struct GivesBack(Arc<AtomicUsize>);

    impl Drop for GivesBack {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn an_answer_the_caller_left_before_is_dropped_and_gives_back() {
        let given_back = Arc::new(AtomicUsize::new(0));
        let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let step = {
            let (given_back, started, release) = (
                Arc::clone(&given_back),
                Arc::clone(&started),
                Arc::clone(&release),
            );
            async move {
                started.notify_one();
                release.notified().await;
                Ok(GivesBack(given_back))
            }
        };
        let call = tokio::spawn(detached("test", step));
        started.notified().await;
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        assert_eq!(
            given_back.load(Ordering::SeqCst),
            0,
            "the step is still running"
        );
        release.notify_one();
        tokio::time::timeout(Duration::from_secs(10), async {
            while given_back.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the unreceived answer is dropped");
        assert_eq!(given_back.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_received_answer_is_the_callers() {
        let given_back = Arc::new(AtomicUsize::new(0));
        let step = {
            let given_back = Arc::clone(&given_back);
            async move { Ok(GivesBack(given_back)) }
        };
        let answer = detached("test", step).await.unwrap();
        assert_eq!(given_back.load(Ordering::SeqCst), 0);
        drop(answer);
        assert_eq!(given_back.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_step_that_panics_is_a_backend_error() {
        let step = async { panic!("the step failed") };
        let error = detached::<(), _>("test", step).await.unwrap_err();
        assert!(
            matches!(
                error,
                crate::Error::Backend {
                    backend: "test",
                    ..
                }
            ),
            "{error:?}"
        );
    }
}
