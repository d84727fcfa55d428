//! The distsync conformance suite against the file backend: one test per case.
//!
//! The store is one directory under cargo's temporary directory for this crate's
//! tests, so that the child processes the suite starts (this binary, re-run as the
//! holder of the crash and pause cases) open the same store. Every case works under
//! names of its own, so cases running at once, and earlier runs' leftovers (expired
//! sessions, released locks), do not disturb each other.
//!
//! The hooks given: holders in child processes (killed and paused), and the
//! out-of-band session kill (the heartbeat file removed). No partition (there is no
//! network) and no private server (there is no server): those cases are reported not
//! run.

use std::path::PathBuf;
use std::sync::Arc;

use distsync_conformance::BackendUnderTest;
use distsync_core::{Backend, Error, SessionId};
use distsync_file_backend::FileBackend;

fn directory() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("file-backend-conformance")
}

fn store() -> BackendUnderTest {
    BackendUnderTest::new(|| async {
        Ok(Arc::new(FileBackend::open(directory())?) as Arc<dyn Backend>)
    })
    .child_holders()
    .kill_session(|session: SessionId| async move {
        let file = FileBackend::open(directory())?.session_file(session);
        std::fs::remove_file(&file).map_err(|error| {
            Error::backend("file", format!("removing {}: {error}", file.display()))
        })?;
        Ok(format!("heartbeat file {} removed", file.display()))
    })
}

distsync_conformance::backend_tests!(store);
