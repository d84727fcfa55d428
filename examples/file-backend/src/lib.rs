//! # distsync-file-backend
//!
//! A distsync backend over a directory of the local file system, written against the
//! public API of `distsync-core` only, as a backend crate outside the distsync
//! workspace would be. It offers sessions and locks ([`distsync_core::Locker`]) with
//! fencing tokens and `lost()`; every other primitive is
//! [`distsync_core::Error::Unsupported`], and its [`Capabilities`] say so.
//!
//! ## Layout of the directory
//!
//! - `state.lock`: every change of the store's state is made under an exclusive
//!   `flock(2)` of this file, which the kernel releases when its holder exits, even by
//!   SIGKILL, so a crashed process never wedges the store;
//! - `sessions/<id>`: a session's heartbeat file, holding the wall-clock instant (ms
//!   since the Unix epoch) at which it expires. Each renewal rewrites it to now + TTL
//!   (write to a temporary file, then rename). A session lives while that instant is
//!   in the future: the session of a process that died (or stopped, SIGSTOP) expires
//!   one TTL after its last renewal;
//! - `counter`: the last fencing token handed out; each grant adds one;
//! - `locks/<name>`: the lock `name`, held by the session and with the token it holds
//!   (`<session> <token>`); held while that session lives;
//! - `waiters/<name>/<session>-<n>`: a waiter of `lock()`, removed when it is granted
//!   or gives up (counted by `contenders()`);
//! - `names/<hashed name>`: the full name behind a file name that is a hash (a name
//!   too long for a file name), so that `count_prefix` and `purge_prefix` know which
//!   names a prefix covers.
//!
//! `count_prefix(prefix)` counts, and `purge_prefix(prefix)` removes, the files and
//! directories of every lock whose name is `prefix` or under `prefix/` (its lock file,
//! its waiters' directory and files, its name record): what a test run leaves in a
//! namespace of its own. Sessions and the token counter belong to no name and stay.
//!
//! Every process that shares the directory shares the store; the clocks are the
//! machine's, so it is a store for the processes of one host only.
//!
//! ## Waiting
//!
//! A waiter of `lock()` polls: it tries to take the lock every [`POLL`] (1 to 10 ms,
//! growing while it waits, so a freed lock is taken within 10 ms). Waiters are not
//! served in arrival order (`fifo_waiters` is not claimed). A guard whose `lost()` is
//! watched polls its lock file and session every [`LOSS_POLL`], so an out-of-band end
//! of its session is seen within that much.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> distsync_core::Result<()> {
//! use distsync_core::Coordinator;
//!
//! let coordinator = Coordinator::new(distsync_file_backend::FileBackend::open("/tmp/locks")?);
//! let session = coordinator.session().await?;
//! let guard = coordinator.locker(&session, "jobs/nightly")?.lock().await?;
//! println!("holding with token {}", guard.token());
//! guard.unlock().await?;
//! # Ok(()) }
//! ```

use std::any::Any;
use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use distsync_core::driver::Driver;
use distsync_core::raw::{
    lock_guard, Barrier, DoubleBarrier, Election, GuardStoreSide, KeepAlive, Lease, Locker,
    ReleaseFn, RwLock,
};
use distsync_core::raw::Primitives;
use distsync_core::{
    Backend, Capabilities, Coordinator, Error, FencingToken, LockGuard, Name, Queue, Result,
    Session, SessionId, SessionOptions, Stm,
};
use rustix::fs::{flock, FlockOperation};
use tokio_util::sync::CancellationToken;

/// The backend's name, as its [`Capabilities::backend`] says it.
pub const BACKEND: &str = "file";

/// The longest pause between two tries of a waiting `lock()`.
pub const POLL: Duration = Duration::from_millis(10);

/// The first pause of a waiting `lock()`; it doubles up to [`POLL`].
const FIRST_POLL: Duration = Duration::from_millis(1);

/// How often a watched guard checks that its lock and session are still there.
pub const LOSS_POLL: Duration = Duration::from_millis(25);

/// The shortest session TTL: renewals go out every TTL/3, and a renewal is a few file
/// operations, so a TTL of half a second still leaves each one a wide margin.
pub const MIN_SESSION_TTL: Duration = Duration::from_millis(500);

/// What this backend offers and claims: locks with fencing tokens, `lost()`, and a
/// stalled holder's session expiring after its TTL. Nothing else: every other
/// primitive is unsupported, and no claim is made about partitions (there is no
/// network), restarts (there is no server), FIFO waiters or linearizability.
pub fn capabilities() -> Capabilities {
    let mut capabilities = Capabilities::none(BACKEND).with_min_session_ttl(MIN_SESSION_TTL);
    capabilities.lock = true;
    capabilities.fencing = true;
    capabilities.lost_notification = true;
    capabilities.stalled_holder_expires = true;
    capabilities
}

/// The driver of `file:///path/to/dir` URLs, for a program that lists its backends
/// as `distsync::store::DRIVERS` does.
pub const DRIVER: Driver = Driver::new(BACKEND, &["file"], connect_url, capabilities)
    .with_url_forms(
        "file:///ABSOLUTE/DIRECTORY\n    the directory holding the store (created if missing)\n",
    );

fn connect_url(url: &str) -> futures::future::BoxFuture<'_, Result<Coordinator>> {
    Box::pin(async move {
        let path = url
            .strip_prefix("file://")
            .filter(|path| path.starts_with('/'))
            .ok_or_else(|| Error::InvalidUrl {
                url: distsync_core::redact_url(url),
                reason: "expected file:///absolute/directory".to_owned(),
            })?;
        Ok(Coordinator::new(FileBackend::open(path)?))
    })
}

/// The store: a directory (see the [crate docs](crate) for its layout).
#[derive(Debug)]
struct Store {
    root: PathBuf,
}

fn io_error(doing: &str, error: io::Error) -> Error {
    Error::backend(BACKEND, format!("{doing}: {error}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// A process-unique suffix for temporary files and waiter files.
fn unique() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A file name for `name`: its bytes outside `[A-Za-z0-9_.-]` as `%XX` (so `/` never
/// makes a directory), or, when that is longer than a file name may be, a hash and
/// the length (`#<hash>-<length>`, which no encoded name starts with).
fn file_name(name: &Name) -> String {
    let mut encoded = String::new();
    for byte in name.as_str().bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    if encoded.len() <= 200 && !encoded.starts_with('.') {
        return encoded;
    }
    // FNV-1a, 64 bits: stable across builds and processes (unlike std's hasher).
    let hash = name
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("#{hash:016x}-{}", name.as_str().len())
}

/// The name a file name that is not a hash encodes (see [`file_name`]), or `None` if it
/// encodes none.
fn decode_file_name(file: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(file.len());
    let mut rest = file.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

impl Store {
    fn sessions(&self) -> PathBuf {
        self.root.join("sessions")
    }

    fn session_file(&self, id: SessionId) -> PathBuf {
        self.sessions().join(id.to_string())
    }

    fn lock_file(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(name)
    }

    fn waiters(&self, name: &str) -> PathBuf {
        self.root.join("waiters").join(name)
    }

    fn name_record(&self, file: &str) -> PathBuf {
        self.root.join("names").join(file)
    }

    /// Records `name` behind the file name `file` when `file` is a hash, which does not
    /// give the name back (see [`Store::name_of`]).
    fn remember(&self, file: &str, name: &str) -> io::Result<()> {
        let record = self.name_record(file);
        if file.starts_with('#') && !record.exists() {
            Self::write_atomic(&record, name)?;
        }
        Ok(())
    }

    /// The name behind the file name `file`: decoded, or for a hash read from its
    /// record; `None` for a file that is no name's (a temporary file being renamed).
    fn name_of(&self, file: &str) -> io::Result<Option<String>> {
        if file.contains(".tmp-") {
            return Ok(None);
        }
        if file.starts_with('#') {
            return Self::read(&self.name_record(file));
        }
        Ok(decode_file_name(file))
    }

    /// The entries of `directory`'s file names, none if it is missing.
    fn file_names(directory: &Path) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let mut names = Vec::new();
        for entry in entries {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Every path holding the state of a lock named `prefix` or under `prefix/`: its
    /// lock file, its waiters' files and then their directory, and its name record.
    fn paths_under(&self, prefix: &str) -> io::Result<Vec<PathBuf>> {
        let under = |name: &str| {
            name.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        let mut files = std::collections::BTreeSet::new();
        for directory in ["locks", "waiters", "names"] {
            for file in Self::file_names(&self.root.join(directory))? {
                if self.name_of(&file)?.is_some_and(|name| under(&name)) {
                    files.insert(file);
                }
            }
        }
        let mut paths = Vec::new();
        for file in files {
            let lock = self.lock_file(&file);
            if lock.exists() {
                paths.push(lock);
            }
            let waiters = self.waiters(&file);
            if waiters.is_dir() {
                for waiter in Self::file_names(&waiters)? {
                    paths.push(waiters.join(waiter));
                }
                paths.push(waiters);
            }
            let record = self.name_record(&file);
            if record.exists() {
                paths.push(record);
            }
        }
        Ok(paths)
    }

    /// Removes what [`Store::paths_under`] lists, under the store's flock, and returns
    /// how many paths it removed.
    fn purge(&self, prefix: &str) -> io::Result<u64> {
        self.locked(|| {
            let mut removed = 0;
            for path in self.paths_under(prefix)? {
                let gone = if path.is_dir() {
                    // A waiter registering this instant adds a file: take it too.
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                match gone {
                    Ok(()) => removed += 1,
                    Err(error) if error.kind() == ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(removed)
        })
    }

    /// Runs `change` while holding the exclusive flock of `state.lock`.
    fn locked<T>(&self, change: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("state.lock"))?;
        flock(&file, FlockOperation::LockExclusive)?;
        let result = change();
        // Closing the file releases the flock.
        drop(file);
        result
    }

    /// Writes `contents` to `path` in one step (a temporary file renamed over it), so
    /// a reader never sees half of it.
    fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
        let temporary = path.with_extension(format!("tmp-{}-{}", std::process::id(), unique()));
        fs::write(&temporary, contents)?;
        fs::rename(&temporary, path)
    }

    fn read(path: &Path) -> io::Result<Option<String>> {
        match fs::read_to_string(path) {
            Ok(text) => Ok(Some(text)),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn remove(path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(error) if error.kind() != ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Whether session `id`'s heartbeat is fresh.
    fn alive(&self, id: SessionId) -> io::Result<bool> {
        let expires =
            Self::read(&self.session_file(id))?.and_then(|text| text.trim().parse::<u64>().ok());
        Ok(expires.is_some_and(|expires| now_ms() < expires))
    }

    /// The holder of lock file `name` and its token, if the file is there.
    fn holder(&self, name: &str) -> io::Result<Option<(SessionId, u64)>> {
        Ok(Self::read(&self.lock_file(name))?.and_then(|text| {
            let (session, token) = text.trim().split_once(' ')?;
            Some((
                SessionId(u64::from_str_radix(session, 16).ok()?),
                token.parse().ok()?,
            ))
        }))
    }

    fn grant_session(&self, ttl: Duration) -> io::Result<SessionId> {
        let expires = now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        self.locked(|| loop {
            let seed = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.subsec_nanos())
                .unwrap_or_default();
            let id = (u64::from(std::process::id()) << 32 | u64::from(seed))
                ^ unique().wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let id = SessionId(id.max(1));
            let path = self.session_file(id);
            if !path.exists() {
                Self::write_atomic(&path, &expires.to_string())?;
                return Ok(id);
            }
        })
    }

    fn renew(&self, id: SessionId, ttl: Duration) -> io::Result<KeepAlive> {
        self.locked(|| {
            if !self.alive(id)? {
                Self::remove(&self.session_file(id))?;
                return Ok(KeepAlive::Gone);
            }
            let expires =
                now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            Self::write_atomic(&self.session_file(id), &expires.to_string())?;
            Ok(KeepAlive::Renewed)
        })
    }

    fn end_session(&self, id: SessionId) -> io::Result<()> {
        self.locked(|| Self::remove(&self.session_file(id)))
    }

    /// Takes lock `name` for `session` if no live session holds it; returns the token.
    /// `full_name` is the lock's name, recorded when `name` is its hash.
    fn try_take(&self, name: &str, full_name: &str, session: SessionId) -> io::Result<Option<u64>> {
        self.locked(|| {
            self.remember(name, full_name)?;
            if !self.alive(session)? {
                return Err(io::Error::other(SESSION_GONE));
            }
            if let Some((holder, _)) = self.holder(name)? {
                if self.alive(holder)? {
                    return Ok(None);
                }
            }
            let counter = self.root.join("counter");
            let last = Self::read(&counter)?
                .and_then(|text| text.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let token = last + 1;
            Self::write_atomic(&counter, &token.to_string())?;
            Self::write_atomic(&self.lock_file(name), &format!("{session} {token}"))?;
            Ok(Some(token))
        })
    }

    /// Releases lock `name` if it is still `session`'s grant `token`.
    fn release(&self, name: &str, session: SessionId, token: u64) -> io::Result<bool> {
        self.locked(|| {
            if self.holder(name)? == Some((session, token)) {
                Self::remove(&self.lock_file(name))?;
                return Ok(true);
            }
            Ok(false)
        })
    }

    /// Whether lock `name` is still `session`'s grant `token` and the session lives.
    fn still_held(&self, name: &str, session: SessionId, token: u64) -> io::Result<bool> {
        Ok(self.holder(name)? == Some((session, token)) && self.alive(session)?)
    }

    /// The live holder (0 or 1) plus the waiters of live sessions.
    fn contenders(&self, name: &str) -> io::Result<usize> {
        let mut count = 0;
        if let Some((holder, _)) = self.holder(name)? {
            count += usize::from(self.alive(holder)?);
        }
        let entries = match fs::read_dir(self.waiters(name)) {
            Ok(entries) => entries,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(count),
            Err(error) => return Err(error),
        };
        for entry in entries {
            let file = entry?.file_name();
            let session = file
                .to_str()
                .and_then(|file| file.split_once('-'))
                .and_then(|(session, _)| u64::from_str_radix(session, 16).ok());
            if let Some(session) = session {
                count += usize::from(self.alive(SessionId(session))?);
            }
        }
        Ok(count)
    }
}

const SESSION_GONE: &str = "the session is gone";

/// Runs a blocking file-system step off the async threads.
async fn blocking<T: Send + 'static>(
    doing: &'static str,
    step: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) if error.to_string() == SESSION_GONE => Err(Error::SessionLost),
        Ok(Err(error)) => Err(io_error(doing, error)),
        Err(error) => Err(Error::backend(BACKEND, format!("{doing}: {error}"))),
    }
}

/// A backend over a directory of the local file system.
#[derive(Debug, Clone)]
pub struct FileBackend {
    store: Arc<Store>,
    capabilities: Capabilities,
}

impl FileBackend {
    /// The store in directory `root` (created, with its subdirectories, if missing).
    /// Every process that opens the same directory shares the store.
    ///
    /// # Errors
    /// [`Error::Backend`] when the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for directory in ["sessions", "locks", "waiters", "names"] {
            fs::create_dir_all(root.join(directory))
                .map_err(|error| io_error("creating the store's directories", error))?;
        }
        Ok(Self {
            store: Arc::new(Store { root }),
            capabilities: capabilities(),
        })
    }

    /// The heartbeat file of session `id`: removing it ends the session out of band
    /// (what an operator would do), and its holder learns through `lost()`.
    pub fn session_file(&self, id: SessionId) -> PathBuf {
        self.store.session_file(id)
    }
}

/// A session's lease: its heartbeat file.
struct FileLease {
    store: Arc<Store>,
    id: SessionId,
    ttl: Duration,
}

#[async_trait]
impl Lease for FileLease {
    async fn keep_alive(&self) -> Result<KeepAlive> {
        let (store, id, ttl) = (Arc::clone(&self.store), self.id, self.ttl);
        blocking("renewing a session", move || store.renew(id, ttl)).await
    }

    async fn revoke(&self) -> Result<()> {
        let (store, id) = (Arc::clone(&self.store), self.id);
        blocking("ending a session", move || store.end_session(id)).await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn unsupported<T>(what: &str) -> Result<T> {
    Err(Error::unsupported(BACKEND, what))
}

#[async_trait]
impl Backend for FileBackend {
    async fn session(&self, options: SessionOptions) -> Result<Session> {
        self.capabilities.check_session(&options)?;
        let grant_sent = tokio::time::Instant::now();
        let (store, ttl) = (Arc::clone(&self.store), options.ttl);
        let id = blocking("opening a session", move || store.grant_session(ttl)).await?;
        let lease = Arc::new(FileLease {
            store: Arc::clone(&self.store),
            id,
            ttl,
        });
        tracing::debug!(session = %id, ?ttl, "session granted");
        Ok(distsync_core::raw::start_session(BACKEND, id, &options, grant_sent, lease))
    }

    async fn revoke_session(&self, id: SessionId) -> Result<()> {
        let store = Arc::clone(&self.store);
        blocking("ending a session", move || store.end_session(id)).await
    }

    async fn count_prefix(&self, prefix: &Name) -> Result<u64> {
        let (store, prefix) = (Arc::clone(&self.store), prefix.as_str().to_owned());
        blocking("counting a name prefix", move || {
            Ok(store.paths_under(&prefix)?.len() as u64)
        })
        .await
    }

    async fn purge_prefix(&self, prefix: &Name) -> Result<u64> {
        let (store, prefix) = (Arc::clone(&self.store), prefix.as_str().to_owned());
        blocking("purging a name prefix", move || store.purge(&prefix)).await
    }
}

impl Primitives for FileBackend {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn locker(&self, session: &Session, name: Name) -> Result<Box<dyn Locker>> {
        if session.backend() != BACKEND {
            return Err(Error::InvalidArgument(format!(
                "a session of {} passed to the {BACKEND} backend",
                session.backend()
            )));
        }
        Ok(Box::new(FileLocker {
            store: Arc::clone(&self.store),
            session: session.clone(),
            file: file_name(&name),
            name,
        }))
    }

    fn election(&self, _session: &Session, _name: Name) -> Result<Box<dyn Election>> {
        unsupported("election")
    }

    fn rwlock(&self, _session: &Session, _name: Name) -> Result<Box<dyn RwLock>> {
        unsupported("rwlock")
    }

    fn queue(&self, _name: Name) -> Result<Box<dyn Queue>> {
        unsupported("queue")
    }

    fn barrier(&self, _name: Name) -> Result<Box<dyn Barrier>> {
        unsupported("barrier")
    }

    fn double_barrier(
        &self,
        _session: &Session,
        _name: Name,
        _count: NonZeroUsize,
    ) -> Result<Box<dyn DoubleBarrier>> {
        unsupported("double barrier")
    }

    fn stm(&self) -> Result<Stm> {
        unsupported("STM")
    }
}

/// The lock `name` held through `session`.
struct FileLocker {
    store: Arc<Store>,
    session: Session,
    name: Name,
    file: String,
}

/// A waiter's file, removed when the wait ends (granted, failed, or its future
/// dropped), so a cancelled waiter is not counted.
struct Waiting(PathBuf);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Err(error) = Store::remove(&self.0) {
            tracing::warn!(%error, "removing a waiter's file");
        }
    }
}

impl FileLocker {
    async fn try_take(&self) -> Result<Option<LockGuard>> {
        if self.session.is_lost() {
            return Err(Error::SessionLost);
        }
        let (store, file, id) = (
            Arc::clone(&self.store),
            self.file.clone(),
            self.session.id(),
        );
        let name = self.name.as_str().to_owned();
        let taken = blocking("taking a lock", move || store.try_take(&file, &name, id)).await?;
        Ok(taken.map(|token| self.guard(token)))
    }

    fn guard(&self, token: u64) -> LockGuard {
        let id = self.session.id();
        let release: ReleaseFn = {
            let (store, file) = (Arc::clone(&self.store), self.file.clone());
            Box::new(move || {
                Box::pin(async move {
                    blocking("releasing a lock", move || store.release(&file, id, token))
                        .await
                        .map(drop)
                })
            })
        };
        let watch = {
            let (store, file) = (Arc::clone(&self.store), self.file.clone());
            Box::new(move |lost: CancellationToken| {
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = lost.cancelled() => return,
                            () = tokio::time::sleep(LOSS_POLL) => {}
                        }
                        let (store, file) = (Arc::clone(&store), file.clone());
                        let held = blocking("checking a lock", move || {
                            store.still_held(&file, id, token)
                        })
                        .await;
                        // An error reading the store is not a loss: the next poll retries,
                        // and the session's own deadline bounds how long that can last.
                        if matches!(held, Ok(false)) {
                            lost.cancel();
                            return;
                        }
                    }
                });
            })
        };
        lock_guard(
            format!("locks/{}", self.file),
            FencingToken(token),
            &self.session,
            release,
        )
        .with_loss_watch(watch)
    }
}

#[async_trait]
impl Locker for FileLocker {
    fn name(&self) -> &Name {
        &self.name
    }

    async fn lock(&self) -> Result<LockGuard> {
        let (store, file, id) = (
            Arc::clone(&self.store),
            self.file.clone(),
            self.session.id(),
        );
        let name = self.name.as_str().to_owned();
        let waiter = blocking("registering a waiter", move || {
            store.remember(&file, &name)?;
            let directory = store.waiters(&file);
            fs::create_dir_all(&directory)?;
            let path = directory.join(format!("{id}-{}-{}", std::process::id(), unique()));
            fs::write(&path, b"")?;
            Ok(path)
        })
        .await?;
        let _waiting = Waiting(waiter);
        let lost = self.session.lost();
        tokio::pin!(lost);
        let mut pause = FIRST_POLL;
        loop {
            if let Some(guard) = self.try_take().await? {
                return Ok(guard);
            }
            tokio::select! {
                () = &mut lost => return Err(Error::SessionLost),
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(POLL);
        }
    }

    async fn try_lock(&self) -> Result<Option<LockGuard>> {
        self.try_take().await
    }

    async fn contenders(&self) -> Result<usize> {
        let (store, file) = (Arc::clone(&self.store), self.file.clone());
        blocking("counting contenders", move || store.contenders(&file)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_distinct_and_never_paths() {
        let names = ["a/b", "a%2Fb", "a:b", "{a}", "ü", "a.b", "..", ".hidden"];
        let files: std::collections::BTreeSet<String> = names
            .iter()
            .map(|name| file_name(&Name::new(*name).unwrap()))
            .collect();
        assert_eq!(files.len(), names.len(), "{files:?}");
        for file in &files {
            assert!(!file.contains('/') && !file.starts_with('.'), "{file}");
        }
        let long = Name::new("x".repeat(255)).unwrap();
        assert!(file_name(&long).len() <= 200);
        assert_ne!(
            file_name(&long),
            file_name(&Name::new("x".repeat(254)).unwrap())
        );
    }

    #[test]
    fn file_names_decode_to_their_names() {
        for name in ["a/b", "a%2Fb", "conf/run-1/x", "ü", "a.b"] {
            let file = file_name(&Name::new(name).unwrap());
            assert_eq!(decode_file_name(&file).as_deref(), Some(name), "{file}");
        }
        assert_eq!(decode_file_name("bad%2"), None);
        assert_eq!(decode_file_name("bad%zz"), None);
    }

    #[test]
    fn only_urls_of_an_absolute_directory_connect() {
        assert!(DRIVER.answers("file:///tmp/x"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let refused = runtime.block_on((DRIVER.connect)("file://relative/dir"));
        assert!(matches!(refused, Err(Error::InvalidUrl { .. })));
    }
}
