//! A safe run leaves nothing behind on a shared store but the store-wide entries
//! `distsync_conformance::cleanup::STORE_WIDE` lists. Each test gives the runner a
//! store namespace of its own (Redis `namespace=`, PostgreSQL `schema=`, etcd's and
//! ZooKeeper's URL path, NATS `bucket=`, MySQL `table_prefix=`) on the server of
//! `scripts/servers.sh env`, runs the safe profile there (on Redis, PostgreSQL and
//! MySQL two runs at once, each under a name namespace of its own and each the other's
//! concurrent suite), and then:
//!
//! - nothing is left under either run's namespace, counted with
//!   [`distsync_core::Backend::count_prefix`];
//! - every key, row or node of the store namespace is an entry of `STORE_WIDE`, and
//!   those it says expire have an expiry;
//! - a counter written there afterwards is reported as undocumented, so the listing
//!   sees what a run would leave.
//!
//! The test then drops its store namespace. Other test binaries share these servers:
//! nothing outside the test's own store namespace is read or removed.

use std::process::{Command, Output};

use distsync_conformance::cleanup::store_wide_entry;
use distsync_conformance::StoreKind;
use distsync_core::Name;

/// The cases the runs start (`--case` matches substrings): those that write durable
/// state (queue items, barriers, STM keys, counters, latches, rate limiters) beside
/// locks, elections and semaphores, so the clean-up has something to remove, and one
/// through the partition proxy. The whole safe profile, run twice at once per store,
/// takes too long for a test; the child-process holders, whose 1 s sessions a loaded
/// machine can starve, have their own tests.
const CASES: [&str; 12] = [
    "lock_mutual_exclusion",
    "election_one_leader",
    "queue_fifo",
    "barrier_blocks_until_release",
    "double_barrier_enter_leave",
    "semaphore_bounded_holders",
    "stm_conflict_serializable",
    "counter_concurrent_adds",
    "counter_adds_across_partition",
    "latch_released_at_zero",
    "rate_limiter_contention",
    "stm_bank_serializable_snapshot",
];

/// The case [`few`] leaves out: ten seconds of STM transfers, whose store-wide key is
/// Redis's alone.
const BANK: &str = "stm_bank_serializable_snapshot";

/// [`CASES`] but [`BANK`], for the stores whose test runs once.
fn few() -> Vec<&'static str> {
    CASES.into_iter().filter(|case| *case != BANK).collect()
}

/// The counter written after the runs, which the listing must report.
const UNDOCUMENTED: &str = "undocumented-by-store-wide";

/// A unique suffix for this test's names: the process and the time.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos:x}", std::process::id())
}

fn namespace(store: &str, run: usize) -> Name {
    Name::new(format!("conf/cleanup-test-{store}-{}-{run}", unique())).expect("a valid name")
}

fn run(url: &str, namespace: &Name, cases: &[&str]) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distsync-conformance"));
    command.args([
        "--backend",
        url,
        "--profile",
        "safe",
        "--namespace",
        namespace.as_str(),
    ]);
    for case in cases {
        command.args(["--case", case]);
    }
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the runner")
}

/// One key, row or node found in the store namespace, and whether it expires on its
/// own (`None`: the listing cannot tell).
#[derive(Debug)]
struct Found {
    entry: String,
    expires: Option<bool>,
}

/// A store under a store namespace of the test's own.
struct Place {
    kind: StoreKind,
    /// The URL with the store namespace.
    url: String,
    /// The store namespace as `STORE_WIDE`'s placeholders take it.
    namespace: String,
}

impl Place {
    /// The server of `base` (a URL of `scripts/servers.sh env`), under a fresh store
    /// namespace.
    fn fresh(kind: StoreKind, base: &str) -> Self {
        let mut url = url::Url::parse(base).expect("a URL");
        let id = unique();
        let namespace = match kind {
            StoreKind::Redis => {
                let namespace = format!("cleanup-test-{id}:");
                set_query(&mut url, "namespace", &namespace);
                namespace
            }
            StoreKind::Postgres => {
                let schema = format!("cleanup_test_{id}").replace('-', "_");
                set_query(&mut url, "schema", &schema);
                schema
            }
            StoreKind::Etcd => {
                url.set_path(&format!("/cleanup-test-{id}/"));
                format!("cleanup-test-{id}/")
            }
            StoreKind::Nats => {
                let bucket = format!("cleanup-test-{id}");
                set_query(&mut url, "bucket", &bucket);
                bucket
            }
            StoreKind::Mysql => {
                // At most 32 characters (the backend's bound on a prefix).
                let prefix = format!("clean_{id}_").replace('-', "_");
                set_query(&mut url, "table_prefix", &prefix);
                prefix
            }
            _ => {
                url.set_path(&format!("/cleanup-test-{id}"));
                format!("/cleanup-test-{id}")
            }
        };
        Self {
            kind,
            url: url.to_string(),
            namespace,
        }
    }

    /// The entries of `found` that `STORE_WIDE` does not list for any of `runs`, or
    /// lists as expiring while they do not expire.
    fn undocumented(&self, runs: &[Name], found: &[Found]) -> Vec<String> {
        found
            .iter()
            .filter(|found| {
                let entry = runs.iter().find_map(|run| {
                    store_wide_entry(self.kind, &self.namespace, run, &found.entry)
                });
                match entry {
                    None => true,
                    Some(entry) => entry.expiry.is_some() && found.expires == Some(false),
                }
            })
            .map(|found| found.entry.clone())
            .collect()
    }
}

/// `url` with query parameter `key` set to `value` (any earlier value replaced).
fn set_query(url: &mut url::Url, key: &str, value: &str) {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| name != key)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair(key, value);
}

/// `url` without its query (distsync's own parameters), for the store's own client.
#[cfg(any(feature = "redis", feature = "postgres"))]
fn without_query(url: &str) -> String {
    let mut url = url::Url::parse(url).expect("a URL");
    url.set_query(None);
    url.to_string()
}

/// The URL of `var`, or `None` (and a note) outside CI when it is not set.
fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "{var} must be set under CI (scripts/servers.sh env)"
            );
            eprintln!("{var} is not set: skipping");
            None
        }
    }
}

/// Runs the safe profile with `cases`, `runs` times at once, on `place`, checks that each passed and
/// left nothing under its namespace, writes the undocumented counter, and returns the
/// runs' namespaces.
async fn run_and_check(place: &Place, runs: usize, cases: &[&str]) -> Vec<Name> {
    let store = place.kind.as_str();
    let coordinator = distsync::connect(&place.url).await.expect("connecting");
    let backend = coordinator.backend();
    let namespaces: Vec<Name> = (1..=runs).map(|run| namespace(store, run)).collect();
    for namespace in &namespaces {
        assert_eq!(backend.count_prefix(namespace).await.unwrap(), 0, "before");
    }
    let children: Vec<_> = namespaces
        .iter()
        .map(|ns| run(&place.url, ns, cases))
        .collect();
    let outputs: Vec<Output> = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| child.wait_with_output().expect("the runner's output"))
            .collect()
    })
    .await
    .expect("waiting");
    for (namespace, output) in namespaces.iter().zip(&outputs) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{store}:\n{stderr}\n{stdout}"
        );
        let purged = stderr
            .lines()
            .find(|line| line.contains(&format!("clean-up of `{namespace}`:")))
            .unwrap_or_else(|| panic!("no clean-up line:\n{stderr}"));
        assert!(purged.ends_with(", 0 left"), "{purged}");
        assert!(
            !purged.contains(": 0 entries removed"),
            "the run wrote nothing: {purged}"
        );
        assert!(stdout.contains("entries removed, 0 left"), "{stdout}");
        assert_eq!(
            backend.count_prefix(namespace).await.unwrap(),
            0,
            "{store}: entries left under {namespace}"
        );
    }
    let counter = coordinator
        .counter(UNDOCUMENTED)
        .expect("a counter outside the runs' namespaces");
    counter.add(1).await.expect("writing the counter");
    namespaces
}

/// Checks `found` (the store namespace's entries after [`run_and_check`]): only
/// `STORE_WIDE` entries but the undocumented counter, which `is_counter` recognises.
fn check_found(place: &Place, runs: &[Name], found: &[Found], is_counter: impl Fn(&str) -> bool) {
    let store = place.kind.as_str();
    let undocumented = place.undocumented(runs, found);
    let (counter, others): (Vec<_>, Vec<_>) = undocumented.iter().partition(|e| is_counter(e));
    assert!(
        others.is_empty(),
        "{store}: entries outside the runs' namespaces that cleanup::STORE_WIDE does not \
         list (or lists as expiring): {others:?}\nall found: {found:#?}"
    );
    assert!(
        !counter.is_empty(),
        "{store}: the listing did not see the counter written outside the runs: {found:#?}"
    );
}

#[cfg(feature = "redis")]
mod redis_store {
    use super::Found;
    use distsync::store::redis::redis;

    /// Every key starting with `{<namespace>`, with whether it has an expiry.
    pub(super) async fn keys(url: &str, namespace: &str) -> Vec<Found> {
        let client = redis::Client::open(super::without_query(url)).expect("a Redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to Redis");
        let pattern = format!("{{{}*", glob_escape(namespace));
        let mut cursor = 0_u64;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("SCAN");
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        let mut found = Vec::new();
        for key in keys {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("PTTL");
            // -2: expired since the scan.
            if ttl != -2 {
                found.push(Found {
                    entry: key,
                    expires: Some(ttl >= 0),
                });
            }
        }
        found
    }

    /// Removes every key starting with `{<namespace>`.
    pub(super) async fn drop_all(url: &str, namespace: &str) {
        let client = redis::Client::open(super::without_query(url)).expect("a Redis URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to Redis");
        for found in keys(url, namespace).await {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&found.entry)
                .query_async(&mut conn)
                .await
                .expect("UNLINK");
        }
    }

    fn glob_escape(text: &str) -> String {
        text.chars()
            .flat_map(|c| match c {
                '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect()
    }
}

#[cfg(feature = "postgres")]
mod postgres_store {
    use super::Found;
    use distsync::store::postgres::sqlx;

    async fn pool(url: &str) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&super::without_query(url))
            .await
            .expect("connecting to PostgreSQL")
    }

    /// One `<schema>.<table>` per row of every table of `schema`.
    pub(super) async fn rows(url: &str, schema: &str) -> Vec<Found> {
        let pool = pool(url).await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
        )
        .bind(schema)
        .fetch_all(&pool)
        .await
        .expect("listing the tables");
        assert!(!tables.is_empty(), "no tables in schema {schema}");
        let mut found = Vec::new();
        for table in tables {
            let sql = format!("SELECT count(*) FROM \"{schema}\".\"{table}\"");
            let rows: i64 = sqlx::query_scalar(&sql)
                .fetch_one(&pool)
                .await
                .expect("counting rows");
            for _ in 0..rows {
                found.push(Found {
                    entry: format!("{schema}.{table}"),
                    expires: None,
                });
            }
        }
        pool.close().await;
        found
    }

    /// Drops `schema`.
    pub(super) async fn drop_all(url: &str, schema: &str) {
        let pool = pool(url).await;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&pool)
            .await
            .expect("dropping the schema");
        pool.close().await;
    }
}

#[cfg(feature = "etcd")]
mod etcd_store {
    use super::Found;
    use distsync::store::etcd::etcd_client::{Client, DeleteOptions, GetOptions};

    async fn client(url: &str) -> Client {
        let url = url::Url::parse(url).expect("a URL");
        let endpoint = format!(
            "{}:{}",
            url.host_str().expect("a host"),
            url.port().unwrap_or(2379)
        );
        Client::connect([endpoint], None)
            .await
            .expect("connecting to etcd")
    }

    /// Every key under `namespace`, with whether it is leased.
    pub(super) async fn keys(url: &str, namespace: &str) -> Vec<Found> {
        let mut client = client(url).await;
        let answer = client
            .get(namespace, Some(GetOptions::new().with_prefix()))
            .await
            .expect("reading the namespace");
        answer
            .kvs()
            .iter()
            .map(|kv| Found {
                entry: kv.key_str().expect("a UTF-8 key").to_owned(),
                expires: Some(kv.lease() != 0),
            })
            .collect()
    }

    /// Deletes every key under `namespace`.
    pub(super) async fn drop_all(url: &str, namespace: &str) {
        let mut client = client(url).await;
        client
            .delete(namespace, Some(DeleteOptions::new().with_prefix()))
            .await
            .expect("deleting the namespace");
    }
}

#[cfg(feature = "zookeeper")]
mod zookeeper_store {
    use super::Found;

    /// ZooKeeper's command-line client, if installed (Debian's `zookeeper` package,
    /// which `scripts/servers.sh` runs the test servers from).
    pub(super) fn cli() -> Option<std::path::PathBuf> {
        ["/usr/share/zookeeper/bin/zkCli.sh", "/usr/bin/zkCli.sh"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|path| path.exists())
    }

    /// `zkCli.sh -server <the URL's servers> <command...>`'s standard output.
    fn run(url: &str, command: &[&str]) -> String {
        let servers = url
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(rest))
            .expect("a zk:// URL");
        let output = std::process::Command::new(cli().expect("zkCli.sh"))
            .args(["-server", servers])
            .args(command)
            .output()
            .expect("running zkCli.sh");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Every node of the tree at `root` (`root` included).
    pub(super) fn nodes(url: &str, root: &str) -> Vec<Found> {
        run(url, &["ls", "-R", root])
            .lines()
            .filter(|line| *line == root || line.starts_with(&format!("{root}/")))
            .map(|line| Found {
                entry: line.to_owned(),
                expires: None,
            })
            .collect()
    }

    /// Deletes the tree at `root`.
    pub(super) fn drop_all(url: &str, root: &str) {
        run(url, &["deleteall", root]);
    }
}

#[cfg(feature = "nats")]
mod nats_store {
    use super::Found;
    use futures::TryStreamExt as _;

    /// A JetStream context on `url`'s server.
    async fn jetstream(url: &str) -> async_nats::jetstream::Context {
        let mut server = url::Url::parse(url).expect("a URL");
        server.set_query(None);
        let client = async_nats::connect(server.as_str().trim_end_matches('/'))
            .await
            .expect("connecting to NATS");
        async_nats::jetstream::new(client)
    }

    /// Every subject of the bucket's stream that still holds a message (a value, or
    /// a delete or purge marker: each is a message the bucket keeps), as
    /// `$KV.<bucket>.<key>`, with whether its last message expires (`Nats-TTL`).
    pub(super) async fn keys(url: &str, bucket: &str) -> Vec<Found> {
        let stream = jetstream(url)
            .await
            .get_stream(format!("KV_{bucket}"))
            .await
            .expect("the bucket's stream");
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects(">")
            .await
            .expect("the stream's subjects")
            .try_collect()
            .await
            .expect("listing the stream's subjects");
        let mut found = Vec::new();
        for (subject, _) in subjects {
            use async_nats::jetstream::stream::LastRawMessageErrorKind;
            let last = match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(last) => last,
                // Expired (its TTL ran out) since the listing.
                Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
                Err(error) => panic!("the last message of {subject}: {error}"),
            };
            found.push(Found {
                expires: Some(last.headers.get("Nats-TTL").is_some()),
                entry: subject,
            });
        }
        found.sort_by(|a, b| a.entry.cmp(&b.entry));
        found
    }

    /// [`keys`] once no subject of `runs` is left: the tombstones of what the runs'
    /// clean-up purged expire with their TTL, which the server ends within seconds.
    /// Past a deadline, the listing as it is (whose leftovers then fail the test).
    pub(super) async fn settled_keys(
        url: &str,
        bucket: &str,
        runs: &[distsync_core::Name],
    ) -> Vec<Found> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let found = keys(url, bucket).await;
            // A name's segments are the subject's tokens (the runs' hold only letters,
            // digits and `-`, which are written as they are).
            let of_runs = |found: &Found| {
                runs.iter().any(|run| {
                    found
                        .entry
                        .contains(&format!(".{}.", run.as_str().replace('/', ".")))
                })
            };
            if !found.iter().any(of_runs) || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// Deletes the bucket (its stream).
    pub(super) async fn drop_all(url: &str, bucket: &str) {
        jetstream(url)
            .await
            .delete_stream(format!("KV_{bucket}"))
            .await
            .expect("deleting the bucket's stream");
    }
}

#[cfg(feature = "mysql")]
mod mysql_store {
    use super::Found;
    use distsync::store::mysql::{sqlx, MysqlConfig, MysqlKv};
    use distsync_kv::kv::Revision;

    /// Whether a row `l` of the log goes with compaction to the revision `?`: a
    /// tombstone before it, or a row its key wrote again at or before it.
    const COMPACTED: &str = "(l.deleted = 1 AND l.revision < ?) OR EXISTS (SELECT 1 FROM {log} n \
         WHERE n.k = l.k AND n.revision > l.revision AND n.revision <= ?)";

    /// A client of the tables `url` names.
    pub(super) async fn store(url: &str) -> MysqlKv {
        let config = MysqlConfig::parse(url).expect("a MySQL URL");
        MysqlKv::connect(&config)
            .await
            .expect("connecting to MySQL")
    }

    /// The tables of the database whose names start with `prefix`.
    async fn tables(store: &MysqlKv, prefix: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND LEFT(table_name, CHAR_LENGTH(?)) = ? \
             ORDER BY 1",
        )
        .bind(prefix)
        .bind(prefix)
        .fetch_all(store.pool())
        .await
        .expect("listing the tables")
    }

    /// The store's revision.
    async fn revision(store: &MysqlKv, prefix: &str) -> Revision {
        sqlx::query_scalar(&format!("SELECT revision FROM {prefix}meta WHERE id = 1"))
            .fetch_one(store.pool())
            .await
            .expect("reading the revision")
    }

    /// Every row of every table of `prefix`: `<prefix>meta`, `<prefix>kv:<key>`,
    /// `<prefix>log:<key>` and `<prefix>leases:<id>` (`<table>` for a table the backend
    /// does not make), with whether it goes on its own: a `kv` row with its lease, a
    /// lease at its expiry, a `log` row with compaction once the store's revision has
    /// passed it (a tombstone, or a row its key wrote again since).
    pub(super) async fn rows(store: &MysqlKv, prefix: &str) -> Vec<Found> {
        let tables = tables(store, prefix).await;
        assert!(!tables.is_empty(), "no tables with prefix {prefix}");
        let mut found = Vec::new();
        for table in tables {
            // The row's label (`None`: the table names the row) and whether it expires.
            let (label, expires) = match &table[prefix.len()..] {
                "meta" => (None, "0".to_owned()),
                "kv" => (Some("k"), "lease <> 0".to_owned()),
                // Compaction to any revision to come.
                "log" => (
                    Some("l.k"),
                    COMPACTED
                        .replace("{log}", &table)
                        .replace('?', &Revision::MAX.to_string()),
                ),
                "leases" => (Some("CAST(id AS CHAR)"), "1".to_owned()),
                _ => (None, "NULL".to_owned()),
            };
            let labelled = label.is_some();
            let sql = format!(
                "SELECT {}, CAST({expires} AS SIGNED) FROM {table} l",
                label.unwrap_or("''")
            );
            let rows: Vec<(Vec<u8>, Option<i64>)> = sqlx::query_as(&sql)
                .fetch_all(store.pool())
                .await
                .expect("reading the rows");
            found.extend(rows.into_iter().map(|(label, expires)| Found {
                entry: if labelled {
                    format!("{table}:{}", String::from_utf8_lossy(&label))
                } else {
                    table.clone()
                },
                expires: expires.map(|expires| expires != 0),
            }));
        }
        found.sort_by(|a, b| a.entry.cmp(&b.entry));
        found
    }

    /// Compacts the store to its current revision, then returns the keys of the log
    /// rows below it that compaction leaves although they are history (tombstones,
    /// rows their key wrote again): none, when the run's history goes with compaction.
    pub(super) async fn history_after_compaction(store: &MysqlKv, prefix: &str) -> Vec<String> {
        let now = revision(store, prefix).await;
        store.compact(now).await.expect("compacting");
        let log = format!("{prefix}log");
        let sql = format!(
            "SELECT l.k FROM {log} l WHERE {}",
            COMPACTED.replace("{log}", &log)
        );
        let keys: Vec<Vec<u8>> = sqlx::query_scalar(&sql)
            .bind(now)
            .bind(now)
            .fetch_all(store.pool())
            .await
            .expect("reading the log");
        keys.iter()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .collect()
    }

    /// Drops every table of `prefix`.
    pub(super) async fn drop_all(store: &MysqlKv, prefix: &str) {
        for table in tables(store, prefix).await {
            sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute(store.pool())
                .await
                .expect("dropping a table");
        }
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread")]
async fn two_safe_runs_at_once_leave_only_store_wide_keys_on_redis() {
    let Some(base) = server_url("DISTSYNC_REDIS_URL") else {
        return;
    };
    let place = Place::fresh(StoreKind::Redis, &base);
    let runs = run_and_check(&place, 2, &CASES).await;
    let found = redis_store::keys(&place.url, &place.namespace).await;
    redis_store::drop_all(&place.url, &place.namespace).await;
    let rev = format!("{{{}stm}}:rev", place.namespace);
    assert!(
        found.iter().any(|found| found.entry == rev),
        "the STM cases ran, so {rev} is there: {found:#?}"
    );
    check_found(&place, &runs, &found, |key| key.contains(UNDOCUMENTED));
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread")]
async fn two_safe_runs_at_once_leave_only_store_wide_rows_on_postgres() {
    let Some(base) = server_url("DISTSYNC_POSTGRES_URL") else {
        return;
    };
    let place = Place::fresh(StoreKind::Postgres, &base);
    let runs = run_and_check(&place, 2, &CASES).await;
    let found = postgres_store::rows(&place.url, &place.namespace).await;
    postgres_store::drop_all(&place.url, &place.namespace).await;
    let counters = format!("{}.counters", place.namespace);
    check_found(&place, &runs, &found, |row| row == counters);
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread")]
async fn a_safe_run_leaves_only_store_wide_keys_on_etcd() {
    let Some(base) = server_url("DISTSYNC_ETCD_URL") else {
        return;
    };
    let place = Place::fresh(StoreKind::Etcd, &base);
    let runs = run_and_check(&place, 1, &few()).await;
    let found = etcd_store::keys(&place.url, &place.namespace).await;
    etcd_store::drop_all(&place.url, &place.namespace).await;
    check_found(&place, &runs, &found, |key| key.contains(UNDOCUMENTED));
}

#[cfg(feature = "zookeeper")]
#[tokio::test(flavor = "multi_thread")]
async fn a_safe_run_leaves_only_store_wide_nodes_on_zookeeper() {
    let Some(base) = server_url("DISTSYNC_ZOOKEEPER_URL") else {
        return;
    };
    if zookeeper_store::cli().is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "zkCli.sh (Debian's zookeeper) must be installed under CI"
        );
        eprintln!("zkCli.sh is not installed: skipping");
        return;
    }
    let place = Place::fresh(StoreKind::Zookeeper, &base);
    let runs = run_and_check(&place, 1, &few()).await;
    let found = zookeeper_store::nodes(&place.url, &place.namespace);
    zookeeper_store::drop_all(&place.url, &place.namespace);
    let lock = format!("{}/lock", place.namespace);
    assert!(
        found.iter().any(|found| found.entry == lock),
        "the lock case ran, so {lock} is there: {found:#?}"
    );
    check_found(&place, &runs, &found, |node| node.contains(UNDOCUMENTED));
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread")]
async fn a_safe_run_leaves_only_store_wide_keys_on_nats() {
    let Some(base) = server_url("DISTSYNC_NATS_URL") else {
        return;
    };
    let place = Place::fresh(StoreKind::Nats, &base);
    // Without the rate limiter's contention case, which the matrix run judges: what
    // this test judges, the leftovers, does not depend on it, and its six clients
    // racing compare-and-sets on one key load a test that runs beside this binary's
    // others.
    let cases: Vec<&str> = few()
        .into_iter()
        .filter(|case| *case != "rate_limiter_contention")
        .collect();
    let runs = run_and_check(&place, 1, &cases).await;
    let found = nats_store::settled_keys(&place.url, &place.namespace, &runs).await;
    nats_store::drop_all(&place.url, &place.namespace).await;
    check_found(&place, &runs, &found, |key| key.contains(UNDOCUMENTED));
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread")]
async fn two_safe_runs_at_once_leave_only_store_wide_rows_on_mysql() {
    let Some(base) = server_url("DISTSYNC_MYSQL_URL") else {
        return;
    };
    let place = Place::fresh(StoreKind::Mysql, &base);
    let runs = run_and_check(&place, 2, &CASES).await;
    let store = mysql_store::store(&place.url).await;
    let found = mysql_store::rows(&store, &place.namespace).await;
    let history = mysql_store::history_after_compaction(&store, &place.namespace).await;
    mysql_store::drop_all(&store, &place.namespace).await;
    check_found(&place, &runs, &found, |row| row.contains(UNDOCUMENTED));
    assert!(
        history.is_empty(),
        "history compaction to the current revision leaves: {history:?}"
    );
}

/// The memory store in this process, where every key can be read: after the cases and
/// the clean-up, it holds nothing at all (the memory store has no store-wide entry).
#[tokio::test(flavor = "multi_thread")]
async fn a_safe_run_leaves_nothing_in_a_memory_store() {
    use distsync_kv::kv::{Kv, Range};
    use distsync_kv::memory::MemoryBackend;

    let backend = MemoryBackend::new();
    let kv = std::sync::Arc::clone(backend.kv());
    let backend: std::sync::Arc<dyn distsync_core::Backend> = std::sync::Arc::new(backend);
    let run = namespace("memory", 1);
    let harness =
        distsync_conformance::Harness::new(std::sync::Arc::clone(&backend)).with_namespace(&run);
    let reports = distsync_conformance::run_suite_in(
        &harness,
        "memory",
        distsync_conformance::Profile::Safe,
        |case| CASES.contains(&case.id),
        |_| {},
    )
    .await;
    let failed: Vec<_> = reports
        .iter()
        .filter(|report| report.is_failure())
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let cleanup = distsync_conformance::clean_up(&*backend, &run)
        .await
        .unwrap();
    assert_eq!(cleanup.left, 0, "{cleanup}");
    assert!(cleanup.purged > 0, "the run wrote nothing: {cleanup}");
    let keys = |range| async { kv.range(range).await.expect("reading the store").kvs };
    let left: Vec<String> = keys(Range::prefix(""))
        .await
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert!(left.is_empty(), "the memory store still holds {left:?}");
    let coordinator = distsync_core::Coordinator::from_arc(backend);
    coordinator
        .counter(UNDOCUMENTED)
        .unwrap()
        .add(1)
        .await
        .unwrap();
    assert!(
        !keys(Range::prefix("")).await.is_empty(),
        "the listing sees nothing"
    );
}

/// docs/CONFORMANCE.md's table of store-wide entries has one row per entry of
/// `STORE_WIDE`, in its order, naming the store and the entry.
#[test]
fn the_docs_table_follows_store_wide() {
    use distsync_conformance::cleanup::STORE_WIDE;

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/CONFORMANCE.md");
    let docs = std::fs::read_to_string(path).expect("docs/CONFORMANCE.md");
    let section = docs
        .split("#### Store-wide entries")
        .nth(1)
        .expect("a section on store-wide entries");
    let rows: Vec<&str> = section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .collect();
    assert_eq!(rows.len(), STORE_WIDE.len(), "{rows:#?}");
    for (row, entry) in rows.iter().zip(STORE_WIDE) {
        let store = match entry.store {
            StoreKind::Redis => "| Redis",
            StoreKind::Postgres => "| PostgreSQL |",
            StoreKind::Etcd => "| etcd |",
            StoreKind::Nats => "| NATS |",
            StoreKind::Mysql => "| MySQL |",
            _ => "| ZooKeeper |",
        };
        assert!(row.starts_with(store), "{row} is not {entry:?}");
        assert!(
            row.contains(&format!("| `{}` |", entry.entry)),
            "{row} is not {entry:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_safe_run_on_memory_reports_its_clean_up() {
    let output = Command::new(env!("CARGO_BIN_EXE_distsync-conformance"))
        .args([
            "--backend",
            "memory://",
            "--profile",
            "safe",
            "--case",
            "queue_fifo",
        ])
        .output()
        .expect("running the runner");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Every case ran under the names `conf/run-"),
        "{stdout}"
    );
    assert!(stdout.contains("entries removed, 0 left"), "{stdout}");
}
