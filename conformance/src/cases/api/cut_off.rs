//! Requests into a silent partition: a client whose traffic to the store stops
//! (connections stay open, no byte passes, as behind a hung middlebox or a dropped
//! route) must get an error from every request within about its URL's `timeout=`
//! (twice it at most: PostgreSQL bounds taking a connection and the reply apart, etcd
//! may start a last retry just before the timeout), instead of hanging until the
//! operating system gives up on the connection, minutes later. Once the
//! partition heals, the same client works again, and what it wrote before the cut is
//! still there.

use std::time::Duration;

use distsync_core::{Backend, Bytes, Error, Name, Result, Session, SessionOptions};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::time::Instant;

use crate::check::{
    ensure, ms, partitioned_client_with_timeouts, set_up, violated, Bounded, Check, Context, Holds,
    LONG,
};
use crate::faults::{PartitionMode, Partitioned};
use crate::harness::Harness;

/// The partitioned client's `timeout=`.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// The partitioned client's `connect_timeout=` (a request that reconnects through the
/// silent proxy waits for it).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// What a request may take beyond twice its timeout before the case calls it
/// unbounded (scheduling on a loaded machine, the error's own round of clean-up).
const SLACK: Duration = Duration::from_millis(1500);

/// One request made while the partition is silent: what it is, and the call.
type Request<'a> = (&'static str, BoxFuture<'a, Result<()>>);

/// The requests made during the cut: a queue's enqueue, claim and length, and a
/// lock's try_lock, each on its own (a session's request and a session-free one).
fn requests<'a>(
    client: &'a dyn Backend,
    queue: &'a Name,
    lock: &'a Name,
    session: &'a Session,
) -> Result<Vec<Request<'a>>> {
    let producer = client.queue(queue.clone())?;
    let consumer = client.queue(queue.clone())?;
    let counter = client.queue(queue.clone())?;
    let locker = client.locker(session, lock.clone())?;
    Ok(vec![
        (
            "enqueue",
            async move { producer.enqueue(Bytes::from_static(b"during")).await }.boxed(),
        ),
        (
            "try_dequeue",
            async move { consumer.try_dequeue().await.map(drop) }.boxed(),
        ),
        ("len", async move { counter.len().await.map(drop) }.boxed()),
        (
            "try_lock",
            // Granted or refused, either is an answer no store could have given.
            async move { locker.try_lock().await.map(drop) }.boxed(),
        ),
    ])
}

/// Every request into a silent partition ends within its bounds, with a transient
/// error (or `SessionLost`); after the heal the client works again, and the item it
/// enqueued before the cut still comes out of the queue.
pub(super) async fn requests_into_a_silent_partition(h: Harness) -> Check {
    let BeforeTheCut {
        partition,
        queue,
        lock,
        session,
    } = set_up("the client before the cut", |attempt| {
        before_the_cut(&h, attempt)
    })
    .await?;
    let client = partition.backend();

    partition.set(PartitionMode::Silent);
    let bound = REQUEST_TIMEOUT * 2 + SLACK;
    let mut took = Vec::new();
    for (what, call) in
        requests(client.as_ref(), &queue, &lock, &session).ctx("making the requests")?
    {
        let started = Instant::now();
        match tokio::time::timeout(bound, call).await {
            Err(_) => {
                return violated(format!(
                    "{what} into a silent partition was still waiting after {} \
                     (twice timeout={}, and {} for scheduling)",
                    ms(bound),
                    ms(REQUEST_TIMEOUT),
                    ms(SLACK)
                ))
            }
            Ok(Ok(())) => {
                return violated(format!(
                    "{what} succeeded although no byte reached the store"
                ))
            }
            Ok(Err(error)) if error.is_transient() || matches!(error, Error::SessionLost) => {
                took.push(format!("{what} {}", ms(started.elapsed())));
            }
            Ok(Err(error)) => {
                return violated(format!(
                    "{what} into a silent partition: expected a connection error or a \
                     timeout, got {error}"
                ))
            }
        }
    }
    // The requests' bytes still held by the proxy are dropped with their connections
    // (a reset, then the heal): a claim whose caller already had its error is not
    // applied behind its back (what a lost reply does to a claim is the queue cases').
    partition.set(PartitionMode::Reset);
    partition.set(PartitionMode::Forward);
    drop(session);

    // The same client works again: an enqueue goes through within LONG (retried, each
    // try with its own item, as a try that timed out may still have been applied).
    let (after, back) = enqueue_after_the_heal(client.as_ref(), &queue).await?;

    // Nothing written before the cut was lost. Its order is not checked: a claim made
    // during the cut may still be retried after the heal, and its item put back only
    // once the claim's caller is known to be gone.
    let before = Bytes::from_static(b"before");
    let drain = h.backend().queue(queue).ctx("making the draining client")?;
    let mut seen = Vec::new();
    let deadline = Instant::now() + LONG;
    while !(seen.contains(&before) && seen.contains(&after)) && Instant::now() < deadline {
        match drain.try_dequeue().bounded("draining").await? {
            Some(item) => seen.push(item),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    ensure!(
        seen.contains(&before),
        "the item enqueued before the cut never came out: {seen:?}"
    );
    ensure!(
        seen.contains(&after),
        "the item enqueued after the heal never came out: {seen:?}"
    );
    drop(partition);
    Ok(Holds::figure(
        format!(
            "{}; working again {} after the heal",
            took.join(", "),
            ms(back)
        ),
        format!(
            "each request ended within twice timeout={} (connect_timeout={})",
            ms(REQUEST_TIMEOUT),
            ms(CONNECT_TIMEOUT)
        ),
    ))
}

/// The client to cut off, with an item it enqueued and a session it locked through.
struct BeforeTheCut {
    partition: Box<dyn Partitioned>,
    queue: Name,
    lock: Name,
    session: Session,
}

/// One try (`attempt`, from 1, on names of its own) of the set-up before the cut: the
/// partitioned client enqueues an item, opens a session and takes and releases a lock.
/// A step the machine was too slow for (the client's 1-s request timeout, on a starved
/// runner) measured nothing about partitions: it lapses, and [`set_up`] tries again.
async fn before_the_cut(h: &Harness, attempt: usize) -> Check<BeforeTheCut> {
    let partition = partitioned_client_with_timeouts(h, REQUEST_TIMEOUT, CONNECT_TIMEOUT).await?;
    let client = partition.backend();
    let queue = h
        .name(&format!("cut-off-queue-{attempt}"))
        .ctx("naming the queue")?;
    let lock = h
        .name(&format!("cut-off-lock-{attempt}"))
        .ctx("naming the lock")?;
    client
        .queue(queue.clone())
        .ctx("making the queue")?
        .enqueue(Bytes::from_static(b"before"))
        .set_up("enqueueing before the cut")
        .await?;
    let session = client
        .session(SessionOptions::with_ttl(h.session_ttl()))
        .set_up("opening a session before the cut")
        .await?;
    client
        .locker(&session, lock.clone())
        .ctx("making the locker")?
        .lock()
        .set_up("locking before the cut")
        .await?
        .unlock()
        .set_up("unlocking before the cut")
        .await?;
    Ok(BeforeTheCut {
        partition,
        queue,
        lock,
        session,
    })
}

/// Enqueues through `client` until an enqueue goes through, for at most [`LONG`] (each
/// try with its own item, as a try that timed out may still have been applied);
/// returns the item that went through and how long it took.
async fn enqueue_after_the_heal(client: &dyn Backend, queue: &Name) -> Check<(Bytes, Duration)> {
    let producer = client.queue(queue.clone()).ctx("making the producer")?;
    let healed = Instant::now();
    let mut tries = 0u32;
    let after = loop {
        tries += 1;
        let item = Bytes::from(format!("after-{tries}"));
        match producer
            .enqueue(item.clone())
            .bounded("enqueueing after the heal")
            .await
        {
            Ok(()) => break item,
            Err(_) if healed.elapsed() < LONG => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(error) => return Err(error),
        }
    };
    let back = healed.elapsed();
    Ok((after, back))
}
