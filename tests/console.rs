//! The auditors' console (issue "The auditors' console: the log in a
//! browser"), against the real binary over real HTTPS with client
//! certificates: what an auditor sees is what AuditService gives, every
//! read is an `AUDIT_READ` entry naming what was searched, and every way in
//! that the gRPC door would refuse — no certificate, a non-auditor, a
//! revoked token, a suspended department, a cross-site POST, an expired
//! session, a cookie on another certificate — is refused and recorded.

mod common;

use common::{Gateway, admin_client, ctx, req};
use govshare::proto::audit_service_client::AuditServiceClient;
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A browser: the gateway's CA trusted, perhaps a client certificate, and
/// the cookies it was given.
struct Browser {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    cookies: Vec<(String, String)>,
}

struct Page {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Browser {
    fn new(gw: &Gateway, identity: Option<&str>) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let addr = gw
            .said
            .iter()
            .find_map(|l| l.strip_prefix("console listening on https://"))
            .expect("the console listens")
            .parse()
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(gw.pki("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut tls = match identity {
            Some(id) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(gw.pki(&format!("{id}.pem")))
                        .unwrap()
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_file(gw.pki(&format!("{id}.key"))).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            addr,
            tls: Arc::new(tls),
            cookies: Vec::new(),
        }
    }

    /// Opens a connection and sends one request.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let cookies: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept-Language: en\r\n"
        );
        if !cookies.is_empty() {
            head.push_str(&format!("Cookie: {}\r\n", cookies.join("; ")));
        }
        if method == "POST" {
            head.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(body.as_bytes()).await.unwrap();
        tls
    }

    async fn request(&mut self, method: &str, path: &str, body: &str) -> Page {
        let mut tls = self.send(method, path, body).await;
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let page = parse(&raw);
        for (k, v) in &page.headers {
            if k.eq_ignore_ascii_case("set-cookie") {
                let kv = v.split(';').next().unwrap();
                let (name, value) = kv.split_once('=').unwrap();
                self.cookies.retain(|(n, _)| n != name);
                if !value.is_empty() {
                    self.cookies.push((name.into(), value.into()));
                }
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        self.request("GET", path, "").await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.request("POST", path, &body).await
    }

    /// Signs in with the identity's token: the form, its CSRF token, the
    /// POST. Returns the response to the POST.
    async fn sign_in(&mut self, gw: &Gateway, identity: &str) -> Page {
        let form = self.get("/signin").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = hidden(&form.body, "csrf");
        self.post(
            "/signin",
            &[("csrf", &csrf), ("token", &gw.token(identity))],
        )
        .await
    }
}

fn parse(raw: &[u8]) -> Page {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Page {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// The value of a hidden form field.
fn hidden(html: &str, name: &str) -> String {
    let at = html
        .find(&format!(r#"name="{name}" value=""#))
        .unwrap_or_else(|| panic!("no {name} field in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn console_config(extra: &str) -> String {
    format!("console_listen = \"127.0.0.1:0\"\n{extra}")
}

/// Entries written since `from`: `(kind, reason, method, message)`.
fn entries_since(gw: &Gateway, from: u64) -> Vec<(i32, String, String, String)> {
    gw.audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.index >= from)
        .map(|e| (e.kind, e.reason_code, e.method, e.message))
        .collect()
}

/// Entries in the log's files now: every acknowledged call's entry is
/// durable before its answer, so nothing later is missed.
async fn log_size(gw: &Gateway) -> u64 {
    gw.audit_entries().len() as u64
}

/// The next row the console's live event stream sends about `department`.
async fn next_live_row(live: &mut (impl tokio::io::AsyncRead + Unpin), department: &str) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = String::new();
        loop {
            let mut buf = [0u8; 4096];
            let n = live.read(&mut buf).await.unwrap();
            assert!(n > 0, "the event stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            // The whole row, not a read that ends inside it.
            let row_ends = seen
                .rsplit_once(department)
                .is_some_and(|(_, after)| after.contains("</tr>"));
            if seen.contains("data: <tr>") && row_ends {
                return seen;
            }
        }
    })
    .await
    .expect("a live entry within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_reads_the_log_in_the_console_and_every_read_is_recorded() {
    let gw = Gateway::start(&console_config(""));
    // Something to look at: pulls, and one refused for its purpose.
    let person = common::residents().0;
    let id = person.id_number.clone().unwrap();
    let mut pop = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let token = gw.token("civil-affairs");
    for _ in 0..60 {
        pop.get_person(req(
            GetPersonRequest {
                context: ctx("social-assistance"),
                id_number: id.clone(),
            },
            &token,
        ))
        .await
        .unwrap();
    }
    let refused = pop
        .get_person(req(
            GetPersonRequest {
                context: ctx("epidemic-response"),
                id_number: id.clone(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let refused_index = gw
        .audit_entries()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.reason_code == "PURPOSE_NOT_GRANTED")
        .map(|e| e.index)
        .next_back()
        .unwrap();

    let mut b = Browser::new(&gw, Some("auditor"));
    let signed = b.sign_in(&gw, "auditor").await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    let cookie = signed.header("set-cookie").unwrap();
    for attr in ["__Host-", "Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }

    // Overview: the numbers AuditStats gives.
    let overview = b.get("/overview").await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    let csp = overview.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(overview.header("x-content-type-options"), Some("nosniff"));
    assert!(overview.body.contains("<svg"), "a chart");
    let stats = AuditServiceClient::new(gw.channel("auditor").await)
        .audit_stats(req(AuditStatsRequest::default(), &gw.token("auditor")))
        .await
        .unwrap()
        .into_inner();
    let calls: u64 = stats
        .rows
        .iter()
        .filter(|r| r.department == "civil-affairs")
        .map(|r| r.calls)
        .sum();
    assert!(
        overview.body.contains(&format!(
            r#"<tr data-department="civil-affairs"><td>civil-affairs</td><td class="calls">{calls}</td>"#
        )),
        "civil-affairs made {calls} calls: {}",
        overview.body
    );
    assert!(
        overview
            .body
            .contains(r#"data-reason="PURPOSE_NOT_GRANTED""#)
    );

    // Search finds the refused pull, and the search is in the log.
    let before = log_size(&gw).await;
    let found = b
        .get("/search?dept=civil-affairs&decision=deny&reason=PURPOSE_NOT_GRANTED&case=")
        .await;
    assert_eq!(found.status, 200);
    assert!(
        found
            .body
            .contains(&format!(r#"href="/entry/{refused_index}""#)),
        "{}",
        found.body
    );
    let read = entries_since(&gw, before);
    assert!(
        read.iter().any(
            |(kind, _, method, message)| *kind == EntryKind::AuditRead as i32
                && method.ends_with("/QueryAudit")
                && message.contains("PURPOSE_NOT_GRANTED")
                && message.contains("civil-affairs")
        ),
        "the search is recorded with what was searched: {read:?}"
    );

    // The entry, with what the browser needs to prove it.
    let entry = b.get(&format!("/entry/{refused_index}")).await;
    assert_eq!(entry.status, 200, "{}", entry.body);
    assert!(
        entry
            .body
            .contains(r#"<script type="application/json" id="proof-data">"#)
    );
    assert!(!entry.body.contains("<script>"), "no inline script");
    let missing = b.get("/entry/999999").await;
    assert_eq!(missing.status, 404);

    // The resident's page: every use of that person.
    let resident = b.get(&format!("/resident?id={id}")).await;
    assert_eq!(resident.status, 200);
    assert!(
        resident
            .body
            .contains(&format!(r#"href="/entry/{refused_index}""#))
    );

    // The resident's ID is not spread by the auditor's read of it.
    assert!(
        gw.audit_entries()
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.method.ends_with("/SubjectAccessHistory"))
            .all(|e| !e.message.contains(&id) && e.message.contains("resident:")),
        "the subject is recorded as its digest"
    );

    // A search is paged: 50 at a time, the next page from the link.
    let first = b.get("/search?dept=civil-affairs").await;
    let rows = |p: &Page| p.body.matches(r#"<tr><td><a href="/entry/"#).count();
    assert_eq!(rows(&first), 50, "{}", first.body);
    let next = first
        .body
        .split(r#"<a rel="next" href=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a next page")
        .replace("&amp;", "&");
    let second = b.get(&next).await;
    assert!(rows(&second) >= 11, "{}", second.body);
    assert!(
        !second
            .body
            .contains(&first.body[first.body.find("/entry/").unwrap()..][..12])
    );

    // CSV of a search: every match, not one page.
    let csv = b.get("/search.csv?dept=civil-affairs").await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.lines().collect();
    assert!(lines[0].starts_with("index,time,kind,department"));
    assert!(lines.len() > 61, "{} lines", lines.len());

    // The language switch sticks (the browser asks for English).
    assert!(b.get("/integrity?lang=zh").await.body.contains("完整性"));
    assert!(b.get("/integrity").await.body.contains("完整性"));
    assert!(b.get("/integrity?lang=en").await.body.contains("Integrity"));

    // Integrity, and the checkpoint saved as the CLI saves it.
    let integrity = b.get("/integrity").await;
    assert_eq!(integrity.status, 200);
    let saved = b.get("/checkpoint.txt").await;
    assert!(
        saved.body.starts_with("govshare.local/audit\n"),
        "{}",
        saved.body
    );
    // The page shows a signed checkpoint: its size and root lines.
    let note = &integrity.body[integrity.body.find(r#"<pre id="note">"#).unwrap()..];
    let lines: Vec<&str> = note.lines().take(3).collect();
    assert!(
        lines[1].parse::<u64>().is_ok_and(|n| n > 60) && lines[2].len() == 44,
        "{note}"
    );

    // Live: an entry written after the page opened arrives.
    let live = b.send("GET", "/live/events?dept=civil-affairs", "").await;
    let mut live = tokio::io::BufReader::new(live);
    tokio::time::sleep(Duration::from_millis(200)).await;
    pop.get_person(req(
        GetPersonRequest {
            context: ctx("social-assistance"),
            id_number: id.clone(),
        },
        &token,
    ))
    .await
    .unwrap();
    let arrived = next_live_row(&mut live, "civil-affairs").await;
    assert!(arrived.contains("<td>GetPerson</td>"), "{arrived}");

    // The same pull over v2 is listed as such: an auditor tells the API
    // versions apart in the table, not only on the entry's own page.
    let mut two = v2::population_service_client::PopulationServiceClient::new(
        gw.channel("civil-affairs").await,
    );
    two.get_person(req(
        GetPersonRequest {
            context: ctx("social-assistance"),
            id_number: id.clone(),
        },
        &token,
    ))
    .await
    .unwrap();
    let arrived = next_live_row(&mut live, "civil-affairs").await;
    assert!(arrived.contains("<td>GetPerson (v2)</td>"), "{arrived}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_in_the_grpc_door_refuses_is_refused_and_recorded() {
    let gw = Gateway::start(&console_config("[console]\nsession_idle = \"2s\"\n"));
    let count = |reason: &str| {
        gw.audit_entries()
            .into_iter()
            .filter(|(_, e)| e.reason_code == reason)
            .count()
    };

    // No certificate.
    let before = log_size(&gw).await;
    let mut anon = Browser::new(&gw, None);
    let page = anon.get("/overview").await;
    assert_eq!(page.status, 401, "{}", page.body);
    let page = anon.get("/signin").await;
    assert_eq!(page.status, 401);
    assert!(
        entries_since(&gw, before)
            .iter()
            .any(|(kind, _, _, _)| *kind == EntryKind::AuthFailure as i32),
        "a browser without a certificate is recorded"
    );

    // A department that is not an auditor, with its own valid token.
    let mut civil = Browser::new(&gw, Some("civil-affairs"));
    let roles = count("ROLE_NOT_GRANTED");
    let page = civil.sign_in(&gw, "civil-affairs").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(
        civil
            .cookies
            .iter()
            .all(|(k, _)| k != "__Host-govshare-session")
    );
    assert_eq!(count("ROLE_NOT_GRANTED"), roles + 1);

    // The auditor's token presented by another department's certificate.
    let page = civil
        .post("/signin", &[("csrf", "x"), ("token", &gw.token("auditor"))])
        .await;
    assert_eq!(page.status, 401, "token binding: {}", page.body);

    // A cross-site sign-in: no form token.
    let mut auditor = Browser::new(&gw, Some("auditor"));
    let csrf = count("CSRF");
    let page = auditor
        .post("/signin", &[("token", &gw.token("auditor"))])
        .await;
    assert_eq!(page.status, 403);
    assert_eq!(count("CSRF"), csrf + 1);

    // Signed in: a cross-site POST without the session's token.
    assert_eq!(auditor.sign_in(&gw, "auditor").await.status, 303);
    let page = auditor.post("/signout", &[]).await;
    assert_eq!(page.status, 403);
    assert_eq!(count("CSRF"), csrf + 2);
    assert_eq!(
        auditor.get("/overview").await.status,
        200,
        "still signed in"
    );

    // Signing out ends a live page's stream too.
    let live = auditor.send("GET", "/live/events", "").await;
    let mut live = tokio::io::BufReader::new(live);
    let csrf = hidden(&auditor.get("/overview").await.body, "csrf");
    assert_eq!(
        auditor.post("/signout", &[("csrf", &csrf)]).await.status,
        303
    );
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = live.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the live stream outlived its session");
    assert_eq!(auditor.get("/overview").await.status, 303, "signed out");
    assert_eq!(auditor.sign_in(&gw, "auditor").await.status, 303);

    // The session cookie on a connection with another certificate.
    let mut thief = Browser::new(&gw, Some("civil-affairs"));
    thief.cookies = auditor.cookies.clone();
    let page = thief.get("/overview").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/signin"));

    // An expired session (idle 2 s here).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let expired = count("SESSION_EXPIRED");
    let page = auditor.get("/overview").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/signin?why=expired"));
    assert_eq!(count("SESSION_EXPIRED"), expired + 1);

    // A revoked token ends the session at its next request.
    assert_eq!(auditor.sign_in(&gw, "auditor").await.status, 303);
    let mut admin = admin_client(&gw, "admin").await;
    let admin_token = gw.token("admin");
    let jti = admin
        .list_tokens(req(
            ListTokensRequest {
                department: "audit-office".into(),
                ..Default::default()
            },
            &admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .into_iter()
        .find(|t| !t.revoked)
        .unwrap()
        .jti;
    // A live page open when the token is revoked hears nothing more.
    let live = auditor.send("GET", "/live/events", "").await;
    let mut live = tokio::io::BufReader::new(live);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = log_size(&gw).await;
    admin
        .revoke_token(req(
            RevokeTokenRequest {
                jti,
                reason: "console test".into(),
            },
            &admin_token,
        ))
        .await
        .unwrap();
    let page = auditor.get("/overview").await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(
        entries_since(&gw, before)
            .iter()
            .any(|(kind, _, _, _)| *kind == EntryKind::AuthFailure as i32),
        "the revoked token's attempt is recorded"
    );
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        let mut heard = String::new();
        let mut buf = vec![0u8; 4096];
        loop {
            match live.read(&mut buf).await {
                Ok(0) | Err(_) => return heard,
                Ok(n) => heard.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
    .await
    .expect("the live stream ends once its token is revoked");
    // What it heard was written before the revocation took effect — at
    // most the revocation's own entry, which is durable before it applies.
    for index in heard.split(r#"href="/entry/"#).skip(1) {
        let i: u64 = index[..index.find('"').unwrap()].parse().unwrap();
        assert!(i <= before, "entry {i} reached a revoked token: {heard}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_auditors_department_is_refused_at_the_next_page() {
    let gw = Gateway::start(&console_config(""));
    let mut auditor = Browser::new(&gw, Some("auditor"));
    assert_eq!(auditor.sign_in(&gw, "auditor").await.status, 303);
    assert_eq!(auditor.get("/search?dept=civil-affairs").await.status, 200);
    admin_client(&gw, "admin")
        .await
        .suspend_department(req(
            SuspendDepartmentRequest {
                id: "audit-office".into(),
                resume: false,
                reason: "console test".into(),
            },
            &gw.token("admin"),
        ))
        .await
        .unwrap();
    let before = log_size(&gw).await;
    let page = auditor.get("/search?dept=civil-affairs").await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(
        entries_since(&gw, before)
            .iter()
            .any(|(kind, _, _, _)| *kind == EntryKind::AuthFailure as i32)
    );
}
