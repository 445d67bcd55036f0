//! Console sessions: server-side, bound to the certificate that signed in.
//!
//! A session is the auditor's token held by the gateway for at most
//! `session_max` (and `session_idle` without a request), used only on a
//! connection that presents the certificate it signed in with — a cookie
//! copied to another browser is worthless without the key. Every request
//! still presents the token to the pipeline, so a revoked token or
//! certificate, or a suspended department, ends the session at its next
//! request, exactly as on gRPC.

use crate::control::keys::random_id;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cookie: `__Host-` (Secure, no Domain, Path=/), HttpOnly, SameSite.
pub const COOKIE: &str = "__Host-govshare-session";
/// The sign-in form's double-submit cookie (CSRF before a session exists).
pub const SIGNIN_COOKIE: &str = "__Host-govshare-signin";
/// Most sessions held at once: memory is bounded whatever the callers do.
const MAX_SESSIONS: usize = 256;
/// Most sessions of one certificate: signing in again ends the oldest, so
/// one auditor cannot fill the table for everyone else.
const PER_CERTIFICATE: usize = 4;

#[derive(Clone)]
pub struct Session {
    pub id: String,
    pub token: Arc<str>,
    pub thumbprint: Arc<str>,
    /// Sent back with every form; a POST without it is refused.
    pub csrf: String,
    created: Instant,
    seen: Instant,
}

/// Never prints the token, the cookie or the CSRF token: only whose it is.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// Why a session cookie did not give a session.
#[derive(Debug)]
pub enum Lookup {
    /// No cookie, or one the gateway never issued (or forgot at restart).
    Unknown,
    /// It was, but its time is up (idle or total); it is forgotten now.
    Expired(Session),
    /// Presented on a connection with another certificate.
    OtherCertificate(Session),
}

pub struct Sessions {
    idle: Duration,
    max: Duration,
    held: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(idle: Duration, max: Duration) -> Self {
        Self {
            idle,
            max,
            held: Mutex::default(),
        }
    }

    /// A new session for a signed-in auditor, or `None` when the table is
    /// full of live sessions.
    pub fn open(&self, token: &str, thumbprint: Arc<str>) -> Option<Session> {
        let mut held = self.held.lock().expect("sessions lock");
        let now = Instant::now();
        held.retain(|_, s| !self.expired(s, now));
        let mut mine: Vec<(Instant, String)> = held
            .values()
            .filter(|s| s.thumbprint == thumbprint)
            .map(|s| (s.created, s.id.clone()))
            .collect();
        mine.sort();
        for (_, id) in mine
            .iter()
            .take((mine.len() + 1).saturating_sub(PER_CERTIFICATE))
        {
            held.remove(id);
        }
        if held.len() >= MAX_SESSIONS {
            return None;
        }
        let s = Session {
            id: random_id(),
            token: token.into(),
            thumbprint,
            csrf: random_id(),
            created: now,
            seen: now,
        };
        held.insert(s.id.clone(), s.clone());
        Some(s)
    }

    /// The session a cookie names, on a connection with `thumbprint`; an
    /// expired one is forgotten.
    pub fn find(&self, id: &str, thumbprint: Option<&str>) -> Result<Session, Lookup> {
        let mut held = self.held.lock().expect("sessions lock");
        let now = Instant::now();
        let Some(s) = held.get_mut(id) else {
            return Err(Lookup::Unknown);
        };
        if thumbprint != Some(&*s.thumbprint) {
            return Err(Lookup::OtherCertificate(s.clone()));
        }
        if self.expired(s, now) {
            let s = s.clone();
            held.remove(id);
            return Err(Lookup::Expired(s));
        }
        s.seen = now;
        Ok(s.clone())
    }

    /// Whether the session is still open and within its time (a live
    /// stream asks; asking does not keep it alive).
    pub fn alive(&self, id: &str) -> bool {
        let held = self.held.lock().expect("sessions lock");
        held.get(id)
            .is_some_and(|s| !self.expired(s, Instant::now()))
    }

    pub fn close(&self, id: &str) {
        self.held.lock().expect("sessions lock").remove(id);
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.seen) > self.idle || now.duration_since(s.created) > self.max
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: host-only, secure, script-proof, same-site only.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>) -> String {
    let age = max_age.map_or(String::new(), |d| format!("; Max-Age={}", d.as_secs()));
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}")
}

/// Compares secrets in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_only_on_its_certificate_and_within_its_time() {
        let s = Sessions::new(Duration::from_millis(50), Duration::from_secs(60));
        let open = s.open("tok", "thumb".into()).unwrap();
        assert!(s.find(&open.id, Some("thumb")).is_ok());
        assert!(matches!(
            s.find(&open.id, Some("other")),
            Err(Lookup::OtherCertificate(_))
        ));
        assert!(matches!(
            s.find(&open.id, None),
            Err(Lookup::OtherCertificate(_))
        ));
        assert!(matches!(
            s.find("made-up", Some("thumb")),
            Err(Lookup::Unknown)
        ));
        std::thread::sleep(Duration::from_millis(80));
        assert!(matches!(
            s.find(&open.id, Some("thumb")),
            Err(Lookup::Expired(_))
        ));
        assert!(matches!(
            s.find(&open.id, Some("thumb")),
            Err(Lookup::Unknown)
        ));
    }

    #[test]
    fn the_table_is_bounded_and_one_certificate_cannot_fill_it() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let first = s.open("t", "x".into()).unwrap();
        for _ in 0..10 {
            s.open("t", "x".into()).unwrap();
        }
        assert!(
            !s.alive(&first.id),
            "the oldest of one certificate's sessions ends"
        );
        assert_eq!(s.held.lock().unwrap().len(), PER_CERTIFICATE);
        for i in 0..MAX_SESSIONS {
            let _ = s.open("t", format!("cert-{i}").into());
        }
        assert!(s.open("t", "one-more".into()).is_none());
    }
}
