//! `Stm::atomically` over the memory backend's engine: retries, give-ups and isolation.

use distsync_core::Primitives;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::recipes::stm::KvStm;
use distsync_core::error::{Error, Result};
use distsync_core::name::Name;
use distsync_core::stm::{Isolation, Stm, StmAttempt, StmEngine, StmOptions, StmRetry, Write};

/// The memory backend's engine, except that the first `conflicting` attempts get
/// [`StmRetry`] from their first read (a fault, as a backend that detects a
/// changed key while reading reports it).
struct ConflictingReads {
    inner: KvStm,
    conflicting: u32,
    begun: AtomicU32,
}

struct Attempt {
    inner: Box<dyn StmAttempt>,
    conflict: bool,
}

#[async_trait]
impl StmEngine for ConflictingReads {
    async fn begin(&self, isolation: Isolation, prefetch: &[Name]) -> Result<Box<dyn StmAttempt>> {
        let number = self.begun.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Attempt {
            inner: self.inner.begin(isolation, prefetch).await?,
            conflict: number < self.conflicting,
        }))
    }
}

#[async_trait]
impl StmAttempt for Attempt {
    async fn get(&mut self, key: &Name) -> Result<Option<Bytes>> {
        if std::mem::take(&mut self.conflict) {
            return Err(StmRetry.into());
        }
        self.inner.get(key).await
    }

    fn read_keys(&self) -> Vec<Name> {
        self.inner.read_keys()
    }

    async fn commit(self: Box<Self>, writes: Vec<Write>) -> Result<bool> {
        self.inner.commit(writes).await
    }
}

fn conflicting(conflicting: u32) -> (crate::memory::MemoryBackend, Stm) {
    let backend = crate::memory::MemoryBackend::new();
    let engine = ConflictingReads {
        inner: KvStm::new(
            backend.kv().clone(),
            &Default::default(),
            crate::memory::capabilities(),
        ),
        conflicting,
        begun: AtomicU32::new(0),
    };
    (backend, Stm::new(Arc::new(engine)))
}

#[tokio::test]
async fn a_read_conflict_is_retried_even_when_the_body_drops_the_error() {
    let (backend, stm) = conflicting(2);
    let committed = stm
        .atomically_with(
            Isolation::default(),
            &StmOptions::default(),
            |tx| async move {
                // The body swallows the read's error and writes anyway.
                let seen = tx.get("k").await.ok().flatten();
                tx.put("k", "written");
                Ok(seen)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        committed.attempts, 3,
        "two conflicting attempts, then one commit"
    );
    assert_eq!(committed.value, None);
    let read = backend
        .stm()
        .unwrap()
        .atomically(Isolation::default(), |tx| async move { tx.get("k").await })
        .await
        .unwrap();
    assert_eq!(read, Some(Bytes::from("written")));
}

#[tokio::test]
async fn the_retry_signal_reaches_the_body_as_an_opaque_error_never_stm_conflict() {
    let (_backend, stm) = conflicting(1);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    stm.atomically(Isolation::default(), move |tx| {
        let record = Arc::clone(&record);
        async move {
            let read = tx.get("k").await;
            let is_conflict = matches!(read, Err(Error::StmConflict { .. }));
            record.lock().unwrap().push((read.is_err(), is_conflict));
            read.map(drop)
        }
    })
    .await
    .unwrap();
    assert_eq!(*seen.lock().unwrap(), [(true, false), (false, false)]);
}

#[tokio::test]
async fn stm_conflict_means_gave_up_after_max_attempts() {
    let (_backend, stm) = conflicting(u32::MAX);
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    let outcome = stm
        .atomically_with(
            Isolation::default(),
            &StmOptions::with_max_attempts(4),
            move |tx| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move { tx.get("k").await }
            },
        )
        .await;
    assert!(
        matches!(outcome, Err(Error::StmConflict { attempts: 4 })),
        "{outcome:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_gave_up_error_from_the_body_is_not_retried() {
    // A body that runs a nested transaction which gave up returns StmConflict: that
    // is the body's error, returned as it is, not a request to retry.
    let backend = crate::memory::MemoryBackend::new();
    let stm = backend.stm().unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    let outcome: Result<()> = stm
        .atomically(Isolation::default(), move |_tx| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Err(Error::StmConflict { attempts: 7 }) }
        })
        .await;
    assert!(
        matches!(outcome, Err(Error::StmConflict { attempts: 7 })),
        "{outcome:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn max_attempts_zero_is_a_typed_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let stm = crate::memory::MemoryBackend::new().stm().unwrap();
    let outcome = rt.block_on(stm.atomically_with(
        Isolation::default(),
        &StmOptions::with_max_attempts(0),
        |_tx| async move { Ok(()) },
    ));
    assert!(matches!(outcome, Err(Error::InvalidArgument(_))));
}

#[test]
fn handle_is_cheap_to_share() {
    fn assert_clone_send_sync<T: Clone + Send + Sync + 'static>() {}
    assert_clone_send_sync::<Stm>();
    let stm = crate::memory::MemoryBackend::new().stm().unwrap();
    assert_eq!(format!("{stm:?}"), "Stm { .. }");
}
