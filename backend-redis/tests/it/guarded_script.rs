//! A caller's own script guarded by a lock hold (`GuardedScript::eval_if_held`), against
//! the shared Redis server (`DISTSYNC_REDIS_URL`) and, for what Redis Cluster refuses,
//! the cluster (`DISTSYNC_REDIS_CLUSTER_URL`): the body runs and writes while the guard
//! holds; once the store no longer grants the hold (its grant table records another
//! token, its entry is gone, its session was revoked) it runs nothing, and the next
//! holder's runs. Skipped loudly when the servers are
//! not set, a failure under `CI=true`; the refusals that need no server always run.

use crate::support;
use distsync_core::Primitives;

use std::time::Duration;

use distsync_core::{Backend, Coordinator, Error, LockGuard, Name, SessionOptions};
use distsync_redis::redis::{self, AsyncCommands, Value};
use distsync_redis::GuardedScript;
use support::{server_url, unique_namespace, with_namespace};

/// How long a step that needs the other client's grant may take.
const GRANT: Duration = Duration::from_secs(10);

/// The sessions' TTL: long beside a test, so that a holder learns of nothing the store
/// did behind its back before its next call reaches the store's check, and within the
/// default bound on session TTLs of a Redis without persistence (15 s).
const SESSION_TTL: Duration = Duration::from_secs(10);

/// Sets `KEYS[1]` to `ARGV[1]` and replies with what it reads back.
const SET: &str = "redis.call('SET', KEYS[1], ARGV[1])\nreturn redis.call('GET', KEYS[1])";

struct Fixture {
    url: String,
    /// Unique to the test: the caller's own keys start with it too.
    namespace: String,
    coordinator: Coordinator,
}

impl Fixture {
    async fn new() -> Option<Self> {
        let server = server_url()?;
        let namespace = unique_namespace("guarded-script");
        let url = with_namespace(&server, &namespace);
        Some(Self {
            coordinator: distsync::connect(&url).await.unwrap(),
            namespace,
            url,
        })
    }

    /// A second, independent client of the same store (another process).
    async fn other_client(&self) -> Coordinator {
        distsync::connect(&self.url).await.unwrap()
    }

    /// A key of the caller's own (outside distsync's namespace layout).
    fn app_key(&self, name: &str) -> String {
        format!("app:{}{name}", self.namespace)
    }

    async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(server_url().unwrap())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn get(&self, key: &str) -> Option<String> {
        self.raw().await.get(key).await.unwrap()
    }

    async fn lock(
        &self,
        coordinator: &Coordinator,
        name: &str,
    ) -> (distsync_core::Session, LockGuard) {
        let session = coordinator
            .session_with(SessionOptions::with_ttl(SESSION_TTL))
            .await
            .unwrap();
        let guard = tokio::time::timeout(GRANT, coordinator.locker(&session, name).unwrap().lock())
            .await
            .unwrap_or_else(|_| panic!("{name} was not granted within {GRANT:?}"))
            .unwrap();
        (session, guard)
    }
}

macro_rules! fixture {
    () => {
        match Fixture::new().await {
            Some(fixture) => fixture,
            None => return,
        }
    };
}

fn bulk(text: &str) -> Option<Value> {
    Some(Value::BulkString(text.as_bytes().to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_the_store_no_longer_grants_runs_nothing_and_the_next_holder_runs() {
    let f = fixture!();
    let set = GuardedScript::new(SET);
    let (a_session, a) = f.lock(&f.coordinator, "l").await;
    let (first, late, b_key) = (f.app_key("first"), f.app_key("late"), f.app_key("b"));

    assert_eq!(
        set.eval_if_held(&a, &[&first], &[b"a"]).await.unwrap(),
        bulk("a")
    );
    assert_eq!(f.get(&first).await.as_deref(), Some("a"));

    // The line's grant table records another token for A's entry (as when the store
    // granted it anew): the store's check refuses, A having been told nothing; with
    // A's token back, the same call runs.
    let (line, id) = a.key().rsplit_once(":e:").unwrap();
    let grants = format!("{line}:g");
    let token: String = f.raw().await.hget(&grants, id).await.unwrap();
    let _: () = f.raw().await.hset(&grants, id, "0").await.unwrap();
    assert_eq!(set.eval_if_held(&a, &[&late], &[b"a"]).await.unwrap(), None);
    assert_eq!(f.get(&late).await, None, "A's body ran without the grant");
    let _: () = f.raw().await.hset(&grants, id, &token).await.unwrap();
    assert_eq!(
        set.eval_if_held(&a, &[&first], &[b"again"]).await.unwrap(),
        bulk("again")
    );

    // The store drops A's entry, as when its session's TTL ran out there while A was
    // paused: A learns of it at its next renewal, seconds away, so its script reaches
    // the store's check (and is refused either way).
    let _: () = f.raw().await.del(a.key()).await.unwrap();
    assert_eq!(set.eval_if_held(&a, &[&late], &[b"a"]).await.unwrap(), None);
    assert_eq!(f.get(&late).await, None, "A's body ran without the hold");

    let other = f.other_client().await;
    let (b_session, b) = f.lock(&other, "l").await;
    assert_eq!(
        set.eval_if_held(&b, &[&b_key], &[b"b"]).await.unwrap(),
        bulk("b")
    );
    assert_eq!(set.eval_if_held(&a, &[&late], &[b"a"]).await.unwrap(), None);
    assert_eq!(f.get(&late).await, None);
    assert_eq!(f.get(&b_key).await.as_deref(), Some("b"));

    b.unlock().await.unwrap();
    b_session.close().await.unwrap();
    drop(a);
    let _ = a_session.close().await;
    let _: () = f.raw().await.del(&[first, b_key]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_session_was_revoked_runs_nothing() {
    let f = fixture!();
    let set = GuardedScript::new(SET);
    let (a_session, a) = f.lock(&f.coordinator, "r").await;
    let (mine, late, b_key) = (f.app_key("mine"), f.app_key("late"), f.app_key("b"));
    assert_eq!(
        set.eval_if_held(&a, &[&mine], &[b"a"]).await.unwrap(),
        bulk("a")
    );

    let other = f.other_client().await;
    other
        .backend()
        .revoke_session(a_session.id())
        .await
        .unwrap();
    let (b_session, b) = f.lock(&other, "r").await;
    assert_eq!(set.eval_if_held(&a, &[&late], &[b"a"]).await.unwrap(), None);
    assert_eq!(
        set.eval_if_held(&b, &[&b_key], &[b"b"]).await.unwrap(),
        bulk("b")
    );
    assert_eq!(f.get(&late).await, None, "A's body ran without the hold");
    assert_eq!(f.get(&mine).await.as_deref(), Some("a"));

    b.unlock().await.unwrap();
    b_session.close().await.unwrap();
    let _: () = f.raw().await.del(&[mine, b_key]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_sees_its_own_keys_and_arguments_and_replies_as_eval() {
    let f = fixture!();
    let (session, guard) = f.lock(&f.coordinator, "k").await;
    let echo = GuardedScript::new("return {KEYS[1], KEYS[2], ARGV[1], ARGV[2], #KEYS, #ARGV}");
    assert_eq!(
        echo.eval_if_held(&guard, &["k1", "k2"], &[b"a\0b", b""])
            .await
            .unwrap(),
        Some(Value::Array(vec![
            Value::BulkString(b"k1".to_vec()),
            Value::BulkString(b"k2".to_vec()),
            Value::BulkString(b"a\0b".to_vec()),
            Value::BulkString(Vec::new()),
            Value::Int(2),
            Value::Int(2),
        ]))
    );
    let none = GuardedScript::new("return #KEYS + #ARGV");
    assert_eq!(
        none.eval_if_held(&guard, &[], &[]).await.unwrap(),
        Some(Value::Int(0))
    );
    // No reply, nil and false are all nil, as with EVAL; one value of several.
    for body in ["local x = 1", "return nil", "return false", "return nil, 2"] {
        assert_eq!(
            GuardedScript::new(body)
                .eval_if_held(&guard, &[], &[])
                .await
                .unwrap(),
            Some(Value::Nil),
            "{body}"
        );
    }
    assert_eq!(
        GuardedScript::new("return redis.status_reply('FINE')")
            .eval_if_held(&guard, &[], &[])
            .await
            .unwrap(),
        Some(Value::SimpleString("FINE".into()))
    );
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_body_is_a_typed_error_and_keeps_what_it_wrote_before() {
    let f = fixture!();
    let (session, guard) = f.lock(&f.coordinator, "e").await;
    let key = f.app_key("text");
    let fails = GuardedScript::new(
        "redis.call('SET', KEYS[1], 'not a number')\nreturn redis.call('INCR', KEYS[1])",
    );
    let error = fails.eval_if_held(&guard, &[&key], &[]).await.unwrap_err();
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    assert!(error.to_string().contains("not an integer"), "{error}");
    // Redis does not roll a script back.
    assert_eq!(f.get(&key).await.as_deref(), Some("not a number"));

    let refuses = GuardedScript::new("return redis.error_reply('NOPE not today')");
    let error = refuses.eval_if_held(&guard, &[], &[]).await.unwrap_err();
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    assert!(error.to_string().contains("not today"), "{error}");

    for body in ["return (", "return undefined_global", "error('boom')"] {
        let error = GuardedScript::new(body)
            .eval_if_held(&guard, &[], &[])
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Backend { .. }), "{body}: {error:?}");
    }
    let flags = GuardedScript::new("#!lua flags=no-writes\nreturn 1");
    assert!(matches!(
        flags.eval_if_held(&guard, &[], &[]).await,
        Err(Error::InvalidArgument(_))
    ));

    // The guard is as good as before.
    assert_eq!(
        GuardedScript::new(SET)
            .eval_if_held(&guard, &[&key], &[b"ok"])
            .await
            .unwrap(),
        bulk("ok")
    );
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
    let _: () = f.raw().await.del(&key).await.unwrap();
}

#[tokio::test]
async fn a_guard_of_another_backend_is_refused() {
    let memory = distsync::store::memory::MemoryBackend::new();
    let session = memory.session(SessionOptions::default()).await.unwrap();
    let guard = memory
        .locker(&session, Name::new("m").unwrap())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let error = GuardedScript::new(SET)
        .eval_if_held(&guard, &["k"], &[b"v"])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    assert!(error.to_string().contains("memory"), "{error}");
    guard.unlock().await.unwrap();
}

#[tokio::test]
async fn redis_cluster_refuses_it_as_unsupported() {
    let Some(url) = distsync_conformance::server_url("DISTSYNC_REDIS_CLUSTER_URL") else {
        return;
    };
    // No replica acknowledgement and no lock-delay: neither bears on the refusal, and
    // the lock-delay may hold a first grant for up to its bound (15 s) on a cluster
    // that forgot or failed over.
    let base = url.split_once('?').map_or(url.as_str(), |(base, _)| base);
    let url = format!(
        "{base}?namespace={}&max_session_ttl=off",
        unique_namespace("guarded-script-cluster")
    );
    let coordinator = distsync::connect(&url).await.unwrap();
    let session = coordinator
        .session_with(SessionOptions::with_ttl(SESSION_TTL))
        .await
        .unwrap();
    let guard = coordinator
        .locker(&session, "c")
        .unwrap()
        .lock()
        .await
        .unwrap();
    let error = GuardedScript::new(SET)
        .eval_if_held(&guard, &["k"], &[b"v"])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unsupported { .. }), "{error:?}");
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
}
