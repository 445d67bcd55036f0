//! The auditors' console: the log in a browser, a second door into the
//! same `AuditService` with the same rules.
//!
//! The threat is a console that is weaker than the API beside it. So:
//!
//! - Its own HTTPS listener (`console_listen`): the browser presents a
//!   client certificate from the gateway's client CA; the auditor signs in
//!   once per session with the token bound to that certificate
//!   ([`session`]).
//! - Every page that reads the log calls the in-process [`AuditApi`] with
//!   the session's token and the connection's certificate, exactly as a
//!   gRPC call would arrive: the same authentication (revocation,
//!   suspension, token binding), the same `auditor` role, the same
//!   `AUDIT_READ` entry naming what was read. The console adds no reading
//!   path of its own.
//! - Sessions are server-side, bound to the certificate, short-lived;
//!   cookies `__Host-`, `Secure; HttpOnly; SameSite=Strict`; every POST
//!   carries a CSRF token; a strict Content-Security-Policy allows only the
//!   console's own script and style, embedded in the binary.
//! - Refusals are audited: a missing certificate or a bad token as an
//!   authentication failure, a non-auditor, a missing CSRF token or an
//!   expired session as a refused `AUDIT_READ`.
//! - The entry page proves its entry in the browser (`assets/console.js`):
//!   the checkpoint's signature and the witnesses' cosignatures with
//!   WebCrypto, and the Merkle path from the entry's own bytes — a lying
//!   gateway cannot show a forged entry as proven.

pub mod page;
pub mod session;

use crate::audit::AuditLog;
use crate::auth::{Peer, Principal};
use crate::control::roles::Role;
use crate::pipeline::{Pipeline, decided_entry};
use crate::proto::audit_service_server::AuditService;
use crate::proto::*;
use crate::services::audit::AuditApi;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use page::{Lang, esc};
use serde::Deserialize;
use session::{COOKIE, Lookup, SIGNIN_COOKIE, Session, Sessions};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

/// What the console needs from the gateway.
pub struct Settings {
    pub session_idle: Duration,
    pub session_max: Duration,
    /// The witnesses' `cosignature/v1` verifier keys, for the browser.
    pub witnesses: Vec<String>,
}

#[derive(Clone)]
pub struct Console {
    audit: Arc<AuditApi>,
    pipeline: Arc<Pipeline>,
    log: AuditLog,
    sessions: Arc<Sessions>,
    /// The witnesses' verifier keys: as text for the browser, parsed for
    /// the integrity page.
    witnesses: Arc<Vec<String>>,
    verifiers: Arc<Vec<crate::audit::checkpoint::CosignatureVerifier>>,
}

/// The method name console entries carry where no `AuditService` call is
/// made (sign-in, refusals).
const METHOD: &str = "/govshare.console/Page";

/// How long the entry page waits for a checkpoint covering a fresh entry.
const COVER_WAIT: Duration = Duration::from_secs(3);

/// The language switch's cookie (not a secret; host-only like the rest).
const LANG_COOKIE: &str = "__Host-govshare-lang";

/// How often a live page's stream checks that its session still lives.
const LIVE_CHECK: Duration = Duration::from_secs(5);

/// Most entries a CSV export holds.
const CSV_MAX: usize = 10_000;

impl Console {
    pub fn new(pipeline: Arc<Pipeline>, log: AuditLog, settings: Settings) -> Self {
        Self {
            audit: Arc::new(AuditApi {
                pipeline: pipeline.clone(),
                log: log.clone(),
            }),
            pipeline,
            log,
            sessions: Arc::new(Sessions::new(settings.session_idle, settings.session_max)),
            verifiers: Arc::new(
                settings
                    .witnesses
                    .iter()
                    .filter_map(|k| crate::audit::checkpoint::CosignatureVerifier::parse(k).ok())
                    .collect(),
            ),
            witnesses: Arc::new(settings.witnesses),
        }
    }

    pub fn router(self) -> axum::Router {
        use axum::routing::{get, post};
        axum::Router::new()
            .route("/", get(|| async { Redirect::to("/overview") }))
            .route("/signin", get(signin_form).post(signin))
            .route("/signout", post(signout))
            .route("/overview", get(overview))
            .route("/search", get(search))
            .route("/search.csv", get(search_csv))
            .route("/export", get(export))
            .route("/entry/{index}", get(entry))
            .route("/resident", get(resident))
            .route("/integrity", get(integrity))
            .route("/checkpoint.txt", get(checkpoint_file))
            .route("/live", get(live))
            .route("/live/events", get(live_events))
            .route("/assets/console.js", get(script))
            .route("/assets/console.css", get(style))
            // Forms are a token and a CSRF value: nothing larger is read.
            .layer(axum::extract::DefaultBodyLimit::max(16 << 10))
            .layer(axum::middleware::from_fn(remember_lang))
            .layer(axum::middleware::map_response(secure_headers))
            .with_state(self)
    }

    /// A request to the in-process `AuditService` as this browser's
    /// certificate and the session's token would send it over gRPC.
    fn call<T>(&self, who: &Authed, msg: T) -> tonic::Request<T> {
        request(msg, &who.peer, Some(&who.session.token))
    }

    /// The newest checkpoint, read as the signed-in auditor (an `AUDIT_READ`),
    /// or the page that says why not.
    async fn checkpoint(&self, who: &Authed) -> Result<Checkpoint, Response> {
        self.audit
            .get_checkpoint(self.call(who, GetCheckpointRequest {}))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| status_page(who.lang, &s))
    }

    /// Records a refusal the console itself makes.
    async fn refuse(&self, p: &Principal, reason: &'static str, what: &str) {
        let mut e = decided_entry(p, METHOD, EntryKind::AuditRead, Some(reason));
        e.message = crate::base::text::cap_message(what.to_string());
        if let Err(status) = self.pipeline.record(e).await {
            tracing::warn!(error = %status.message(), "recording a console refusal failed");
        }
    }

    /// The session a request belongs to, re-authenticated: the cookie, on
    /// the certificate it signed in with, within its time, and its token
    /// still standing for an auditor — or the response that refuses it.
    async fn authed(
        &self,
        headers: &HeaderMap,
        peer: Arc<Peer>,
        lang: Lang,
    ) -> Result<Authed, Response> {
        let id = session::cookie(headers, COOKIE).unwrap_or_default();
        let session = match self.sessions.find(id, peer.thumbprint.as_deref()) {
            Ok(s) => s,
            Err(Lookup::Expired(old)) => {
                if let Ok(p) = self
                    .pipeline
                    .authenticate(&request((), &peer, Some(&old.token)), METHOD)
                    .await
                {
                    self.refuse(
                        &p,
                        "SESSION_EXPIRED",
                        "a console page after its session expired",
                    )
                    .await;
                }
                return Err(to_signin("expired"));
            }
            Err(Lookup::OtherCertificate(theirs)) => {
                // A session cookie on a connection with another certificate:
                // its token, tried here, fails its binding and is recorded.
                let _ = self
                    .pipeline
                    .authenticate(&request((), &peer, Some(&theirs.token)), METHOD)
                    .await;
                return Err(to_signin(""));
            }
            Err(Lookup::Unknown) => {
                if peer.thumbprint.is_none() {
                    return Err(self.no_certificate(&peer, lang).await);
                }
                return Err(to_signin(""));
            }
        };
        let p = match self
            .pipeline
            .authenticate(&request((), &peer, Some(&session.token)), METHOD)
            .await
        {
            Ok(p) => p,
            Err(status) => {
                // Revoked, suspended, expired: the session ends with it.
                self.sessions.close(&session.id);
                return Err(failure(lang, StatusCode::UNAUTHORIZED, status.message()));
            }
        };
        if !p.has_role(Role::Auditor) {
            self.sessions.close(&session.id);
            self.refuse(&p, "ROLE_NOT_GRANTED", "the console").await;
            return Err(failure(lang, StatusCode::FORBIDDEN, lang.t("not_auditor")));
        }
        Ok(Authed {
            session,
            principal: p,
            peer,
            lang,
        })
    }

    /// No client certificate: audited as an authentication failure.
    async fn no_certificate(&self, peer: &Arc<Peer>, lang: Lang) -> Response {
        let status = match self
            .pipeline
            .authenticate(&request((), peer, None), METHOD)
            .await
        {
            Err(s) => s,
            Ok(_) => tonic::Status::unauthenticated("a client certificate is required"),
        };
        failure(
            lang,
            StatusCode::UNAUTHORIZED,
            &format!(
                "{} ({})",
                status.message(),
                match lang {
                    Lang::Zh => "请在浏览器中导入并选择您的审计员证书",
                    Lang::En => "import your auditor certificate into the browser and choose it",
                }
            ),
        )
    }
}

/// A signed-in request.
struct Authed {
    session: Session,
    /// Who it is, as judged on this request.
    principal: Principal,
    peer: Arc<Peer>,
    lang: Lang,
}

fn request<T>(msg: T, peer: &Arc<Peer>, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.extensions_mut().insert(peer.clone());
    if let Some(v) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

fn to_signin(why: &str) -> Response {
    let to = if why.is_empty() {
        "/signin".to_string()
    } else {
        format!("/signin?why={why}")
    };
    Redirect::to(&to).into_response()
}

fn failure(lang: Lang, code: StatusCode, message: &str) -> Response {
    let body = format!(
        r#"<p role="alert" class="refused">{}</p><p><a href="/signin">{}</a></p>"#,
        esc(message),
        lang.t("signin")
    );
    (
        code,
        html(page::layout(lang, &code.to_string(), None, &body)),
    )
        .into_response()
}

/// A gRPC status as the page says it: the caller's mistake as 400.
fn status_page(lang: Lang, s: &tonic::Status) -> Response {
    let code = match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    failure(lang, code, s.message())
}

/// A download: `body` saved as `filename`.
fn attachment(kind: &'static str, filename: &str, body: impl Into<axum::body::Body>) -> Response {
    let disposition = format!("attachment; filename=\"{filename}\"");
    let mut r = ([(header::CONTENT_TYPE, kind)], body.into()).into_response();
    if let Ok(v) = disposition.parse() {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

fn html(body: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body)
}

/// Every response: no framing, no sniffing, no referrer, no script or
/// style from anywhere but the console, HTTPS only, nothing cached.
async fn secure_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("strict-transport-security", "max-age=31536000"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
    why: Option<String>,
}

/// The page's language: `?lang=`, else the switch's cookie, else the
/// browser's `Accept-Language`.
fn lang_of(headers: &HeaderMap, q: Option<&str>) -> Lang {
    Lang::pick(
        q.or_else(|| session::cookie(headers, LANG_COOKIE)),
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Remembers the language switch (`?lang=zh|en`) for the next pages.
async fn remember_lang(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let chosen = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "lang")
            .map(|(_, v)| v.into_owned())
            .filter(|v| v == "zh" || v == "en")
    });
    let mut r = next.run(req).await;
    if let Some(v) = chosen.and_then(|l| session::set_cookie(LANG_COOKIE, &l, None).parse().ok()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn signin_form(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    let lang = lang_of(&headers, q.lang.as_deref());
    if peer.thumbprint.is_none() {
        return c.no_certificate(&peer, lang).await;
    }
    let csrf = crate::control::keys::random_id();
    let note = match q.why.as_deref() {
        Some("expired") => format!(r#"<p role="status">{}</p>"#, lang.t("expired")),
        _ => String::new(),
    };
    let body = format!(
        r#"{note}<p>{help}</p>
<form method="post" action="/signin">
<input type="hidden" name="csrf" value="{csrf}">
<label for="token">{token}</label>
<textarea id="token" name="token" rows="4" cols="60" required autocomplete="off"></textarea>
<button type="submit" id="signin">{signin}</button>
</form>"#,
        help = lang.t("signin_help"),
        token = lang.t("token"),
        signin = lang.t("signin"),
    );
    (
        [(
            header::SET_COOKIE,
            session::set_cookie(SIGNIN_COOKIE, &csrf, Some(Duration::from_secs(600))),
        )],
        html(page::layout(lang, lang.t("signin"), None, &body)),
    )
        .into_response()
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

async fn signin(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let lang = lang_of(&headers, None);
    if peer.thumbprint.is_none() {
        return c.no_certificate(&peer, lang).await;
    }
    let token = form.token.trim();
    // Who it is, first: every refusal below is recorded against them.
    let p = match c
        .pipeline
        .authenticate(&request((), &peer, Some(token)), METHOD)
        .await
    {
        Ok(p) => p,
        Err(status) => return failure(lang, StatusCode::UNAUTHORIZED, status.message()),
    };
    let expected = session::cookie(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::same(expected, &form.csrf) {
        c.refuse(&p, "CSRF", "a console sign-in without its form's token")
            .await;
        return failure(lang, StatusCode::FORBIDDEN, lang.t("csrf"));
    }
    if !p.has_role(Role::Auditor) {
        c.refuse(&p, "ROLE_NOT_GRANTED", "the console").await;
        return failure(lang, StatusCode::FORBIDDEN, lang.t("not_auditor"));
    }
    let Some(thumbprint) = peer.thumbprint.clone() else {
        return c.no_certificate(&peer, lang).await;
    };
    let Some(s) = c.sessions.open(token, thumbprint) else {
        return failure(lang, StatusCode::SERVICE_UNAVAILABLE, lang.t("busy"));
    };
    let mut r = Redirect::to("/overview").into_response();
    let h = r.headers_mut();
    for v in [
        session::set_cookie(COOKIE, &s.id, None),
        session::set_cookie(SIGNIN_COOKIE, "", Some(Duration::ZERO)),
    ] {
        if let Ok(v) = v.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

#[derive(Deserialize)]
struct Csrf {
    #[serde(default)]
    csrf: String,
}

async fn signout(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Response {
    let lang = lang_of(&headers, None);
    let who = match c.authed(&headers, peer, lang).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if !session::same(&who.session.csrf, &form.csrf) {
        c.refuse(
            &who.principal,
            "CSRF",
            "a console POST without its form's token",
        )
        .await;
        return failure(lang, StatusCode::FORBIDDEN, lang.t("csrf"));
    }
    c.sessions.close(&who.session.id);
    let mut r = Redirect::to("/signin").into_response();
    if let Ok(v) = session::set_cookie(COOKIE, "", Some(Duration::ZERO)).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Signs the request in, or returns the refusal, in each page handler.
macro_rules! signed_in {
    ($c:expr, $headers:expr, $peer:expr, $lang:expr) => {
        match $c.authed(&$headers, $peer, $lang).await {
            Ok(w) => w,
            Err(r) => return r,
        }
    };
}

fn page_of(who: &Authed, title: &str, body: &str) -> Response {
    html(page::layout(who.lang, title, Some(&who.session.csrf), body)).into_response()
}

async fn overview(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    let who = signed_in!(c, headers, peer, lang_of(&headers, q.lang.as_deref()));
    let lang = who.lang;
    let from = crate::base::clock::now() - Duration::from_secs(28 * 86_400);
    let stats = match c
        .audit
        .audit_stats(c.call(
            &who,
            AuditStatsRequest {
                from: Some(crate::base::clock::to_timestamp(from)),
                ..Default::default()
            },
        ))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return status_page(lang, &s),
    };
    let rows = &stats.rows;
    let mut body = format!(
        "<h2>{}</h2>{}",
        lang.t("calls_per_day"),
        page::chart(rows, lang)
    );
    // Totals per department, the figures AuditStats gives.
    let mut totals: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    let mut denials: std::collections::BTreeMap<&str, u64> = Default::default();
    for r in rows {
        let t = totals.entry(&r.department).or_default();
        t.0 += r.calls;
        t.1 += r.records;
        for d in &r.denials {
            *denials.entry(&d.reason_code).or_default() += d.count;
        }
    }
    let _ = write!(
        body,
        r#"<h2>{}</h2><table id="totals"><tr><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th></tr>"#,
        lang.t("released"),
        lang.t("department"),
        lang.t("calls"),
        lang.t("records")
    );
    for (d, (calls, records)) in &totals {
        let _ = write!(
            body,
            r#"<tr data-department="{d}"><td>{d}</td><td class="calls">{calls}</td><td class="records">{records}</td></tr>"#,
            d = esc(d)
        );
    }
    let _ = write!(
        body,
        r#"</table><h2>{}</h2><table id="denials"><tr><th scope="col">{}</th><th scope="col">{}</th></tr>"#,
        lang.t("denials"),
        lang.t("reason"),
        lang.t("count")
    );
    for (reason, n) in &denials {
        let _ = write!(
            body,
            r#"<tr data-reason="{r}"><td><a href="/search?decision=deny&amp;reason={r}">{label}</a></td><td class="count">{n}</td></tr>"#,
            r = esc(reason),
            label = page::reason(lang, reason),
        );
    }
    let _ = write!(
        body,
        r#"</table><h2>{}</h2><ul id="flagged">"#,
        lang.t("flagged")
    );
    let first_day = chrono::DateTime::<chrono::Local>::from(from).date_naive();
    let flagged = page::flagged(rows, first_day);
    if flagged.is_empty() {
        let _ = write!(body, "<li>{}</li>", lang.t("none"));
    }
    for (d, day, calls, median) in flagged {
        let _ = write!(
            body,
            "<li>{} {}: {calls} (median {median})</li>",
            esc(&d),
            esc(&day)
        );
    }
    body.push_str("</ul>");
    page_of(&who, lang.t("overview"), &body)
}

/// The search form's fields, in the URL so a search can be shared.
#[derive(Deserialize, Default, Clone)]
struct SearchQuery {
    #[serde(default)]
    dept: String,
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    case: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    page: String,
    lang: Option<String>,
}

impl SearchQuery {
    /// The `QueryAuditRequest` it is (dates as local days, `to` inclusive).
    fn request(&self) -> Result<QueryAuditRequest, String> {
        let day = |s: &str, end: bool| -> Result<Option<prost_types::Timestamp>, String> {
            if s.is_empty() {
                return Ok(None);
            }
            let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                format!(
                    "'{}' is not a date (YYYY-MM-DD)",
                    crate::base::text::cap_for_message(s)
                )
            })?;
            let d = if end { d.succ_opt().unwrap_or(d) } else { d };
            let t = d
                .and_hms_opt(0, 0, 0)
                .and_then(|t| t.and_local_timezone(chrono::Local).earliest())
                .ok_or("not a local time")?;
            Ok(Some(prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: 0,
            }))
        };
        let decision = match self.decision.as_str() {
            "allow" => AuditDecision::Allow as i32,
            "deny" => AuditDecision::Deny as i32,
            _ => 0,
        };
        Ok(QueryAuditRequest {
            department: self.dept.trim().into(),
            dataset: self.dataset.trim().into(),
            decision,
            reason_code: self.reason.trim().into(),
            purpose: self.purpose.trim().into(),
            case_id: self.case.trim().into(),
            from: day(self.from.trim(), false)?,
            to: day(self.to.trim(), true)?,
            page_token: self.page.trim().into(),
            page_size: 50,
            ..Default::default()
        })
    }

    fn url(&self, page: &str) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("dept", &self.dept),
            ("dataset", &self.dataset),
            ("decision", &self.decision),
            ("reason", &self.reason),
            ("purpose", &self.purpose),
            ("case", &self.case),
            ("subject", &self.subject),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        if !page.is_empty() {
            s.append_pair("page", page);
        }
        s.finish()
    }

    fn form(&self, lang: Lang) -> String {
        let field = |name: &str, key: &str, value: &str| {
            format!(
                r#"<label>{} <input name="{name}" value="{}"></label> "#,
                lang.t(key),
                esc(value)
            )
        };
        let select = |name: &str, key: &str, value: &str, options: &[(&str, &str)]| {
            let mut s = format!(r#"<label>{} <select name="{name}">"#, lang.t(key));
            for (v, label) in options {
                let sel = if *v == value { " selected" } else { "" };
                let _ = write!(s, r#"<option value="{v}"{sel}>{}</option>"#, lang.t(label));
            }
            s.push_str("</select></label> ");
            s
        };
        format!(
            r#"<form method="get" action="/search" id="search">{}{}{}{}{}{}{}{}{}<button type="submit">{}</button></form>"#,
            field("dept", "department", &self.dept),
            select(
                "dataset",
                "dataset",
                &self.dataset,
                &[
                    ("", "any"),
                    ("population", "population"),
                    ("legal_entity", "legal_entity"),
                    ("grid", "grid")
                ]
            ),
            select(
                "decision",
                "decision",
                &self.decision,
                &[("", "any"), ("allow", "allow"), ("deny", "deny")]
            ),
            field("reason", "reason", &self.reason),
            field("purpose", "purpose", &self.purpose),
            field("case", "case_id", &self.case),
            field("subject", "subject", &self.subject),
            field("from", "from", &self.from),
            field("to", "to", &self.to),
            lang.t("find"),
        )
    }
}

/// One page of a search and where the next begins: through QueryAudit
/// with every filter (recorded with the read), 50 entries at a time; by
/// subject through the data tracker, every use at once (it has no pages;
/// at most [`CSV_MAX`]).
async fn search_page(
    c: &Console,
    who: &Authed,
    q: &SearchQuery,
) -> Result<(Vec<AuditEntry>, String), tonic::Status> {
    let subject = q.subject.trim();
    if subject.is_empty() {
        let r = q.request().map_err(tonic::Status::invalid_argument)?;
        let mut stream = c.audit.query_audit(c.call(who, r)).await?.into_inner();
        let first = stream.next().await.transpose()?.unwrap_or_default();
        // The call streams every match in pages; a second page means more:
        // the next page starts before this one's last entry.
        let next = if !first.next_page_token.is_empty() {
            first.next_page_token
        } else {
            match (stream.next().await.transpose()?, first.entries.last()) {
                (Some(more), Some(last)) if !more.entries.is_empty() => last.index.to_string(),
                _ => String::new(),
            }
        };
        return Ok((first.entries, next));
    }
    // A citizen ID if it parses as one, else a credit code (the service
    // says which is malformed).
    let r = if <Person as crate::datasets::Record>::parse_key(subject).is_ok() {
        SubjectAccessHistoryRequest {
            id_number: subject.into(),
            ..Default::default()
        }
    } else {
        SubjectAccessHistoryRequest {
            uscc: subject.into(),
            ..Default::default()
        }
    };
    let mut stream = c
        .audit
        .subject_access_history(c.call(who, r))
        .await?
        .into_inner();
    let mut all = Vec::new();
    while let Some(page) = stream.next().await.transpose()? {
        all.extend(page.entries);
        if all.len() >= CSV_MAX {
            break;
        }
    }
    Ok((all, String::new()))
}

async fn search(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    let who = signed_in!(c, headers, peer, lang_of(&headers, q.lang.as_deref()));
    let lang = who.lang;
    let mut body = q.form(lang);
    let searched = q.url("");
    if !searched.is_empty() {
        let (found, next) = match search_page(&c, &who, &q).await {
            Ok(p) => p,
            Err(s) => return status_page(lang, &s),
        };
        let _ = write!(
            body,
            r#"<p><a href="/search.csv?{u}" download>{csv}</a> · <a href="/export" download>{export}</a></p><table id="results">{head}"#,
            u = esc(&searched),
            csv = lang.t("csv"),
            export = lang.t("export"),
            head = page::entry_head(lang)
        );
        for e in &found {
            body.push_str(&page::entry_row(e, lang));
        }
        body.push_str("</table>");
        if !next.is_empty() {
            let _ = write!(
                body,
                r#"<p><a rel="next" href="/search?{}">{}</a></p>"#,
                esc(&q.url(&next)),
                lang.t("next")
            );
        }
    }
    page_of(&who, lang.t("search"), &body)
}

fn csv_field(s: &str) -> String {
    // A leading =, +, -, @, tab or carriage return would make a formula
    // of a department's free text in a spreadsheet (OWASP's list).
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn search_csv(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
    Query(mut q): Query<SearchQuery>,
) -> Response {
    let who = signed_in!(c, headers, peer, lang_of(&headers, q.lang.as_deref()));
    let mut out = String::from(
        "index,time,kind,department,client,method,dataset,decision,reason,purpose,case_id,records\n",
    );
    let mut n = 0;
    loop {
        let (found, next) = match search_page(&c, &who, &q).await {
            Ok(p) => p,
            Err(s) => return status_page(who.lang, &s),
        };
        for e in &found {
            let p = e.principal.clone().unwrap_or_default();
            let time = e
                .time
                .as_ref()
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            let decision = if e.decision == AuditDecision::Deny as i32 {
                "deny"
            } else {
                "allow"
            };
            let cells = [
                e.index.to_string(),
                time,
                crate::audit::kind_name(e.kind).to_string(),
                p.department,
                p.client_id,
                e.method.clone(),
                e.dataset.clone(),
                decision.to_string(),
                e.reason_code.clone(),
                e.purpose.clone(),
                e.case_id.clone(),
                e.record_count.to_string(),
            ];
            let row: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
            out.push_str(&row.join(","));
            out.push('\n');
            n += 1;
        }
        if next.is_empty() || n >= CSV_MAX {
            break;
        }
        q.page = next;
    }
    attachment("text/csv; charset=utf-8", "govshare-audit.csv", out)
}

/// The verifiable export (`govshare audit verify --export` reads it).
async fn export(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
) -> Response {
    let who = signed_in!(c, headers, peer, lang_of(&headers, None));
    let stream = match c
        .audit
        .export_audit(c.call(&who, ExportAuditRequest {}))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => return status_page(who.lang, &s),
    };
    let body = axum::body::Body::from_stream(stream.map(|chunk| {
        chunk
            .map(|c| axum::body::Bytes::from(c.data))
            .map_err(|s| std::io::Error::other(s.message().to_string()))
    }));
    attachment("application/jsonl", "govshare-audit.jsonl", body)
}

async fn entry(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
    Path(index): Path<u64>,
    Query(q): Query<LangQuery>,
) -> Response {
    let who = signed_in!(c, headers, peer, lang_of(&headers, q.lang.as_deref()));
    let lang = who.lang;
    // The newest entry before index + 1 is the entry itself.
    let found = c
        .audit
        .query_audit(c.call(
            &who,
            QueryAuditRequest {
                page_token: index.saturating_add(1).to_string(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await;
    let e = match found {
        Ok(s) => match s.into_inner().next().await {
            Some(Ok(p)) => p.entries.into_iter().find(|e| e.index == index),
            Some(Err(s)) => return status_page(lang, &s),
            None => None,
        },
        Err(s) => return status_page(lang, &s),
    };
    let Some(e) = e else {
        return status_page(lang, &tonic::Status::not_found(format!("no entry {index}")));
    };
    // A fresh entry: wait a moment for the checkpoint that covers it.
    let mut signed = c.log.checkpoints();
    let _ = tokio::time::timeout(
        COVER_WAIT,
        signed.wait_for(|cp| cp.as_ref().is_some_and(|cp| cp.size > index)),
    )
    .await;
    let cp = match c.checkpoint(&who).await {
        Ok(cp) => cp,
        Err(r) => return r,
    };
    let proof = if index < cp.tree_size {
        match c
            .audit
            .get_inclusion_proof(c.call(
                &who,
                GetInclusionProofRequest {
                    index,
                    tree_size: cp.tree_size,
                },
            ))
            .await
        {
            Ok(p) => p.into_inner().hashes,
            Err(s) => return status_page(lang, &s),
        }
    } else {
        Vec::new()
    };
    let b64 = |b: &[u8]| data_encoding::BASE64.encode(b);
    let data = serde_json::json!({
        "index": index,
        "entry": b64(&prost::Message::encode_to_vec(&e)),
        "tree_size": cp.tree_size,
        "proof": proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
        "note": cp.note,
        "log_key": cp.public_key,
        "witnesses": *c.witnesses,
        "lang": lang.code(),
    });
    // JSON inside a non-executed script element: `<` escaped so no text
    // of an entry can close it.
    let data = data.to_string().replace('<', "\\u003c");
    let json = crate::proto::json::to_string(&e);
    let body = format!(
        r#"<section aria-labelledby="proof-h"><h2 id="proof-h">{proof}</h2>
<p id="verdict" role="status" data-state="checking">{checking}</p>
<ul id="checks"></ul></section>
<h2>{entry}</h2>
<table id="verified-fields" aria-label="{entry}"></table>
<details><summary>JSON</summary><pre id="entry-json">{json}</pre></details>
<script type="application/json" id="proof-data">{data}</script>"#,
        proof = lang.t("proof"),
        checking = lang.t("checking"),
        entry = lang.t("entry"),
        json = esc(&json),
    );
    page_of(&who, &format!("{} {index}", lang.t("entry")), &body)
}

#[derive(Deserialize)]
struct ResidentQuery {
    #[serde(default)]
    id: String,
    lang: Option<String>,
}

async fn resident(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
    Query(q): Query<ResidentQuery>,
) -> Response {
    let who = signed_in!(c, headers, peer, lang_of(&headers, q.lang.as_deref()));
    let lang = who.lang;
    let mut body = format!(
        r#"<form method="get" action="/resident" id="resident"><label>{} <input name="id" value="{}" autocomplete="off"></label> <button type="submit">{}</button></form>"#,
        lang.t("subject"),
        esc(&q.id),
        lang.t("find")
    );
    if !q.id.trim().is_empty() {
        let sq = SearchQuery {
            subject: q.id.clone(),
            ..Default::default()
        };
        let (found, _) = match search_page(&c, &who, &sq).await {
            Ok(p) => p,
            Err(s) => return status_page(lang, &s),
        };
        let _ = write!(body, r#"<table id="results">{}"#, page::entry_head(lang));
        for e in &found {
            body.push_str(&page::entry_row(e, lang));
        }
        body.push_str("</table>");
    }
    page_of(&who, lang.t("resident"), &body)
}

async fn integrity(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    let who = signed_in!(c, headers, peer, lang_of(&headers, q.lang.as_deref()));
    let lang = who.lang;
    let cp = match c.checkpoint(&who).await {
        Ok(cp) => cp,
        Err(r) => return r,
    };
    let age = c
        .log
        .latest_checkpoint()
        .and_then(|s| s.signed_at.elapsed().ok())
        .map_or_else(|| "?".into(), |d| format!("{} s", d.as_secs()));
    let scrub = if *c.log.health().scrubbed.borrow() {
        lang.t("ok")
    } else {
        lang.t("damaged")
    };
    // Each witness's cosignature verified under its key, not only named.
    let valid = crate::audit::checkpoint::cosigners(&cp.note, &c.verifiers);
    let mut witnesses = String::new();
    for w in c.verifiers.iter() {
        let name = w.name();
        let cosigned = valid.contains(&name);
        let _ = write!(
            witnesses,
            "<li>{} — {}</li>",
            esc(name),
            if cosigned {
                lang.t("cosigned")
            } else {
                lang.t("not_cosigned")
            }
        );
    }
    if witnesses.is_empty() {
        let _ = write!(witnesses, "<li>{}</li>", lang.t("none"));
    }
    let body = format!(
        r#"<dl id="integrity"><dt>{size}</dt><dd id="size">{n}</dd><dt>{age_l}</dt><dd>{age}</dd><dt>{key}</dt><dd><code>{pk}</code></dd><dt>{scrub_l}</dt><dd>{scrub}</dd></dl>
<h2>{checkpoint}</h2><pre id="note">{note}</pre>
<p><a href="/checkpoint.txt" download="checkpoint.txt" id="save">{save}</a></p>
<h2>{wit}</h2><ul id="witnesses">{witnesses}</ul>"#,
        size = lang.t("size"),
        n = cp.tree_size,
        age_l = lang.t("age"),
        key = lang.t("log_key"),
        pk = esc(&cp.public_key),
        scrub_l = lang.t("scrub"),
        checkpoint = lang.t("checkpoint"),
        note = esc(&cp.note),
        save = lang.t("save_checkpoint"),
        wit = lang.t("witnesses"),
    );
    page_of(&who, lang.t("integrity"), &body)
}

/// The newest checkpoint, as `govshare audit checkpoint --save` writes it.
async fn checkpoint_file(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
) -> Response {
    let who = signed_in!(c, headers, peer, lang_of(&headers, None));
    match c.checkpoint(&who).await {
        Ok(cp) => attachment("text/plain; charset=utf-8", "checkpoint.txt", cp.note),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct LiveQuery {
    #[serde(default)]
    dept: String,
    lang: Option<String>,
}

async fn live(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
    Query(q): Query<LiveQuery>,
) -> Response {
    let who = signed_in!(c, headers, peer, lang_of(&headers, q.lang.as_deref()));
    let lang = who.lang;
    let body = format!(
        r#"<p>{help}</p><form method="get" action="/live"><label>{dept} <input name="dept" value="{v}"></label> <button type="submit">{find}</button></form>
<table id="live" data-dept="{v}" aria-live="polite">{head}</table>"#,
        help = lang.t("live_help"),
        dept = lang.t("department"),
        v = esc(&q.dept),
        find = lang.t("find"),
        head = page::entry_head(lang),
    );
    page_of(&who, lang.t("live"), &body)
}

/// New entries as server-sent events, from the log's size now.
async fn live_events(
    State(c): State<Console>,
    axum::Extension(peer): axum::Extension<Arc<Peer>>,
    headers: HeaderMap,
    Query(q): Query<LiveQuery>,
) -> Response {
    let who = signed_in!(c, headers, peer, lang_of(&headers, q.lang.as_deref()));
    let from = c.log.committed();
    let tail = match c
        .audit
        .tail_audit(c.call(&who, TailAuditRequest { from_index: from }))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => return status_page(who.lang, &s),
    };
    let (lang, dept, sessions, id) = (who.lang, q.dept, c.sessions.clone(), who.session.id);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    // Forwards the tail while the session lives: it ends at sign-out, at
    // the session's idle or total limit (checked every few seconds), and
    // at the tail's first error (a revoked token, a suspended department).
    tokio::spawn(async move {
        let mut tail = tail;
        let mut check = tokio::time::interval(LIVE_CHECK);
        loop {
            tokio::select! {
                e = tail.next() => {
                    let Some(Ok(e)) = e else { return };
                    if !sessions.alive(&id) {
                        return;
                    }
                    let p = e.principal.clone().unwrap_or_default();
                    if dept.is_empty() || p.department == dept {
                        let event = Event::default().data(page::entry_row(&e, lang));
                        if tx.send(Ok::<_, std::convert::Infallible>(event)).await.is_err() {
                            return;
                        }
                    }
                }
                _ = check.tick() => if !sessions.alive(&id) { return },
                () = tx.closed() => return,
            }
        }
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/console.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/console.css"),
    )
        .into_response()
}

/// Serves the console on connections from [`super::listener::accept`]:
/// each connection's certificate goes with every request on it.
pub async fn serve(
    router: axum::Router,
    mut incoming: tokio::sync::mpsc::Receiver<std::io::Result<super::listener::Conn>>,
) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use tonic::transport::server::Connected;
    while let Some(conn) = incoming.recv().await {
        let Ok(conn) = conn else { continue };
        let peer = conn.connect_info();
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(peer)));
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(conn), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "a console connection ended");
            }
        });
    }
}
