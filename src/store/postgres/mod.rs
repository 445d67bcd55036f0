//! The shared backend: PostgreSQL (15 or later), for gateway nodes that
//! must not keep what they need on their own disk.
//!
//! Every tree is a key range of one table (`migrations/0001_store.sql`), so
//! the planes above see exactly the contract the embedded store meets. What
//! PostgreSQL adds is in the guarantees: every write commits with
//! `synchronous_commit` on (checked at open), a read-modify-write
//! (`update_counter`, `upsert_placed`) holds what it read until its commit
//! inside one transaction, so two processes racing on one quota or one
//! record never lose an update, and a placed upsert moves its records and
//! their places in one commit.
//!
//! The [`Backend`] contract is synchronous (sled answers from memory). A
//! caller on the gateway's runtime runs its query inside `block_in_place`,
//! so the runtime's other tasks move to another thread instead of stalling
//! behind the database; the connections themselves are driven by the
//! backend's own I/O runtime, so the same calls also work from a CLI or a
//! test. Every call has a deadline: a database that does not answer is an
//! error (the pull fails closed), never a hang.

mod announce;
mod log;
pub mod migrate;
mod reads;

use super::{Backend, Placed, PlacedKey, PlacedUpdate, Reading, prefix_end, rev_upper};
use anyhow::{Context, Result, anyhow, bail};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Longest one store call may take, connection wait included.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// Where a PostgreSQL store is, how a node trusts it, and how many
/// connections it keeps.
#[derive(Debug, Clone)]
pub struct Location {
    pub url: String,
    pub pool_size: usize,
    /// PEM roots the database server's certificate must chain to (`None`:
    /// the system's roots).
    pub ca: Option<std::path::PathBuf>,
}

pub struct PgBackend {
    pool: Pool,
    io: Arc<Io>,
    log: Arc<log::PgLog>,
    seen: Arc<announce::Seen>,
    reads: reads::Reads,
    statistics: Statistics,
}

/// Records this node must have written before it first brings
/// PostgreSQL's statistics on `kv` up to date.
const FIRST_ANALYZE: u64 = 10_000;

/// Keeps PostgreSQL's statistics on `kv` in step with this node's record
/// writes. A chunk's statements are prepared once per session, and
/// PostgreSQL caches a generic plan for each, costed on the statistics of
/// the moment. Cached while the table was small, the plan for a chunk's
/// read (`key = ANY($2)`) found a tree's rows by the tree alone and
/// filtered each against the 2 000 keys: during a first load each read
/// took 0.3–5 s, slower than the last, until autovacuum's next ANALYZE (a
/// minute apart; a load is faster). An ANALYZE each time the keys this
/// node has published double invalidates every session's cached plans on
/// `kv` (they are planned again on next use), log₂ times over a load;
/// forcing a custom plan per statement instead made every import 2.5×
/// slower (planning 2 000-element arrays).
#[derive(Default)]
struct Statistics {
    written: AtomicU64,
}

impl Statistics {
    /// Counts `rows` written; whether that crossed a doubling of
    /// [`FIRST_ANALYZE`] (10 000, 20 000, 40 000, …). Each caller's count
    /// is a range of its own, so each doubling is crossed by one caller.
    fn wrote(&self, rows: u64) -> bool {
        let before = self.written.fetch_add(rows, Ordering::Relaxed);
        let doublings = |n: u64| 64 - (n / FIRST_ANALYZE).leading_zeros();
        doublings(before.saturating_add(rows)) > doublings(before)
    }
}

impl PgBackend {
    /// Checks the server (version, durable commits) and brings the schema
    /// up to date under the migration lock. Any number of nodes may open
    /// one database: the audit log is in it too ([`log`]).
    pub fn open(at: &Location) -> Result<Self> {
        let config = session_config(&at.url)?;
        let tls = tls(at.ca.as_deref())?;
        let io = Arc::new(Io::start()?);
        let pool = io.run({
            let size = at.pool_size;
            let (config, tls) = (config.clone(), tls.clone());
            async move {
                let mut client = connect(&config, &tls).await?;
                check_server(&client).await?;
                migrate::migrate(&mut client).await?;
                let manager = Manager::from_config(
                    config,
                    tls,
                    ManagerConfig {
                        recycling_method: RecyclingMethod::Fast,
                    },
                );
                Pool::builder(manager)
                    .max_size(size)
                    .wait_timeout(Some(CALL_DEADLINE))
                    .create_timeout(Some(CALL_DEADLINE))
                    .recycle_timeout(Some(CALL_DEADLINE))
                    .runtime(deadpool_postgres::Runtime::Tokio1)
                    .build()
                    .context("building the PostgreSQL pool")
            }
        })?;
        let seen = Arc::new(announce::Seen::default());
        announce::listen(&io.handle, config.clone(), tls.clone(), seen.clone());
        let log = Arc::new(log::PgLog::new(
            pool.clone(),
            io.clone(),
            config,
            tls,
            seen.clone(),
        ));
        let reads = reads::Reads::start(&io.handle, pool.clone());
        Ok(Self {
            pool,
            io,
            log,
            seen,
            reads,
            statistics: Statistics::default(),
        })
    }

    /// Brings the statistics on `kv` up to date in the background, off the
    /// write that made them due ([`Statistics`]); skipped while another
    /// ANALYZE or a VACUUM holds the table (another node loading, say).
    /// ANALYZE needs the table's owner (or its database's); a role that
    /// is neither gets a server warning, which the driver logs at info,
    /// and the statistics are left to autovacuum.
    fn analyze_soon(&self) {
        let pool = self.pool.clone();
        self.io.handle.spawn(async move {
            let done = within_deadline(async {
                pooled(&pool)
                    .await?
                    .batch_execute("ANALYZE (SKIP_LOCKED) kv")
                    .await
                    .context("ANALYZE kv")
            })
            .await;
            if let Err(e) = done {
                tracing::warn!(error = %format!("{e:#}"), "bringing PostgreSQL's statistics on the store up to date failed");
            }
        });
    }

    /// Runs `f` with a pooled connection on the I/O runtime.
    fn with<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send,
    {
        let pool = self.pool.clone();
        self.io.run(async move {
            let client = pooled(&pool).await?;
            f(client).await
        })
    }
}

/// `govshare db migrate`: brings the schema at `url` up to this binary's,
/// ahead of a start (nodes also migrate at start, under the same lock).
pub async fn migrate_at(url: &str, ca: Option<&Path>) -> Result<migrate::Migrated> {
    let (config, tls) = (session_config(url)?, tls(ca)?);
    let mut client = connect(&config, &tls).await?;
    check_server(&client).await?;
    migrate::migrate(&mut client).await
}

type Tls = tokio_postgres_rustls::MakeRustlsConnect;

/// A connection from the pool, or why there is none.
async fn pooled(pool: &Pool) -> Result<deadpool_postgres::Object> {
    pool.get()
        .await
        .map_err(|e| anyhow!("no PostgreSQL connection: {e}"))
}

/// The connection settings for every session: `url` with keepalives short
/// enough that a vanished server (a failover, a cut network) is noticed in
/// seconds, and statement and lock timeouts under [`CALL_DEADLINE`], so a
/// call given up on does not leave its statement running. A clear-text
/// connection is refused unless the server is on this host.
fn session_config(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .context("store.url is not a PostgreSQL connection URL")?;
    let deadline_ms = CALL_DEADLINE.as_millis() - 1000;
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(10))
        .connect_timeout(CALL_DEADLINE)
        .options(format!(
            "-c statement_timeout={deadline_ms} -c lock_timeout={deadline_ms} -c idle_session_timeout=0 -c idle_in_transaction_session_timeout={deadline_ms}"
        ));
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
        use tokio_postgres::config::Host;
        for host in config.get_hosts() {
            let local = match host {
                Host::Unix(_) => true,
                Host::Tcp(name) => {
                    name == "localhost"
                        || name
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                }
            };
            if !local {
                bail!(
                    "store.url: sslmode=disable would send personal records in clear text to a database on another host; use TLS (the default; store.ca names the server's CA) or a database on this host"
                );
            }
        }
    }
    Ok(config)
}

/// TLS towards the database: its certificate must chain to `ca` (PEM), or
/// to the system's roots.
fn tls(ca: Option<&Path>) -> Result<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("store.ca: reading {}", path.display()))?;
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.with_context(|| format!("store.ca: {}", path.display()))?)
                    .with_context(|| format!("store.ca: {}", path.display()))?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "store.ca: {} holds no certificate",
                path.display()
            );
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS towards PostgreSQL")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `f`, or an error once [`CALL_DEADLINE`] has passed: a database that
/// does not answer fails the call, never hangs it.
async fn within_deadline<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(CALL_DEADLINE, f)
        .await
        .unwrap_or_else(|_| {
            Err(anyhow!(
                "PostgreSQL did not answer within {CALL_DEADLINE:?}"
            ))
        })
}

/// Connects one session (not pooled), driving it on the current runtime.
async fn connect(config: &tokio_postgres::Config, tls: &Tls) -> Result<tokio_postgres::Client> {
    let (client, connection) = within_deadline(async {
        config
            .connect(tls.clone())
            .await
            .context("connecting to PostgreSQL (store.url)")
    })
    .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "a PostgreSQL session ended");
        }
    });
    Ok(client)
}

/// The server is one this store is built for (15 or later), and a commit
/// it acknowledges survives its crash.
async fn check_server(client: &tokio_postgres::Client) -> Result<()> {
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await?
        .get(0);
    let version: u32 = version.parse().unwrap_or(0);
    if version < 150_000 {
        bail!(
            "PostgreSQL {}.{} is too old: the store needs 15 or later",
            version / 10_000,
            version % 10_000
        );
    }
    for setting in ["synchronous_commit", "fsync"] {
        let v: String = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await?
            .get(0);
        if v == "off" {
            bail!(
                "PostgreSQL has {setting} = off: a commit it acknowledges can be lost in a crash, and govshare acknowledges nothing that is not durable. Set {setting} = on"
            );
        }
    }
    Ok(())
}

/// The backend's own runtime, on its own threads, so the synchronous
/// [`Backend`] calls work from anywhere: a gateway task, a CLI command, a
/// test. Its threads stop when the backend is dropped.
struct Io {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Io {
    fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-pg")
            .enable_all()
            .build()
            .context("starting the PostgreSQL I/O runtime")?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // The runtime lives (and is dropped) on this thread, never inside
        // another runtime's task.
        std::thread::Builder::new()
            .name("store-pg".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                })
            })
            .context("starting the PostgreSQL I/O thread")?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Runs `f` to completion (or its deadline) and returns its result. On
    /// a thread of a multi-thread runtime (a gateway task) the future runs
    /// right here inside `block_in_place`; elsewhere (a CLI, a test's
    /// current-thread runtime) it runs on the I/O runtime's threads.
    fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let f = within_deadline(f);
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| self.handle.block_on(f))
            }
            Ok(_) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                self.handle.spawn(async move {
                    let _ = tx.send(f.await);
                });
                rx.recv()
                    .map_err(|_| anyhow!("the PostgreSQL I/O runtime has stopped"))?
            }
            Err(_) => self.handle.block_on(f),
        }
    }
}

type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// A key range in one tree: `lower` (inclusive or not), `upper` exclusive.
struct Range {
    lower: Vec<u8>,
    lower_inclusive: bool,
    upper: Option<Vec<u8>>,
}

impl Range {
    /// The range's rows (`keys_only`: each with an empty value).
    fn sql(&self, descending: bool, keys_only: bool) -> String {
        format!(
            "SELECT key, {} FROM kv WHERE tree = $1 AND key {} $2{} ORDER BY key{} LIMIT $4",
            if keys_only { "'\\x'::bytea" } else { "value" },
            if self.lower_inclusive { ">=" } else { ">" },
            if self.upper.is_some() {
                " AND key < $3"
            } else {
                " AND $3::bytea IS NULL"
            },
            if descending { " DESC" } else { "" },
        )
    }

    fn read(self, backend: &PgBackend, tree: &str, limit: usize, descending: bool) -> Result<Rows> {
        self.read_as(backend, tree, limit, descending, false)
    }

    fn read_as(
        self,
        backend: &PgBackend,
        tree: &str,
        limit: usize,
        descending: bool,
        keys_only: bool,
    ) -> Result<Rows> {
        let sql = self.sql(descending, keys_only);
        let tree = tree.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        backend.with(move |c| async move {
            let stmt = c.prepare_cached(&sql).await?;
            let rows = c
                .query(&stmt, &[&tree, &self.lower, &self.upper, &limit])
                .await
                .with_context(|| format!("scanning {tree}"))?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

const UPSERT: &str = "INSERT INTO kv (tree, key, value) SELECT $1, k, v FROM unnest($2::bytea[], $3::bytea[]) AS w(k, v) \
     ON CONFLICT (tree, key) DO UPDATE SET value = excluded.value";
const DELETE: &str = "DELETE FROM kv WHERE tree = $1 AND key = ANY($2)";
const PLACEHOLDERS: &str = "INSERT INTO kv (tree, key, value) SELECT $1, k, '\\x'::bytea FROM unnest($2::bytea[]) AS k \
     ON CONFLICT (tree, key) DO NOTHING RETURNING key";
const LOCK: &str =
    "SELECT key, value FROM kv WHERE tree = $1 AND key = ANY($2) ORDER BY key FOR UPDATE";
const LOCK_TREE: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";
const READ: &str = "SELECT key, value FROM kv WHERE tree = $1 AND key = ANY($2)";
/// The records at the places stored under `$2` (place keys), each
/// answered under its place key ([`Placed`]: `r` is 0x72).
const READ_PLACED: &str = "SELECT p.key, r.value FROM kv p JOIN kv r \
     ON r.tree = p.tree AND r.key = '\\x72'::bytea || p.value \
     WHERE p.tree = $1 AND p.key = ANY($2)";

type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// One tree's puts and removes, the last write of a key winning (as in a
/// sled batch).
struct TreeWrites {
    tree: String,
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    gone: Vec<Vec<u8>>,
}

impl TreeWrites {
    fn new(tree: String, writes: Writes) -> Self {
        // In key order, as every transaction here locks rows: no two wait
        // on each other crosswise.
        let mut last: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
        for (k, v) in writes {
            last.insert(k, v);
        }
        let mut w = Self {
            tree,
            keys: Vec::new(),
            values: Vec::new(),
            gone: Vec::new(),
        };
        for (k, v) in last {
            match v {
                Some(v) => {
                    w.keys.push(k);
                    w.values.push(v);
                }
                None => w.gone.push(k),
            }
        }
        w
    }
}

type Step<'c> = std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + 'c>>;

/// Sends `BEGIN` (if `begin`), every tree's removes and puts, and `COMMIT`
/// as one pipeline: one round trip. A statement that fails aborts the
/// transaction, so the `COMMIT` after it rolls back, and its error is the
/// result.
async fn commit_writes(
    c: &deadpool_postgres::Object,
    trees: &[TreeWrites],
    begin: bool,
) -> Result<()> {
    let (delete, upsert) = (
        c.prepare_cached(DELETE).await?,
        c.prepare_cached(UPSERT).await?,
    );
    let mut steps: Vec<Step<'_>> = Vec::new();
    if begin {
        steps.push(Box::pin(async {
            c.batch_execute("BEGIN")
                .await
                .context("starting a transaction")
        }));
    }
    for w in trees {
        if !w.gone.is_empty() {
            let (stmt, tree, gone) = (&delete, &w.tree, &w.gone);
            steps.push(Box::pin(async move {
                c.execute(stmt, &[tree, gone])
                    .await
                    .map(drop)
                    .with_context(|| format!("removing from {tree}"))
            }));
        }
        if !w.keys.is_empty() {
            let (stmt, tree) = (&upsert, &w.tree);
            steps.push(Box::pin(async move {
                c.execute(stmt, &[tree, &w.keys, &w.values])
                    .await
                    .map(drop)
                    .with_context(|| format!("writing {tree}"))
            }));
        }
    }
    steps.push(Box::pin(async {
        c.batch_execute("COMMIT").await.context("committing")
    }));
    futures_util::future::try_join_all(steps).await.map(drop)
}

/// Tells every node's listener the fence counter's new value, at commit.
const ANNOUNCE: &str = "SELECT pg_notify($1, $2)";

impl Backend for PgBackend {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.io.run(self.get_async(tree, key))
    }

    /// Gathered with the other point reads asked for now ([`reads`]),
    /// on the I/O runtime (where every connection of the pool lives), and
    /// awaited by the caller.
    fn get_async(&self, tree: &str, key: &[u8]) -> Reading {
        let reads = self.reads.clone();
        let (tree, key) = (tree.to_string(), key.to_vec());
        Box::pin(async move { reads.get(tree, key).await })
    }

    fn get_placed(&self, trees: Placed, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.io.run(self.get_placed_async(trees, key))
    }

    /// One gathered read: the place and the record there in one statement
    /// (one snapshot, so a record never moves in between).
    fn get_placed_async(&self, trees: Placed, key: &[u8]) -> Reading {
        let reads = self.reads.clone();
        let (tree, key) = (trees.0.to_string(), Placed::place_key(key));
        Box::pin(async move { reads.get_placed(tree, key).await })
    }

    fn answers_from_memory(&self) -> bool {
        false
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.apply_batch(tree, vec![(key.to_vec(), Some(value.to_vec()))])
    }

    fn remove(&self, tree: &str, key: &[u8]) -> Result<()> {
        self.apply_batch(tree, vec![(key.to_vec(), None)])
    }

    fn scan(&self, tree: &str, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Rows> {
        let range = match after {
            Some(a) if a >= prefix => Range {
                lower: a.to_vec(),
                lower_inclusive: false,
                upper: prefix_end(prefix),
            },
            _ => Range {
                lower: prefix.to_vec(),
                lower_inclusive: true,
                upper: prefix_end(prefix),
            },
        };
        range.read(self, tree, limit, false)
    }

    fn scan_keys(&self, tree: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let range = Range {
            lower: prefix.to_vec(),
            lower_inclusive: true,
            upper: prefix_end(prefix),
        };
        let rows = range.read_as(self, tree, usize::MAX, false, true)?;
        Ok(rows.into_iter().map(|(k, _)| k).collect())
    }

    fn scan_rev(
        &self,
        tree: &str,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Rows> {
        let upper = rev_upper(prefix, before);
        Range {
            lower: prefix.to_vec(),
            lower_inclusive: true,
            upper,
        }
        .read(self, tree, limit, true)
    }

    /// One statement: a conflicting row is locked and kept (`SET value =
    /// kv.value`), and either way the row's value now comes back.
    fn put_if_absent(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        let (tree, key, value) = (tree.to_string(), key.to_vec(), value.to_vec());
        self.with(move |c| async move {
            let row = c
                .query_one(
                    "INSERT INTO kv (tree, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (tree, key) DO UPDATE SET value = kv.value RETURNING value",
                    &[&tree, &key, &value],
                )
                .await
                .with_context(|| format!("writing {tree}"))?;
            Ok(row.get(0))
        })
    }

    fn apply_batch(&self, tree: &str, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let w = TreeWrites::new(tree.to_string(), writes);
        self.with(move |c| async move {
            let conn = Open(Some(c));
            commit_writes(conn.client(), std::slice::from_ref(&w), true).await?;
            conn.committed();
            Ok(())
        })
    }

    fn upsert_placed(
        &self,
        trees: Placed,
        keys: &[PlacedKey<'_>],
        update: &mut PlacedUpdate<'_>,
    ) -> Result<()> {
        // One transaction, three round trips: hold the collection and read
        // the keys' places, read the records there, then (computed here:
        // the closure is the caller's) write records and places and commit.
        let tree = trees.0;
        let wanted: Vec<Vec<u8>> = keys.iter().map(|k| Placed::place_key(k.key)).collect();
        let (mut tx, places) = Txn::lock(self, tree, wanted, Hold::Tree)?;
        let at: Vec<Vec<u8>> = places.values().map(|p| Placed::record_key(p)).collect();
        let mut stored = tx.read(tree, at)?;
        // Each key's place and bytes as this call has left them so far.
        let mut current: HashMap<Vec<u8>, (Vec<u8>, Vec<u8>)> = places
            .into_iter()
            .filter_map(|(place_key, place)| {
                let Some(bytes) = stored.remove(&Placed::record_key(&place)) else {
                    super::placed_nowhere(trees, place_key.get(1..).unwrap_or_default());
                    return None;
                };
                Some((place_key, (place, bytes)))
            })
            .collect();
        let mut writes = Vec::new();
        for (n, key) in keys.iter().enumerate() {
            let place_key = Placed::place_key(key.key);
            let now = current.remove(&place_key);
            let w = update(n, now.as_ref().map(|(_, v)| v.as_slice()))?;
            let moved = now.as_ref().is_none_or(|(old, _)| *old != w.place);
            if let Some((old, _)) = now.filter(|_| moved) {
                writes.push((Placed::record_key(&old), None));
            }
            writes.push((Placed::record_key(&w.place), Some(w.value.clone())));
            // A record written where it was keeps its place row as it is
            // (a republished dataset rewrites no place rows).
            if moved {
                writes.push((place_key.clone(), Some(w.place.clone())));
            }
            current.insert(place_key, (w.place, w.value));
        }
        tx.finish(vec![TreeWrites::new(tree.to_string(), writes)])?;
        if self.statistics.wrote(keys.len() as u64) {
            self.analyze_soon();
        }
        Ok(())
    }

    fn update_counter(
        &self,
        tree: &str,
        key: &[u8],
        f: &mut dyn FnMut(u64) -> u64,
    ) -> Result<(u64, u64)> {
        let (tx, mut stored) = Txn::lock(self, tree, vec![key.to_vec()], Hold::Rows)?;
        let old = stored
            .remove(key)
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map_or(0, u64::from_le_bytes);
        let new = f(old);
        tx.finish(vec![TreeWrites::new(
            tree.to_string(),
            vec![(key.to_vec(), Some(new.to_le_bytes().to_vec()))],
        )])?;
        Ok((old, new))
    }

    /// Every write above has committed durably already.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn trees(&self) -> Result<Vec<String>> {
        self.with(|c| async move {
            let rows = c
                .query(
                    "SELECT tree FROM kv GROUP BY tree ORDER BY tree COLLATE \"C\"",
                    &[],
                )
                .await
                .context("listing the trees")?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    /// One transaction: the fence's advisory lock, exclusive (it queues
    /// behind the appends holding it shared, and every append after it
    /// queues behind it: no starvation either way), the counter read and
    /// moved, the writes, `COMMIT` — which releases the lock.
    fn write_moving_fence(
        &self,
        tree: &str,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        fence: super::FenceRow,
    ) -> Result<u64> {
        let tree = tree.to_string();
        let moved = self.with(move |c| async move {
            let conn = Open(Some(c));
            let client = conn.client();
            let (lock, read, announce) = tokio::try_join!(
                client.prepare_cached(log::LOCK_WHOLE),
                client.prepare_cached(log::FENCE),
                client.prepare_cached(ANNOUNCE),
            )?;
            // Prepared, so sent in this order on the first poll (see
            // `PgLog::append`): the counter is read once the fence is held.
            let (_, _, row) = tokio::try_join!(
                async {
                    client
                        .batch_execute("BEGIN")
                        .await
                        .context("starting a change")
                },
                async {
                    client
                        .execute(&lock, &[&log::FENCE_LOCK])
                        .await
                        .context("taking the policy fence")
                },
                async {
                    client
                        .query_opt(&read, &[&fence.tree, &fence.key])
                        .await
                        .context("reading the policy epoch")
                },
            )?;
            let moved = super::next_fence(log::counter_of(row.map(|r| r.get(0))));
            let trees = vec![
                TreeWrites::new(tree, writes),
                TreeWrites::new(
                    fence.tree.to_string(),
                    vec![(fence.key.to_vec(), Some(moved.to_le_bytes().to_vec()))],
                ),
            ];
            // Announced to every node's listener when (and only if) the
            // move commits: prepared, so it is sent ahead of the writes and
            // the `COMMIT`, inside the transaction.
            let announced = moved.to_string();
            tokio::try_join!(
                async {
                    client
                        .execute(&announce, &[&announce::CHANNEL, &announced])
                        .await
                        .context("announcing the policy epoch")
                },
                commit_writes(client, &trees, false),
            )?;
            conn.committed();
            Ok(moved)
        })?;
        self.seen.saw(moved);
        Ok(moved)
    }

    fn fence_seen(&self) -> Option<u64> {
        self.seen.get()
    }

    fn shared_log(&self) -> Option<Arc<dyn super::SharedLog>> {
        Some(self.log.clone())
    }
}

/// A transaction that spans the caller's computation: its rows are locked
/// and read in one round trip, the caller computes, and its writes and
/// commit go in a second.
struct Txn<'a> {
    backend: &'a PgBackend,
    conn: Open,
}

/// A pooled connection inside a transaction. Dropped before its commit —
/// an error, a deadline, a caller that gave up — it is taken out of the
/// pool and closed, which rolls the transaction back; it never returns to
/// the pool with a transaction open.
struct Open(Option<deadpool_postgres::Object>);

impl Open {
    fn client(&self) -> &deadpool_postgres::Object {
        self.0.as_ref().expect("an open transaction's connection")
    }

    /// After COMMIT: the connection goes back to the pool.
    fn committed(mut self) {
        self.0.take();
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(deadpool_postgres::Object::take(conn));
        }
    }
}

/// How a transaction holds what it read until its commit.
#[derive(Clone, Copy)]
enum Hold {
    /// Each row, locked in key order; a key with no row yet gets an empty
    /// placeholder first, so two processes creating the same key also wait
    /// for each other. For single hot rows (quota counters), which many
    /// callers update at once and none should wait on the others'.
    Rows,
    /// The whole tree, by a transaction-level advisory lock named after
    /// it: every placed upsert of the tree queues behind it. For chunks
    /// of records — one source department publishes a dataset, so the
    /// tree's writers are few — it spares each row a placeholder insert
    /// and a row lock (a heap write and a WAL record each).
    Tree,
}

/// The advisory-lock class of [`Hold::Tree`]; its two-key space never
/// meets the one-key locks of the fence and the lead.
const TREE_LOCK_CLASS: i32 = i32::from_be_bytes(*b"govt");

impl<'a> Txn<'a> {
    /// Begins, and reads `keys` of `tree`, held as `hold` says until the
    /// commit. Rows held one by one are locked in key order, so two
    /// transactions never wait on each other's rows crosswise.
    #[allow(clippy::type_complexity)]
    fn lock(
        backend: &'a PgBackend,
        tree: &str,
        mut keys: Vec<Vec<u8>>,
        hold: Hold,
    ) -> Result<(Self, HashMap<Vec<u8>, Vec<u8>>)> {
        keys.sort();
        keys.dedup();
        let tree = tree.to_string();
        let (conn, rows) = backend.with(move |c| async move {
            let conn = Open(Some(c));
            let client = conn.client();
            let (take, read) = match hold {
                Hold::Rows => (
                    client.prepare_cached(PLACEHOLDERS).await?,
                    client.prepare_cached(LOCK).await?,
                ),
                Hold::Tree => (
                    client.prepare_cached(LOCK_TREE).await?,
                    client.prepare_cached(READ).await?,
                ),
            };
            let (_, taken, rows) = tokio::try_join!(
                async {
                    client
                        .batch_execute("BEGIN")
                        .await
                        .context("starting a transaction")
                },
                async {
                    match hold {
                        Hold::Rows => client.query(&take, &[&tree, &keys]).await,
                        Hold::Tree => client.query(&take, &[&TREE_LOCK_CLASS, &tree]).await,
                    }
                    .with_context(|| format!("locking {tree}"))
                },
                async {
                    client
                        .query(&read, &[&tree, &keys])
                        .await
                        .with_context(|| format!("reading {tree}"))
                },
            )?;
            let mut rows: HashMap<Vec<u8>, Vec<u8>> =
                rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
            // A placeholder this transaction made is not a stored value.
            if let Hold::Rows = hold {
                for r in taken {
                    rows.remove(&r.get::<_, Vec<u8>>(0));
                }
            }
            Ok((conn, rows))
        })?;
        Ok((Self { backend, conn }, rows))
    }

    /// Reads `keys` of `tree` inside the transaction (what the rows
    /// locked or the tree held by [`Txn::lock`] point to).
    fn read(&mut self, tree: &str, keys: Vec<Vec<u8>>) -> Result<HashMap<Vec<u8>, Vec<u8>>> {
        let conn = Open(self.conn.0.take());
        let tree = tree.to_string();
        let (conn, rows) = self.backend.io.run(async move {
            let rows = {
                let client = conn.client();
                let read = client.prepare_cached(READ).await?;
                client
                    .query(&read, &[&tree, &keys])
                    .await
                    .with_context(|| format!("reading {tree}"))?
            };
            Ok((conn, rows))
        })?;
        self.conn = conn;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Writes every tree's puts and removes, and commits.
    fn finish(self, trees: Vec<TreeWrites>) -> Result<()> {
        let conn = self.conn;
        self.backend.io.run(async move {
            commit_writes(conn.client(), &trees, false).await?;
            conn.committed();
            Ok(())
        })
    }
}
