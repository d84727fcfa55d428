//! Read-write lock cases: readers share, a writer excludes, a waiting writer blocks
//! later readers, write tokens increase.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use distsync_core::{FencingToken, RwLock, Session};
use tokio::time::Instant;

use super::scenario::{go_interop, partition, Held};
use super::{boxed, FENCING, PARTITION};
use crate::case::{Case, Claim, Group, Need};
use crate::check::{
    ensure, join_all, lock_vec, ms, strictly_increasing, violated, within, Bounded, Check, Context,
    Holds, Task, LONG, PROMPT,
};
use crate::faults::{Hook, PartitionMode};
use crate::harness::Harness;

/// The read-write lock cases, in matrix order.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "rwlock_readers_share",
        group: Group::RwLock,
        guarantee: "readers share",
        needs: &[Need::RwLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(readers_share(h)),
    },
    Case {
        id: "rwlock_writer_excludes",
        group: Group::RwLock,
        guarantee: "a writer excludes readers and writers",
        needs: &[Need::RwLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(writer_excludes(h)),
    },
    Case {
        id: "rwlock_waiting_writer_blocks_readers",
        group: Group::RwLock,
        guarantee: "a waiting writer blocks later readers",
        needs: &[Need::RwLock],
        claim: Claim::Offered,
        hooks: &[],
        run: |h| boxed(waiting_writer_blocks_readers(h)),
    },
    Case {
        id: "rwlock_write_tokens",
        group: Group::RwLock,
        guarantee: "write tokens strictly increase",
        needs: &[Need::RwLock],
        claim: FENCING,
        hooks: &[],
        run: |h| boxed(write_tokens(h)),
    },
    Case {
        id: "rwlock_partition_silent",
        group: Group::RwLock,
        guarantee: "a write-lock holder cut off (silent partition) sees lost() before anyone else is granted",
        needs: &[Need::RwLock],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, Held::WriteLock, PartitionMode::Silent)),
    },
    Case {
        id: "rwlock_partition_reset",
        group: Group::RwLock,
        guarantee: "a write-lock holder cut off (connections reset) sees lost() before anyone else is granted",
        needs: &[Need::RwLock],
        claim: PARTITION,
        hooks: &[Hook::Partition],
        run: |h| boxed(partition::cut_off_holder(h, Held::WriteLock, PartitionMode::Reset)),
    },
    Case {
        id: "rwlock_interop_go",
        group: Group::RwLock,
        guarantee: "interoperates with etcd's Go recipe.RWMutex (layout=go): shared reads, \
                    exclusive writes, one FIFO line",
        needs: &[Need::RwLock],
        claim: Claim::Offered,
        hooks: &[Hook::GoPeer],
        run: |h| boxed(go_interop::rwlock(h)),
    },
];

/// Readers share: a second session's `read()` returns while the first holds a read
/// lock, a third's `try_read` is granted too, and `try_write` is refused while they
/// read.
async fn readers_share(h: Harness) -> Check {
    let name = h.name("rwlock").ctx("naming the rwlock")?;
    let mut locks: Vec<Box<dyn RwLock>> = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let session = h.session().set_up("opening a session").await?;
        locks.push(
            h.backend()
                .rwlock(&session, name.clone())
                .ctx("making an rwlock")?,
        );
        sessions.push(session);
    }
    let first = within(PROMPT, "the first read()", locks[0].read()).await?;
    let started = Instant::now();
    let second = within(
        PROMPT,
        "a second read() while the first reader holds",
        locks[1].read(),
    )
    .await?;
    let shared_after = started.elapsed();
    let Some(third) = within(
        PROMPT,
        "try_read while two readers hold",
        locks[2].try_read(),
    )
    .await?
    else {
        return violated("try_read was refused while only readers held the lock");
    };
    if let Some(writer) = within(
        PROMPT,
        "try_write while three readers hold",
        locks[3].try_write(),
    )
    .await?
    {
        return violated(format!(
            "try_write was granted (token {}) while three readers held",
            writer.token()
        ));
    }
    for (i, guard) in [first, second, third].into_iter().enumerate() {
        guard
            .unlock()
            .bounded(format!("reader {i} unlocking"))
            .await?;
    }
    let Some(writer) = within(
        PROMPT,
        "try_write once the readers left",
        locks[3].try_write(),
    )
    .await?
    else {
        return violated("try_write was refused after every reader had unlocked");
    };
    writer.unlock().bounded("the writer unlocking").await?;
    Ok(Holds::figure(
        format!("second reader in {}", ms(shared_after)),
        "three read holds at once; try_write refused while they read, granted after",
    ))
}

/// A writer excludes everyone: while it holds, `try_read` and `try_write` are refused
/// and `read()` waits until it unlocks. Then 4 readers and 2 writers contend for 15
/// rounds each with detectors: a writer must find no reader and no writer inside, a
/// reader no writer.
async fn writer_excludes(h: Harness) -> Check {
    const READERS: usize = 4;
    const WRITERS: usize = 2;
    const ROUNDS: usize = 15;
    let name = h.name("rwlock").ctx("naming the rwlock")?;
    let a = h.session().set_up("opening session A").await?;
    let b = h.session().set_up("opening session B").await?;
    let la = h
        .backend()
        .rwlock(&a, name.clone())
        .ctx("making rwlock A")?;
    let lb: Arc<dyn RwLock> = Arc::from(
        h.backend()
            .rwlock(&b, name.clone())
            .ctx("making rwlock B")?,
    );
    let writer = within(PROMPT, "A write-locking", la.write()).await?;
    if within(PROMPT, "try_read while A writes", lb.try_read())
        .await?
        .is_some()
    {
        return violated("try_read was granted while a writer held the lock");
    }
    if let Some(other) = within(PROMPT, "try_write while A writes", lb.try_write()).await? {
        return violated(format!(
            "try_write was granted (token {}) while A held token {}",
            other.token(),
            writer.token()
        ));
    }
    let reader_lock = lb.clone();
    let mut reader = Task::spawn("reader B", async move {
        reader_lock.read().await.ctx("B reading")
    });
    reader
        .ensure_blocked(h.settle(), "A holds the write lock")
        .await?;
    writer.unlock().bounded("A unlocking").await?;
    let read = reader.join(PROMPT).await?;
    read.unlock().bounded("B unlocking").await?;

    let readers = Arc::new(AtomicUsize::new(0));
    let writers = Arc::new(AtomicUsize::new(0));
    let breaches = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for i in 0..READERS + WRITERS {
        let session = h.session().set_up("opening a session").await?;
        let lock = h
            .backend()
            .rwlock(&session, name.clone())
            .ctx("making an rwlock")?;
        let detectors = (readers.clone(), writers.clone(), breaches.clone());
        let is_writer = i >= READERS;
        tasks.push(Task::spawn(
            format!("{} {i}", if is_writer { "writer" } else { "reader" }),
            take_turns(i, is_writer, ROUNDS, lock, session, detectors),
        ));
    }
    join_all(&mut tasks, LONG).await?;
    let breaches = std::mem::take(&mut *lock_vec(&breaches));
    ensure!(
        breaches.is_empty(),
        "{} breaches, first: {}",
        breaches.len(),
        breaches.join("; ")
    );
    let holds = (READERS + WRITERS) * ROUNDS;
    Ok(Holds::figure(
        format!("{holds} holds in {}", ms(started.elapsed())),
        format!(
            "try_* refused and read() blocked under a writer; {READERS} readers + {WRITERS} \
             writers x {ROUNDS}: no breach"
        ),
    ))
}

/// What the contenders of [`writer_excludes`] count: the readers inside, the writers
/// inside, and the breaches found.
type Detectors = (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>);

/// Contender `i` of [`writer_excludes`], a writer or a reader, holds `lock` `rounds`
/// times and records what it finds inside.
async fn take_turns(
    i: usize,
    is_writer: bool,
    rounds: usize,
    lock: Box<dyn RwLock>,
    session: Session,
    (readers, writers, breaches): Detectors,
) -> Check<()> {
    for round in 0..rounds {
        if is_writer {
            let guard = lock
                .write()
                .await
                .ctx(format!("writer {i} write-locking"))?;
            let (w, r) = (
                writers.fetch_add(1, Ordering::SeqCst),
                readers.load(Ordering::SeqCst),
            );
            if w != 0 || r != 0 {
                lock_vec(&breaches).push(format!(
                    "writer {i} round {round} found {w} writer(s), {r} reader(s)"
                ));
            }
            tokio::task::yield_now().await;
            let r = readers.load(Ordering::SeqCst);
            if r != 0 {
                lock_vec(&breaches)
                    .push(format!("writer {i} round {round}: {r} reader(s) came in"));
            }
            writers.fetch_sub(1, Ordering::SeqCst);
            guard
                .unlock()
                .bounded(format!("writer {i} unlocking"))
                .await?;
        } else {
            let guard = lock.read().await.ctx(format!("reader {i} read-locking"))?;
            readers.fetch_add(1, Ordering::SeqCst);
            let w = writers.load(Ordering::SeqCst);
            if w != 0 {
                lock_vec(&breaches).push(format!("reader {i} round {round} found {w} writer(s)"));
            }
            tokio::task::yield_now().await;
            readers.fetch_sub(1, Ordering::SeqCst);
            guard
                .unlock()
                .bounded(format!("reader {i} unlocking"))
                .await?;
        }
    }
    drop(session);
    Ok(())
}

/// A waiting writer blocks later readers: R1 reads; W's `write()` waits; then a later
/// `try_read` is refused and a later `read()` (R2) waits; when R1 unlocks, W gets the
/// lock before R2, and R2 only once W unlocks.
async fn waiting_writer_blocks_readers(h: Harness) -> Check {
    let name = h.name("rwlock").ctx("naming the rwlock")?;
    let mut locks: Vec<Arc<dyn RwLock>> = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let session = h.session().set_up("opening a session").await?;
        locks.push(Arc::from(
            h.backend()
                .rwlock(&session, name.clone())
                .ctx("making an rwlock")?,
        ));
        sessions.push(session);
    }
    let r1 = within(PROMPT, "R1 reading", locks[0].read()).await?;
    let w_lock = locks[1].clone();
    let mut writer = Task::spawn("writer W", async move {
        let guard = w_lock.write().await.ctx("W write-locking")?;
        Ok((guard, Instant::now()))
    });
    writer
        .ensure_blocked(h.settle(), "R1 holds a read lock")
        .await?;
    if within(PROMPT, "try_read while W waits", locks[3].try_read())
        .await?
        .is_some()
    {
        return violated("a try_read arriving after a waiting writer was granted");
    }
    let r2_lock = locks[2].clone();
    let mut r2 = Task::spawn("reader R2", async move {
        let guard = r2_lock.read().await.ctx("R2 reading")?;
        Ok((guard, Instant::now()))
    });
    r2.ensure_blocked(h.settle(), "W was waiting before R2 arrived")
        .await?;
    let released = Instant::now();
    r1.unlock().bounded("R1 unlocking").await?;
    let (w_guard, w_at) = writer.join(PROMPT).await?;
    r2.ensure_blocked(h.settle(), "W holds the write lock")
        .await?;
    w_guard.unlock().bounded("W unlocking").await?;
    let (r2_guard, r2_at) = r2.join(PROMPT).await?;
    ensure!(r2_at >= w_at, "R2 was granted before W");
    r2_guard.unlock().bounded("R2 unlocking").await?;
    Ok(Holds::figure(
        format!(
            "writer in {} after the reader left",
            ms(w_at.saturating_duration_since(released))
        ),
        "a reader arriving after a waiting writer waited for that writer",
    ))
}

/// Write grants carry strictly increasing fencing tokens: 3 writers take the write
/// lock 8 times each and record their token while holding it.
async fn write_tokens(h: Harness) -> Check {
    const WRITERS: usize = 3;
    const GRANTS: usize = 8;
    let name = h.name("rwlock").ctx("naming the rwlock")?;
    let tokens = Arc::new(Mutex::new(Vec::<(usize, FencingToken)>::new()));
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let session = h.session().set_up("opening a session").await?;
        let lock = h
            .backend()
            .rwlock(&session, name.clone())
            .ctx("making an rwlock")?;
        let tokens = tokens.clone();
        tasks.push(Task::spawn(format!("writer {i}"), async move {
            for _ in 0..GRANTS {
                let guard = lock
                    .write()
                    .await
                    .ctx(format!("writer {i} write-locking"))?;
                lock_vec(&tokens).push((i, guard.token()));
                guard
                    .unlock()
                    .bounded(format!("writer {i} unlocking"))
                    .await?;
            }
            drop(session);
            Ok(())
        }));
    }
    join_all(&mut tasks, LONG).await?;
    let tokens = std::mem::take(&mut *lock_vec(&tokens));
    strictly_increasing(&tokens)?;
    Ok(Holds::figure(
        format!("{} write grants increasing", tokens.len()),
        "every write grant's token is greater than the previous one's",
    ))
}
