//! Assembles the gateway and serves it: TLS with required client
//! certificates, the data services, health (NOT_SERVING while the audit log
//! cannot be written) and reflection.

use crate::audit;
use crate::auth::Authenticator;
use crate::auth::token::KeyRing;
use crate::bootstrap;
use crate::catalog::Catalog;
use crate::certs::ClientCa;
use crate::config::Config;
use crate::directory::{Directory, RoleDepartments};
use crate::mask::Masker;
use crate::pipeline::Pipeline;
use crate::proto;
use crate::proto::admin_service_server::AdminServiceServer;
use crate::proto::audit_service_server::AuditServiceServer;
use crate::proto::grid_service_server::GridServiceServer;
use crate::proto::legal_entity_service_server::LegalEntityServiceServer;
use crate::proto::population_service_server::PopulationServiceServer;
use crate::proto::publish_service_server::PublishServiceServer;
use crate::services::{admin, audit as audit_api, grid, legal_entity, population, publish};
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
    let (store, records) = crate::store::open(&cfg.store_dir())?;
    let keys = Arc::new(KeyRing::load_or_create(
        store.clone(),
        &cfg.issuer,
        &cfg.audience,
    )?);
    let steps = bootstrap::first_start(&cfg, &store, &records, &keys)?;
    let audit = audit::Runtime::open(&cfg)?;
    let audit_log = audit.log();
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

    if let Some(hint) = bootstrap::enrolment_hint(&cfg, &store)? {
        println!("first start: {hint}");
    }
    let catalog = Arc::new(Catalog::with_overrides(&cfg.catalog_override)?);
    let directory = Arc::new(Directory::new(
        store.clone(),
        catalog,
        RoleDepartments {
            admin: cfg.admin_departments.clone(),
            auditor: cfg.auditor_departments.clone(),
        },
    )?);
    let pipeline = Pipeline::new(
        records,
        directory.clone(),
        Authenticator::new(directory, keys.clone()),
        audit_log.clone(),
        Masker::new(pseudonym_secret(&store)?),
    )?;

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
    health
        .set_serving::<AuditServiceServer<audit_api::AuditApi>>()
        .await;
    let health_task = tokio::spawn(follow_health(health, audit_log.health().clone()));
    let control = crate::control::serve(
        &crate::control::socket_path(&cfg.data_dir),
        crate::control::Control {
            store: store.clone(),
            log: audit_log.clone(),
            keys: keys.clone(),
            client_ca: ClientCa::load(&cfg.client_ca_path())?,
            roles: RoleDepartments {
                admin: cfg.admin_departments.clone(),
                auditor: cfg.auditor_departments.clone(),
            },
            token_lifetime: Duration::from_secs(cfg.max_token_days * 86_400),
        },
    )?;
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
        }))
        .add_service(PublishServiceServer::new(publish::PublishApi {
            pipeline: pipeline.clone(),
        }))
        .add_service(AdminServiceServer::new(admin::AdminApi::new(
            pipeline.clone(),
            ClientCa::load(&cfg.client_ca_path())?,
            admin::Settings {
                max_token_lifetime: Duration::from_secs(cfg.max_token_days * 86_400),
                request_deadline: Duration::from_secs(cfg.request_deadline_days * 86_400),
            },
        )))
        .add_service(AuditServiceServer::new(audit_api::AuditApi {
            pipeline: pipeline.clone(),
            log: audit_log.clone(),
        }))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await?;
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

/// Keeps the health service in step with the audit log: the data services
/// are NOT_SERVING while the log cannot be written; the audit service also
/// while the index lags or a sealed segment is damaged.
async fn follow_health(health: tonic_health::server::HealthReporter, log: audit::Health) {
    const DATA: [&str; 5] = [
        "",
        "govshare.v1.PopulationService",
        "govshare.v1.LegalEntityService",
        "govshare.v1.GridService",
        "govshare.v1.PublishService",
    ];
    let audit::Health {
        mut writable,
        mut indexing,
        mut scrubbed,
    } = log;
    loop {
        let serving = |ok: bool| {
            if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        let w = *writable.borrow_and_update();
        let audit_ok = w && *indexing.borrow_and_update() && *scrubbed.borrow_and_update();
        for svc in DATA {
            health.set_service_status(svc, serving(w)).await;
        }
        health
            .set_service_status("govshare.v1.AuditService", serving(audit_ok))
            .await;
        tokio::select! {
            r = writable.changed() => if r.is_err() { return },
            r = indexing.changed() => if r.is_err() { return },
            r = scrubbed.changed() => if r.is_err() { return },
        }
    }
}

fn print_welcome(cfg: &Config, store: &Store, addr: std::net::SocketAddr) {
    let pki = cfg.pki_dir();
    let p = pki.display();
    let example_id = bootstrap::example_id(store).unwrap_or_else(|| "11010519491231002X".into());
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
