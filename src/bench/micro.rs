//! Measurements without a network: the disk alone, the policy decision
//! alone, and the audit log at scale (writer, indexer, proofs).

use super::Row;
use super::proc::Sampler;
use crate::audit::{AuditOptions, Runtime, merkle};
use crate::control::authz::{self, CompiledGrant};
use crate::datasets::Dataset;
use crate::datasets::catalog::Catalog;
use crate::proto::*;
use anyhow::Result;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records per second that plain `write` + `fdatasync` of `size`-byte
/// records, `batch` per sync, reaches on the temp dir's disk: the ceiling
/// for any durable log on this machine.
pub fn raw_fsync(batch: usize, size: usize, duration: Duration) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut f = std::fs::File::create(dir.path().join("raw"))?;
    let chunk = vec![0x5au8; size * batch];
    let started = Instant::now();
    let mut records = 0u64;
    while started.elapsed() < duration {
        f.write_all(&chunk)?;
        f.sync_data()?;
        records += batch as u64;
    }
    Ok(records as f64 / started.elapsed().as_secs_f64())
}

/// Persons per second the embedded store alone takes in a republish:
/// `persons` residents written, then written again in publish-sized
/// chunks ([`crate::services::publish::CHUNK`]) on one thread, each
/// chunk's write then its sync — what each audited chunk costs the store
/// on an import's path (one chunk commits at a time), with no network,
/// parsing or audit: an upper bound on an import into the embedded store.
pub fn store_republish(persons: usize) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let at = crate::store::Location::Sled(dir.path().to_path_buf());
    let (_, records) = crate::gateway::open_store(&at)?;
    let district = crate::demo::generate(crate::config::Config::default().demo_seed, persons);
    let chunks = || -> Vec<Vec<Person>> {
        district
            .persons
            .chunks(crate::services::publish::CHUNK)
            .map(<[Person]>::to_vec)
            .collect()
    };
    for chunk in chunks() {
        records.upsert_all(chunk)?;
    }
    records.sync()?;
    let again = chunks();
    let started = Instant::now();
    for chunk in again {
        records.upsert_all(chunk)?;
        records.sync()?;
    }
    Ok(persons as f64 / started.elapsed().as_secs_f64())
}

fn percentiles_us(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

/// p50 and p99 (µs) of one policy decision for a department holding
/// `grants` grants on the dataset: judging the grants against the request
/// and resolving the field plan for one row.
pub fn decision(grants: usize) -> (f64, f64) {
    let spec = Dataset::Population.spec();
    let compiled: Vec<Arc<CompiledGrant>> = (0..grants)
        .map(|g| {
            let grant = Grant {
                id: format!("g{g}"),
                department: "d".into(),
                dataset: Dataset::Population.name().into(),
                operations: vec![Operation::Get.into()],
                fields: spec
                    .fields
                    .iter()
                    .skip(g % 3)
                    .map(|f| FieldGrant {
                        field: f.name.into(),
                        view: FieldView::Masked.into(),
                    })
                    .collect(),
                regions: vec![format!("3101{:02}", 5 + g % 10)],
                purposes: vec!["p".into()],
                ..Default::default()
            };
            Arc::new(
                CompiledGrant::compile(grant, &Catalog::default(), &HashSet::new(), &[])
                    .expect("a known dataset"),
            )
        })
        .collect();
    let purposes = HashMap::from([(
        "p".to_string(),
        Purpose {
            code: "p".into(),
            status: PurposeStatus::Active.into(),
            ..Default::default()
        },
    )]);
    let mut samples = Vec::with_capacity(20_000);
    for i in 0..20_000u32 {
        let row = format!("3101{:02}001001001", 5 + i % 10);
        let t = Instant::now();
        let d = authz::decide(
            &compiled,
            "d",
            Dataset::Population,
            Operation::Get,
            "p",
            &purposes,
            crate::base::clock::now(),
        )
        .expect("granted");
        std::hint::black_box(d.plan_for(&row));
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    percentiles_us(samples)
}

/// A pull's audit entry as the pipeline writes it for one GetPerson.
fn sample_entry(i: u64) -> AuditEntry {
    let fields = Dataset::Population
        .spec()
        .fields
        .iter()
        .map(|f| ReturnedField {
            field: f.name.into(),
            view: FieldView::Masked.into(),
        })
        .collect();
    AuditEntry {
        kind: EntryKind::Pull.into(),
        principal: Some(AuditPrincipal {
            department: "civil-affairs".into(),
            client_id: "civil-affairs".into(),
            token_id: "tok-civil-affairs".into(),
            cert_thumbprint: "5f3c9d0e1a2b4c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d"
                .into(),
            peer_address: "127.0.0.1:50412".into(),
            ..Default::default()
        }),
        method: "/govshare.v1.PopulationService/GetPerson".into(),
        dataset: "population".into(),
        operation: Operation::Get.into(),
        purpose: "social-assistance".into(),
        case_id: "BENCH".into(),
        decision: AuditDecision::Allow.into(),
        grants_used: vec!["demo-civil-affairs-population".into()],
        keys_returned: vec![format!("3101151990{:08}", i % 100_000_000)],
        fields,
        record_count: 1,
        ..Default::default()
    }
}

/// Fills a fresh log with `n` entries from 256 concurrent appenders and
/// reports the writer's rate, the CPU the writer and the indexer (with
/// the store's own threads) spend per entry, and proof latency at size n.
pub async fn log_scale(n: u64) -> Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let runtime = Runtime::open(
        &dir.path().join("audit"),
        &dir.path().join("keys"),
        "bench.govshare.local/audit",
        AuditOptions::default(),
    )?;
    let log = runtime.log();
    let me = Sampler::own();
    let before = me.cpu();
    let started = Instant::now();
    let appenders = 256u64;
    let mut tasks = tokio::task::JoinSet::new();
    for a in 0..appenders {
        let log = log.clone();
        tasks.spawn(async move {
            let mut i = a;
            while i < n {
                log.append(sample_entry(i)).await?;
                i += appenders;
            }
            anyhow::Ok(())
        });
    }
    for r in tasks.join_all().await {
        r?;
    }
    let wrote = started.elapsed();
    let mut indexed = log.indexed();
    indexed.wait_for(|s| *s >= n).await?;
    let all = me.cpu().since(&before);
    let per_entry = |group: &str| all.threads.get(group).copied().unwrap_or(0.0) * 1e6 / n as f64;
    // sled's flusher and the tokio blocking pool run store work too.
    let store = all
        .threads
        .iter()
        .filter(|(name, _)| !name.starts_with("audit-") && !name.starts_with("tokio-runtime"))
        .map(|(_, s)| s)
        .sum::<f64>()
        * 1e6
        / n as f64;

    let raw = raw_fsync(100, sample_len(), Duration::from_secs(2))?;
    let mut rows = Vec::new();
    let mut row = |figure: String, value: f64, unit: &str, baseline: Option<f64>, goal: &str| {
        rows.push(Row {
            ratio: baseline.filter(|b| *b > 0.0).map(|b| value / b),
            figure,
            value,
            unit: unit.into(),
            baseline,
            goal: goal.into(),
        })
    };
    row(
        "audit writer entries/s, 256 appenders (vs raw disk, batch 100)".to_string(),
        n as f64 / wrote.as_secs_f64(),
        "entries/s",
        Some(raw),
        "",
    );
    row(
        format!("audit-writer thread CPU per entry, {n} entries"),
        per_entry("audit-writer"),
        "µs",
        None,
        "",
    );
    row(
        format!("audit-indexer thread CPU per entry, {n} entries"),
        per_entry("audit-indexer"),
        "µs",
        None,
        "≤ 10 incl. store",
    );
    row(
        format!("other non-async threads (store) CPU per entry, {n} entries"),
        store,
        "µs",
        None,
        "",
    );

    let index = log.index().clone();
    let (incl, cons) = tokio::task::spawn_blocking(move || proof_latency(&index, n)).await??;
    row(
        format!("inclusion proof at {n} entries, p50"),
        incl.0,
        "µs",
        None,
        "O(log n)",
    );
    row(
        format!("inclusion proof at {n} entries, p99"),
        incl.1,
        "µs",
        None,
        "",
    );
    row(
        format!("consistency proof at {n} entries, p50"),
        cons.0,
        "µs",
        None,
        "O(log n)",
    );
    row(
        format!("consistency proof at {n} entries, p99"),
        cons.1,
        "µs",
        None,
        "",
    );
    drop(log);
    runtime.close().await?;
    Ok(rows)
}

/// The encoded size of a sample entry, for the raw-disk comparison.
fn sample_len() -> usize {
    use prost::Message;
    sample_entry(0).encoded_len() + 48
}

type Percentiles = (f64, f64);

fn proof_latency(
    index: &crate::audit::index::AuditIndex,
    n: u64,
) -> Result<(Percentiles, Percentiles)> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below.max(1)
    };
    let (mut incl, mut cons) = (Vec::new(), Vec::new());
    for _ in 0..2_000 {
        let i = next(n);
        let t = Instant::now();
        std::hint::black_box(merkle::inclusion_proof(index, i, n)?);
        incl.push(t.elapsed().as_secs_f64() * 1e6);
        let old = 1 + next(n - 1);
        let t = Instant::now();
        std::hint::black_box(merkle::consistency_proof(index, old, n)?);
        cons.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok((percentiles_us(incl), percentiles_us(cons)))
}
