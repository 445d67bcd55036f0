//! Assembles the gateway and serves it: the gRPC listener (mutual TLS,
//! every govshare service, health, reflection v1 and v1alpha) behind the
//! transport guard, the plain-HTTP ops listener, the audit log's runtime
//! and the local control socket — and stops it in order.

pub mod first_start;
pub mod pki;
pub mod restore;

use crate::audit;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::control::certs::ClientCa;
use crate::control::directory::Directory;
use crate::control::keys::KeyRing;
use crate::control::store::Store;
use crate::datasets::catalog::Catalog;
use crate::datasets::mask::Masker;
use crate::pipeline::{Pipeline, RecordStore};
use crate::proto;
use crate::proto::admin_service_server::AdminServiceServer;
use crate::proto::audit_service_server::AuditServiceServer;
use crate::proto::correction_service_server::CorrectionServiceServer;
use crate::proto::grid_service_server::GridServiceServer;
use crate::proto::legal_entity_service_server::LegalEntityServiceServer;
use crate::proto::population_service_server::PopulationServiceServer;
use crate::proto::publish_service_server::PublishServiceServer;
use crate::proto::resident_service_server::ResidentServiceServer;
use crate::proto::v2::grid_service_server::GridServiceServer as GridServiceV2;
use crate::proto::v2::legal_entity_service_server::LegalEntityServiceServer as LegalEntityServiceV2;
use crate::proto::v2::population_service_server::PopulationServiceServer as PopulationServiceV2;
use crate::services::data::DataApi;
use crate::services::{admin, audit as audit_api, corrections, publish, resident};
use crate::transport::{console, control_socket, guard, listener, ops};
use anyhow::{Context, Result};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Server;
use tonic_health::ServingStatus;

/// HTTP/2 windows: a large connection window (h2's budget against floods
/// of small DATA frames is half of it) and a small per-stream window, so a
/// fast client stream is slowed by flow control, never reset with
/// `too_many_data_frames`.
const CONNECTION_WINDOW: u32 = 16 << 20;
const STREAM_WINDOW: u32 = 64 << 10;
const MAX_STREAMS_PER_CONNECTION: u32 = 200;

/// The Prometheus recorder, installed once per process.
fn metrics_handle() -> Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let seconds = [
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5, 5.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)?
        .set_buckets_for_metric(
            Matcher::Full("govshare_audit_batch_entries".into()),
            &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

const PSEUDONYM_SECRET: &str = "pseudonym_secret";

fn pseudonym_secret(store: &Store) -> Result<[u8; 32]> {
    if let Some(s) = store.meta(PSEUDONYM_SECRET)? {
        return s
            .as_slice()
            .try_into()
            .context("stored pseudonym secret has the wrong length");
    }
    let s: [u8; 32] = rand::random();
    store.put_meta(PSEUDONYM_SECRET, &s)?;
    store.sync()?;
    Ok(s)
}

/// Opens the store as the planes see it: the control plane's typed store
/// and the pipeline's records, over one backend.
pub fn open_store(at: &crate::store::Location) -> Result<(Store, RecordStore)> {
    let backend = crate::store::open(at)?;
    Ok((Store::new(backend.clone()), RecordStore::new(backend)))
}

/// Holds the data dir for this process: its audit log has one writer. (The
/// sled store's own lock used to stand in for this; a shared database does
/// not.) An advisory `flock` on the directory itself, released when the
/// process ends, however it ends.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let handle = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    if unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "another govshare process is serving from {}: one process per data dir",
            dir.display()
        );
    }
    Ok(handle)
}

/// Runs the gateway until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    // First, so every component's metrics from the start are recorded.
    let metrics = metrics_handle()?;
    // A demo may run ahead of the wall clock (`demo_clock_offset`).
    crate::base::clock::set_offset(cfg.demo_clock_offset.as_secs() as i64);
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    restore::check_finished(&cfg.data_dir)?;
    // The store holds the token-signing key, the pseudonym secret and every
    // record; under a umask of 022 its files are world-readable. The data
    // dir is the gateway's alone, whatever the deployment set up.
    // A volume the gateway does not own (a Kubernetes fsGroup mount) cannot
    // be changed: then it says so and runs.
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
    {
        tracing::warn!(
            dir = %cfg.data_dir.display(),
            error = %e,
            "the data dir could not be made private (mode 0700): other local users may read the store and its keys"
        );
    }
    let _one_process = lock_data_dir(&cfg.data_dir)?;
    let (store, records) = open_store(&cfg.store_location())?;
    first_start::check_mode(&cfg, &store)?;
    first_start::check_log(&cfg, &store)?;
    admin::remove_stale_snapshots(&cfg.snapshot_work_dir());
    let mut steps = first_start::make_pki(&cfg)?;
    let audit = cfg.open_audit(store.backend())?;
    let audit_log = audit.log();
    // Claimed before this start writes anything to the store.
    first_start::bind_log(&cfg, &store, audit_log.verifier_key())?;
    let keys = Arc::new(KeyRing::load_or_create(
        store.clone(),
        &cfg.issuer,
        &cfg.audience,
    )?);
    steps.extend(first_start::seed(&cfg, &store, &records, &keys)?);
    for s in &steps {
        println!("first start: {s}");
    }
    // A moved clock changes what the log's times mean: the log says so.
    if !cfg.demo_clock_offset.is_zero() {
        audit_log
            .append(proto::AuditEntry {
                kind: proto::EntryKind::Admin.into(),
                method: "demo_clock_offset".into(),
                decision: proto::AuditDecision::Allow.into(),
                message: format!(
                    "this demo gateway's clock runs {} s ({:.1} days) ahead of the wall clock",
                    cfg.demo_clock_offset.as_secs(),
                    cfg.demo_clock_offset.as_secs_f64() / 86_400.0
                ),
                ..Default::default()
            })
            .await?;
    }
    if !steps.is_empty() {
        audit_log
            .append(proto::AuditEntry {
                kind: proto::EntryKind::Admin.into(),
                method: "bootstrap".into(),
                decision: proto::AuditDecision::Allow.into(),
                message: steps.join("; "),
                ..Default::default()
            })
            .await?;
    }

    if let Some(hint) = first_start::enrolment_hint(&cfg, &store)? {
        println!("first start: {hint}");
    }
    let catalog = Arc::new(Catalog::with_overrides(&cfg.catalog_override)?);
    let directory = Arc::new(Directory::new(
        store.clone(),
        catalog,
        cfg.role_departments(),
    )?);
    let pipeline = Pipeline::new(
        records,
        directory.clone(),
        Authenticator::new(directory, keys.clone()),
        audit_log.clone(),
        Masker::new(pseudonym_secret(&store)?),
    )?;

    let read = |key: &str, path: PathBuf| {
        std::fs::read(&path).with_context(|| format!("{key}: reading {}", path.display()))
    };
    let (cert, key, client_ca) = (
        read("tls_cert", cfg.tls_cert_path())?,
        read("tls_key", cfg.tls_key_path())?,
        read("client_ca", cfg.client_ca_path())?,
    );
    let tls = Arc::new(listener::tls_config(&cert, &key, &client_ca)?);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<PopulationServiceServer<DataApi>>()
        .await;
    health
        .set_serving::<LegalEntityServiceServer<DataApi>>()
        .await;
    health.set_serving::<GridServiceServer<DataApi>>().await;
    health.set_serving::<PopulationServiceV2<DataApi>>().await;
    health.set_serving::<LegalEntityServiceV2<DataApi>>().await;
    health.set_serving::<GridServiceV2<DataApi>>().await;
    health
        .set_serving::<PublishServiceServer<publish::PublishApi>>()
        .await;
    health
        .set_serving::<AuditServiceServer<audit_api::AuditApi>>()
        .await;
    health
        .set_serving::<ResidentServiceServer<resident::ResidentApi>>()
        .await;
    health
        .set_serving::<CorrectionServiceServer<corrections::CorrectionApi>>()
        .await;
    let health_task = tokio::spawn(follow_health(
        health,
        audit_log.health().clone(),
        probe_store(store.clone()),
    ));
    let control = control_socket::serve(
        &control_socket::socket_path(&cfg.data_dir),
        control_socket::Control {
            store: store.clone(),
            log: audit_log.clone(),
            keys: keys.clone(),
            client_ca: ClientCa::load(&cfg.client_ca_path())?,
            roles: cfg.role_departments(),
            token_lifetime: Duration::from_secs(cfg.max_token_days * 86_400),
            gate: pipeline.gate().clone(),
        },
    )?;
    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure()).build_v1()?;
    let reflection_v1alpha =
        reflection(tonic_reflection::server::Builder::configure()).build_v1alpha()?;

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (kill_tx, kill) = tokio::sync::watch::channel(false);
    let ops_listener = match tokio::net::TcpListener::bind(cfg.ops_listen).await {
        Ok(l) => l,
        // A gateway on an ephemeral gRPC port (tests, side-by-side runs)
        // takes an ephemeral ops port too when the configured one is taken;
        // anywhere else a taken port is an error, not a surprise.
        Err(e) if cfg.listen.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(ops_listen = %cfg.ops_listen, "ops port in use; using an ephemeral one (listen is ephemeral too)");
            tokio::net::TcpListener::bind((cfg.ops_listen.ip(), 0)).await?
        }
        Err(e) => {
            return Err(e).with_context(|| format!("binding the ops listener {}", cfg.ops_listen));
        }
    };
    let ops_addr = ops_listener.local_addr()?;
    let gauged = pipeline.clone();
    let ops_app = ops::router(ops::Ops {
        metrics,
        log: audit_log.clone(),
        store: store.clone(),
        keys: keys.clone(),
        data_dir: cfg.data_dir.clone(),
        token_cache: Arc::new(move || gauged.authenticator().cached_tokens()),
    });
    let mut ops_stop = stop.clone();
    let ops_task = tokio::spawn(async move {
        let served = axum::serve(ops_listener, ops_app)
            .with_graceful_shutdown(async move {
                let _ = ops_stop.changed().await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the ops listener failed");
        }
    });

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let incoming = listener::accept(
        listener,
        tls,
        listener::Limits {
            max_connections: cfg.grpc.max_connections,
            handshake_timeout: cfg.grpc.handshake_timeout,
            idle_timeout: cfg.grpc.idle_timeout,
        },
        stop.clone(),
        kill.clone(),
    );
    let console_task = match cfg.console_listen {
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("console_listen: binding {at}"))?;
            let console_addr = l.local_addr()?;
            let incoming = listener::accept(
                l,
                Arc::new(listener::console_tls_config(&cert, &key, &client_ca)?),
                // Browsers hold few connections; one that goes quiet for a
                // minute is closed (a live page's keep-alives keep it open).
                listener::Limits {
                    max_connections: 256,
                    handshake_timeout: cfg.grpc.handshake_timeout,
                    idle_timeout: Duration::from_secs(60),
                },
                stop.clone(),
                kill.clone(),
            );
            let router = console::Console::new(
                pipeline.clone(),
                audit_log.clone(),
                console::Settings {
                    session_idle: cfg.console.session_idle,
                    session_max: cfg.console.session_max,
                    witnesses: cfg.audit.witness.iter().map(|w| w.key.clone()).collect(),
                },
            )
            .router();
            println!("console listening on https://{console_addr}");
            Some(tokio::spawn(console::serve(router, incoming)))
        }
        None => None,
    };
    // Built before the welcome, so its metric series exist by the time a
    // caller (or Prometheus) learns the gateway is up.
    let guard_layer = guard::GuardLayer::new(
        pipeline.clone(),
        cfg.grpc.max_in_flight,
        cfg.grpc.max_message_bytes,
    );
    println!("ops listening on {ops_addr}");
    print_welcome(&cfg, &store, addr);

    let max_message = cfg.grpc.max_message_bytes;
    macro_rules! limited {
        ($server:expr) => {
            $server
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(64 << 20)
        };
    }
    let grace = cfg.shutdown_grace;
    let data = DataApi {
        pipeline: pipeline.clone(),
    };
    Server::builder()
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_max_local_error_reset_streams(Some(1024))
        .http2_max_header_list_size(guard::MAX_HEADER_LIST)
        .layer(guard_layer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limited!(PopulationServiceServer::new(data.clone())))
        .add_service(limited!(LegalEntityServiceServer::new(data.clone())))
        .add_service(limited!(GridServiceServer::new(data.clone())))
        .add_service(limited!(PopulationServiceV2::new(data.clone())))
        .add_service(limited!(LegalEntityServiceV2::new(data.clone())))
        .add_service(limited!(GridServiceV2::new(data)))
        .add_service(limited!(PublishServiceServer::new(publish::PublishApi {
            pipeline: pipeline.clone(),
        })))
        .add_service(limited!(AdminServiceServer::new(admin::AdminApi::new(
            pipeline.clone(),
            audit_log.clone(),
            ClientCa::load(&cfg.client_ca_path())?,
            admin::Settings {
                max_token_lifetime: Duration::from_secs(cfg.max_token_days * 86_400),
                request_deadline: Duration::from_secs(cfg.request_deadline_days * 86_400),
                snapshot: admin::SnapshotSettings {
                    recipients: cfg.snapshot_recipients()?,
                    work_dir: cfg.snapshot_work_dir(),
                    pki_dir: cfg.pki_dir(),
                    busy: Default::default(),
                    checkpoint_wait: crate::audit::signer::longest_checkpoint_delay(
                        cfg.audit.checkpoint_interval,
                        cfg.audit.witness.len(),
                    ),
                },
            },
        ))))
        .add_service(limited!(AuditServiceServer::new(audit_api::AuditApi {
            pipeline: pipeline.clone(),
            log: audit_log.clone(),
        })))
        .add_service(limited!(ResidentServiceServer::new(resident::ResidentApi {
            pipeline: pipeline.clone(),
            log: audit_log.clone(),
        })))
        .add_service(limited!(CorrectionServiceServer::new(
            corrections::CorrectionApi::new(pipeline.clone(), cfg.corrections.response_days)
        )))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(incoming),
            async move {
                shutdown.await;
                tracing::info!(grace = ?grace, "stopping: no new connections; draining in-flight calls");
                let _ = stop_tx.send(true);
                // Calls still running after the grace period are cut.
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let _ = kill_tx.send(true);
                });
            },
        )
        .await?;
    let _ = ops_task.await;
    if let Some(t) = console_task {
        t.abort();
    }
    drop(pipeline);
    control.abort();
    health_task.abort();
    drop(audit_log);
    // Every handle is gone: the writer drains, the indexer catches up, and
    // the final checkpoint covers everything that was acknowledged.
    let size = audit.close().await?;
    println!("audit log closed at {size} entries");
    store.sync()?;
    println!("govshare stopped");
    Ok(())
}

/// How often the store is asked whether it answers (a shared database can
/// go away; the embedded store answers from memory).
const STORE_PROBE_EVERY: Duration = Duration::from_secs(1);

/// `true` while the store answers a read; it stops with the health service.
fn probe_store(store: Store) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(true);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(STORE_PROBE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !tx.is_closed() {
            every.tick().await;
            let store = store.clone();
            let ok = matches!(
                tokio::task::spawn_blocking(move || store.epoch()).await,
                Ok(Ok(_))
            );
            if tx.send_if_modified(|was| std::mem::replace(was, ok) != ok) {
                if ok {
                    tracing::info!("the store answers again");
                } else {
                    tracing::error!(
                        "the store does not answer: data and audit services are NOT_SERVING"
                    );
                }
            }
        }
    });
    rx
}

/// Keeps the health service in step with the audit log and the store: the
/// data services are NOT_SERVING while the log cannot be written or is
/// behind its witnesses, or the store does not answer; the audit service
/// also while the index lags or a sealed segment is damaged.
async fn follow_health(
    health: tonic_health::server::HealthReporter,
    log: audit::Health,
    mut store_ok: tokio::sync::watch::Receiver<bool>,
) {
    const DATA: [&str; 10] = [
        "",
        "govshare.v1.PopulationService",
        "govshare.v1.LegalEntityService",
        "govshare.v1.GridService",
        "govshare.v2.PopulationService",
        "govshare.v2.LegalEntityService",
        "govshare.v2.GridService",
        "govshare.v1.PublishService",
        "govshare.v1.ResidentService",
        "govshare.v1.CorrectionService",
    ];
    let audit::Health {
        mut writable,
        mut indexing,
        mut scrubbed,
        mut behind,
    } = log;
    loop {
        let serving = |ok: bool| {
            if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        let w = *writable.borrow_and_update() && *store_ok.borrow_and_update();
        let audit_ok = w && *indexing.borrow_and_update() && *scrubbed.borrow_and_update();
        let releasing = w && behind.borrow_and_update().is_none();
        for svc in DATA {
            health.set_service_status(svc, serving(releasing)).await;
        }
        health
            .set_service_status("govshare.v1.AuditService", serving(audit_ok))
            .await;
        tokio::select! {
            r = writable.changed() => if r.is_err() { return },
            r = indexing.changed() => if r.is_err() { return },
            r = scrubbed.changed() => if r.is_err() { return },
            r = behind.changed() => if r.is_err() { return },
            r = store_ok.changed() => if r.is_err() { return },
        }
    }
}

fn print_welcome(cfg: &Config, store: &Store, addr: std::net::SocketAddr) {
    let pki = cfg.pki_dir();
    let p = pki.display();
    let example_id =
        crate::demo::seed::example_id(store).unwrap_or_else(|| "11010519491231002X".into());
    println!("govshare listening on {addr} (node {})", cfg.node_id);
    println!("dev PKI, client certificates and tokens: {p}");
    println!("try (any gRPC client with TLS client certificates; the server offers reflection):");
    println!(
        "  grpcurl -cacert {p}/ca.pem -cert {p}/civil-affairs.pem -key {p}/civil-affairs.key -authority localhost \\\n    \
         -H \"authorization: Bearer $(cat {p}/civil-affairs.token)\" \\\n    \
         -d '{{\"context\":{{\"purpose\":\"social-assistance\",\"case_id\":\"CASE-1\"}},\"id_number\":\"{example_id}\"}}' \\\n    \
         {addr} govshare.v1.PopulationService/GetPerson"
    );
}
