//! `govshare import`: bulk publishing from a file through PublishService,
//! as the dataset's source department — the same validation, the same
//! audit, the same one-source rule as any publisher.
//!
//! Input is JSON Lines (one proto3-JSON record per line; for `grid`, one
//! `{"region":…}`, `{"grid":…}` or `{"worker":…}` per line) or CSV with a
//! header of field names (flat fields only), from a file or `-` (stdin).
//! Records go out in streams of [`PER_STREAM`], so every rejection comes
//! back listed; each bad line is reported by its line number.

use super::Connect;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use govshare::proto::codec::PreEncoded;
use govshare::proto::json::{LineEncoder, Named, encoded_from_value};
use govshare::proto::{LegalEntity, Person, PublishSummary, UpsertGridsRequest};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Records per PublishService call (its summary lists every rejection).
const PER_STREAM: usize = 10_000;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DatasetArg {
    Population,
    LegalEntity,
    Grid,
}

impl DatasetArg {
    fn source_identity(self) -> &'static str {
        match self {
            DatasetArg::Population => "public-security",
            DatasetArg::LegalEntity => "market-regulation",
            DatasetArg::Grid => "grid-centre",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Jsonl,
    Csv,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[arg(long, value_enum)]
    pub dataset: DatasetArg,
    /// The file to import, or `-` for standard input.
    pub file: PathBuf,
    /// jsonl or csv (default: by the file's extension, else jsonl).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Write every rejected line here: line number, key, reason (tab-separated).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
}

/// What one input line became: a record's wire bytes, or why not.
enum Parsed {
    Record(Vec<u8>),
    Bad(String),
}

fn csv_row_to_json(headers: &csv::StringRecord, row: &csv::StringRecord) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    for (h, v) in headers.iter().zip(row.iter()) {
        if v.is_empty() {
            continue;
        }
        let value = match v {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            _ => serde_json::Value::String(v.to_string()),
        };
        obj.insert(h.to_string(), value);
    }
    serde_json::Value::Object(obj)
}

/// Parsed lines handed from the reader at once: one wake-up of the sender
/// per batch, not per line.
const BATCH: usize = 256;

/// Parsed lines on their way to the sender, [`BATCH`] at a time.
struct Batches {
    tx: tokio::sync::mpsc::Sender<Vec<(u64, Parsed)>>,
    open: Vec<(u64, Parsed)>,
}

impl Batches {
    /// False once the sender has gone (the import ended early).
    fn push(&mut self, line: u64, parsed: Parsed) -> bool {
        self.open.push((line, parsed));
        self.open.len() < BATCH || self.flush()
    }

    fn flush(&mut self) -> bool {
        let full = std::mem::replace(&mut self.open, Vec::with_capacity(BATCH));
        full.is_empty() || self.tx.blocking_send(full).is_ok()
    }
}

/// Reads records (with their line numbers) on a blocking thread, each
/// parsed straight into the wire bytes of a `T`, and sends them in
/// batches of [`BATCH`].
fn reader<T: Named>(
    file: PathBuf,
    format: FormatArg,
    tx: tokio::sync::mpsc::Sender<Vec<(u64, Parsed)>>,
    bytes_read: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        let input: Box<dyn BufRead> = if file.as_os_str() == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            Box::new(std::io::BufReader::new(
                std::fs::File::open(&file)
                    .with_context(|| format!("opening {}", file.display()))?,
            ))
        };
        let mut batches = Batches {
            tx,
            open: Vec::with_capacity(BATCH),
        };
        match format {
            FormatArg::Jsonl => {
                let encoder = LineEncoder::<T>::default();
                for (n, line) in input.lines().enumerate() {
                    let line = match line {
                        Ok(line) => line,
                        // What was read before goes on; then the error.
                        Err(e) => {
                            batches.flush();
                            return Err(e).with_context(|| format!("reading line {}", n + 1));
                        }
                    };
                    bytes_read
                        .fetch_add(line.len() as u64 + 1, std::sync::atomic::Ordering::Relaxed);
                    if line.trim().is_empty() {
                        continue;
                    }
                    let p = encoder
                        .encode(&line)
                        .map_or_else(Parsed::Bad, Parsed::Record);
                    if !batches.push(n as u64 + 1, p) {
                        break;
                    }
                }
            }
            FormatArg::Csv => {
                let mut r = csv::ReaderBuilder::new().flexible(false).from_reader(input);
                let headers = r.headers().context("reading the CSV header")?.clone();
                for row in r.records() {
                    let (line, p) = match row {
                        Ok(row) => {
                            let line = row.position().map_or(0, |p| p.line());
                            bytes_read.store(
                                row.position().map_or(0, |p| p.byte()),
                                std::sync::atomic::Ordering::Relaxed,
                            );
                            let v = csv_row_to_json(&headers, &row);
                            (
                                line,
                                encoded_from_value::<T>(v).map_or_else(Parsed::Bad, Parsed::Record),
                            )
                        }
                        Err(e) => (
                            e.position().map_or(0, |p| p.line()),
                            Parsed::Bad(format!("not a CSV row: {e}")),
                        ),
                    };
                    if !batches.push(line, p) {
                        break;
                    }
                }
            }
        }
        batches.flush();
        Ok(())
    })
}

/// Progress on stderr: a bar on a terminal, plain lines every few seconds
/// otherwise (logs, CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total_bytes: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total_bytes {
                Some(t) => indicatif::ProgressBar::new(t),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {percent}% eta {eta} {msg}",
                )
                .expect("a valid template"),
            );
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    fn update(&mut self, bytes: u64, sent: u64, rejected: u64) {
        let rate = sent as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let msg = format!("{sent} records ({rate:.0}/s), {rejected} rejected");
        match &self.bar {
            Some(bar) => {
                bar.set_position(bytes);
                bar.set_message(msg);
            }
            None if self.last_line.elapsed() >= Duration::from_secs(2) => {
                eprintln!("import: {msg}");
                self.last_line = Instant::now();
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Totals of an import.
#[derive(Default)]
struct Totals {
    sent: u64,
    accepted: u64,
    rejected: Vec<(u64, String, String)>,
}

pub async fn run(args: ImportArgs) -> Result<()> {
    let format =
        args.format
            .unwrap_or_else(|| match args.file.extension().and_then(|x| x.to_str()) {
                Some("csv") => FormatArg::Csv,
                _ => FormatArg::Jsonl,
            });
    match args.dataset {
        DatasetArg::Population => import::<Person>(&args, format, "UpsertPersons").await,
        DatasetArg::LegalEntity => import::<LegalEntity>(&args, format, "UpsertEntities").await,
        DatasetArg::Grid => import::<UpsertGridsRequest>(&args, format, "UpsertGrids").await,
    }
}

/// Streams the file's records to PublishService's `method`, as wire bytes
/// made by the reader: the command parses each line once and never
/// re-encodes it.
async fn import<T: Named>(args: &ImportArgs, format: FormatArg, method: &str) -> Result<()> {
    let client = args.connect.client(args.dataset.source_identity()).await?;
    let path: tonic::codegen::http::uri::PathAndQuery =
        format!("/govshare.v1.PublishService/{method}").parse()?;
    let total_bytes = (args.file.as_os_str() != "-")
        .then(|| std::fs::metadata(&args.file).ok().map(|m| m.len()))
        .flatten();
    let bytes_read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel(4096 / BATCH);
    let mut pending = Vec::new().into_iter();
    let reading = reader::<T>(args.file.clone(), format, tx, bytes_read.clone());
    let mut progress = Progress::new(total_bytes);
    let mut totals = Totals::default();
    let mut done = false;
    while !done {
        // One stream of up to PER_STREAM records; line numbers by position.
        let (stx, srx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
        let mut publish = tonic::client::Grpc::new(client.channel.clone());
        let (request, path) = (
            client.request(tokio_stream::wrappers::ReceiverStream::new(srx)),
            path.clone(),
        );
        let running = tokio::spawn(async move {
            publish.ready().await.map_err(|e| {
                tonic::Status::unavailable(format!("the gateway is not reachable: {e}"))
            })?;
            publish
                .client_streaming(request, path, PreEncoded::<PublishSummary>::default())
                .await
        });
        let mut lines = Vec::with_capacity(PER_STREAM);
        while lines.len() < PER_STREAM {
            let Some((line, parsed)) = pending.next() else {
                progress.update(
                    bytes_read.load(std::sync::atomic::Ordering::Relaxed),
                    totals.sent + lines.len() as u64,
                    totals.rejected.len() as u64,
                );
                match rx.recv().await {
                    Some(batch) => pending = batch.into_iter(),
                    None => {
                        done = true;
                        break;
                    }
                }
                continue;
            };
            match parsed {
                Parsed::Record(r) => {
                    if stx.send(r).await.is_err() {
                        break;
                    }
                    lines.push(line);
                }
                Parsed::Bad(why) => totals.rejected.push((line, String::new(), why)),
            }
        }
        drop(stx);
        if lines.is_empty() {
            running.abort();
            continue;
        }
        let summary = running
            .await?
            .map_err(super::status_error)
            .context("publishing")?
            .into_inner();
        totals.sent += lines.len() as u64;
        totals.accepted += summary.accepted;
        for r in summary.rejections {
            let line = lines.get(r.position as usize).copied().unwrap_or(0);
            totals.rejected.push((line, r.key, r.reason));
        }
    }
    progress.finish();
    // A file that cannot be read on (an I/O error, a line not UTF-8) ends
    // the import after what was read before it: summed up, then the error.
    let read = reading
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread failed"))?;
    totals.rejected.sort();
    if let Some(path) = &args.rejects {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?,
        );
        for (line, key, why) in &totals.rejected {
            writeln!(f, "{line}\t{key}\t{why}")?;
        }
    }
    let secs = progress.started.elapsed().as_secs_f64();
    super::say(format!(
        "imported {} records ({:.0}/s): {} accepted, {} rejected{}",
        totals.sent + totals.rejected.iter().filter(|r| r.1.is_empty()).count() as u64,
        totals.sent as f64 / secs.max(0.001),
        totals.accepted,
        totals.rejected.len(),
        match &args.rejects {
            Some(p) if !totals.rejected.is_empty() => format!(" (listed in {})", p.display()),
            _ => String::new(),
        }
    ));
    for (line, key, why) in totals.rejected.iter().take(10) {
        super::say(format!("  line {line}: {key} {why}"));
    }
    if totals.rejected.len() > 10 && args.rejects.is_none() {
        super::say(format!(
            "  … and {} more (--rejects FILE lists every one)",
            totals.rejected.len() - 10
        ));
    }
    read?;
    if totals.accepted == 0 && totals.sent + (totals.rejected.len() as u64) > 0 {
        bail!("nothing was imported");
    }
    Ok(())
}
