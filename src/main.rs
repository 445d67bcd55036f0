//! The `govshare` command line.

mod cli;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use govshare::config::Config;
use govshare::gateway::pki::Pki;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "govshare",
    version,
    about = "Cross-department data-sharing gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. With no arguments: the embedded default on
    /// 127.0.0.1:50051 with ./govshare-data (dev PKI and demo data on first start).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Residents in the demo district loaded on first start (0: none).
        #[arg(long)]
        demo_persons: Option<usize>,
    },
    /// Generate the demo district: into a data directory's store, or as
    /// JSON Lines files that `govshare import` reads back.
    DemoData {
        #[arg(long, default_value = "govshare-data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 50_000)]
        persons: usize,
        #[arg(long, default_value_t = Config::default().demo_seed)]
        seed: u64,
        /// `store` (into --data-dir) or `jsonl` (files in --out).
        #[arg(long, default_value = "store")]
        format: String,
        /// Directory for grid.jsonl, population.jsonl and legal_entity.jsonl.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Publish a JSON Lines or CSV file through PublishService, as the
    /// dataset's source department.
    Import(cli::import::ImportArgs),
    /// Administer a running gateway (as the `admin` identity by default).
    Admin(cli::admin::AdminArgs),
    /// Audit a running gateway (as the `auditor` identity), or verify a log offline.
    Audit(cli::audit::AuditArgs),
    /// Pull data from a running gateway as a department identity.
    Pull(cli::pull::PullArgs),
    /// Back up a running gateway, check a backup, restore one.
    Snapshot(cli::snapshot::SnapshotArgs),
    /// Corrections (纠错): file and follow them as a puller, list and answer
    /// them as the dataset's source department.
    Corrections(cli::corrections::CorrectionsArgs),
    /// The resident tracker, as the resident portal.
    Resident(cli::corrections::ResidentArgs),
    /// Measure this build: audited pulls against a plain call on a gateway
    /// of its own, streams, memory, the audit log at scale.
    Bench(cli::bench::BenchArgs),
    /// A C2SP witness for another party's gateway log.
    #[command(subcommand)]
    Witness(WitnessCommand),
    /// Check a configuration file, or print the reference of every key.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The PostgreSQL store's schema.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Move a stopped gateway's store to PostgreSQL.
    Store(cli::store::StoreArgs),
    /// The dev PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Subcommand)]
enum WitnessCommand {
    /// Serve `POST /add-checkpoint`: check, record and cosign checkpoints.
    Serve {
        #[arg(long, default_value = "witness-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7380")]
        listen: SocketAddr,
        /// This witness's key name, e.g. witness.audit-office.example/w1.
        #[arg(long)]
        name: String,
        /// A log to witness: its verifier key, or a file holding it
        /// (e.g. the gateway's pki/audit-log.pub); repeat for several.
        #[arg(long = "log", required = true)]
        logs: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply the schema migrations this binary carries (nodes also apply
    /// them at start); refuses a database newer than this binary.
    Migrate {
        /// The database, as `store.url` names it.
        #[arg(long, env = "GOVSHARE_STORE__URL")]
        url: String,
        /// The database server's CA, as `store.ca` names it.
        #[arg(long, env = "GOVSHARE_STORE__CA")]
        ca: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate FILE (with GOVSHARE_… overrides applied) without starting.
    Check { file: PathBuf },
    /// Every key with its default and meaning.
    Reference {
        /// As the Markdown table the README carries.
        #[arg(long)]
        markdown: bool,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a CA and a server certificate (for localhost, or --host).
    Init {
        #[arg(long, default_value = "govshare-data/pki")]
        dir: PathBuf,
        /// For a production gateway: print the config lines, and where the
        /// CA key is (it belongs off the gateway host).
        #[arg(long)]
        production: bool,
        /// A name the server certificate is for (repeat for several);
        /// default localhost and 127.0.0.1.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Issue a client certificate signed by the dev CA (<name>.pem, <name>.key).
    IssueClient {
        #[arg(long, default_value = "govshare-data/pki")]
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
}

/// Log lines go to stderr: human-readable, or one JSON object per line.
/// Colour codes only on a terminal: in a file or journald they are noise.
///
/// A writer thread takes the formatted lines and writes whatever has
/// gathered every few milliseconds (`base::log_sink`): with one line per
/// request, a `write` per line on the request path cost ~2 % of the
/// gateway's CPU under load, and waking a writer per line as much again
/// (`perf`, `govshare bench --only unary`). It is not lossy while stderr
/// takes its lines — past a bound the caller waits rather than a line be
/// dropped — and the returned guard writes what is left when it is
/// dropped at exit (waiting at most a second for a stalled stderr).
fn init_logging(format: govshare::config::LogFormat) -> Result<govshare::base::log_sink::Flusher> {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let (writer, flusher) = govshare::base::log_sink::spawn(std::io::stderr())
        .context("starting the log-writer thread")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        govshare::config::LogFormat::Text => builder.init(),
        govshare::config::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(flusher)
}

/// mimalloc instead of glibc malloc: the request path allocates many
/// small, short-lived buffers across threads, where glibc spent ~15 % of
/// the gateway's CPU (`govshare bench`, see the README's figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Errors are printed as their chain of causes, one line, whatever
/// `RUST_BACKTRACE` says: what an operator reads is the message, not a
/// stack.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let _log = (!matches!(cli.command, Command::Serve { .. }))
        .then(|| init_logging(govshare::config::LogFormat::Text))
        .transpose()?;
    match cli.command {
        Command::Admin(args) => cli::admin::run(args).await,
        Command::Pull(args) => cli::pull::run(args).await,
        Command::Snapshot(args) => cli::snapshot::run(args).await,
        Command::Corrections(args) => cli::corrections::run(args).await,
        Command::Resident(args) => cli::corrections::run_resident(args).await,
        Command::Audit(args) => cli::audit::run(args).await,
        Command::Serve {
            config,
            listen,
            data_dir,
            demo_persons,
        } => {
            let mut cfg = Config::load(config.as_deref())?;
            let _log = init_logging(cfg.log_format)?;
            cfg.listen = listen.unwrap_or(cfg.listen);
            cfg.data_dir = data_dir.unwrap_or(cfg.data_dir);
            cfg.demo_persons = demo_persons.unwrap_or(cfg.demo_persons);
            govshare::gateway::run(cfg, shutdown_signal()).await
        }
        Command::Import(args) => cli::import::run(args).await,
        Command::Bench(args) => cli::bench::run(args).await,
        Command::DemoData {
            persons,
            seed,
            format,
            out,
            ..
        } if format == "jsonl" => {
            let files =
                govshare::demo::write_jsonl(&govshare::demo::generate(seed, persons), &out)?;
            for f in files {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
        Command::DemoData {
            data_dir,
            persons,
            seed,
            format,
            ..
        } => {
            anyhow::ensure!(format == "store", "--format: store or jsonl");
            let (store, records) = govshare::gateway::open_store(
                &Config {
                    data_dir,
                    ..Config::demo()
                }
                .store_location(),
            )?;
            println!(
                "{}",
                govshare::demo::seed::load_demo(&store, &records, seed, persons)?
            );
            records.sync()?;
            store.sync()
        }
        Command::Witness(WitnessCommand::Serve {
            data_dir,
            listen,
            name,
            logs,
        }) => {
            govshare::audit::witness::serve(
                govshare::audit::witness::Options {
                    data_dir,
                    listen,
                    name,
                    logs,
                },
                shutdown_signal(),
            )
            .await
        }
        Command::Store(args) => cli::store::run(args).await,
        Command::Db {
            command: DbCommand::Migrate { url, ca },
        } => {
            let m = govshare::store::postgres::migrate_at(&url, ca.as_deref()).await?;
            if m.from == m.to {
                println!("the schema is at version {}: nothing to do", m.to);
            } else {
                println!("migrated the schema from version {} to {}", m.from, m.to);
            }
            Ok(())
        }
        Command::Config(ConfigCommand::Check { file }) => {
            Config::load(Some(&file))?;
            println!("{}: OK", file.display());
            Ok(())
        }
        Command::Config(ConfigCommand::Reference { markdown: true }) => {
            print!("{}", govshare::config::reference_markdown());
            Ok(())
        }
        Command::Config(ConfigCommand::Reference { markdown: false }) => {
            let defaults = govshare::config::defaults();
            for k in govshare::config::KEYS {
                match defaults.iter().find(|(key, _)| key == k.key) {
                    Some((key, v)) => println!("{key} = {v}"),
                    None => println!("{}", k.key),
                }
                println!("    {}\n", k.meaning);
            }
            Ok(())
        }
        Command::Pki {
            command:
                PkiCommand::Init {
                    dir,
                    production,
                    hosts,
                },
        } => {
            let pki = Pki::at(&dir);
            pki.init(&hosts)?;
            println!(
                "created ca.pem, ca.key, server.pem, server.key in {}",
                dir.display()
            );
            if production {
                let path = |f: &str| std::path::absolute(pki.path(f)).unwrap_or(pki.path(f));
                println!("add to the gateway's config file:");
                println!("tls_cert = {:?}", path("server.pem"));
                println!("tls_key = {:?}", path("server.key"));
                println!("client_ca = {:?}", path("ca.pem"));
                println!(
                    "ca.key signs client certificates (`govshare pki issue-client --dir {}`): \
                     keep it off the gateway host; the gateway never needs it",
                    dir.display()
                );
            }
            Ok(())
        }
        Command::Pki {
            command: PkiCommand::IssueClient { dir, name },
        } => {
            let cert = Pki::at(&dir).issue_client(&name)?;
            println!(
                "wrote {name}.pem and {name}.key in {}; thumbprint (cnf.x5t#S256): {}",
                dir.display(),
                govshare::control::certs::thumbprint(&cert.der)
            );
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when it is first polled, so a signal that arrives while the
/// gateway is still starting is not lost (nor fatal).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => std::future::pending().await,
        }
    }
}
