//! `govshare bench`: the benchmark harness. It starts its own gateway (this
//! binary, on loopback, a temp data dir, the dev PKI), drives it with a
//! tonic client over mutual TLS, and reports each figure next to a
//! baseline taken in the same run with the same client and connections —
//! a `grpc.health` Check — plus the server's CPU per call read from
//! `/proc/<pid>`, because machines are shared and noisy and absolute
//! requests per second say little.
//!
//! The gateway runs with its default logging (a line per call at info,
//! discarded), as a deployment would.
//!
//! Nothing here is a test: there are no thresholds, only measurements.

mod load;
mod micro;
mod proc;

use crate::client;
use anyhow::{Context, Result};
pub use load::Api;
use load::{Load, Stats};
use proc::Sampler;
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to measure, and how long.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `govshare` binary to run as the gateway.
    pub binary: PathBuf,
    /// Residents in the benchmark district.
    pub persons: usize,
    /// Each load measurement runs this long.
    pub duration: Duration,
    /// In-flight calls for the unary comparisons.
    pub concurrency: Vec<usize>,
    /// Client connections the calls are spread over.
    pub connections: usize,
    /// The API version of the audited pulls.
    pub api: Api,
    /// Entries in the log for the proof-latency measurement (0: skip).
    pub log_entries: u64,
    /// Residents for the start-to-serving measurement (0: skip).
    pub start_persons: usize,
    /// Run only these measurements (empty: all).
    pub only: Vec<Phase>,
    /// A PostgreSQL server where the bench may create a database: the
    /// unary comparison then also runs over a gateway on the PostgreSQL
    /// store, side by side with sled.
    pub postgres: Option<String>,
}

/// The measurements, to run a few of them again (`--only streams,memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// GetPerson vs health Check at each concurrency.
    Unary,
    /// BatchGetPersons of 100.
    Batch,
    /// ListPersons at 1 and 128 streams.
    Streams,
    /// RSS under 100 000-key batches.
    Memory,
    /// Server work after a cancelled stream.
    Cancel,
    /// Raw write+fdatasync.
    Disk,
    /// The policy decision alone.
    Policy,
    /// `govshare import` into the running gateway, beside the store's own
    /// republish, and GetPerson during an import.
    Import,
    /// The audit log at `--log-entries`.
    Log,
    /// Start-to-serving with `--start-persons`.
    Start,
    /// `govshare snapshot save` of the running gateway, then `restore`.
    Snapshot,
}

impl Options {
    fn wants(&self, p: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&p)
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: String,
    pub value: f64,
    pub unit: String,
    /// The same-run baseline it is compared with, if any.
    pub baseline: Option<f64>,
    /// value / baseline (or baseline / value where smaller is better).
    pub ratio: Option<f64>,
    pub goal: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: String,
    pub started: String,
    pub rows: Vec<Row>,
    /// Server CPU per call by thread group, per measurement.
    pub threads: Vec<(String, Vec<(String, f64)>)>,
}

impl Report {
    fn row(
        &mut self,
        figure: impl Into<String>,
        value: f64,
        unit: &str,
        baseline: Option<f64>,
        goal: &str,
    ) {
        let ratio = baseline.filter(|b| *b > 0.0).map(|b| value / b);
        self.rows.push(Row {
            figure: figure.into(),
            value,
            unit: unit.into(),
            baseline,
            ratio,
            goal: goal.into(),
        });
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = format!("machine: {}\nrun: {}\n\n", self.machine, self.started);
        out.push_str(&format!(
            "{:<58} {:>14} {:<10} {:>14} {:>8}  {}\n",
            "figure", "value", "unit", "baseline", "ratio", "goal"
        ));
        for r in &self.rows {
            out.push_str(&format!(
                "{:<58} {:>14} {:<10} {:>14} {:>8}  {}\n",
                r.figure,
                fmt(r.value),
                r.unit,
                r.baseline.map(fmt).unwrap_or_default(),
                r.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default(),
                r.goal
            ));
        }
        for (what, threads) in &self.threads {
            out.push_str(&format!("\nserver CPU per call by thread, {what}:\n"));
            for (name, us) in threads {
                out.push_str(&format!("  {name:<24} {us:>9.1} µs\n"));
            }
        }
        out
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// A gateway process of its own.
struct Gateway {
    child: Child,
    addr: String,
    pki: PathBuf,
    pid: u32,
    ops: String,
    dir: Option<tempfile::TempDir>,
}

impl Gateway {
    fn start(
        binary: &Path,
        persons: usize,
        dir: Option<tempfile::TempDir>,
    ) -> Result<(Self, Duration)> {
        Self::start_on(binary, persons, dir, "", "")
    }

    /// …with `top` (top-level settings) and `store` (a `[store]` section;
    /// empty: the embedded store).
    fn start_on(
        binary: &Path,
        persons: usize,
        dir: Option<tempfile::TempDir>,
        top: &str,
        store: &str,
    ) -> Result<(Self, Duration)> {
        let dir = match dir {
            Some(d) => d,
            None => tempfile::tempdir()?,
        };
        let data = dir.path().join("data");
        let config = dir.path().join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "demo = true\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndemo_persons = {persons}\n{top}[grpc]\nmax_in_flight = 4096\n{store}",
                data.display()
            ),
        )?;
        let started = Instant::now();
        let mut serve = Command::new(binary);
        serve
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG");
        // The bench's gateway runs on its own config alone: an operator's
        // GOVSHARE_… overrides (GOVSHARE_STORE__URL for `--store-url`, say)
        // would otherwise reach it and change what is measured.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GOVSHARE_") {
                serve.env_remove(name);
            }
        }
        let mut child = serve
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let (mut addr, mut ops) = (String::new(), String::new());
        for line in lines.by_ref() {
            let line = line?;
            if let Some(a) = line.strip_prefix("ops listening on ") {
                ops = a.trim().to_string();
            }
            if let Some(a) = line.strip_prefix("govshare listening on ") {
                addr = a.split_whitespace().next().unwrap_or_default().to_string();
                break;
            }
        }
        anyhow::ensure!(!addr.is_empty(), "the gateway did not start");
        let took = started.elapsed();
        std::thread::spawn(move || for _ in lines {});
        Ok((
            Self {
                pid: child.id(),
                child,
                addr,
                ops,
                pki: data.join("pki"),
                dir: Some(dir),
            },
            took,
        ))
    }

    async fn client(&self, identity: &str) -> Result<client::Client> {
        client::Client::from_pki(&self.addr, &self.pki, identity).await
    }

    /// Stops it gracefully; keeps the data dir.
    fn stop(mut self) -> tempfile::TempDir {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        self.dir.take().expect("stopped once")
    }

    async fn metric(&self, name: &str) -> f64 {
        proc::scrape(&self.ops, name).await.unwrap_or(0.0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("{cpus} CPUs ({model}), {mem} GiB")
}

/// Rounds each side of a unary comparison is split into.
const ROUNDS: u32 = 3;

/// Runs every measurement and returns the report.
pub async fn run(o: &Options) -> Result<Report> {
    let mut report = Report {
        machine: machine(),
        started: chrono::Local::now().format("%Y-%m-%d %H:%M").to_string(),
        ..Default::default()
    };
    eprintln!("bench: starting a gateway with {} residents…", o.persons);
    let (gw, _) = Gateway::start(&o.binary, o.persons, None)?;
    let police = gw.client("public-security").await?;
    let ids = load::resident_ids(o.persons);
    let load = Load::connect(&gw.addr, &gw.pki, "civil-affairs", o.connections).await?;
    let sampler = Sampler::new(gw.pid);
    report.row(
        "server RSS at rest after start",
        sampler.rss_mb(),
        "MB",
        None,
        "",
    );

    // Unary: audited GetPerson vs health Check, same client, same connections.
    let rig = Rig {
        gw: &gw,
        load: &load,
        sampler: &sampler,
        ids: &ids,
    };
    let sled_rates = unary(&mut report, o, &rig, "").await?;
    if o.wants(Phase::Unary) {
        report.row(
            "server RSS at rest after the unary load",
            sampler.rss_mb(),
            "MB",
            None,
            "",
        );
    }

    // Batches and streams: records per second and server CPU per record.
    if o.wants(Phase::Batch) {
        eprintln!("bench: batches of 100…");
        let batch = load
            .run(
                32,
                o.duration,
                &sampler,
                load::Call::BatchGet(ids.clone(), 100, o.api),
            )
            .await?;
        report.row(
            "BatchGetPersons(100) records/s at 32 in flight",
            batch.records_per_sec(),
            "records/s",
            None,
            "",
        );
        report.row(
            "BatchGetPersons(100) server CPU per record",
            batch.cpu_per_record_us(),
            "µs",
            None,
            "",
        );
    }
    // v2 (views packed) carries the goal; v1 (views by name) at 128
    // streams shows what the packing bought, same run.
    let stream_loads = [(1usize, Api::V2), (128, Api::V2), (128, Api::V1)];
    let mut sled_streams = None;
    for (streams, api) in stream_loads.into_iter().filter(|_| o.wants(Phase::Streams)) {
        let (name, goal) = match api {
            Api::V2 => ("ListPersons", true),
            Api::V1 => ("ListPersons (v1, views by name)", false),
        };
        let goal = |g: &'static str| if goal { g } else { "" };
        eprintln!("bench: {streams} concurrent {name} streams…");
        let s = load::streams(
            &gw.addr,
            &gw.pki,
            "public-security",
            (streams, api),
            o.duration,
            &sampler,
        )
        .await?;
        report.row(
            format!("{name} records/s delivered, {streams} stream(s)"),
            s.records_per_sec(),
            "records/s",
            None,
            goal("≥ 300000"),
        );
        report.row(
            format!("{name} server CPU per record, {streams} stream(s)"),
            s.cpu_per_record_us(),
            "µs",
            None,
            goal("≤ 3"),
        );
        report.row(
            format!("server RSS peak, {name}, {streams} stream(s)"),
            s.rss_peak_mb,
            "MB",
            None,
            goal("≤ 512"),
        );
        if (streams, api) == (STREAMS_OVER_POSTGRES, Api::V2) {
            sled_streams = Some(s.records_per_sec());
        }
    }
    if o.wants(Phase::Memory) {
        eprintln!("bench: huge batches…");
        let huge = load::huge_batches(&police, &sampler, o.duration).await?;
        report.row(
            "server RSS peak under 100 000-key batches",
            huge,
            "MB",
            None,
            "≤ 512",
        );
    }
    if o.wants(Phase::Cancel) {
        eprintln!("bench: work after a cancelled stream…");
        let after = load::cancel_work(&gw.addr, &gw.pki, &sampler).await?;
        report.row(
            "server CPU spent after a stream is cancelled",
            after,
            "ms",
            None,
            "≤ 100",
        );
    }

    // The raw disk: the ceiling for any durable log here.
    for (batch, label) in [(1usize, "1"), (100, "100")]
        .into_iter()
        .filter(|_| o.wants(Phase::Disk))
    {
        eprintln!("bench: the disk alone, batch {label}…");
        let raw = micro::raw_fsync(batch, 300, Duration::from_secs(2))?;
        report.row(
            format!("raw write+fdatasync, 300-byte records, batch {label}"),
            raw,
            "records/s",
            None,
            "",
        );
    }

    // The policy decision alone.
    for grants in [1usize, 10, 100]
        .into_iter()
        .filter(|_| o.wants(Phase::Policy))
    {
        let (p50, p99) = micro::decision(grants);
        report.row(
            format!("policy decision, {grants} grant(s), p50"),
            p50,
            "µs",
            None,
            "",
        );
        report.row(
            format!("policy decision, {grants} grant(s), p99"),
            p99,
            "µs",
            None,
            "",
        );
    }

    // Import through the running gateway.
    let mut sled_import = None;
    if o.wants(Phase::Import) {
        eprintln!("bench: import…");
        let cost = load::import(&o.binary, &gw.addr, &gw.pki, o.persons, &sampler, false).await?;
        // After the import, so that the import meets the cores and memory
        // as the figures before it did.
        let persons = o.persons;
        let ceiling =
            tokio::task::spawn_blocking(move || micro::store_republish(persons)).await??;
        report.row(
            "republish into the embedded store alone (one thread, no network or audit)",
            ceiling,
            "records/s",
            None,
            "",
        );
        report.row(
            "import persons/s into the running gateway (vs the store alone)",
            cost.rate,
            "records/s",
            Some(ceiling),
            "≥ 100000",
        );
        import_cpu(&mut report, &cost, "");
        sled_import = Some(cost.rate);
        pulls_beside_an_import(&mut report, o, &rig).await?;
    }
    if let Some(server) = &o.postgres {
        let sled = Sled {
            pulls: &sled_rates,
            import: sled_import,
            streams: sled_streams,
        };
        over_postgres(&mut report, o, server, &ids, &sled).await?;
    }
    if o.wants(Phase::Snapshot) {
        eprintln!("bench: snapshot save and restore…");
        let s = load::snapshot(&o.binary, &gw.addr, &gw.pki).await?;
        let at = format!("{} residents", o.persons);
        report.row(format!("snapshot save, {at}"), s.save, "s", None, "");
        report.row(format!("snapshot size, {at}"), s.mb, "MB", None, "");
        report.row(format!("snapshot restore, {at}"), s.restore, "s", None, "");
    }
    drop(police);
    drop(load);
    let dir = gw.stop();
    drop(dir);

    if o.log_entries > 0 && o.wants(Phase::Log) {
        eprintln!(
            "bench: a log of {} entries, its indexer and proofs…",
            o.log_entries
        );
        for r in micro::log_scale(o.log_entries).await? {
            report.rows.push(r);
        }
    }
    if o.start_persons > 0 && o.wants(Phase::Start) {
        eprintln!(
            "bench: start-to-serving with {} residents…",
            o.start_persons
        );
        let (gw, loaded) = Gateway::start(&o.binary, o.start_persons, None)?;
        report.row(
            format!("first start incl. loading {} residents", o.start_persons),
            loaded.as_secs_f64(),
            "s",
            None,
            "",
        );
        let dir = gw.stop();
        let (gw, took) = Gateway::start(&o.binary, o.start_persons, Some(dir))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = Sampler::new(gw.pid).rss_mb();
        report.row(
            format!("restart to serving with {} residents", o.start_persons),
            took.as_secs_f64(),
            "s",
            None,
            "",
        );
        report.row(
            format!(
                "server RSS after restart with {} residents",
                o.start_persons
            ),
            rss,
            "MB",
            None,
            "≤ 512",
        );
    }
    Ok(report)
}

/// Callers pulling while an import runs beside them.
const PULLERS_BESIDE_AN_IMPORT: usize = 4;

/// GetPerson latency while the district is imported again, against the
/// same calls on the same gateway with no import: a chunk's records are
/// one sled batch, and sled makes every read wait while it applies one.
async fn pulls_beside_an_import(report: &mut Report, o: &Options, rig: &Rig<'_>) -> Result<()> {
    eprintln!("bench: pulls beside an import…");
    let &Rig {
        gw,
        load,
        sampler,
        ids,
    } = rig;
    let pullers = PULLERS_BESIDE_AN_IMPORT;
    let call = || load::Call::GetPerson(ids.clone(), o.api);
    let quiet = Duration::from_secs(2);
    let alone = load.run(pullers, quiet, sampler, call()).await?;
    let import = load::import(&o.binary, &gw.addr, &gw.pki, o.persons, sampler, false);
    let (_, beside) = load.during(pullers, call(), import).await?;
    for (what, during, without) in [
        ("p50", beside.p50_ms(), alone.p50_ms()),
        ("p99", beside.p99_ms(), alone.p99_ms()),
    ] {
        report.row(
            format!("GetPerson during an import vs without: {what}, {pullers} in flight"),
            during,
            "ms",
            Some(without),
            "",
        );
    }
    Ok(())
}

/// CPU per imported record: the gateway's, the import command's (which
/// shares the cores) and, over PostgreSQL, the database's.
fn import_cpu(report: &mut Report, cost: &load::ImportCost, over: &str) {
    let rows = [
        ("gateway", Some(cost.gateway_us)),
        ("`govshare import`", cost.command_us),
        ("PostgreSQL", cost.database_us),
    ];
    for (whose, us) in rows {
        if let Some(us) = us {
            report.row(
                format!("import: {whose} CPU per person{over}"),
                us,
                "µs",
                None,
                "",
            );
        }
    }
}

/// A gateway under test, what drives it and what watches it.
struct Rig<'a> {
    gw: &'a Gateway,
    load: &'a Load,
    sampler: &'a Sampler,
    ids: &'a std::sync::Arc<Vec<String>>,
}

/// The unary comparison at each `--concurrency` on the rig's gateway;
/// returns the audited pulls/s at each. `label` tells the store apart in
/// the report.
async fn unary(report: &mut Report, o: &Options, rig: &Rig<'_>, label: &str) -> Result<Vec<f64>> {
    let &Rig {
        gw,
        load,
        sampler,
        ids,
    } = rig;
    let mut rates = Vec::new();
    for &c in o.concurrency.iter().filter(|_| o.wants(Phase::Unary)) {
        eprintln!("bench: unary calls at {c} in flight{label}…");
        // Interleaved rounds, so a neighbour's burst on a shared machine
        // lands on both sides of the comparison.
        let (mut bases, mut pulls) = (Vec::new(), Vec::new());
        let (mut entries, mut batches) = (0.0, 0.0);
        let round = o.duration / ROUNDS;
        for _ in 0..ROUNDS {
            bases.push(load.run(c, round, sampler, load::Call::Health).await?);
            let entries_before = gw.metric("govshare_audit_batch_entries_sum").await;
            let batches_before = gw.metric("govshare_audit_batch_entries_count").await;
            pulls.push(
                load.run(c, round, sampler, load::Call::GetPerson(ids.clone(), o.api))
                    .await?,
            );
            entries += gw.metric("govshare_audit_batch_entries_sum").await - entries_before;
            batches += gw.metric("govshare_audit_batch_entries_count").await - batches_before;
        }
        let (base, pull) = (Stats::merged(bases), Stats::merged(pulls));
        let per_fsync = entries / batches.max(1.0);
        unary_rows(report, c, &base, &pull, per_fsync, label);
        rates.push(pull.calls_per_sec());
        report.threads.push((
            format!("GetPerson at {c} in flight{label}"),
            pull.threads.clone(),
        ));
        report.threads.push((
            format!("health Check at {c} in flight{label}"),
            base.threads.clone(),
        ));
    }
    Ok(rates)
}

/// What the same run measured over sled, to compare with.
struct Sled<'a> {
    /// Audited pulls/s at each `--concurrency`.
    pulls: &'a [f64],
    /// Import persons/s, if measured.
    import: Option<f64>,
    /// Records/s at [`STREAMS_OVER_POSTGRES`] v2 streams, if measured.
    streams: Option<f64>,
}

/// The listing load measured again over PostgreSQL.
const STREAMS_OVER_POSTGRES: usize = 128;

/// The unary comparison (and the import) again on a gateway over
/// PostgreSQL (a database of its own on `server`, dropped after), against
/// sled's figures of the same run.
async fn over_postgres(
    report: &mut Report,
    o: &Options,
    server: &str,
    ids: &std::sync::Arc<Vec<String>>,
    sled: &Sled<'_>,
) -> Result<()> {
    let database = format!("govshare_bench_{}", std::process::id());
    let admin = |sql: String| async move {
        let (client, conn) = tokio_postgres::connect(server, tokio_postgres::NoTls)
            .await
            .context("--store postgres: connecting")?;
        tokio::spawn(conn);
        client.batch_execute(&sql).await.context("--store postgres")
    };
    admin(format!("DROP DATABASE IF EXISTS {database}")).await?;
    admin(format!("CREATE DATABASE {database}")).await?;
    let url = server_with_database(server, &database);
    eprintln!("bench: starting a gateway over PostgreSQL…");
    let measured = async {
        let (gw, _) = Gateway::start_on(
            &o.binary,
            o.persons,
            None,
            "",
            &format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n"),
        )?;
        let load = Load::connect(&gw.addr, &gw.pki, "civil-affairs", o.connections).await?;
        let sampler = Sampler::new(gw.pid);
        let server_before = sampler.cpu_of_all("postgres");
        let rig = Rig {
            gw: &gw,
            load: &load,
            sampler: &sampler,
            ids,
        };
        let rates = unary(report, o, &rig, " (PostgreSQL)").await?;
        let server = sampler.cpu_of_all("postgres") - server_before;
        // The pulls of every concurrency, at their measured rates.
        let pulls: f64 = rates.iter().map(|r| r * o.duration.as_secs_f64()).sum();
        if pulls > 0.0 {
            report.row(
                "PostgreSQL server CPU per audited pull (all its processes)",
                server * 1e6 / pulls,
                "µs",
                None,
                "",
            );
        }
        if o.wants(Phase::Unary) {
            nodes_together(report, o, &gw, &load, &url, ids).await?;
        }
        if o.wants(Phase::Streams) {
            streams_over_postgres(report, o, &gw, &sampler, sled.streams).await?;
        }
        if o.wants(Phase::Import) {
            eprintln!("bench: import over PostgreSQL…");
            let cost =
                load::import(&o.binary, &gw.addr, &gw.pki, o.persons, &sampler, true).await?;
            report.row(
                "import persons/s over PostgreSQL vs over sled",
                cost.rate,
                "records/s",
                sled.import,
                "≥ 100000",
            );
            import_cpu(report, &cost, " over PostgreSQL");
        }
        drop(load);
        drop(gw.stop());
        anyhow::Ok(rates)
    }
    .await;
    admin(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).await?;
    let concurrency = o.concurrency.iter();
    for ((c, pg), sled) in concurrency.zip(measured?).zip(sled.pulls) {
        report.row(
            format!("GetPerson over PostgreSQL vs over sled: throughput, {c} in flight"),
            pg,
            "calls/s",
            Some(*sled),
            if *c == 128 { "ratio ≥ 0.5" } else { "" },
        );
    }
    Ok(())
}

/// v2 listings over PostgreSQL, against sled's of the same run: the
/// gateway's CPU per record and the database's (all its processes).
async fn streams_over_postgres(
    report: &mut Report,
    o: &Options,
    gw: &Gateway,
    sampler: &Sampler,
    sled: Option<f64>,
) -> Result<()> {
    let n = STREAMS_OVER_POSTGRES;
    eprintln!("bench: {n} concurrent ListPersons streams over PostgreSQL…");
    let before = sampler.cpu_of_all("postgres");
    let s = load::streams(
        &gw.addr,
        &gw.pki,
        "public-security",
        (n, Api::V2),
        o.duration,
        sampler,
    )
    .await?;
    let database = sampler.cpu_of_all("postgres") - before;
    report.row(
        format!("ListPersons over PostgreSQL vs over sled: records/s, {n} stream(s)"),
        s.records_per_sec(),
        "records/s",
        sled,
        "",
    );
    report.row(
        format!("ListPersons over PostgreSQL: gateway CPU per record, {n} stream(s)"),
        s.cpu_per_record_us(),
        "µs",
        None,
        "",
    );
    report.row(
        "PostgreSQL server CPU per streamed record (all its processes)",
        database * 1e6 / s.records.max(1) as f64,
        "µs",
        None,
        "",
    );
    Ok(())
}

/// Audited pulls/s of one, two and three nodes over the same database, 128
/// calls in flight in all, split evenly across the nodes. Nodes 2 and 3
/// join with node 1's PKI files (its identities and log key), as a cluster
/// does.
async fn nodes_together(
    report: &mut Report,
    o: &Options,
    first: &Gateway,
    load: &Load,
    url: &str,
    ids: &std::sync::Arc<Vec<String>>,
) -> Result<()> {
    const IN_FLIGHT: usize = 128;
    let store = format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n");
    let mut others = Vec::new();
    for n in 2..=3 {
        let dir = tempfile::tempdir()?;
        let pki = dir.path().join("data").join("pki");
        std::fs::create_dir_all(&pki)?;
        for e in std::fs::read_dir(&first.pki)? {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::copy(e.path(), pki.join(e.file_name()))?;
            }
        }
        let (gw, _) = Gateway::start_on(
            &o.binary,
            o.persons,
            Some(dir),
            &format!("node_id = \"node-{n}\"\n"),
            &store,
        )?;
        let load = Load::connect(&gw.addr, &gw.pki, "civil-affairs", o.connections).await?;
        others.push((gw, load));
    }
    let mut one = 0.0;
    for n in 1..=3 {
        eprintln!("bench: {n} node(s) over one PostgreSQL…");
        let per = IN_FLIGHT / n;
        let loads: Vec<(&Load, Sampler)> = std::iter::once((load, Sampler::new(first.pid)))
            .chain(others.iter().map(|(g, l)| (l, Sampler::new(g.pid))))
            .take(n)
            .collect();
        let runs = loads.iter().map(|(l, sampler)| {
            l.run(
                per,
                o.duration,
                sampler,
                load::Call::GetPerson(ids.clone(), o.api),
            )
        });
        let total: f64 = futures_util::future::try_join_all(runs)
            .await?
            .iter()
            .map(Stats::calls_per_sec)
            .sum();
        if n == 1 {
            one = total;
        }
        report.row(
            format!(
                "GetPerson over PostgreSQL: {n} node(s) together vs one, {IN_FLIGHT} in flight"
            ),
            total,
            "calls/s",
            (n > 1).then_some(one),
            if n == 3 {
                "ratio ≥ 2 (cores allowing)"
            } else {
                ""
            },
        );
    }
    for (gw, load) in others {
        drop(load);
        drop(gw.stop());
    }
    Ok(())
}

/// `server` (a PostgreSQL URL) naming `database` instead of its own.
fn server_with_database(server: &str, database: &str) -> String {
    let (base, query) = server.split_once('?').unwrap_or((server, ""));
    let path_at = base
        .find("://")
        .and_then(|s| base[s + 3..].find('/').map(|j| s + 3 + j))
        .unwrap_or(base.len());
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{}/{database}{query}", &base[..path_at])
}

fn unary_rows(
    report: &mut Report,
    c: usize,
    base: &Stats,
    pull: &Stats,
    per_fsync: f64,
    label: &str,
) {
    report.row(
        format!("GetPerson vs health Check: throughput, {c} in flight{label}"),
        pull.calls_per_sec(),
        "calls/s",
        Some(base.calls_per_sec()),
        if c == 128 { "ratio ≥ 0.7" } else { "" },
    );
    report.row(
        format!("GetPerson vs health Check: server CPU per call, {c} in flight{label}"),
        pull.cpu_per_call_us(),
        "µs",
        Some(base.cpu_per_call_us()),
        if c == 128 { "ratio ≤ 2" } else { "" },
    );
    report.row(
        format!("GetPerson vs health Check: client CPU per call, {c} in flight{label}"),
        pull.client_cpu_per_call_us(),
        "µs",
        Some(base.client_cpu_per_call_us()),
        "",
    );
    report.row(
        format!("GetPerson vs health Check: p50, {c} in flight{label}"),
        pull.p50_ms(),
        "ms",
        Some(base.p50_ms()),
        if c == 1 { "GetPerson ≤ 1 ms" } else { "" },
    );
    report.row(
        format!("GetPerson vs health Check: p99, {c} in flight{label}"),
        pull.p99_ms(),
        "ms",
        Some(base.p99_ms()),
        if c == 128 { "ratio ≤ 2" } else { "" },
    );
    report.row(
        format!("audit entries per durable commit (fdatasync or COMMIT), {c} in flight{label}"),
        per_fsync,
        "entries",
        None,
        if c == 128 { "≥ 50" } else { "" },
    );
}
