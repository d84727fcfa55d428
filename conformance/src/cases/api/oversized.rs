//! A value one byte over the store's declared limit
//! ([`Capabilities::max_value_size`](distsync_core::Capabilities::max_value_size)) is
//! refused with `Error::TooLarge` before anything is sent, and a value at the limit is
//! taken: on every primitive that takes a caller's value, as the store offers it.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use distsync_core::queue::AppendKey;
use distsync_core::{
    Bytes, Capabilities, Coordinator, Error, Isolation, Name, Queue, Result, Session, Stm,
};
use tokio::time::Instant;

use crate::check::{ensure, violated, within, Bounded, Check, Context, Holds, LONG, PROMPT};
use crate::harness::Harness;

/// How long a refusal may take: it is the client's own check, with no request.
const REFUSAL: Duration = Duration::from_secs(1);

/// How long a write or read of a value at the limit may take: megabytes through a
/// loaded store (MySQL sends each value four times over, as hexadecimal text), not a
/// prompt step; the bound only keeps a hang from passing.
const AT_LIMIT: Duration = LONG;

/// The refusals so far and the slowest of them.
#[derive(Default)]
struct Refusals {
    count: usize,
    slowest: Duration,
}

impl Refusals {
    /// Runs `call` with a value of `size` bytes, over `limit`: it must give
    /// `Error::TooLarge` naming both, not transient, within [`REFUSAL`].
    async fn expect<T>(
        &mut self,
        what: &str,
        size: usize,
        limit: usize,
        call: impl Future<Output = Result<T>>,
    ) -> Check<()> {
        let started = Instant::now();
        let result = within(PROMPT, what, async { Ok(call.await) }).await?;
        let took = started.elapsed();
        self.slowest = self.slowest.max(took);
        match result {
            Err(Error::TooLarge {
                size: said_size,
                limit: said_limit,
                ..
            }) => {
                ensure!(
                    said_size == size && said_limit == limit,
                    "{what}: TooLarge named {said_size} bytes and a limit of {said_limit}, \
                     not {size} and {limit}"
                );
                ensure!(
                    took < REFUSAL,
                    "{what} of {size} bytes was refused only after {took:?}"
                );
                self.count += 1;
                Ok(())
            }
            Err(other) => violated(format!(
                "{what} of {size} bytes (declared limit {limit}) gave {other} (transient: {}), \
                 not TooLarge",
                other.is_transient()
            )),
            Ok(_) => violated(format!(
                "{what} of {size} bytes was accepted; the declared limit is {limit}"
            )),
        }
    }
}

/// For each primitive that takes a value (queue, election, guarded writes of a lock and
/// of a permit, STM, group metadata): one byte over the limit is refused with
/// `TooLarge` at once and leaves nothing in the store; a value of exactly the limit is
/// taken and read back whole, then removed.
///
/// A try whose write at the limit lapses (a replica acknowledgement of a value this
/// size that timed out on a loaded machine, see [`at_limit`]) starts again on names of
/// its own, as a set-up does ([`crate::check::set_up`]).
pub(super) async fn refused_and_nothing_written(h: Harness) -> Check {
    let caps = h.capabilities().clone();
    crate::check::set_up("writing values at the limit", |attempt| {
        every_primitive(&h, &caps, attempt)
    })
    .await
}

/// One try of [`refused_and_nothing_written`], on names of try `attempt`.
async fn every_primitive(h: &Harness, caps: &Capabilities, attempt: usize) -> Check {
    let mut values = set_up(h, caps, attempt).await?;
    if caps.queue {
        queue(&mut values).await?;
    }
    if caps.election {
        election(&mut values).await?;
    }
    if caps.guarded_writes && caps.lock {
        lock(&mut values).await?;
    }
    if caps.guarded_writes && caps.semaphore {
        permit(&mut values).await?;
    }
    if values.stm.is_some() {
        stm_put(&mut values).await?;
    }
    if caps.election {
        group(&mut values).await?;
    }
    clean_up(values).await
}

/// What each primitive's check uses: the values over and at the limit, one session,
/// the STM at a level the store offers (where it has one) and the tally so far.
struct Values<'h> {
    h: &'h Harness,
    coordinator: Coordinator,
    session: Session,
    stm: Option<(Stm, Isolation)>,
    limit: usize,
    over: Bytes,
    at: Bytes,
    refusals: Refusals,
    taken: Vec<&'static str>,
    /// The try these values are for ([`refused_and_nothing_written`]): every name and
    /// key carries it.
    attempt: usize,
}

impl Values<'_> {
    /// The name of the primitive `what` in this try.
    fn name(&self, what: &str) -> Result<Name> {
        self.h.name(&format!("{what}-{}", self.attempt))
    }

    /// The key `what` in this try.
    fn key(&self, what: &str) -> String {
        self.h.key(&format!("{what}-{}", self.attempt))
    }
}

async fn set_up<'h>(h: &'h Harness, caps: &Capabilities, attempt: usize) -> Check<Values<'h>> {
    let limit = caps.max_value_size;
    let over = Bytes::from(vec![b'o'; limit + 1]);
    let at = Bytes::from(vec![b'a'; limit]);
    let coordinator = h.coordinator();
    let session = h.session().bounded("opening a session").await?;
    let stm = match Isolation::ALL
        .into_iter()
        .find(|&level| caps.supports_isolation(level))
    {
        Some(level) => Some((coordinator.stm().ctx("getting the STM")?, level)),
        None => None,
    };
    Ok(Values {
        h,
        coordinator,
        session,
        stm,
        limit,
        over,
        at,
        refusals: Refusals::default(),
        taken: Vec::new(),
        attempt,
    })
}

/// Every enqueue refuses an item over the limit, and one at it comes back whole.
async fn queue(values: &mut Values<'_>) -> Check<()> {
    let (limit, over, at) = (values.limit, values.over.clone(), values.at.clone());
    let name = values.name("queue").ctx("naming the queue")?;
    let refusals = &mut values.refusals;
    let queue = values
        .coordinator
        .queue(name.as_str())
        .ctx("making the queue")?;
    let size = over.len();
    refusals
        .expect("enqueue", size, limit, queue.enqueue(over.clone()))
        .await?;
    refusals
        .expect(
            "append_bytes",
            size,
            limit,
            queue.append_bytes(&AppendKey::call(), over.clone(), 0),
        )
        .await?;
    refusals
        .expect(
            "enqueue_with_priority",
            size,
            limit,
            queue.enqueue_with_priority(over.clone(), 1),
        )
        .await?;
    let key =
        distsync_core::queue::IdempotencyKey::new("oversized").ctx("making an idempotency key")?;
    refusals
        .expect(
            "enqueue_once",
            size,
            limit,
            queue.enqueue_once(&key, over.clone(), 0),
        )
        .await?;
    let left = queue.len().bounded("reading the queue's length").await?;
    ensure!(
        left == 0,
        "the queue holds {left} items after every oversized enqueue was refused"
    );
    at_limit("enqueueing an item at the limit", queue.enqueue(at.clone())).await?;
    dequeued_whole(queue.as_ref(), &at, "enqueue").await?;
    // An idempotent enqueue sends its record beside the item.
    let once = within(AT_LIMIT, "enqueue_once at the limit", async {
        Ok(queue.enqueue_once(&key, at.clone(), 0).await)
    })
    .await?;
    match once {
        Err(Error::Unsupported { .. }) => {}
        once => {
            once.set_up_ctx("enqueue_once at the limit")?;
            dequeued_whole(queue.as_ref(), &at, "enqueue_once").await?;
        }
    }
    values.taken.push("queue");
    Ok(())
}

/// A campaign and a proclamation over the limit are refused; at it, the leader's value
/// is the one proclaimed.
async fn election(values: &mut Values<'_>) -> Check<()> {
    let (limit, over, at) = (values.limit, values.over.clone(), values.at.clone());
    let name = values.name("election").ctx("naming the election")?;
    let refusals = &mut values.refusals;
    let election = values
        .coordinator
        .election(&values.session, name.as_str())
        .ctx("making the election")?;
    refusals
        .expect(
            "campaign",
            over.len(),
            limit,
            election.campaign(over.clone()),
        )
        .await?;
    let leader = election.leader().bounded("reading the leader").await?;
    ensure!(
        leader.is_none(),
        "the election has a leader after the only campaign was refused"
    );
    let leadership = at_limit(
        "campaigning with a value at the limit",
        election.campaign(at.clone()),
    )
    .await?;
    refusals
        .expect(
            "proclaim",
            over.len(),
            limit,
            leadership.proclaim(over.clone()),
        )
        .await?;
    at_limit(
        "proclaiming a value at the limit",
        leadership.proclaim(at.clone()),
    )
    .await?;
    let leader = at_limit("reading the leader", election.leader()).await?;
    ensure!(
        leader.as_ref().map(|leader| &leader.value) == Some(&at),
        "the leader's value is {:?} bytes, not the {limit} it proclaimed",
        leader.map(|leader| leader.value.len())
    );
    leadership.resign().bounded("resigning").await?;
    values.taken.push("election");
    Ok(())
}

/// A lock's guarded write over the limit is refused and writes nothing; one at it is
/// read back whole.
async fn lock(values: &mut Values<'_>) -> Check<()> {
    let (limit, over, at) = (values.limit, values.over.clone(), values.at.clone());
    let stm = values.stm.as_ref();
    let name = values.name("lock").ctx("naming the lock")?;
    let key = values.key("lock-written");
    let guard = values
        .coordinator
        .locker(&values.session, name.as_str())
        .ctx("making the locker")?
        .lock()
        .bounded("locking")
        .await?;
    values
        .refusals
        .expect(
            "put_if_held",
            over.len(),
            limit,
            guard.put_if_held(&key, over.clone()),
        )
        .await?;
    absent(stm, &key, "a lock's refused put_if_held").await?;
    at_limit(
        "put_if_held at the limit",
        guard.put_if_held(&key, at.clone()),
    )
    .await?;
    read_back(stm, &key, &at).await?;
    guard.unlock().bounded("unlocking").await?;
    values.taken.push("put_if_held");
    Ok(())
}

/// A permit's guarded write over the limit is refused and writes nothing.
async fn permit(values: &mut Values<'_>) -> Check<()> {
    let (limit, over) = (values.limit, values.over.clone());
    let name = values.name("semaphore").ctx("naming the semaphore")?;
    let key = values.key("permit-written");
    let permit = values
        .coordinator
        .semaphore(&values.session, name.as_str(), 1)
        .ctx("making the semaphore")?
        .acquire()
        .bounded("acquiring a permit")
        .await?;
    values
        .refusals
        .expect(
            "a permit's put_if_held",
            over.len(),
            limit,
            permit.put_if_held(&key, over.clone()),
        )
        .await?;
    absent(values.stm.as_ref(), &key, "a permit's refused put_if_held").await?;
    permit.release().bounded("releasing the permit").await?;
    Ok(())
}

/// An STM put over the limit is refused and writes nothing; one at it is read back
/// whole.
async fn stm_put(values: &mut Values<'_>) -> Check<()> {
    let Some((stm, level)) = &values.stm else {
        return Ok(());
    };
    let (limit, over, at) = (values.limit, values.over.clone(), values.at.clone());
    let key = values.key("stm");
    values
        .refusals
        .expect(
            "STM put",
            over.len(),
            limit,
            put(stm.clone(), *level, key.clone(), over.clone()),
        )
        .await?;
    absent(Some(&(stm.clone(), *level)), &key, "a refused STM put").await?;
    at_limit(
        "an STM put at the limit",
        put(stm.clone(), *level, key.clone(), at.clone()),
    )
    .await?;
    read_back(Some(&(stm.clone(), *level)), &key, &at).await?;
    values.taken.push("stm");
    Ok(())
}

/// A group member's metadata over the limit is refused, and no member joins.
async fn group(values: &mut Values<'_>) -> Check<()> {
    let name = values.name("group").ctx("naming the group")?;
    match values.coordinator.group(name.as_str()) {
        Ok(group) => {
            values
                .refusals
                .expect(
                    "a group member's metadata",
                    values.over.len(),
                    values.limit,
                    group.join(&values.session, "member", values.over.clone()),
                )
                .await?;
            match group.members().await {
                Ok(members) => ensure!(
                    members.is_empty(),
                    "the group lists {} members after the only join was refused",
                    members.len()
                ),
                Err(Error::Unsupported { .. }) => {}
                Err(error) => return violated(format!("listing the members: {error}")),
            }
        }
        Err(Error::Unsupported { .. }) => {}
        Err(error) => return violated(format!("making the group: {error}")),
    }
    Ok(())
}

/// Removes the values written at the limit, closes the session and gives the figure.
async fn clean_up(values: Values<'_>) -> Check {
    let keys = [values.key("lock-written"), values.key("stm")];
    let Values {
        session,
        stm,
        limit,
        refusals,
        taken,
        ..
    } = values;
    if let Some((stm, level)) = &stm {
        // The values at the limit go, so that repeated runs leave nothing large behind.
        let cleared = stm.atomically(*level, move |tx| {
            for key in &keys {
                tx.delete(key);
            }
            async move { Ok(()) }
        });
        at_limit("deleting the values written", cleared).await?;
    }
    within(PROMPT, "closing the session", session.close()).await?;
    Ok(Holds::figure(
        format!(
            "limit {limit} B; {} refusals, slowest {:.1} ms",
            refusals.count,
            refusals.slowest.as_secs_f64() * 1e3
        ),
        format!(
            "one byte over is TooLarge at once and writes nothing; a value at the limit is \
             taken by: {}",
            if taken.is_empty() {
                "none".to_owned()
            } else {
                taken.join(", ")
            }
        ),
    ))
}

/// Awaits a step that writes or reads a value at the limit, for at most [`AT_LIMIT`]. A
/// transient error or a lost session there says the store was slow or out of reach (a
/// replica acknowledgement that timed out on a loaded machine, a session that expired
/// meanwhile), not that it takes less than it declares: the run lapses and runs again,
/// as a set-up step's does. A timeout or any other error is a violation.
async fn at_limit<T>(what: impl Display, step: impl Future<Output = Result<T>>) -> Check<T> {
    within(AT_LIMIT, &what, async { Ok(step.await) })
        .await?
        .set_up_ctx(what)
}

/// Takes the queue's first item, which must be `value`, enqueued by `how`.
async fn dequeued_whole(queue: &dyn Queue, value: &Bytes, how: &str) -> Check<()> {
    let item = at_limit(
        format!("dequeueing the item {how} put at the limit"),
        queue.try_dequeue(),
    )
    .await?;
    ensure!(
        item.as_ref() == Some(value),
        "the item {how} put at the limit came back as {:?} bytes, not {}",
        item.map(|item| item.len()),
        value.len()
    );
    Ok(())
}

/// One transaction that writes `value` to `key`.
async fn put(stm: Stm, level: Isolation, key: String, value: Bytes) -> Result<()> {
    stm.atomically(level, move |tx| {
        tx.put(&key, value.clone());
        async move { Ok(()) }
    })
    .await
}

/// Checks through the STM, where there is one, that `key` holds nothing.
async fn absent(stm: Option<&(Stm, Isolation)>, key: &str, after: &str) -> Check<()> {
    let Some(read) = read(stm, key).await? else {
        return Ok(());
    };
    ensure!(
        read.is_none(),
        "the STM key {key:?} holds {:?} bytes after {after}",
        read.map(|value| value.len())
    );
    Ok(())
}

/// Checks through the STM, where there is one, that `key` holds `value`.
async fn read_back(stm: Option<&(Stm, Isolation)>, key: &str, value: &Bytes) -> Check<()> {
    let Some(read) = read(stm, key).await? else {
        return Ok(());
    };
    ensure!(
        read.as_ref() == Some(value),
        "the STM key {key:?} holds {:?} bytes, not the {} written at the limit",
        read.map(|value| value.len()),
        value.len()
    );
    Ok(())
}

/// `key`'s value read in one transaction; `None` without an STM.
async fn read(stm: Option<&(Stm, Isolation)>, key: &str) -> Check<Option<Option<Bytes>>> {
    let Some((stm, level)) = stm else {
        return Ok(None);
    };
    let key = key.to_owned();
    let value = at_limit(
        format!("reading the STM key {key:?}"),
        stm.atomically(*level, move |tx| {
            let key = key.clone();
            async move { tx.get(&key).await }
        }),
    )
    .await?;
    Ok(Some(value))
}
