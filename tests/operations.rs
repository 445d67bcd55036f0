//! Running it like a service (issue "Run it like a service"): config,
//! probes, metrics, reflection, connection hygiene, size limits, fast
//! publish streams, graceful shutdown and bulk import — each tried the way
//! an operator or a careless client would.

mod common;

use common::{Gateway, cli, ctx, district, list_all, req};
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::publish_service_client::PublishServiceClient;
use govshare::proto::*;
use std::path::Path;
use std::time::Duration;
use tonic::Code;

fn get(id: &str) -> GetPersonRequest {
    GetPersonRequest {
        context: ctx("social-assistance"),
        id_number: id.into(),
    }
}

#[test]
fn config_errors_name_the_key_and_the_environment_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("g.toml");
    let check = |text: &str, env: &[(&str, &str)]| {
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_govshare"))
            .args(["config", "check"])
            .arg(&file)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let demo = "demo = true\n";
    assert!(check(demo, &[]).0);
    let (ok, out) = check("demo = true\nlisten_addr = \"x\"\n", &[]);
    assert!(!ok && out.contains("listen_addr"), "{out}");
    let (ok, out) = check("demo = true\n[grpc]\nmax_in_flight = \"lots\"\n", &[]);
    assert!(!ok && out.contains("max_in_flight"), "{out}");
    let (ok, out) = check("listen = \"127.0.0.1:1\"\n", &[]);
    assert!(
        !ok && out.contains("tls_cert"),
        "production needs its files: {out}"
    );
    let (ok, out) = check(demo, &[("GOVSHARE_GRPC__MAX_IN_FLIGHT", "0")]);
    assert!(!ok && out.contains("grpc.max_in_flight"), "{out}");
    let (ok, out) = check(demo, &[("GOVSHARE_LISTN", "x")]);
    assert!(
        !ok && out.contains("listn"),
        "a misspelt variable is refused: {out}"
    );
    // The shipped example is accepted, and documents every key.
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/govshare.example.toml");
    let (ok, out) = cli(&["config", "check", example.to_str().unwrap()]);
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&example).unwrap();
    for k in govshare::config::KEYS {
        let leaf = k.key.rsplit('.').next().unwrap();
        assert!(
            text.contains(leaf),
            "deploy/govshare.example.toml does not mention {}",
            k.key
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_reach_the_running_gateway() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let text = format!(
        "demo = true\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndemo_persons = 200\nnode_id = \"from-file\"\n",
        dir.display()
    );
    let gw = Gateway::start_with_env(&dir, &text, &[("GOVSHARE_NODE_ID", "from-env")]);
    PopulationServiceClient::new(gw.channel("civil-affairs").await)
        .get_person(req(get("11010519491231002X"), &gw.token("civil-affairs")))
        .await
        .unwrap_err();
    let (_, last) = gw.audit_entries().pop().unwrap();
    assert_eq!(last.node, "from-env");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_follow_the_audit_log_and_metrics_carry_the_families() {
    // One segment per commit, so the next commit opens a predictable file.
    let gw = Gateway::start("[audit]\nsegment_bytes = 1");
    assert_eq!(gw.ops_get("/livez").await.0, 200);
    assert_eq!(gw.ops_get("/readyz").await.0, 200);
    let id = district().persons[0].id_number.clone().unwrap();
    let mut c = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let token = gw.token("civil-affairs");
    c.get_person(req(get(&id), &token)).await.unwrap();
    // An authentication failure, for its counter.
    c.get_person(get(&id)).await.unwrap_err();

    let (status, metrics) = gw.ops_get("/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "govshare_grpc_requests_total",
        "govshare_grpc_request_duration_seconds",
        "govshare_pulls_total",
        "govshare_records_released_total",
        "govshare_audit_entries_total",
        "govshare_audit_batch_entries",
        "govshare_audit_fsync_seconds",
        "govshare_audit_log_bytes",
        "govshare_audit_log_entries",
        "govshare_audit_writable",
        "govshare_audit_index_lag_entries",
        "govshare_checkpoint_age_seconds",
        "govshare_auth_failures_total",
        "govshare_token_cache_entries",
        "govshare_store_bytes",
        "govshare_connections_open",
    ] {
        assert!(metrics.contains(family), "/metrics lacks {family}");
    }
    assert!(
        metrics.contains("decision=\"allow\""),
        "pulls are labelled by decision"
    );

    // The disk "fills": the next segment is /dev/full.
    let next = gw.audit_entries().len();
    let segment = gw.dir.join("audit").join(format!("{next:020}.seg"));
    std::os::unix::fs::symlink("/dev/full", &segment).unwrap();
    let err = c.get_person(req(get(&id), &token)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let (status, body) = gw.ops_get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    // Space returns; no pull is made: readiness comes back on its own.
    std::fs::remove_file(&segment).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.ops_get("/readyz").await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never recovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_document_verifies_the_gateways_tokens() {
    let gw = Gateway::start("");
    let (status, body) = gw.ops_get("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&body).unwrap();
    let token = gw.token("civil-affairs");
    let kid = jsonwebtoken::decode_header(token.trim())
        .unwrap()
        .kid
        .unwrap();
    let jwk = jwks.find(&kid).expect("the token's key is published");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["govshare"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &v,
    )
    .expect("another system verifies the token with the published key");
    assert_eq!(claims.claims["dept"], "civil-affairs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_and_v1alpha_both_list_every_service() {
    let gw = Gateway::start("");
    let want = [
        "govshare.v1.PopulationService",
        "govshare.v1.LegalEntityService",
        "govshare.v1.GridService",
        "govshare.v1.PublishService",
        "govshare.v1.AdminService",
        "govshare.v1.AuditService",
        "grpc.health.v1.Health",
    ];
    let channel = gw.channel("civil-affairs").await;
    // The same ListServices call through each version's generated client.
    macro_rules! listed_by {
        ($version:ident) => {{
            use tonic_reflection::pb::$version::ServerReflectionRequest;
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            let mut answers = ServerReflectionClient::new(channel.clone())
                .server_reflection_info(tokio_stream::iter(vec![ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                }]))
                .await
                .unwrap()
                .into_inner();
            let Some(MessageResponse::ListServicesResponse(l)) =
                answers.message().await.unwrap().unwrap().message_response
            else {
                panic!("{} did not list services", stringify!($version))
            };
            let names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
            for w in want {
                assert!(
                    names.iter().any(|n| n == w),
                    "{} lacks {w}: {names:?}",
                    stringify!($version)
                );
            }
        }};
    }
    listed_by!(v1);
    listed_by!(v1alpha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_closed_within_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start("[grpc]\nhandshake_timeout = \"1s\"");
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // Half a ClientHello, then nothing.
    silent
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    let closed = matches!(read, Ok(Ok(0)) | Ok(Err(_)));
    assert!(closed, "the server closed the socket: {read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "within the timeout"
    );
    // And the gateway still serves others.
    PopulationServiceClient::new(gw.channel("civil-affairs").await)
        .get_person(req(
            get(district().persons[0].id_number.as_ref().unwrap()),
            &gw.token("civil-affairs"),
        ))
        .await
        .unwrap();
}

/// Raw bytes as a gRPC message, for bodies no protobuf encoder would write.
#[derive(Clone, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_undecodable_requests_name_the_problem_and_are_audited() {
    let gw = Gateway::start("");
    let token = gw.token("civil-affairs");
    let mut c = PopulationServiceClient::new(gw.channel("civil-affairs").await)
        .max_encoding_message_size(64 << 20);
    let mut big = get(district().persons[0].id_number.as_ref().unwrap());
    big.context.as_mut().unwrap().operator = "x".repeat(10 << 20);
    let err = c.get_person(req(big, &token)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("grpc.max_message_bytes"),
        "{}",
        err.message()
    );
    let (_, e) = gw.audit_entries().pop().unwrap();
    assert_eq!(
        (e.kind, e.reason_code.as_str()),
        (EntryKind::Pull as i32, "MESSAGE_TOO_LARGE")
    );
    assert_eq!(e.principal.unwrap().department, "civil-affairs");

    let mut grpc = tonic::client::Grpc::new(gw.channel("civil-affairs").await);
    grpc.ready().await.unwrap();
    let garbage = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a];
    let err = grpc
        .unary::<Vec<u8>, Vec<u8>, Raw>(
            req(garbage, &token),
            "/govshare.v1.PopulationService/GetPerson".parse().unwrap(),
            Raw,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("malformed"), "{}", err.message());
    let (_, e) = gw.audit_entries().pop().unwrap();
    assert_eq!(e.reason_code, "MALFORMED_REQUEST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_ten_thousand_record_publish_stream_completes_with_its_summary() {
    let gw = Gateway::start("");
    let d = district();
    let records: Vec<Person> = d.persons.iter().cycle().take(10_000).cloned().collect();
    let chunk = govshare::services::publish::CHUNK;
    let summary = publish(&gw, records)
        .await
        .expect("no reset: too_many_data_frames must not kill a fast stream");
    assert_eq!((summary.accepted, summary.rejected), (10_000, 0));
    assert_eq!(
        summary.receipts.len(),
        10_000usize.div_ceil(chunk),
        "one audited chunk per {chunk} records"
    );
}

/// One UpsertPersons stream of `records` as the population's source.
async fn publish(gw: &Gateway, records: Vec<Person>) -> Result<PublishSummary, tonic::Status> {
    PublishServiceClient::new(gw.channel("public-security").await)
        .upsert_persons(req(
            tokio_stream::iter(records),
            &gw.token("public-security"),
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// Chunks commit in stream order though the next is read while one
/// commits: a person sent in the first chunk and again in the second ends
/// as the second says, whatever the two commits' timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sent_in_two_chunks_of_one_stream_ends_as_the_later_one_says() {
    let gw = Gateway::start("");
    let chunk = govshare::services::publish::CHUNK;
    let d = district();
    let mut first = d.persons[0].clone();
    first.name = Some("先".into());
    let mut later = first.clone();
    later.name = Some("后".into());
    let mut records = vec![first];
    records.extend(d.persons.iter().skip(1).cycle().take(chunk).cloned());
    records.push(later);
    let summary = publish(&gw, records).await.unwrap();
    assert_eq!(summary.receipts.len(), 2, "two chunks");
    let id = d.persons[0].id_number.clone().unwrap();
    let person = common::get_person(&gw, "public-security", "public-security", &id)
        .await
        .unwrap()
        .person
        .unwrap();
    assert_eq!(person.name.as_deref(), Some("后"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_pulls_exits_zero_with_every_acknowledged_pull_audited() {
    let mut gw = Gateway::start("shutdown_grace = \"3s\"");
    let channel = gw.channel("civil-affairs").await;
    let token = gw.token("civil-affairs");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (channel, token, stop) = (channel.clone(), token.clone(), stop.clone());
        workers.spawn(async move {
            let mut c = PopulationServiceClient::new(channel);
            let ids = district().persons;
            let mut receipts = Vec::new();
            let mut i = w;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c
                    .get_person(req(
                        get(ids[i % ids.len()].id_number.as_ref().unwrap()),
                        &token,
                    ))
                    .await
                {
                    Ok(r) => receipts.push(r.into_inner().receipt.unwrap()),
                    Err(_) => break,
                }
                i += 8;
            }
            receipts
        });
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stopping = tokio::task::spawn_blocking(move || {
        let ok = gw.stop();
        (ok, gw)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let receipts: Vec<AuditReceipt> = workers.join_all().await.into_iter().flatten().collect();
    let (exited_zero, gw) = stopping.await.unwrap();
    assert!(exited_zero, "SIGTERM is a clean exit");
    assert!(receipts.len() > 10, "{} pulls", receipts.len());
    let entries = gw.audit_entries();
    for r in &receipts {
        let (bytes, _) = &entries[r.leaf_index as usize];
        assert_eq!(
            govshare::audit::leaf_hash(bytes).to_vec(),
            r.leaf_hash,
            "acknowledged pull {} is on disk",
            r.leaf_index
        );
    }
    let (ok, out) = cli(&[
        "audit",
        "verify",
        "--data-dir",
        gw.dir.to_str().unwrap(),
        "--strict",
    ]);
    assert!(ok, "a final checkpoint covers every entry: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_bad_lines_lands_the_good_ones_and_reports_the_bad_by_line() {
    let gw = Gateway::start("");
    let tmp = tempfile::tempdir().unwrap();
    let (ok, out) = cli(&[
        "demo-data",
        "--persons",
        &common::TEST_PERSONS.to_string(),
        "--seed",
        &common::SEED.to_string(),
        "--format",
        "jsonl",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let file = tmp.path().join("population.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let total = lines.len();
    lines[2] = "{\"idNumber\": \"110105194912310021\"}".into(); // bad check character
    lines[6] = "this is not JSON".into();
    lines[10] = lines[10].replace(
        &lines[10][lines[10].find("residenceGrid").unwrap() + 16
            ..lines[10].find("residenceGrid").unwrap() + 31],
        "310115999001001",
    );
    // Bad lines further on, the last among them: the command hands its
    // parsed lines on in batches, and the last batch is a short one.
    lines[600] = "{\"idNumber\": 7}".into();
    lines[total - 1] = "{\"nameless\": \"field\"}".into();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let rejects = tmp.path().join("rejects.tsv");
    let (addr, pki) = (gw.addr.to_string(), gw.pki(""));
    let import = |file: &Path, more: &[&str]| {
        let mut args = vec!["import", "--addr", &addr, "--pki", pki.to_str().unwrap()];
        args.extend(["--dataset", "population", file.to_str().unwrap()]);
        args.extend(more);
        cli(&args)
    };
    let (ok, out) = import(&file, &["--rejects", rejects.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{} accepted, 5 rejected", total - 5)),
        "{out}"
    );
    let listed = std::fs::read_to_string(&rejects).unwrap();
    let bad_lines: Vec<&str> = listed
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let last = total.to_string();
    assert_eq!(bad_lines, ["3", "7", "11", "601", &last], "{listed}");
    assert!(listed.contains("does not exist"), "{listed}");
    // CSV with a header works too.
    let csv = tmp.path().join("more.csv");
    let p = &district().persons[0];
    std::fs::write(
        &csv,
        format!(
            "id_number,name,residence_grid\n{},改名,{}\n",
            p.id_number.as_ref().unwrap(),
            p.residence_grid.as_ref().unwrap()
        ),
    )
    .unwrap();
    let (ok, out) = import(&csv, &[]);
    assert!(ok && out.contains("1 accepted, 0 rejected"), "{out}");
    // A line that is not UTF-8 ends the import: what came before it is
    // published (more than one batch of the command's reader), then the
    // error names the line.
    let broken = tmp.path().join("broken.jsonl");
    let mut bytes = lines[..300].join("\n").into_bytes();
    bytes.extend_from_slice(b"\n\xff\xfe\n");
    bytes.extend_from_slice(lines[300].as_bytes());
    std::fs::write(&broken, bytes).unwrap();
    let (ok, out) = import(&broken, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("297 accepted, 3 rejected"), "{out}");
    assert!(out.contains("reading line 301"), "{out}");
}

/// One line per request — method, department, status, latency, receipt,
/// peer — in text or JSON; never a record's contents, never a token, and no
/// terminal colour codes when the log is not a terminal (a file, journald).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_one_log_line_without_contents_or_tokens() {
    let person = district().persons[0].clone();
    let id = person.id_number.clone().unwrap();
    let name = person.name.clone().unwrap();
    for format in ["text", "json"] {
        let gw = Gateway::start(&format!("log_format = \"{format}\""));
        let token = gw.token("civil-affairs");
        let mut client = PopulationServiceClient::new(gw.channel("civil-affairs").await);
        let receipt = client
            .get_person(req(get(&id), &token))
            .await
            .unwrap()
            .into_inner()
            .receipt
            .unwrap()
            .leaf_index;
        let mut refused = get(&id);
        refused.context = ctx("public-security");
        let err = client.get_person(req(refused, &token)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);

        let mut lines = Vec::new();
        for _ in 0..50 {
            let log = std::fs::read_to_string(gw.dir.join("server.log")).unwrap();
            lines = log
                .lines()
                .filter(|l| l.contains("PopulationService/GetPerson"))
                .map(String::from)
                .collect();
            if lines.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(lines.len(), 2, "{format}: one line per request: {lines:?}");
        let log = std::fs::read_to_string(gw.dir.join("server.log")).unwrap();
        assert!(!log.contains('\u{1b}'), "{format}: colour codes in a file");
        assert!(!log.contains(token.trim()), "{format}: a token in the log");
        assert!(
            !log.contains(&id) && !log.contains(&name),
            "{format}: record contents in the log"
        );
        for (line, status) in lines.iter().zip(["Ok", "PermissionDenied"]) {
            for part in ["civil-affairs", status, "127.0.0.1"] {
                assert!(line.contains(part), "{format}: {part} missing in {line}");
            }
            assert!(line.contains("latency_ms"), "{line}");
        }
        assert!(lines[0].contains(&receipt.to_string()), "{}", lines[0]);
        if format == "json" {
            for line in &lines {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                for key in [
                    "method",
                    "department",
                    "status",
                    "latency_ms",
                    "receipt",
                    "peer",
                ] {
                    assert!(v.get(key).is_some(), "{key} missing in {line}");
                }
            }
        }
    }
}

/// A request path becomes a metric label and a log field only if it names
/// a method the gateway serves: made-up paths — no token needed, any
/// CA-issued certificate — must not mint metric series (memory that is
/// never freed) or fill the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_method_paths_mint_no_metric_series() {
    let gw = Gateway::start("");
    let mut grpc = tonic::client::Grpc::new(gw.channel("civil-affairs").await);
    for i in 0..50 {
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::try_from(format!("/made.up{i}.Svc/Method{i}")).unwrap();
        let err = grpc
            .unary(
                tonic::Request::new(()),
                path,
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
    }
    let (_, metrics) = gw.ops_get("/metrics").await;
    assert!(
        !metrics.contains("made.up"),
        "made-up paths became metric labels"
    );
    assert!(
        metrics.contains("method=\"unknown\""),
        "they are counted as unknown"
    );
    let log = std::fs::read_to_string(gw.dir.join("server.log")).unwrap();
    assert!(!log.contains("made.up"), "made-up paths in the log");
}

/// The data dir holds the token-signing key, the pseudonym secret and every
/// record: it is the gateway's alone, whatever the umask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_private_to_the_gateway() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let gw = Gateway::start_in(&dir, "");
    let mode = std::fs::metadata(&gw.dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "data dir mode {mode:o}");
}

/// Rejected records are listed by a bounded key and reason: a stream of
/// megabyte keys gets a small summary (and the server holds no copies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_are_listed_in_bounded_bytes() {
    let gw = Gateway::start("");
    let bad: Vec<Person> = (0..20)
        .map(|i| Person {
            id_number: Some(format!("{i}{}", "9".repeat(1 << 20))),
            ..district().persons[0].clone()
        })
        .collect();
    let summary = publish(&gw, bad).await.unwrap();
    assert_eq!(summary.rejected, 20);
    for r in &summary.rejections {
        assert!(
            r.key.len() < 200 && r.reason.len() <= 400,
            "{} / {} bytes",
            r.key.len(),
            r.reason.len()
        );
    }
}

/// Every metric the shipped Grafana dashboard queries is in the very first
/// scrape of a fresh gateway that has served nothing, counters at 0: a
/// panel or alert on a series that appears only after its first event
/// shows "no data" exactly when an operator needs to know it is zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_in_the_first_scrape() {
    let gw = Gateway::start("");
    let (status, scrape) = gw.ops_get("/metrics").await;
    assert_eq!(status, 200);
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match v.as_str() {
                        Some(e) if k == "expr" => out.push(e.to_string()),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 15, "found the panels' queries");
    let present: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let mut missing = Vec::new();
    for q in &queries {
        for (at, _) in q.match_indices("govshare_") {
            let name: String = q[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !present.contains(name.as_str()) {
                missing.push(format!("{name} (queried by `{q}`)"));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "not in the first scrape:\n  {}\n--- scrape\n{scrape}",
        missing.join("\n  ")
    );
}

/// A 64 KB `authorization` header is an authentication failure like any
/// other: UNAUTHENTICATED naming the limit, and an `AUTH_FAILURE` entry in
/// the log — not a transport GOAWAY (`header_list_way_too_large`) that
/// leaves no trace. The connection stays usable for the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_authorization_header_is_refused_and_recorded() {
    let gw = Gateway::start("");
    let id = district().persons[0].id_number.clone().unwrap();
    let mut c = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let huge = format!("{}.{}.{}", "e".repeat(40_000), "p".repeat(24_000), "s");
    let before = gw.audit_entries().len();
    let err = c
        .get_person(req(
            GetPersonRequest {
                context: ctx("social-assistance"),
                id_number: id.clone(),
            },
            &huge,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("HEADERS_TOO_LARGE"),
        "{}",
        err.message()
    );
    let entries = gw.audit_entries();
    let failure = entries[before..]
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.kind == EntryKind::AuthFailure as i32)
        .expect("the refusal is in the log");
    assert_eq!(failure.reason_code, "HEADERS_TOO_LARGE");
    let bytes: usize = entries[before..].iter().map(|(b, _)| b.len()).sum();
    assert!(bytes < 2048, "the entry is bounded: {bytes} bytes");
    // The same connection serves the next, honest call.
    c.get_person(req(
        GetPersonRequest {
            context: ctx("social-assistance"),
            id_number: id,
        },
        &gw.token("civil-affairs"),
    ))
    .await
    .unwrap();
}

/// An operator upgrading: a store written before records were kept in
/// index order — each record under its key, an empty entry in the old
/// region index — is moved into that order on the first start of this
/// release, and serves the same records, by key and by region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_records_were_kept_in_index_order_serves_after_the_upgrade() {
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start_in(tmp.path(), "");
    let id = district().persons[0].id_number.clone().unwrap();
    let got = async |gw: &Gateway| {
        let by_key = common::get_person(gw, "civil-affairs", "social-assistance", &id)
            .await
            .unwrap()
            .person;
        (by_key, list_all(gw, "public-security", "310115").await)
    };
    let before = got(&gw).await;
    assert!(before.0.is_some() && !before.1.is_empty());
    gw.stop();

    let store = govshare::store::open(&common::store_of(tmp.path())).unwrap();
    common::put_back_in_the_earlier_layout(&*store);
    drop(store);

    let mut gw = Gateway::start_in(tmp.path(), "");
    assert_eq!(
        got(&gw).await,
        before,
        "the same records, by key and by region"
    );
    gw.stop();
    let store = govshare::store::open(&common::store_of(tmp.path())).unwrap();
    common::assert_each_record_placed_once(&*store);
}
