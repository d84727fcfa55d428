//! Names as keys: names that differ only in characters a subject cannot hold (`.`,
//! `*`, `>`, white space) or in their escaped spelling are distinct locks.

use distsync_core::Primitives;
use distsync_core::{Backend, Name, SessionOptions};

#[tokio::test]
async fn escaped_names_are_distinct_locks() {
    let Some(url) = crate::common::url("it-names") else {
        return;
    };
    let backend = distsync_nats::backend(&url).await.expect("connecting");
    let prefix = Name::new(format!("names-{}", std::process::id())).expect("a name");
    let names = [
        "a.b", "a=2Eb", "a b", "a_b", "a*", "a>", "a=", "a", "A", "a/b", "é", "a.",
    ];
    let mut guards = Vec::new();
    for name in names {
        // A session per name: each try_lock must find its lock free, so no two of
        // these names may share a key.
        let session = backend
            .session(SessionOptions::default())
            .await
            .expect("a session");
        let name = Name::new(format!("{prefix}/{name}")).expect("a name");
        let guard = backend
            .locker(&session, name.clone())
            .expect("a locker")
            .try_lock()
            .await
            .expect("try_lock");
        let guard = guard.unwrap_or_else(|| panic!("{name:?} shares its lock with another name"));
        guards.push((session, guard));
    }
    // Each name reads back from its key: the prefix counts every held lock.
    assert_eq!(
        backend.count_prefix(&prefix).await.expect("counting"),
        names.len() as u64
    );
    for (session, guard) in guards {
        guard.unlock().await.expect("unlocking");
        session.close().await.expect("closing");
    }
    assert_eq!(backend.count_prefix(&prefix).await.expect("counting"), 0);
}
