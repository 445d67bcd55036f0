//! Assembles the gateway and serves it: TLS with required client
//! certificates, the data services, health (NOT_SERVING while the audit log
//! cannot be written) and reflection.

use crate::audit::AuditLog;
use crate::audit::checkpoint::{Checkpoints, LogKey, sign_if_new};
use crate::audit::index::AuditIndex;
use crate::auth::Authenticator;
use crate::auth::token::KeyRing;
use crate::bootstrap;
use crate::catalog::Catalog;
use crate::certs::ClientCa;
use crate::config::Config;
use crate::demo::DISTRICT_CODE;
use crate::geo::GridLocator;
use crate::mask::Masker;
use crate::pipeline::Pipeline;
use crate::proto::admin_service_server::AdminServiceServer;
use crate::proto::audit_service_server::AuditServiceServer;
use crate::proto::grid_service_server::GridServiceServer;
use crate::proto::legal_entity_service_server::LegalEntityServiceServer;
use crate::proto::population_service_server::PopulationServiceServer;
use crate::proto::publish_service_server::PublishServiceServer;
use crate::proto::{self, Person};
use crate::services::{admin, audit, grid, legal_entity, population, publish};
use crate::store::Store;
use anyhow::{Context, Result};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

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

/// Runs the gateway until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let store = Store::open(&cfg.store_dir())?;
    let keys = Arc::new(KeyRing::load_or_create(
        store.clone(),
        &cfg.issuer,
        &cfg.audience,
    )?);
    let (audit_log, audit_threads) =
        AuditLog::open(&cfg.audit_dir(), cfg.audit_options(), store.clone())?;
    let steps = bootstrap::first_start(&cfg, &store, &keys)?;
    let log_key = Arc::new(LogKey::load_or_create(&cfg.pki_dir(), &cfg.audit.origin)?);
    let checkpoints = Arc::new(Checkpoints::open(&cfg.audit_dir())?);
    for s in &steps {
        println!("first start: {s}");
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

    let catalog = Arc::new(Catalog::with_overrides(&cfg.catalog_override)?);
    let locator = Arc::new(GridLocator::load(&store)?);
    let pipeline = Pipeline::new(
        store.clone(),
        Authenticator::new(store.clone(), keys.clone()),
        audit_log.clone(),
        Masker::new(pseudonym_secret(&store)?),
    );

    let read =
        |path: PathBuf| std::fs::read(&path).with_context(|| format!("reading {}", path.display()));
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(cfg.tls_cert_path())?,
            read(cfg.tls_key_path())?,
        ))
        .client_ca_root(Certificate::from_pem(read(cfg.client_ca_path())?));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<PopulationServiceServer<population::PopulationApi>>()
        .await;
    health
        .set_serving::<LegalEntityServiceServer<legal_entity::LegalEntityApi>>()
        .await;
    health
        .set_serving::<GridServiceServer<grid::GridApi>>()
        .await;
    health
        .set_serving::<PublishServiceServer<publish::PublishApi>>()
        .await;
    let mut writable = audit_log.writable();
    let signer = tokio::spawn(sign_checkpoints(
        log_key.clone(),
        checkpoints.clone(),
        audit_log.index().clone(),
        audit_log.indexed(),
    ));
    tokio::spawn(async move {
        while writable.changed().await.is_ok() {
            let status = if *writable.borrow() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for svc in [
                "",
                "govshare.v1.PopulationService",
                "govshare.v1.LegalEntityService",
                "govshare.v1.GridService",
                "govshare.v1.PublishService",
            ] {
                health.set_service_status(svc, status).await;
            }
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    print_welcome(&cfg, &store, addr);

    Server::builder()
        .tls_config(tls)?
        .add_service(health_service)
        .add_service(reflection)
        .add_service(PopulationServiceServer::new(population::PopulationApi {
            pipeline: pipeline.clone(),
        }))
        .add_service(LegalEntityServiceServer::new(
            legal_entity::LegalEntityApi {
                pipeline: pipeline.clone(),
            },
        ))
        .add_service(GridServiceServer::new(grid::GridApi {
            pipeline: pipeline.clone(),
            locator: locator.clone(),
        }))
        .add_service(PublishServiceServer::new(publish::PublishApi {
            pipeline: pipeline.clone(),
            locator,
        }))
        .add_service(AdminServiceServer::new(admin::AdminApi::new(
            pipeline.clone(),
            catalog,
            ClientCa::load(&cfg.client_ca_path())?,
            admin::Settings {
                max_token_lifetime: Duration::from_secs(cfg.max_token_days * 86_400),
                request_deadline: Duration::from_secs(cfg.request_deadline_days * 86_400),
            },
        )))
        .add_service(AuditServiceServer::new(audit::AuditApi {
            pipeline: pipeline.clone(),
            log: audit_log.clone(),
            checkpoints: checkpoints.clone(),
            key: log_key.clone(),
        }))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await?;
    drop(pipeline);
    signer.abort();
    let index = audit_log.index().clone();
    drop(audit_log);
    // Every handle is gone: the writer drains, the indexer catches up, and
    // the final checkpoint covers everything that was acknowledged.
    let size = tokio::task::spawn_blocking(move || audit_threads.join()).await?;
    if sign_if_new(&log_key, &checkpoints, &index, size)? {
        println!("signed a final audit checkpoint at size {size}");
    }
    store.sync()?;
    println!("govshare stopped");
    Ok(())
}

/// Signs a checkpoint at most ~1 s after new entries are indexed.
async fn sign_checkpoints(
    key: Arc<LogKey>,
    store: Arc<Checkpoints>,
    index: AuditIndex,
    mut indexed: tokio::sync::watch::Receiver<u64>,
) {
    while indexed.changed().await.is_ok() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let size = *indexed.borrow_and_update();
        let (key, store, index) = (key.clone(), store.clone(), index.clone());
        match tokio::task::spawn_blocking(move || sign_if_new(&key, &store, &index, size)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "signing an audit checkpoint failed"),
            Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
        }
    }
}

fn print_welcome(cfg: &Config, store: &Store, addr: std::net::SocketAddr) {
    let pki = cfg.pki_dir();
    let p = pki.display();
    let example_id = store
        .scan::<Person>(DISTRICT_CODE, None, 1)
        .ok()
        .and_then(|v| v.into_iter().next())
        .and_then(|(_, p)| p.id_number)
        .unwrap_or_else(|| "11010519491231002X".into());
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
