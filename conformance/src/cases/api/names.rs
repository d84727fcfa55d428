//! Names are injective on every backend: distinct (kind, name) pairs never share a
//! store key, whatever the names hold (`{`, `}`, `/`, `:`, `%`, non-ASCII), and nested
//! names (`q` beside `q/00001/x`) or a lock and a queue named alike do not interfere.

use std::collections::BTreeSet;

use distsync_core::{Bytes, Isolation, Name, StmTx};

use crate::check::{ensure, Bounded, Check, Context, Holds};
use crate::harness::Harness;
use crate::rng::Rng;

/// Random names per run of the property part.
const RANDOM_NAMES: usize = 24;

/// Segments random names are made of: the characters that key layouts use as
/// separators, tags or escapes, and non-ASCII.
const PIECES: &[&str] = &[
    "a", "b", "{", "}", ":", "%", "%25", "%7B", "ü", "€", "00001", "x", "-", "_", ".",
];

/// A random valid name under the case's prefix: 1 to 3 segments of 1 to 4 pieces.
fn random_name(h: &Harness, rng: &mut Rng) -> Check<Name> {
    let segments = 1 + rng.below(3);
    let mut parts = Vec::new();
    for _ in 0..segments {
        let pieces = 1 + rng.below(4);
        parts.push(
            (0..pieces)
                .map(|_| PIECES[rng.below(PIECES.len())])
                .collect::<String>(),
        );
    }
    h.name(&format!("r/{}", parts.join("/")))
        .ctx("making a random name")
}

/// Nested and alike names keep to themselves, and random names with every special
/// character map to distinct queues and STM keys (on a backend with neither, locks).
pub(super) async fn do_not_collide(h: Harness) -> Check {
    let caps = h.capabilities().clone();
    let mut checked = Vec::new();
    if caps.queue && caps.priority_queue {
        nested_queues(&h).await?;
        checked.push("nested queues");
    }
    if caps.lock && caps.queue && caps.barrier && caps.stm() {
        one_name_four_kinds(&h).await?;
        checked.push("one name, four kinds");
    }
    // The property: random names with every special character, each its own queue and
    // STM key.
    let mut rng = Rng::new(0x05ee_d0f4_a3e5);
    let mut names = BTreeSet::new();
    while names.len() < RANDOM_NAMES {
        names.insert(random_name(&h, &mut rng)?);
    }
    if caps.queue {
        random_name_queues(&h, &names).await?;
        checked.push("random-name queues");
    }
    if caps.stm() {
        random_name_stm_keys(&h, &names).await?;
        checked.push("random-name STM keys");
    }
    if caps.lock && checked.is_empty() {
        random_name_locks(&h, &mut rng).await?;
        checked.push("random-name locks");
    }
    ensure!(!checked.is_empty(), "the backend offers nothing to name");
    Ok(Holds::figure(
        format!("{} random names; {}", names.len(), checked.join(", ")),
        "no two (kind, name) pairs met",
    ))
}

/// A queue and a queue nested under it, with an item key's shape in its name.
async fn nested_queues(h: &Harness) -> Check<()> {
    let backend = h.backend();
    let outer = h.name("q").ctx("naming")?;
    let nested = h.name("q/00001/x").ctx("naming")?;
    let q = backend.queue(outer.clone()).ctx("queue q")?;
    let n = backend.queue(nested).ctx("queue q/00001/x")?;
    for i in 0..4 {
        q.enqueue_with_priority(format!("q{i}"), 1)
            .bounded("enqueueing into q")
            .await?;
    }
    n.enqueue(Bytes::from_static(b"nested"))
        .bounded("enqueueing into the nested queue")
        .await?;
    let mut out = Vec::new();
    while let Some(item) = q.try_dequeue().bounded("dequeueing q").await? {
        out.push(String::from_utf8_lossy(&item).into_owned());
    }
    ensure!(
        out == ["q0", "q1", "q2", "q3"],
        "queue q gave {out:?} beside queue q/00001/x"
    );
    let nested_item = n
        .try_dequeue()
        .bounded("dequeueing the nested queue")
        .await?;
    ensure!(
        nested_item.as_deref() == Some(b"nested".as_slice()),
        "the nested queue gave {nested_item:?}"
    );
    Ok(())
}

/// One name for a lock, a queue, a barrier and an STM key.
async fn one_name_four_kinds(h: &Harness) -> Check<()> {
    let backend = h.backend();
    let shared = h.name("shared").ctx("naming")?;
    let session = h.session().bounded("opening a session").await?;
    let other = h.session().bounded("opening another session").await?;
    let guard = backend
        .locker(&session, shared.clone())
        .ctx("locker")?
        .lock()
        .bounded("locking the shared name")
        .await?;
    let queue = backend.queue(shared.clone()).ctx("queue")?;
    queue
        .enqueue(Bytes::from_static(b"item"))
        .bounded("enqueueing under the lock's name")
        .await?;
    let barrier = backend.barrier(shared.clone()).ctx("barrier")?;
    barrier.hold().bounded("holding the barrier").await?;
    let stm = backend.stm().ctx("stm")?;
    let key = shared.as_str().to_owned();
    let put = key.clone();
    stm.atomically(Isolation::SerializableSnapshot, move |tx: StmTx| {
        let put = put.clone();
        async move {
            tx.put(&put, "value");
            Ok(())
        }
    })
    .bounded("writing the STM key")
    .await?;
    let item = queue.try_dequeue().bounded("dequeueing").await?;
    ensure!(
        item.as_deref() == Some(b"item".as_slice()),
        "the queue named like a held lock gave {item:?}"
    );
    ensure!(
        !guard.is_lost(),
        "the lock was lost after the queue's dequeue"
    );
    let refused = backend
        .locker(&other, shared.clone())
        .ctx("locker")?
        .try_lock()
        .bounded("try_lock by another session")
        .await?;
    ensure!(
        refused.is_none(),
        "another session took the lock after a queue, a barrier and an STM key of its name were used"
    );
    let read = key.clone();
    let value = stm
        .atomically(Isolation::SerializableSnapshot, move |tx: StmTx| {
            let read = read.clone();
            async move { tx.get(&read).await }
        })
        .bounded("reading the STM key")
        .await?;
    ensure!(
        value.as_deref() == Some(b"value".as_slice()),
        "the STM key named like a lock, queue and barrier reads {value:?}"
    );
    barrier.release().bounded("releasing the barrier").await?;
    guard.unlock().bounded("unlocking").await?;
    Ok(())
}

/// Each random name its own queue: every queue gives back its own item alone.
async fn random_name_queues(h: &Harness, names: &BTreeSet<Name>) -> Check<()> {
    let backend = h.backend();
    for name in names {
        backend
            .queue(name.clone())
            .ctx("queue")?
            .enqueue(name.as_str().to_owned())
            .bounded(format!("enqueueing into {name:?}"))
            .await?;
    }
    for name in names {
        let queue = backend.queue(name.clone()).ctx("queue")?;
        let mut got = Vec::new();
        while let Some(item) = queue.try_dequeue().bounded("dequeueing").await? {
            got.push(String::from_utf8_lossy(&item).into_owned());
        }
        ensure!(
            got == [name.as_str()],
            "queue {:?} gave {got:?}: another name's item, or none",
            name.as_str()
        );
    }
    Ok(())
}

/// Each random name its own STM key: every key reads back its own name.
async fn random_name_stm_keys(h: &Harness, names: &BTreeSet<Name>) -> Check<()> {
    let stm = h.backend().stm().ctx("stm")?;
    for name in names {
        let key = name.as_str().to_owned();
        stm.atomically(Isolation::SerializableSnapshot, move |tx: StmTx| {
            let key = key.clone();
            async move {
                tx.put(&key, key.clone());
                Ok(())
            }
        })
        .bounded("writing a random-name STM key")
        .await?;
    }
    for name in names {
        let key = name.as_str().to_owned();
        let value = stm
            .atomically(Isolation::SerializableSnapshot, move |tx: StmTx| {
                let key = key.clone();
                async move { tx.get(&key).await }
            })
            .bounded("reading a random-name STM key")
            .await?;
        ensure!(
            value.as_deref() == Some(name.as_str().as_bytes()),
            "STM key {:?} reads {value:?}",
            name.as_str()
        );
    }
    Ok(())
}

/// A backend that offers locks and nothing named above: random one-segment names
/// (every special character), each its own lock, each taken by a session of its
/// own: two names sharing a key would see the second refused.
async fn random_name_locks(h: &Harness, rng: &mut Rng) -> Check<()> {
    let mut held = Vec::new();
    let mut flat = BTreeSet::new();
    while flat.len() < RANDOM_NAMES {
        let pieces = 1 + rng.below(4);
        let segment: String = (0..pieces)
            .map(|_| PIECES[rng.below(PIECES.len())])
            .collect();
        flat.insert(
            h.name(&format!("l/{segment}"))
                .ctx("making a random name")?,
        );
    }
    for name in &flat {
        let session = h.session().bounded("opening a session").await?;
        let guard = h
            .backend()
            .locker(&session, name.clone())
            .ctx("locker")?
            .try_lock()
            .bounded(format!("try_lock of {name:?}"))
            .await?;
        let Some(guard) = guard else {
            return crate::check::violated(format!(
                "the lock {name:?} was refused while only locks of other names were held"
            ));
        };
        held.push((guard, session));
    }
    for (guard, _session) in held {
        guard.unlock().bounded("unlocking").await?;
    }
    Ok(())
}
