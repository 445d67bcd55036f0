//! `govshare bench`: runs the benchmark harness against a gateway of its
//! own and prints the table (and writes JSON with `--json`).

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Residents in the benchmark district.
    #[arg(long, default_value_t = 20_000)]
    persons: usize,
    /// How long each load measurement runs (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// In-flight calls for the unary comparisons.
    #[arg(long, value_delimiter = ',', default_value = "1,32,128")]
    concurrency: Vec<usize>,
    /// Client connections the calls share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The API version the audited pulls (GetPerson, BatchGetPersons) use;
    /// v1 names each record's views in a map, v2 packs them.
    #[arg(long, value_enum, default_value_t = govshare::bench::Api::V2)]
    api: govshare::bench::Api,
    /// Entries for the audit-log-at-scale measurement (0: skip).
    #[arg(long, default_value_t = 1_000_000)]
    log_entries: u64,
    /// Residents for the start-to-serving measurement (0: skip).
    #[arg(long, default_value_t = 1_000_000)]
    start_persons: usize,
    /// Run only these measurements (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<govshare::bench::Phase>,
    /// `postgres`: the unary comparison and the import also run on a
    /// gateway over PostgreSQL, side by side with sled, then one, two and
    /// three nodes over the same database.
    #[arg(long, value_enum, default_value_t = StoreArg::Sled)]
    store: StoreArg,
    /// The PostgreSQL server for `--store postgres`: a URL whose role may
    /// create databases (the bench makes one of its own and drops it).
    /// Default: GOVSHARE_STORE__URL, else TEST_DATABASE_URL (the tests').
    #[arg(long, env = "GOVSHARE_STORE__URL")]
    store_url: Option<String>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The stores `govshare bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreArg {
    /// The embedded store alone.
    Sled,
    /// sled, and PostgreSQL beside it.
    Postgres,
}

pub async fn run(a: BenchArgs) -> anyhow::Result<()> {
    let postgres = match a.store {
        StoreArg::Sled => None,
        StoreArg::Postgres => Some(
            a.store_url
                .or_else(|| std::env::var("TEST_DATABASE_URL").ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--store postgres needs a server whose role may create databases: \
                         --store-url postgres://user:password@host:5432/postgres \
                         (or GOVSHARE_STORE__URL, or TEST_DATABASE_URL)"
                    )
                })?,
        ),
    };
    let options = govshare::bench::Options {
        binary: std::env::current_exe()?,
        persons: a.persons,
        duration: a.duration,
        concurrency: a.concurrency,
        connections: a.connections,
        api: a.api,
        log_entries: a.log_entries,
        start_persons: a.start_persons,
        only: a.only,
        postgres,
    };
    let report = govshare::bench::run(&options).await?;
    super::say(report.table());
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}
