//! `govshare audit …`: the auditors' command line. `verify` runs offline on
//! a data directory or an export; everything else calls AuditService as the
//! `auditor` identity by default.

use super::table::Table;
use super::{Connect, say, status_error};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use govshare::audit::checkpoint::{CosignatureVerifier, LogVerifier};
use govshare::audit::{export, merkle, verify};
use govshare::proto::audit_service_client::AuditServiceClient;
use govshare::proto::*;
use std::path::PathBuf;
use tonic::Streaming;

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Who pulled what: entries newest first.
    Query {
        #[arg(long, default_value = "")]
        dept: String,
        /// pull, publish, admin, audit_read, auth_failure.
        #[arg(long)]
        kind: Option<String>,
        /// allow or deny.
        #[arg(long)]
        decision: Option<String>,
        #[arg(long, default_value = "")]
        dataset: String,
        #[arg(long, default_value = "")]
        purpose: String,
        /// Method name, e.g. GetPerson.
        #[arg(long, default_value = "")]
        method: String,
        /// Only entries withheld from the resident tracker now (a grant's
        /// disclosure delay), with the time they are shown from.
        #[arg(long)]
        withheld: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// The data tracker: every pull that returned or refused one subject.
    Subject {
        #[arg(long, required_unless_present = "uscc", conflicts_with = "uscc")]
        id_number: Option<String>,
        #[arg(long)]
        uscc: Option<String>,
    },
    /// Calls, records and denials per department per day.
    Stats {
        #[arg(long, default_value = "")]
        dept: String,
    },
    /// Follow new entries live (Ctrl-C to stop).
    Tail,
    /// The latest signed checkpoint (verified with the log's key).
    Checkpoint {
        /// Keep it in FILE, to verify the log against it later (`verify --trusted`).
        #[arg(long)]
        save: Option<PathBuf>,
        /// The log's verifier key file (default: <pki>/audit-log.pub).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Write the log as JSON Lines with its checkpoints and public key.
    Export {
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a response's audit receipt against the latest checkpoint.
    Prove {
        /// The receipt's leaf index.
        #[arg(long)]
        index: u64,
        /// The receipt's leaf hash (base64).
        #[arg(long)]
        leaf_hash: String,
        /// The log's verifier key file (default: <pki>/audit-log.pub).
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Verify the log offline: every leaf, the tree, every checkpoint.
    Verify(VerifyArgs),
    /// Verify a published tree from its files alone (a directory or an
    /// http(s):// prefix): the checkpoint's signature, every tile, the root,
    /// and with --since that an earlier checkpoint's tree is a prefix.
    VerifyTiles(VerifyTilesArgs),
    /// On a stopped gateway whose log lost its tail (a witness has seen it
    /// larger): keep what it holds and go on as its next generation.
    NewGeneration(NewGenerationArgs),
}

#[derive(Args, Debug)]
pub struct VerifyTilesArgs {
    /// The published tree: a directory, or an http(s):// URL prefix.
    source: String,
    /// The log's verifier key file, obtained independently of the log.
    #[arg(long)]
    public_key: PathBuf,
    /// A checkpoint saved earlier (`audit checkpoint --save`): the
    /// published tree must extend it.
    #[arg(long, conflicts_with = "state")]
    since: Option<PathBuf>,
    /// A monitor's memory between runs: the tree must extend the checkpoint
    /// saved here by the last run (if any), and the one verified now
    /// replaces it. Run from cron with this, a frozen or rolled-back tree
    /// is caught.
    #[arg(long)]
    state: Option<PathBuf>,
    /// A witness whose cosignatures count: NAME=VKEY, or just VKEY.
    #[arg(long = "witness")]
    witnesses: Vec<String>,
    /// Cosignatures by the named witnesses the checkpoint must carry.
    #[arg(long, default_value_t = 0)]
    min_witnesses: usize,
    /// A generation you know about: the tree may have gone on as it since
    /// the saved checkpoint (after a restore) without failing.
    #[arg(long = "accept-generation")]
    accept_generations: Vec<u32>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A gateway data directory (reads audit/ and, by default, pki/audit-log.pub).
    #[arg(long, conflicts_with = "export", required_unless_present = "export")]
    data_dir: Option<PathBuf>,
    /// An export written by `govshare audit export`.
    #[arg(long, requires = "public_key")]
    export: Option<PathBuf>,
    /// The log's verifier key file, obtained independently of the log.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// Fail (exit 1) when checkpoints are missing or stale, as for tampering.
    #[arg(long)]
    strict: bool,
    /// Accept missing or stale checkpoints with a warning (exit 0).
    #[arg(long, conflicts_with = "strict")]
    allow_unsigned: bool,
    /// Checkpoints saved earlier (`audit checkpoint --save`): the log must
    /// still contain each. Detects rollback and rewrite.
    #[arg(long, num_args = 1..)]
    trusted: Vec<PathBuf>,
    /// A witness whose cosignatures count: NAME=VKEY, or just VKEY.
    #[arg(long = "witness")]
    witnesses: Vec<String>,
    /// Cosignatures by the named witnesses the newest checkpoint must carry.
    #[arg(long, default_value_t = 0)]
    min_witnesses: usize,
    /// How far the newest checkpoint may trail the newest entry.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    max_unsigned: std::time::Duration,
    /// A generation you know about (the log lost its tail and went on
    /// under `<origin>/N`): its gap no longer fails verification. Repeat
    /// for several.
    #[arg(long = "accept-generation")]
    accept_generations: Vec<u32>,
}

#[derive(Args, Debug)]
pub struct NewGenerationArgs {
    /// The stopped gateway's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The gateway's configuration file (its audit.origin and node_id).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Why: recorded in the generation's entry.
    #[arg(long)]
    reason: String,
    /// A checkpoint you hold that the log no longer reaches (from a witness,
    /// a monitor's --state, `audit checkpoint --save`): named as what is lost.
    #[arg(long)]
    lost_checkpoint: Option<PathBuf>,
    /// Who starts it (default: the local user and host).
    #[arg(long)]
    operator: Option<String>,
}

fn read_key(path: &PathBuf) -> Result<LogVerifier> {
    LogVerifier::parse(
        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not the log's verifier key", path.display()))
}

/// The `--witness` keys (one witness named twice counts once), enough for
/// `--min-witnesses`.
fn witness_list(args: &[String], min: usize) -> Result<Vec<CosignatureVerifier>> {
    let mut ws: Vec<CosignatureVerifier> = Vec::new();
    for w in args {
        let v = witness_arg(w)?;
        if !ws.contains(&v) {
            ws.push(v);
        }
    }
    if min > ws.len() {
        bail!("--min-witnesses {min} needs at least that many different --witness keys");
    }
    Ok(ws)
}

/// `govshare audit verify-tiles`: exit 0 with what was proven, or exit 1
/// with one line saying what is wrong.
async fn verify_tiles(a: &VerifyTilesArgs) -> Result<()> {
    use govshare::audit::verify_tiles::{self, Options, Source};
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let since = match (&a.since, &a.state) {
        (Some(p), _) => Some(read(p)?),
        (None, Some(p)) if p.exists() => Some(read(p)?),
        _ => None,
    };
    let opts = Options {
        since,
        witnesses: witness_list(&a.witnesses, a.min_witnesses)?,
        min_witnesses: a.min_witnesses,
        accept_generations: a.accept_generations.clone(),
    };
    let key = read(&a.public_key)?;
    let r = verify_tiles::verify(&Source::parse(&a.source), &key, &opts)
        .await
        .map_err(|why| anyhow::anyhow!("REFUSED: {why}"))?;
    let b64 = |h: &[u8; 32]| data_encoding::BASE64.encode(h);
    if let Some((size, root)) = r.since {
        println!("since: size {size} root {}", b64(&root));
    }
    println!("now:   size {} root {}", r.size, b64(&r.root));
    println!(
        "OK: {} — {} tiles check out and give the signed root{}{}",
        r.origin,
        r.tiles,
        if r.since.is_some() {
            "; the saved checkpoint's tree is a prefix of it"
        } else {
            ""
        },
        if r.cosigned_by.is_empty() {
            String::new()
        } else {
            format!("; cosigned by {}", r.cosigned_by.join(", "))
        }
    );
    if let Some(then) = r.since_generation.filter(|g| *g != r.generation) {
        println!(
            "generations {}..={} accepted (the saved checkpoint was of generation {then}; the tree could not be checked against it)",
            then + 1,
            r.generation
        );
    }
    if let Some(state) = &a.state {
        govshare::audit::publish::write_atomically(state, r.note.as_bytes()).with_context(
            || {
                format!(
                    "--state: saving the verified checkpoint to {}",
                    state.display()
                )
            },
        )?;
        println!("saved the verified checkpoint to {}", state.display());
    }
    Ok(())
}

/// `govshare audit new-generation`: offline, on the stopped gateway.
fn new_generation(a: &NewGenerationArgs) -> Result<()> {
    use govshare::audit::generation;
    let mut cfg = govshare::config::Config::load(a.config.as_deref())?;
    cfg.data_dir = a.data_dir.clone();
    govshare::gateway::restore::check_finished(&cfg.data_dir)?;
    // The data dir's lock and the store's: a running gateway holds them,
    // and a generation is started only on a stopped one.
    let _stopped = govshare::gateway::lock_data_dir(&cfg.data_dir)
        .context("the gateway must be stopped to start a new generation")?;
    let _store = govshare::gateway::open_store(&cfg.store_location())
        .context("the gateway must be stopped to start a new generation")?;
    let audit = cfg.audit_dir();
    let mut lost = Vec::new();
    if let Some(why) = generation::behind(&audit)? {
        lost.push(why);
    }
    if let Some(f) = &a.lost_checkpoint {
        let note =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let key = read_key(&cfg.pki_dir().join("audit-log.pub"))?;
        let cp = key
            .open_any_generation(&note)
            .map_err(|e| anyhow::anyhow!("--lost-checkpoint {}: {e}", f.display()))?;
        lost.push(format!("a checkpoint of {} at size {}", cp.origin, cp.size));
    }
    if lost.is_empty() {
        lost.push("unknown: no witness reported a larger size and no checkpoint was given".into());
    }
    let begun = generation::begin(
        &audit,
        &cfg.pki_dir(),
        &cfg.audit.origin,
        &cfg.audit_options(),
        generation::Start {
            lost: lost.join("; "),
            started_by: a.operator.clone().unwrap_or_else(local_operator),
            reason: a.reason.clone(),
            method: "govshare audit new-generation",
        },
    )?;
    say(format!(
        "the log continues as generation {}: {} — entry {} records it",
        begun.number, begun.origin, begun.size
    ));
    say(format!(
        "verifier key (auditors: audit verify --public-key): {}",
        begun.verifier_key
    ));
    say(format!(
        "witnesses: add  --log '{}'  to `govshare witness serve`",
        begun.verifier_key
    ));
    say("the gateway releases data again once started");
    Ok(())
}

/// The local user and host, for who started a generation.
pub fn local_operator() -> String {
    format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into()),
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    )
}

/// `NAME=VKEY` or `VKEY`; the key's own name must match NAME.
fn witness_arg(arg: &str) -> Result<CosignatureVerifier> {
    let (name, key) = match arg.split_once('=') {
        Some((n, k)) if !n.contains('+') => (Some(n), k),
        _ => (None, arg),
    };
    let v = CosignatureVerifier::parse(key).with_context(|| format!("--witness {arg}"))?;
    if let Some(n) = name.filter(|n| *n != v.name()) {
        bail!(
            "--witness {arg}: the key is named '{}', not '{n}'",
            v.name()
        );
    }
    Ok(v)
}

fn enum_arg<E>(value: Option<&str>, prefix: &str, parse: fn(&str) -> Option<E>) -> Result<i32>
where
    E: Into<i32>,
{
    match value {
        None => Ok(0),
        Some(v) => parse(&format!("{prefix}{}", v.to_ascii_uppercase()))
            .map(Into::into)
            .with_context(|| {
                format!(
                    "'{v}' is not a {}",
                    prefix.trim_end_matches('_').to_lowercase()
                )
            }),
    }
}

pub async fn run(args: AuditArgs) -> Result<()> {
    if let AuditCommand::Verify(v) = &args.command {
        return verify_offline(v);
    }
    if let AuditCommand::VerifyTiles(v) = &args.command {
        return verify_tiles(v).await;
    }
    if let AuditCommand::NewGeneration(g) = &args.command {
        return new_generation(g);
    }
    let json = args.connect.json;
    let client = args.connect.client("auditor").await?;
    let mut audit = AuditServiceClient::new(client.channel.clone());
    match args.command {
        AuditCommand::Query {
            dept,
            kind,
            decision,
            dataset,
            purpose,
            method,
            withheld,
            limit,
        } => {
            let stream = audit
                .query_audit(client.request(QueryAuditRequest {
                    department: dept,
                    kind: enum_arg(kind.as_deref(), "ENTRY_KIND_", EntryKind::from_str_name)?,
                    decision: enum_arg(
                        decision.as_deref(),
                        "AUDIT_DECISION_",
                        AuditDecision::from_str_name,
                    )?,
                    dataset,
                    purpose,
                    method,
                    withheld_from_residents: withheld,
                    page_size: limit.min(1000) as u32,
                    ..Default::default()
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            print_entries(collect(stream, limit).await?, json);
        }
        AuditCommand::Subject { id_number, uscc } => {
            let stream = audit
                .subject_access_history(client.request(SubjectAccessHistoryRequest {
                    id_number: id_number.unwrap_or_default(),
                    uscc: uscc.unwrap_or_default(),
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            print_entries(collect(stream, usize::MAX).await?, json);
        }
        AuditCommand::Stats { dept } => {
            let r = audit
                .audit_stats(client.request(AuditStatsRequest {
                    department: dept,
                    ..Default::default()
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                say(govshare::proto::json::to_value(&r));
                return Ok(());
            }
            let mut t = Table::new(&["DAY", "DEPARTMENT", "CALLS", "RECORDS", "DENIALS"]);
            for row in r.rows {
                let denials = row
                    .denials
                    .iter()
                    .map(|d| format!("{}={}", d.reason_code, d.count))
                    .collect::<Vec<_>>()
                    .join(",");
                t.row(vec![
                    row.day,
                    row.department,
                    row.calls.to_string(),
                    row.records.to_string(),
                    denials,
                ]);
            }
            t.print();
            if !r.corrections.is_empty() {
                say("");
                let mut t = Table::new(&[
                    "DATASET",
                    "SOURCE",
                    "FILED",
                    "OPEN",
                    "ACCEPTED",
                    "REJECTED",
                    "NEEDS_INFO",
                    "OVERDUE",
                ]);
                for c in r.corrections {
                    t.row(vec![
                        c.dataset,
                        c.source_department,
                        c.filed.to_string(),
                        c.open.to_string(),
                        c.accepted.to_string(),
                        c.rejected.to_string(),
                        c.needs_info.to_string(),
                        c.overdue.to_string(),
                    ]);
                }
                t.print();
            }
        }
        AuditCommand::Tail => {
            let mut s = audit
                .tail_audit(client.request(TailAuditRequest { from_index: 0 }))
                .await
                .map_err(status_error)?
                .into_inner();
            while let Some(e) = s.message().await.map_err(status_error)? {
                print_entries(vec![e], json);
            }
        }
        AuditCommand::Checkpoint { save, public_key } => {
            let key =
                read_key(&public_key.unwrap_or_else(|| args.connect.pki.join("audit-log.pub")))?;
            let c = audit
                .get_checkpoint(client.request(GetCheckpointRequest {}))
                .await
                .map_err(status_error)?
                .into_inner();
            let cp = key
                .open(&c.note)
                .map_err(|e| anyhow::anyhow!("the gateway's checkpoint does not verify: {e}"))?;
            match save {
                Some(path) => {
                    std::fs::write(&path, &c.note)
                        .with_context(|| format!("writing {}", path.display()))?;
                    say(format!(
                        "saved the checkpoint of size {} (verified) to {}",
                        cp.size,
                        path.display()
                    ));
                }
                None => say(c.note.trim_end()),
            }
        }
        AuditCommand::Export { out } => {
            let mut s = audit
                .export_audit(client.request(ExportAuditRequest {}))
                .await
                .map_err(status_error)?
                .into_inner();
            let mut data = Vec::new();
            while let Some(chunk) = s.message().await.map_err(status_error)? {
                data.extend_from_slice(&chunk.data);
            }
            std::fs::write(&out, &data).with_context(|| format!("writing {}", out.display()))?;
            say(format!("wrote {} ({} bytes)", out.display(), data.len()));
        }
        AuditCommand::Prove {
            index,
            leaf_hash: leaf_b64,
            public_key,
        } => {
            let key =
                read_key(&public_key.unwrap_or_else(|| args.connect.pki.join("audit-log.pub")))?;
            let leaf: merkle::Hash = data_encoding::BASE64
                .decode(leaf_b64.as_bytes())
                .ok()
                .and_then(|b| b.try_into().ok())
                .context("--leaf-hash: base64 of 32 bytes, as in the receipt")?;
            let c = audit
                .get_checkpoint(client.request(GetCheckpointRequest {}))
                .await
                .map_err(status_error)?
                .into_inner();
            let cp = key
                .open(&c.note)
                .map_err(|e| anyhow::anyhow!("the checkpoint: {e}"))?;
            let proof = audit
                .get_inclusion_proof(client.request(GetInclusionProofRequest {
                    index,
                    tree_size: cp.size,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            let hashes: Vec<merkle::Hash> = proof
                .hashes
                .iter()
                .map(|h| h.as_slice().try_into().context("proof hash length"))
                .collect::<Result<_>>()?;
            if !merkle::verify_inclusion(&leaf, index, cp.size, &hashes, &cp.root) {
                bail!(
                    "the receipt is NOT included in the checkpoint of size {}",
                    cp.size
                );
            }
            say(format!(
                "receipt {index} is included in the signed checkpoint of size {} ({} proof hashes)",
                cp.size,
                hashes.len()
            ));
        }
        AuditCommand::Verify(_) | AuditCommand::VerifyTiles(_) | AuditCommand::NewGeneration(_) => {
            unreachable!("handled above")
        }
    }
    Ok(())
}

async fn collect(mut s: Streaming<AuditPage>, limit: usize) -> Result<Vec<AuditEntry>> {
    let mut out = Vec::new();
    while let Some(page) = s.message().await.map_err(status_error)? {
        out.extend(page.entries);
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(out)
}

fn short(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

fn print_entries(entries: Vec<AuditEntry>, json: bool) {
    if json {
        entries
            .iter()
            .for_each(|e| say(govshare::proto::json::to_value(e)));
        return;
    }
    let mut t = Table::new(&[
        "INDEX",
        "TIME",
        "KIND",
        "DEPARTMENT",
        "METHOD",
        "PURPOSE",
        "CASE",
        "DECISION",
        "REASON",
        "RECORDS",
        "RESIDENTS SEE IT FROM",
    ]);
    for e in entries {
        let time = govshare::base::clock::local_display(e.time.as_ref());
        t.row(vec![
            e.index.to_string(),
            time,
            short(
                EntryKind::try_from(e.kind).map_or("?", |k| k.as_str_name()),
                "ENTRY_KIND_",
            ),
            e.principal.map(|p| p.department).unwrap_or_default(),
            govshare::audit::method_label(&e.method),
            e.purpose,
            e.case_id,
            short(
                AuditDecision::try_from(e.decision).map_or("?", |d| d.as_str_name()),
                "AUDIT_DECISION_",
            ),
            e.reason_code,
            e.record_count.to_string(),
            e.disclosed_after
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%Y-%m-%d")
                        .to_string()
                })
                .unwrap_or_default(),
        ]);
    }
    t.print();
}

fn verify_offline(a: &VerifyArgs) -> Result<()> {
    let (entries, notes, key, mut remarks) = match (&a.data_dir, &a.export) {
        (Some(dir), _) => {
            let key = read_key(
                &a.public_key
                    .clone()
                    .unwrap_or_else(|| dir.join("pki/audit-log.pub")),
            )?;
            if a.public_key.is_none() {
                say(format!(
                    "NOTE: the log's key is read from {}, inside the directory being verified; whoever can rewrite the log can replace it — pass --public-key with a copy you keep",
                    dir.join("pki/audit-log.pub").display()
                ));
            }
            let audit = dir.join("audit");
            let notes =
                match govshare::audit::checkpoint::read_notes(&audit.join("checkpoints.log")) {
                    Ok(n) => n,
                    Err(e) => bail!("TAMPERED: {e:#}"),
                };
            match verify::read_segments(&audit) {
                Ok((entries, remarks)) => (entries, notes, key, remarks),
                Err(p) => bail!("TAMPERED: {p}"),
            }
        }
        (None, Some(file)) => {
            let key = read_key(
                a.public_key
                    .as_ref()
                    .context("--public-key is required with --export")?,
            )?;
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let e = match export::parse(&text) {
                Ok(e) => e,
                Err(e) if e.is::<export::ViewMismatch>() => bail!("TAMPERED: {e}"),
                Err(e) => return Err(e),
            };
            (e.entries, Some(e.notes), key, Vec::new())
        }
        (None, None) => bail!("give --data-dir or --export"),
    };
    let opts = verify::Options {
        strict: a.strict,
        trusted: a
            .trusted
            .iter()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
            .collect::<Result<_>>()?,
        witnesses: witness_list(&a.witnesses, a.min_witnesses)?,
        min_witnesses: a.min_witnesses,
        max_unsigned: a.max_unsigned,
    };
    let outcome = match verify::verify(&entries, notes.as_deref(), &key, &opts) {
        Ok(o) => o,
        Err(p) => bail!("TAMPERED: {p}"),
    };
    let (report, unsigned) = match outcome {
        verify::Outcome::Ok(r) => (r, None),
        verify::Outcome::Unsigned(r, why) => (r, Some(why)),
    };
    remarks.extend(report.notes.iter().cloned());
    for r in &remarks {
        say(format!("note: {r}"));
    }
    for g in &report.gaps {
        say(format!("GAP: {g}"));
    }
    if let Some(g) = report
        .gaps
        .iter()
        .find(|g| !a.accept_generations.contains(&g.number))
    {
        bail!(
            "NOT VERIFIED: the log lost entries and went on as generation {} ({}): see the GAP line; once you know why, verify with --accept-generation {}",
            g.number,
            g.origin,
            g.number
        );
    }
    let summary = format!(
        "{} entries, {} checkpoints verified; the newest signs {} entries{}",
        report.entries,
        report.checkpoints,
        report.signed_size,
        if report.cosigned_by.is_empty() {
            String::new()
        } else {
            format!(" and is cosigned by {}", report.cosigned_by.join(", "))
        }
    );
    match unsigned {
        None => {
            say(format!("OK: {summary}"));
            Ok(())
        }
        Some(why) if a.allow_unsigned => {
            say(format!("WARNING: {why}"));
            say(format!("OK (unsigned accepted): {summary}"));
            Ok(())
        }
        Some(why) => {
            say(format!("WARNING: {why}"));
            bail!(
                "NOT VERIFIED: {summary}, but the entries are not covered by checkpoints in time (--allow-unsigned to accept, --strict to treat as tampering)"
            )
        }
    }
}
