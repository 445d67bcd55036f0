//! Closed-loop load over real mTLS connections: N callers in flight, each
//! issuing its next call as soon as the last one answers.

use super::proc::{Cpu, Sampler, ended_children_cpu};
use crate::client;
use crate::proto::population_service_client::PopulationServiceClient;
use crate::proto::*;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How many v2 records a reply carried, each decoded as a client's
/// generated code decodes it: the gateway's v2 message type passes the
/// record's bytes through, and the bench client must not be spared the
/// work a real one does (it shares the cores with the server).
fn decoded(records: &[v2::Person]) -> Result<u64, tonic::Status> {
    for r in records.iter().filter_map(|p| p.record.as_ref()) {
        let person = r
            .decode()
            .map_err(|e| tonic::Status::internal(format!("a v2 record does not decode: {e}")))?;
        std::hint::black_box(person);
    }
    Ok(records.len() as u64)
}

/// What each caller calls.
#[derive(Clone)]
pub enum Call {
    /// `grpc.health.v1.Health/Check`: the baseline.
    Health,
    /// An audited, masked `GetPerson` (civil-affairs).
    GetPerson(Arc<Vec<String>>, Api),
    /// `BatchGetPersons` of this many keys.
    BatchGet(Arc<Vec<String>>, usize, Api),
}

/// The benchmark district's citizen IDs (the demo generator's).
pub fn resident_ids(persons: usize) -> Arc<Vec<String>> {
    Arc::new(
        crate::demo::generate(crate::config::Config::default().demo_seed, persons)
            .persons
            .into_iter()
            .filter_map(|p| p.id_number)
            .collect(),
    )
}

/// The outcome of one measurement.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub calls: u64,
    pub records: u64,
    pub elapsed: Duration,
    pub latencies_us: Vec<u32>,
    pub cpu: Cpu,
    /// CPU seconds of this process — the client — over the measurement: it
    /// shares the machine's cores with the server, so a call's throughput
    /// is bounded by both sides' CPU.
    pub client_cpu: f64,
    /// Server CPU per call (µs) by thread group.
    pub threads: Vec<(String, f64)>,
    pub rss_peak_mb: f64,
}

impl Stats {
    fn finish(mut self, cpu: Cpu) -> Self {
        self.cpu = cpu;
        self.latencies_us.sort_unstable();
        let per = self.calls.max(1) as f64;
        self.threads = self
            .cpu
            .threads
            .iter()
            .filter(|(_, s)| **s > 0.0)
            .map(|(k, s)| (k.clone(), s * 1e6 / per))
            .collect();
        self.threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        self
    }

    /// Several measurements of the same thing as one.
    pub fn merged(all: Vec<Stats>) -> Stats {
        let mut out = Stats::default();
        let mut cpu = Cpu::default();
        for s in all {
            out.calls += s.calls;
            out.records += s.records;
            out.elapsed += s.elapsed;
            out.client_cpu += s.client_cpu;
            out.latencies_us.extend(s.latencies_us);
            out.rss_peak_mb = out.rss_peak_mb.max(s.rss_peak_mb);
            cpu = cpu.plus(&s.cpu);
        }
        out.finish(cpu)
    }

    pub fn calls_per_sec(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    pub fn cpu_per_call_us(&self) -> f64 {
        self.cpu.total * 1e6 / self.calls.max(1) as f64
    }
    pub fn client_cpu_per_call_us(&self) -> f64 {
        self.client_cpu * 1e6 / self.calls.max(1) as f64
    }
    pub fn cpu_per_record_us(&self) -> f64 {
        self.cpu.total * 1e6 / self.records.max(1) as f64
    }
    fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q) as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
    pub fn p50_ms(&self) -> f64 {
        self.percentile_ms(0.5)
    }
    pub fn p99_ms(&self) -> f64 {
        self.percentile_ms(0.99)
    }
}

/// Connections and the identity's token.
pub struct Load {
    channels: Vec<Channel>,
    token: String,
}

fn context(purpose: &str) -> Option<PullContext> {
    Some(PullContext {
        purpose: purpose.into(),
        case_id: "BENCH".into(),
        operator: String::new(),
    })
}

impl Load {
    pub async fn connect(
        addr: &str,
        pki: &Path,
        identity: &str,
        connections: usize,
    ) -> Result<Self> {
        let mut channels = Vec::new();
        for _ in 0..connections.max(1) {
            channels.push(client::Client::from_pki(addr, pki, identity).await?.channel);
        }
        let token = std::fs::read_to_string(pki.join(format!("{identity}.token")))?
            .trim()
            .to_string();
        Ok(Self { channels, token })
    }

    /// `concurrency` callers for `duration`, after a short warm-up.
    pub async fn run(
        &self,
        concurrency: usize,
        duration: Duration,
        sampler: &Sampler,
        call: Call,
    ) -> Result<Stats> {
        // Warm up connections, caches and the allocator.
        self.drive(
            concurrency.min(8),
            Until::after(Duration::from_millis(300)),
            call.clone(),
        )
        .await?;
        let client = Sampler::own();
        let (before, client_before) = (sampler.cpu(), client.seconds());
        let started = Instant::now();
        let mut stats = self
            .drive(concurrency, Until::after(duration), call)
            .await?;
        stats.elapsed = started.elapsed();
        stats.client_cpu = client.seconds() - client_before;
        let cpu = sampler.cpu().since(&before);
        Ok(stats.finish(cpu))
    }

    /// `concurrency` callers for as long as `work` runs: what calls meet
    /// while something else loads the gateway. Returns `work`'s output
    /// and the calls' counts and latencies; no CPU is sampled (it would
    /// be `work`'s as much as the calls'). An error if no call finished
    /// before `work` did: a latency of nothing is no figure.
    pub async fn during<T>(
        &self,
        concurrency: usize,
        call: Call,
        work: impl Future<Output = Result<T>>,
    ) -> Result<(T, Stats)> {
        let done = Arc::new(AtomicBool::new(false));
        let calls = self.drive(concurrency, Until::Flag(done.clone()), call);
        let work = async {
            let out = work.await;
            done.store(true, Ordering::Relaxed);
            out
        };
        let started = Instant::now();
        let (out, stats) = tokio::join!(work, calls);
        let (out, mut stats) = (out?, stats?);
        stats.elapsed = started.elapsed();
        anyhow::ensure!(stats.calls > 0, "no call finished during the work");
        Ok((out, stats.finish(Cpu::default())))
    }

    async fn drive(&self, concurrency: usize, until: Until, call: Call) -> Result<Stats> {
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..concurrency {
            let channel = self.channels[k % self.channels.len()].clone();
            let token = self.token.clone();
            let call = call.clone();
            let until = until.clone();
            tasks.spawn(async move {
                let mut health =
                    tonic_health::pb::health_client::HealthClient::new(channel.clone());
                let mut pop = PopulationServiceClient::new(channel.clone());
                let mut pop2 = v2::population_service_client::PopulationServiceClient::new(channel);
                let (mut calls, mut records, mut lat) = (0u64, 0u64, Vec::new());
                let mut i = k * 7919;
                while until.going() {
                    let t = Instant::now();
                    let got = match &call {
                        Call::Health => health
                            .check(client::with_token(
                                tonic_health::pb::HealthCheckRequest {
                                    service: String::new(),
                                },
                                &token,
                            ))
                            .await
                            .map(|_| 0u64),
                        Call::GetPerson(ids, api) => {
                            let r = GetPersonRequest {
                                context: context("social-assistance"),
                                id_number: ids[i % ids.len()].clone(),
                            };
                            let r = client::with_token(r, &token);
                            match api {
                                Api::V1 => pop.get_person(r).await.map(|_| 1),
                                Api::V2 => pop2
                                    .get_person(r)
                                    .await
                                    .and_then(|r| decoded(r.into_inner().person.as_slice())),
                            }
                        }
                        Call::BatchGet(ids, n, api) => {
                            let start = i % ids.len().saturating_sub(*n).max(1);
                            let r = BatchGetPersonsRequest {
                                context: context("social-assistance"),
                                id_numbers: ids[start..start + n].to_vec(),
                            };
                            let r = client::with_token(r, &token);
                            match api {
                                Api::V1 => pop
                                    .batch_get_persons(r)
                                    .await
                                    .map(|r| r.into_inner().persons.len() as u64),
                                Api::V2 => pop2
                                    .batch_get_persons(r)
                                    .await
                                    .and_then(|r| decoded(&r.into_inner().persons)),
                            }
                        }
                    };
                    let r = got.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
                    lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    calls += 1;
                    records += r;
                    i += 1;
                }
                anyhow::Ok((calls, records, lat))
            });
        }
        let mut stats = Stats::default();
        for r in tasks.join_all().await {
            let (c, n, l) = r?;
            stats.calls += c;
            stats.records += n;
            stats.latencies_us.extend(l);
        }
        Ok(stats)
    }
}

/// When a load's callers stop: at a deadline, or once a flag is set.
#[derive(Clone)]
enum Until {
    Deadline(Instant),
    Flag(Arc<AtomicBool>),
}

impl Until {
    fn after(duration: Duration) -> Self {
        Self::Deadline(Instant::now() + duration)
    }

    fn going(&self) -> bool {
        match self {
            Self::Deadline(at) => Instant::now() < *at,
            Self::Flag(done) => !done.load(Ordering::Relaxed),
        }
    }
}

/// Samples the server's RSS every 50 ms until stopped; returns the peak.
fn rss_watch(pid_sampler: Arc<Sampler>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(pid_sampler.rss_mb());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    })
}

/// Which API version a load speaks: v2 packs each record's views, v1
/// names them in a map (kept for the comparison).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    V1,
    V2,
}

/// `n` concurrent ListPersons streams over the whole district, pages of
/// 1000, each restarted when it ends.
pub async fn streams(
    addr: &str,
    pki: &Path,
    identity: &str,
    (n, api): (usize, Api),
    duration: Duration,
    sampler: &Sampler,
) -> Result<Stats> {
    let load = Load::connect(addr, pki, identity, 4).await?;
    let records = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = rss_watch(Arc::new(Sampler::new(sampler.pid())), stop.clone());
    let before = sampler.cpu();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..n {
        let channel = load.channels[k % load.channels.len()].clone();
        let (token, records) = (load.token.clone(), records.clone());
        let request = move || {
            client::with_token(
                ListPersonsRequest {
                    context: context("public-security"),
                    region_prefix: String::new(),
                    page_size: 1000,
                    ..Default::default()
                },
                &token,
            )
        };
        // The same loop over either version's client and pages; `count`
        // returns a page's records, decoded.
        macro_rules! stream_until_deadline {
            ($client:expr, $count:expr) => {{
                let mut pop = $client;
                while Instant::now() < deadline {
                    let mut s = pop.list_persons(request()).await?.into_inner();
                    while let Some(page) = s.message().await? {
                        records.fetch_add($count(&page.persons)?, Ordering::Relaxed);
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                }
                anyhow::Ok(())
            }};
        }
        tasks.spawn(async move {
            match api {
                Api::V1 => stream_until_deadline!(
                    PopulationServiceClient::new(channel),
                    |persons: &Vec<Person>| Ok::<_, tonic::Status>(persons.len() as u64)
                ),
                Api::V2 => stream_until_deadline!(
                    v2::population_service_client::PopulationServiceClient::new(channel),
                    |persons: &Vec<v2::Person>| decoded(persons)
                ),
            }
        });
    }
    for r in tasks.join_all().await {
        r?;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let cpu = sampler.cpu().since(&before);
    let stats = Stats {
        records: records.load(Ordering::Relaxed),
        calls: n as u64,
        elapsed,
        rss_peak_mb: watcher.await.unwrap_or(0.0),
        ..Default::default()
    };
    Ok(stats.finish(cpu))
}

/// 16 callers sending 100 000-key batches (each refused) for `duration`;
/// returns the server's peak RSS.
pub async fn huge_batches(
    c: &client::Client,
    sampler: &Sampler,
    duration: Duration,
) -> Result<f64> {
    let keys: Vec<String> = (0..100_000).map(|i| format!("{i:018}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = rss_watch(Arc::new(Sampler::new(sampler.pid())), stop.clone());
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (channel, keys) = (c.channel.clone(), keys.clone());
        let req = c.request(());
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim_start_matches("Bearer ")
            .to_string();
        tasks.spawn(async move {
            let mut pop = PopulationServiceClient::new(channel).max_encoding_message_size(16 << 20);
            while Instant::now() < deadline {
                let _ = pop
                    .batch_get_persons(client::with_token(
                        BatchGetPersonsRequest {
                            context: context("public-security"),
                            id_numbers: keys.clone(),
                        },
                        &token,
                    ))
                    .await;
            }
        });
    }
    tasks.join_all().await;
    stop.store(true, Ordering::Relaxed);
    Ok(watcher.await.unwrap_or(0.0))
}

/// Reads one page of a long stream, cancels it, and measures the server
/// CPU spent in the second after (less an idle second's).
pub async fn cancel_work(addr: &str, pki: &Path, sampler: &Sampler) -> Result<f64> {
    let load = Load::connect(addr, pki, "public-security", 1).await?;
    let idle_before = sampler.cpu();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = sampler.cpu().since(&idle_before).total;
    let mut pop = PopulationServiceClient::new(load.channels[0].clone());
    let mut s = pop
        .list_persons(client::with_token(
            ListPersonsRequest {
                context: context("public-security"),
                page_size: 1000,
                ..Default::default()
            },
            &load.token,
        ))
        .await?
        .into_inner();
    s.message().await?;
    drop(s);
    let at = sampler.cpu();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = sampler.cpu().since(&at).total;
    Ok(((after - idle).max(0.0)) * 1000.0)
}

/// What [`import`] measured.
pub struct ImportCost {
    /// Records per second, from the command's start to its end.
    pub rate: f64,
    /// The gateway's CPU per record, from `/proc`.
    pub gateway_us: f64,
    /// The `govshare import` command's whole CPU per record (mostly its
    /// parsing), on the same cores; `None` if the kernel would not say.
    pub command_us: Option<f64>,
    /// PostgreSQL's own CPU per record (its server processes), when the
    /// gateway runs over it.
    pub database_us: Option<f64>,
}

/// Re-publishes the district through `govshare import`; `database`:
/// whether to count PostgreSQL's server processes too.
pub async fn import(
    binary: &Path,
    addr: &str,
    pki: &Path,
    persons: usize,
    sampler: &Sampler,
    database: bool,
) -> Result<ImportCost> {
    let dir = tempfile::tempdir()?;
    let d = crate::demo::generate(crate::config::Config::default().demo_seed, persons);
    crate::demo::write_jsonl(&d, dir.path())?;
    let mut import = std::process::Command::new(binary);
    import
        .args(["import", "--addr", addr, "--pki"])
        .arg(pki)
        .args(["--dataset", "population"])
        .arg(dir.path().join("population.jsonl"))
        .env("RUST_LOG", "warn");
    let database_cpu = || database.then(|| sampler.cpu_of_all("postgres"));
    let (gateway, command, db) = (sampler.cpu(), ended_children_cpu(), database_cpu());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || import.output()).await??;
    let took = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let per_record = |secs: f64| secs * 1e6 / persons.max(1) as f64;
    let since = |before: Option<f64>, now: Option<f64>| Some(per_record(now? - before?));
    Ok(ImportCost {
        rate: persons as f64 / took,
        gateway_us: per_record(sampler.cpu().since(&gateway).total),
        command_us: since(command, ended_children_cpu()),
        database_us: since(db, database_cpu()),
    })
}

/// What [`snapshot`] measured.
pub struct SnapshotCost {
    /// Seconds `snapshot save` took, from the command's start to its file
    /// being durable.
    pub save: f64,
    /// The encrypted file's size.
    pub mb: f64,
    /// Seconds `snapshot restore` took into an empty directory (every check
    /// `inspect` makes, then the writing).
    pub restore: f64,
}

/// `govshare snapshot save` against the running gateway as its demo
/// administrator, then `restore` of that file into a scratch directory with
/// the demo's backup identity: the two commands an operator runs, as
/// processes of their own.
pub async fn snapshot(binary: &Path, addr: &str, pki: &Path) -> Result<SnapshotCost> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.snapshot.age");
    let run = |args: Vec<std::ffi::OsString>| {
        let mut cmd = std::process::Command::new(binary);
        cmd.args(args).env("RUST_LOG", "warn");
        async move {
            let started = Instant::now();
            let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
            anyhow::ensure!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok::<_, anyhow::Error>(started.elapsed().as_secs_f64())
        }
    };
    let save = run(vec![
        "snapshot".into(),
        "save".into(),
        file.clone().into(),
        "--addr".into(),
        addr.into(),
        "--pki".into(),
        pki.into(),
        "--identity".into(),
        "admin".into(),
    ])
    .await
    .context("snapshot save")?;
    let mb = std::fs::metadata(&file)?.len() as f64 / 1e6;
    let restore = run(vec![
        "snapshot".into(),
        "restore".into(),
        file.into(),
        "--identity".into(),
        pki.join("backup.agekey").into(),
        "--data-dir".into(),
        dir.path().join("restored").into(),
        "--reason".into(),
        "bench".into(),
    ])
    .await
    .context("snapshot restore")?;
    Ok(SnapshotCost { save, mb, restore })
}
