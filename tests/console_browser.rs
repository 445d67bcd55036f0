//! The console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs), driven over WebDriver: the
//! auditor's certificate imported into the browser's NSS store and chosen
//! by policy, sign-in with the token, the overview, a search that finds a
//! refused pull, an entry proven by the page's own JavaScript (and a forged
//! one, served by a test double, refused), the resident page, and the live
//! page receiving an entry written after it opened. Screenshots of each
//! page go to `target/console-screenshots/`.

mod common;

use common::{Gateway, Witness, ctx, req};
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// chromedriver and the Chromium it drives, gone when dropped.
struct Driver {
    child: Child,
    port: u16,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver call: plain HTTP/1.1 to chromedriver on loopback.
async fn wd(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    // chromedriver keeps the connection open: read by Content-Length.
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 65536];
    let (head_len, length) = loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "chromedriver closed on {method} {path}: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            break (at + 4, length);
        }
    };
    while raw.len() < head_len + length {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "chromedriver closed mid-answer");
        raw.extend_from_slice(&buf[..n]);
    }
    let json = String::from_utf8_lossy(&raw[head_len..head_len + length]);
    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    v["value"].clone()
}

impl Driver {
    async fn start(home: &Path) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("HOME", home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
        let began = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = home.join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": false,
            "goog:chromeOptions": {
                "prefs": {
                    "download.default_directory": home.join("downloads"),
                    "download.prompt_for_download": false,
                },
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                    "--lang=en-US",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let mut d = Self {
            child,
            port,
            session: String::new(),
        };
        let v = wd(port, "POST", "/session", Some(caps)).await;
        d.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        d
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        wd(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
    }

    async fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url}))).await;
    }

    async fn source(&self) -> String {
        self.call("GET", "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        assert!(v.get("error").is_none(), "no element {css}: {v}");
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|id| id.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn attribute(&self, css: &str, name: &str) -> String {
        let id = self.find(css).await;
        self.call("GET", &format!("/element/{id}/attribute/{name}"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the page's verdict is given: `proven` or `refused`.
    async fn verdict(&self) -> String {
        let began = Instant::now();
        loop {
            let v = self.attribute("#verdict", "data-state").await;
            if v == "proven" || v == "refused" {
                return v;
            }
            assert!(
                began.elapsed() < Duration::from_secs(15),
                "the verdict stayed '{v}'"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.call("GET", "/screenshot", None).await;
        let bytes = data_encoding::BASE64
            .decode(png.as_str().unwrap_or_default().as_bytes())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The auditor's certificate and key in the profile's NSS store, the dev
/// CA trusted for servers, and the certificate chosen without a prompt for
/// the console's origin (AutoSelectCertificateForUrls).
fn import_identity(gw: &Gateway, home: &Path, origin: &str) -> Policy {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db = format!("sql:{}", db.display());
    run(Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]));
    run(Command::new("certutil")
        .args(["-A", "-d", &db, "-n", "govshare-dev-ca", "-t", "CT,,", "-i"])
        .arg(gw.pki("ca.pem")));
    let p12 = home.join("auditor.p12");
    run(Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:", "-in"])
        .arg(gw.pki("auditor.pem"))
        .arg("-inkey")
        .arg(gw.pki("auditor.key"))
        .arg("-out")
        .arg(&p12));
    run(Command::new("pk12util")
        .args(["-d", &db, "-W", "", "-i"])
        .arg(&p12));
    let policies = Path::new("/etc/chromium/policies/managed");
    std::fs::create_dir_all(policies).unwrap();
    let pattern = json!({"pattern": origin, "filter": {}}).to_string();
    // Named for this test's origin: runs side by side do not overwrite
    // each other's.
    let file = policies.join(format!(
        "govshare-console-test-{}.json",
        origin.rsplit(':').next().unwrap_or("0")
    ));
    std::fs::write(
        &file,
        json!({"AutoSelectCertificateForUrls": [pattern]}).to_string(),
    )
    .unwrap();
    Policy(file)
}

/// The policy file, removed when the test ends.
struct Policy(PathBuf);

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The entry page as a lying server would serve it: the console's script
/// and a data island of its choosing.
fn proof_page(data: &Value) -> String {
    format!(
        "<!doctype html><html><head><script src=\"/assets/console.js\" defer></script></head><body><p id=\"verdict\" data-state=\"checking\"></p><ul id=\"checks\"></ul><table id=\"verified-fields\"></table><script type=\"application/json\" id=\"proof-data\">{data}</script></body></html>"
    )
}

/// A test double: a server that lies — it serves the console's page and
/// script with an entry that is not the one the log holds.
async fn lying_server(page: String) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let (kind, body) = if req.starts_with("GET /assets/console.js") {
                    (
                        "text/javascript",
                        include_str!("../src/transport/console/assets/console.js").to_string(),
                    )
                } else {
                    ("text/html; charset=utf-8", page)
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_uses_the_console_in_chromium() {
    let home = tempfile::tempdir().unwrap();
    // A witness cosigns the log, so the page checks its cosignature too.
    let dir = home.path().join("data");
    let mut first = Gateway::start_in(&dir, "");
    assert!(first.stop());
    let witness = Witness::start(&home.path().join("witness"), &dir.join("pki/audit-log.pub"));
    let gw = Gateway::start_in(
        &dir,
        &format!("console_listen = \"127.0.0.1:0\"\n{}", witness.config()),
    );
    let port: u16 = gw
        .said
        .iter()
        .find_map(|l| l.strip_prefix("console listening on https://127.0.0.1:"))
        .unwrap()
        .parse()
        .unwrap();
    let origin = format!("https://localhost:{port}");
    let _policy = import_identity(&gw, home.path(), &origin);

    // A refused pull to find.
    let id = common::residents().0.id_number.unwrap();
    let mut pop = PopulationServiceClient::new(gw.channel("civil-affairs").await);
    let token = gw.token("civil-affairs");
    let pull = |purpose: &'static str| GetPersonRequest {
        context: ctx(purpose),
        id_number: id.clone(),
    };
    pop.get_person(req(pull("social-assistance"), &token))
        .await
        .unwrap();
    pop.get_person(req(pull("epidemic-response"), &token))
        .await
        .unwrap_err();

    let b = Driver::start(home.path()).await;
    // Sign in: the browser presents the certificate, the auditor the token.
    b.go(&format!("{origin}/signin")).await;
    b.screenshot("signin").await;
    let field = b.find("#token").await;
    b.call(
        "POST",
        &format!("/element/{field}/value"),
        Some(json!({"text": gw.token("auditor")})),
    )
    .await;
    let button = b.find("#signin").await;
    b.call("POST", &format!("/element/{button}/click"), Some(json!({})))
        .await;
    let began = Instant::now();
    while !b.source().await.contains(r#"id="totals""#) {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "{}: {}",
            b.call("GET", "/url", None).await,
            b.source().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.screenshot("overview").await;
    assert!(
        b.source()
            .await
            .contains(r#"data-department="civil-affairs""#)
    );

    // Search: the refused pull, and its entry proven in the browser.
    b.go(&format!(
        "{origin}/search?decision=deny&reason=PURPOSE_NOT_GRANTED"
    ))
    .await;
    b.screenshot("search").await;
    let href = b.attribute("#results a", "href").await;
    assert!(href.starts_with("/entry/"), "{href}");
    b.go(&format!("{origin}{href}")).await;
    let verdict = b.verdict().await;
    b.screenshot("entry").await;
    let text = b.source().await;
    let checks = &text[text.find(r#"<ul id="checks">"#).unwrap()..];
    let checks = &checks[..checks.find("</ul>").unwrap()];
    assert_eq!(verdict, "proven", "{checks}");
    assert!(checks.contains("cosigned by witness.test/w1"), "{checks}");
    assert!(
        text.contains("PURPOSE_NOT_GRANTED"),
        "the fields decoded from the proven bytes"
    );

    // The same page from a lying server, its entry changed: refused.
    let island_at = text.find(r#"id="proof-data">"#).unwrap();
    let island_end = island_at + text[island_at..].find("</script>").unwrap();
    let island = &text[island_at + 16..island_end];
    let mut data: Value = serde_json::from_str(island).unwrap();
    let original = data_encoding::BASE64
        .decode(data["entry"].as_str().unwrap().as_bytes())
        .unwrap();
    let mut entry = original.clone();
    let at = entry
        .windows(b"PURPOSE_NOT_GRANTED".len())
        .position(|w| w == b"PURPOSE_NOT_GRANTED")
        .unwrap();
    entry[at..at + 7].copy_from_slice(b"GRANTED");
    data["entry"] = json!(data_encoding::BASE64.encode(&entry));
    let forged = proof_page(&data);
    let liar = lying_server(forged).await;
    b.go(&format!("http://127.0.0.1:{liar}/entry")).await;
    let verdict = b.verdict().await;
    b.screenshot("entry-forged").await;
    assert_eq!(verdict, "refused", "{}", b.source().await);

    // The search as CSV, downloaded by the browser.
    b.go(&format!("{origin}/search?dept=civil-affairs")).await;
    let csv_link = b.find("a[href^='/search.csv']").await;
    b.call(
        "POST",
        &format!("/element/{csv_link}/click"),
        Some(json!({})),
    )
    .await;
    let csv = home.path().join("downloads/govshare-audit.csv");
    let began = Instant::now();
    while !csv.exists() {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "no CSV was downloaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let csv = std::fs::read_to_string(csv).unwrap();
    assert!(csv.starts_with("index,time,kind,department"), "{csv}");
    assert!(csv.contains("PURPOSE_NOT_GRANTED"), "{csv}");

    // A lying server that names no witness (or other keys than the
    // browser pinned) gets no "proven" for a genuine entry either.
    data["entry"] = json!(data_encoding::BASE64.encode(&original));
    data["witnesses"] = json!([]);
    let unwitnessed = proof_page(&data);
    let liar = lying_server(unwitnessed).await;
    b.go(&format!("http://127.0.0.1:{liar}/entry")).await;
    assert_eq!(b.verdict().await, "refused", "{}", b.source().await);
    assert!(b.source().await.contains("no witness cosigns this log"));

    // The resident's page.
    b.go(&format!("{origin}/resident?id={id}")).await;
    b.screenshot("resident").await;
    assert!(b.source().await.contains("/entry/"));

    // Integrity.
    b.go(&format!("{origin}/integrity")).await;
    b.screenshot("integrity").await;
    let integrity = b.source().await;
    assert!(integrity.contains("govshare.local/audit"));
    assert!(
        integrity.contains("witness.test/w1 — cosigned"),
        "the witness's cosignature, verified by the server: {integrity}"
    );

    // Live: an entry written after the page opened appears.
    b.go(&format!("{origin}/live?dept=civil-affairs")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    pop.get_person(req(pull("social-assistance"), &token))
        .await
        .unwrap();
    let began = Instant::now();
    while !b.source().await.contains("/entry/") {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "no live entry arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.screenshot("live").await;
}
