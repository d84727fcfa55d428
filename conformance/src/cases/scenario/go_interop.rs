//! Interop with etcd's own Go code: each case runs Go clients of etcd's `concurrency`
//! and `recipes` packages (the Go peer, [`GoPeer`]) beside distsync on the same etcd
//! and names, in both directions: Go holds or produces and distsync waits or consumes,
//! then the other way round. Locks and elections use distsync's default client (their
//! layout is Go's in every layout); the other kinds use the peer's client in Go's key
//! layout (`layout=go`).

use std::num::NonZeroUsize;
use std::sync::Arc;

use bytes::Bytes;
use distsync_core::{Backend, Isolation, Locker, Name, Session};

use crate::check::{
    ensure, ms, violated, within, Bounded, Check, Context, Holds, Task, LONG, PROMPT,
};
use crate::faults::{GoClient, GoPeer};
use crate::harness::Harness;

/// The TTL of the Go clients' sessions, in seconds.
const GO_TTL: u64 = 10;

/// The Go peer beside this harness's store.
async fn peer(h: &Harness) -> Check<GoPeer> {
    h.faults()
        .go_peer(&**h.backend())
        .bounded("starting the Go peer's distsync client")
        .await
}

/// One Go client.
async fn go(peer: &GoPeer) -> Check<GoClient> {
    within(LONG, "starting a Go client", peer.spawn(GO_TTL)).await
}

/// `command` on `client`, bounded: its reply tokens.
async fn call(client: &mut GoClient, command: &str) -> Check<Vec<String>> {
    within(PROMPT, format!("Go: {command}"), client.call(command)).await
}

/// The reply to a command sent earlier, bounded.
async fn reply(client: &mut GoClient, command: &str) -> Check<Vec<String>> {
    within(PROMPT, format!("Go's reply to {command}"), client.reply()).await
}

/// Checks that `client`'s last command is still blocked.
async fn ensure_go_blocked(client: &mut GoClient, command: &str, because: &str) -> Check<()> {
    if within(PROMPT, "reading the Go peer", client.has_replied()).await? {
        return violated(format!("Go's {command} returned although {because}"));
    }
    Ok(())
}

/// A session of the distsync client `backend` with the harness's TTL.
async fn session(h: &Harness, backend: &Arc<dyn Backend>) -> Check<Session> {
    backend
        .session(distsync_core::SessionOptions::with_ttl(h.session_ttl()))
        .bounded("opening a session")
        .await
}

/// The first token of a reply.
fn first(tokens: &[String]) -> String {
    tokens.first().cloned().unwrap_or_default()
}

/// Waits until `count` keys sit under `<ns><name>/` (a lock line's contenders; for a
/// read-write lock `rw`, the name `rw/write` counts its write keys).
async fn await_keys(locker: &dyn Locker, count: usize, what: &str) -> Check<()> {
    crate::check::eventually(PROMPT, format!("{count} {what}"), || async {
        let seen = locker.contenders().await.ctx("counting contenders")?;
        Ok((seen == count).then_some(()))
    })
    .await
}

/// Lock: a Go holder excludes distsync, distsync waits in line with a Go waiter behind
/// it, and the grants follow the line across languages.
pub(in crate::cases) async fn lock(h: Harness) -> Check {
    let peer = peer(&h).await?;
    let name = h.name("go-lock").ctx("naming the lock")?;
    let session = session(&h, h.backend()).await?;
    let locker: Arc<dyn Locker> = h
        .backend()
        .locker(&session, name.clone())
        .ctx("making a locker")?
        .into();
    let (mut first_go, mut second_go) = (go(&peer).await?, go(&peer).await?);
    let go_key = first(&call(&mut first_go, &format!("lock {name}")).await?);
    let refused = locker.try_lock().bounded("try_lock while Go holds").await?;
    ensure!(
        refused.is_none(),
        "distsync's try_lock succeeded while Go's Mutex held {go_key}"
    );
    let waiting = Arc::clone(&locker);
    let mut ours = Task::spawn("distsync's lock()", async move {
        waiting.lock().await.ctx("locking")
    });
    await_keys(&*locker, 2, "contenders (Go's holder, distsync)").await?;
    let command = format!("lock {name}");
    within(PROMPT, "sending Go's second lock", second_go.send(&command)).await?;
    await_keys(&*locker, 3, "contenders (Go, distsync, Go)").await?;
    let released = tokio::time::Instant::now();
    call(&mut first_go, &format!("unlock {name}")).await?;
    let guard = ours.join(PROMPT).await?;
    let handed = released.elapsed();
    ensure_go_blocked(
        &mut second_go,
        &command,
        "distsync, ahead of it in line, held the lock",
    )
    .await?;
    guard.unlock().bounded("unlocking").await?;
    let second_key = first(&reply(&mut second_go, &command).await?);
    call(&mut second_go, &format!("unlock {name}")).await?;
    Ok(Holds::figure(
        format!("Go → distsync hand-off {}", ms(handed)),
        format!("Go's Mutex {go_key} excluded distsync; Go, distsync and Go ({second_key}) were granted in line order"),
    ))
}

/// Election: one leader across Go and distsync; each sees the other's proclamations.
pub(in crate::cases) async fn election(h: Harness) -> Check {
    let peer = peer(&h).await?;
    let name = h.name("go-election").ctx("naming the election")?;
    let session = session(&h, h.backend()).await?;
    let election: Arc<dyn distsync_core::Election> = h
        .backend()
        .election(&session, name.clone())
        .ctx("making an election")?
        .into();
    let (mut leader_go, mut observer_go) = (go(&peer).await?, go(&peer).await?);
    call(&mut leader_go, &format!("campaign {name} go-1")).await?;
    let seen = election.leader().bounded("reading the leader").await?;
    ensure!(
        seen.as_ref().is_some_and(|leader| leader.value == "go-1"),
        "distsync saw {seen:?} as leader while Go's candidate led with go-1"
    );
    let campaigning = Arc::clone(&election);
    let mut ours = Task::spawn("distsync's campaign", async move {
        campaigning
            .campaign(Bytes::from_static(b"rust-1"))
            .await
            .ctx("campaigning")
    });
    ours.ensure_blocked(h.settle(), "Go's candidate leads")
        .await?;
    call(&mut leader_go, &format!("proclaim {name} go-2")).await?;
    let seen = election.leader().bounded("reading the leader").await?;
    ensure!(
        seen.as_ref().is_some_and(|leader| leader.value == "go-2"),
        "distsync saw {seen:?} after Go proclaimed go-2"
    );
    call(&mut leader_go, &format!("resign {name}")).await?;
    let leadership = ours.join(PROMPT).await?;
    let go_sees = first(&call(&mut observer_go, &format!("leader {name}")).await?);
    ensure!(
        go_sees == "rust-1",
        "Go saw {go_sees:?} as leader after distsync won"
    );
    leadership.proclaim("rust-2").bounded("proclaiming").await?;
    let go_sees = first(&call(&mut observer_go, &format!("leader {name}")).await?);
    ensure!(
        go_sees == "rust-2",
        "Go saw {go_sees:?} after distsync proclaimed rust-2"
    );
    let command = format!("campaign {name} go-3");
    within(PROMPT, "sending Go's campaign", leader_go.send(&command)).await?;
    ensure_go_blocked(&mut leader_go, &command, "distsync leads").await?;
    leadership.resign().bounded("resigning").await?;
    reply(&mut leader_go, &command).await?;
    let seen = election.leader().bounded("reading the leader").await?;
    ensure!(
        seen.as_ref().is_some_and(|leader| leader.value == "go-3"),
        "distsync saw {seen:?} after Go's second candidate won"
    );
    call(&mut leader_go, &format!("resign {name}")).await?;
    Ok(Holds::new(
        "one leader across Go and distsync; each read the other's proclamations",
    ))
}

/// Read-write lock (Go's layout): readers share across languages, a writer excludes,
/// and a waiting writer of either language blocks later readers of the other.
pub(in crate::cases) async fn rwlock(h: Harness) -> Check {
    let peer = peer(&h).await?;
    let backend = Arc::clone(peer.backend());
    let name = h.name("go-rwlock").ctx("naming the rwlock")?;
    let session = session(&h, &backend).await?;
    let rwlock: Arc<dyn distsync_core::RwLock> = backend
        .rwlock(&session, name.clone())
        .ctx("making a rwlock")?
        .into();
    // Counts the write keys (`<name>/write/<nanos>`) of both languages.
    let writes = backend
        .locker(
            &session,
            Name::new(format!("{name}/write")).ctx("naming the write keys")?,
        )
        .ctx("making a key counter")?;
    let (mut a, mut b, mut c) = (go(&peer).await?, go(&peer).await?, go(&peer).await?);
    call(&mut a, &format!("rlock {name}")).await?;
    let shared = rwlock
        .try_read()
        .bounded("try_read beside Go's reader")
        .await?;
    ensure!(
        shared.is_some(),
        "distsync could not read beside Go's reader"
    );
    if let Some(read) = shared {
        read.unlock().bounded("releasing the read").await?;
    }
    let excluded = rwlock
        .try_write()
        .bounded("try_write beside Go's reader")
        .await?;
    ensure!(excluded.is_none(), "distsync wrote while Go's reader held");
    // distsync's writer waits behind Go's reader; Go's later reader waits behind it.
    let writing = Arc::clone(&rwlock);
    let mut writer = Task::spawn("distsync's write()", async move {
        writing.write().await.ctx("write-locking")
    });
    await_keys(&*writes, 1, "write keys (distsync's writer)").await?;
    let late_read = format!("rlock {name}");
    within(PROMPT, "sending Go's later read", b.send(&late_read)).await?;
    writer
        .ensure_blocked(h.settle(), "Go's reader holds")
        .await?;
    call(&mut a, &format!("runlock {name}")).await?;
    let write = writer.join(PROMPT).await?;
    ensure_go_blocked(&mut b, &late_read, "distsync's writer, ahead of it, held").await?;
    write.unlock().bounded("releasing the write").await?;
    reply(&mut b, &late_read).await?;
    // Go's writer waits behind Go's reader; distsync's later reader waits behind it.
    let go_write = format!("wlock {name}");
    within(PROMPT, "sending Go's write", c.send(&go_write)).await?;
    await_keys(&*writes, 1, "write keys (Go's writer)").await?;
    let reading = Arc::clone(&rwlock);
    let mut reader = Task::spawn("distsync's read()", async move {
        reading.read().await.ctx("read-locking")
    });
    reader
        .ensure_blocked(h.settle(), "Go's writer waits ahead of it")
        .await?;
    call(&mut b, &format!("runlock {name}")).await?;
    reply(&mut c, &go_write).await?;
    reader
        .ensure_blocked(h.settle(), "Go's writer holds")
        .await?;
    call(&mut c, &format!("wunlock {name}")).await?;
    let read = reader.join(PROMPT).await?;
    read.unlock().bounded("releasing the read").await?;
    Ok(Holds::new(
        "readers shared across languages; writers excluded; later readers of either language \
         waited behind a waiting writer of the other",
    ))
}

/// Queue (Go's layout): Go's `Queue` and `PriorityQueue` items reach distsync in
/// order and back, and a waiting consumer of either language gets an item of the
/// other.
pub(in crate::cases) async fn queue(h: Harness) -> Check {
    let peer = peer(&h).await?;
    let backend = Arc::clone(peer.backend());
    let fifo = h.name("go-queue").ctx("naming the queue")?;
    let prioritised = h
        .name("go-priority-queue")
        .ctx("naming the priority queue")?;
    let queue: Arc<dyn distsync_core::Queue> =
        backend.queue(fifo.clone()).ctx("making a queue")?.into();
    let by_priority = backend.queue(prioritised.clone()).ctx("making a queue")?;
    let (mut producer, mut consumer) = (go(&peer).await?, go(&peer).await?);
    let take = |queue: &Arc<dyn distsync_core::Queue>| {
        let queue = Arc::clone(queue);
        async move { queue.dequeue().await }
    };
    // Go's Queue → distsync, and back.
    for item in ["g1", "g2", "g3"] {
        call(&mut producer, &format!("enqueue {fifo} {item}")).await?;
    }
    for expected in ["g1", "g2", "g3"] {
        let item = within(PROMPT, "dequeuing Go's item", take(&queue)).await?;
        ensure!(
            item == expected,
            "distsync dequeued {item:?} where Go's Queue put {expected:?} next"
        );
    }
    for item in ["r1", "r2", "r3"] {
        queue.enqueue(item).bounded("enqueuing").await?;
    }
    for expected in ["r1", "r2", "r3"] {
        let item = first(&call(&mut consumer, &format!("dequeue {fifo}")).await?);
        ensure!(
            item == expected,
            "Go's Queue dequeued {item:?} where distsync put {expected:?} next"
        );
    }
    // Go's PriorityQueue → distsync, and back.
    for (priority, item) in [(5, "p5"), (1, "p1"), (3, "p3")] {
        call(
            &mut producer,
            &format!("penqueue {prioritised} {priority} {item}"),
        )
        .await?;
    }
    for expected in ["p1", "p3", "p5"] {
        let item = by_priority
            .dequeue()
            .bounded("dequeuing Go's prioritised item")
            .await?;
        ensure!(
            item == expected,
            "distsync dequeued {item:?} where Go's priorities put {expected:?} next"
        );
    }
    for (priority, item) in [(9, "q9"), (2, "q2"), (4, "q4")] {
        by_priority
            .enqueue_with_priority(item, priority)
            .bounded("enqueuing with a priority")
            .await?;
    }
    for expected in ["q2", "q4", "q9"] {
        let item = first(&call(&mut consumer, &format!("pdequeue {prioritised}")).await?);
        ensure!(
            item == expected,
            "Go's PriorityQueue dequeued {item:?} where distsync's \
             priorities put {expected:?} next"
        );
    }
    // A waiting distsync consumer gets Go's item (Go's producers wake nobody).
    let mut waiting = Task::spawn("distsync's dequeue()", {
        let queue = Arc::clone(&queue);
        async move { queue.dequeue().await.ctx("dequeuing") }
    });
    waiting
        .ensure_blocked(h.settle(), "the queue is empty")
        .await?;
    let put = tokio::time::Instant::now();
    call(&mut producer, &format!("enqueue {fifo} late-go")).await?;
    let item = waiting.join(PROMPT).await?;
    let woken = put.elapsed();
    ensure!(
        item == "late-go",
        "the waiting consumer got {item:?}, not Go's late-go"
    );
    // A waiting Go consumer gets distsync's item.
    let command = format!("dequeue {fifo}");
    within(PROMPT, "sending Go's dequeue", consumer.send(&command)).await?;
    ensure_go_blocked(&mut consumer, &command, "the queue is empty").await?;
    queue
        .enqueue(Bytes::from_static(b"late-rust"))
        .bounded("enqueuing")
        .await?;
    let item = first(&reply(&mut consumer, &command).await?);
    ensure!(
        item == "late-rust",
        "Go's waiting Dequeue got {item:?}, not distsync's late-rust"
    );
    let left = queue.len().bounded("counting what is left").await?;
    ensure!(
        left == 0,
        "{left} items left after every item was taken once"
    );
    Ok(Holds::figure(
        format!("waiting consumer woken by Go's put in {}", ms(woken)),
        "Go's Queue and PriorityQueue items in order both ways; waiting consumers of each \
         language got the other's items",
    ))
}

/// Barrier (Go's layout): a barrier held by one language holds the other's waiters
/// until released.
///
/// Go's side waits in two steps. Go's `Barrier.Wait` in etcd 3.4 watches from the
/// revision of its read for a put and then a delete of the key, so on a store written
/// by anyone between the hold and its read it misses the release and waits for the
/// next hold's (fixed upstream after 3.4.23). So a Go waiter must block while distsync
/// holds, and a Go `Wait` after distsync's release must return at once.
pub(in crate::cases) async fn barrier(h: Harness) -> Check {
    let peer = peer(&h).await?;
    let name = h.name("go-barrier").ctx("naming the barrier")?;
    let barrier: Arc<dyn distsync_core::Barrier> = peer
        .backend()
        .barrier(name.clone())
        .ctx("making a barrier")?
        .into();
    let (mut holder, mut waiter) = (go(&peer).await?, go(&peer).await?);
    call(&mut holder, &format!("barrier-hold {name}")).await?;
    let mut ours = Task::spawn("distsync's wait()", {
        let barrier = Arc::clone(&barrier);
        async move { barrier.wait().await.ctx("waiting at the barrier") }
    });
    ours.ensure_blocked(h.settle(), "Go holds the barrier")
        .await?;
    call(&mut holder, &format!("barrier-release {name}")).await?;
    ours.join(PROMPT).await?;
    barrier.hold().bounded("holding the barrier").await?;
    let command = format!("barrier-wait {name}");
    within(PROMPT, "sending Go's wait", waiter.send(&command)).await?;
    ensure_go_blocked(&mut waiter, &command, "distsync holds the barrier").await?;
    barrier.release().bounded("releasing the barrier").await?;
    call(&mut holder, &command).await?;
    Ok(Holds::new(
        "a barrier held by either language held the other's waiters until released",
    ))
}

/// Double barrier (Go's layout): one Go and one distsync participant of a barrier of
/// two enter together and leave together.
pub(in crate::cases) async fn double_barrier(h: Harness) -> Check {
    const PARTICIPANTS: NonZeroUsize = NonZeroUsize::new(2).unwrap();
    let peer = peer(&h).await?;
    let backend = Arc::clone(peer.backend());
    let name = h
        .name("go-double-barrier")
        .ctx("naming the double barrier")?;
    let session = session(&h, &backend).await?;
    let barrier: Arc<dyn distsync_core::DoubleBarrier> = backend
        .double_barrier(&session, name.clone(), PARTICIPANTS)
        .ctx("making a double barrier")?
        .into();
    let mut participant = go(&peer).await?;
    let enter = format!("dbarrier-enter {name} 2");
    within(PROMPT, "sending Go's enter", participant.send(&enter)).await?;
    ensure_go_blocked(
        &mut participant,
        &enter,
        "only one of two participants entered",
    )
    .await?;
    barrier.enter().bounded("entering").await?;
    reply(&mut participant, &enter).await?;
    let mut leaving = Task::spawn("distsync's leave()", {
        let barrier = Arc::clone(&barrier);
        async move { barrier.leave().await.ctx("leaving") }
    });
    leaving
        .ensure_blocked(h.settle(), "Go's participant has not left")
        .await?;
    call(&mut participant, &format!("dbarrier-leave {name}")).await?;
    leaving.join(PROMPT).await?;
    Ok(Holds::new(
        "Go and distsync participants entered together and left together",
    ))
}

/// The accounts of the bank and their starting balance.
const ACCOUNTS: usize = 5;
const BALANCE: u64 = 100;

/// The store-wide transfers each side runs.
const TRANSFERS: usize = 50;

/// STM (Go's layout): Go's STM bank transfers and distsync's, run at once on the same
/// accounts, keep the sum, and both sides read the same balances.
pub(in crate::cases) async fn stm(h: Harness) -> Check {
    let peer = peer(&h).await?;
    let stm = peer.backend().stm().ctx("getting the STM")?;
    let bank = h.key("go-bank");
    let account = |i: usize| format!("{bank}/{i}");
    let accounts: Vec<String> = (0..ACCOUNTS).map(account).collect();
    let opening = accounts.clone();
    within(
        PROMPT,
        "opening the accounts",
        stm.atomically(Isolation::SerializableSnapshot, move |tx| {
            let opening = opening.clone();
            async move {
                for key in &opening {
                    tx.put(key, BALANCE.to_string());
                }
                Ok(())
            }
        }),
    )
    .await?;
    let mut go_bank = go(&peer).await?;
    let command = format!("stm-bank {bank} {ACCOUNTS} {TRANSFERS} 7");
    within(PROMPT, "sending Go's transfers", go_bank.send(&command)).await?;
    let mut conflicts = 0u64;
    for round in 0..TRANSFERS {
        // Two distinct accounts, walking through every pair.
        let from = round % ACCOUNTS;
        let to = (from + 1 + round / ACCOUNTS % (ACCOUNTS - 1)) % ACCOUNTS;
        let (from, to) = (accounts[from].clone(), accounts[to].clone());
        let committed = within(
            LONG,
            "a distsync transfer",
            stm.atomically_with(
                Isolation::SerializableSnapshot,
                &Default::default(),
                move |tx| {
                    let (from, to) = (from.clone(), to.clone());
                    async move {
                        let balance = |value: Option<Bytes>| {
                            value
                                .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
                                .unwrap_or(0)
                        };
                        let (a, b) = (balance(tx.get(&from).await?), balance(tx.get(&to).await?));
                        tx.put(&from, (a - a / 2).to_string());
                        tx.put(&to, (b + a / 2).to_string());
                        Ok(())
                    }
                },
            ),
        )
        .await?;
        conflicts += u64::from(committed.attempts.saturating_sub(1));
    }
    let done = within(LONG, "Go's transfers", go_bank.reply()).await?;
    ensure!(
        first(&done) == TRANSFERS.to_string(),
        "Go reported {done:?} transfers"
    );
    let reading = accounts.clone();
    let ours: Vec<u64> = within(
        PROMPT,
        "reading the balances",
        stm.atomically(Isolation::SerializableSnapshot, move |tx| {
            let reading = reading.clone();
            async move {
                let mut balances = Vec::new();
                for key in &reading {
                    let value = tx.get(key).await?;
                    balances.push(
                        value
                            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
                            .unwrap_or(0),
                    );
                }
                Ok(balances)
            }
        }),
    )
    .await?;
    let mut theirs = Vec::new();
    for key in &accounts {
        let value = first(&call(&mut go_bank, &format!("stm-get {key}")).await?);
        theirs.push(value.parse::<u64>().unwrap_or(u64::MAX));
    }
    let sum: u64 = ours.iter().sum();
    ensure!(
        sum == BALANCE * ACCOUNTS as u64,
        "the balances {ours:?} sum to {sum}, not {}",
        BALANCE * ACCOUNTS as u64
    );
    ensure!(ours == theirs, "distsync read {ours:?}, Go read {theirs:?}");
    Ok(Holds::figure(
        format!("sum {sum} after {} transfers", 2 * TRANSFERS),
        format!("Go's and distsync's STM transfers ran at once ({conflicts} distsync retries); both read {ours:?}"),
    ))
}
