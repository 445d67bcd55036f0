//! Authentication failures, bounded per peer. A client with a CA-issued but
//! unregistered certificate (or no token at all) can fail as fast as it can
//! connect; each failure must still be counted, but it must not be able to
//! grow the append-only log faster than its calls justify. Up to
//! [`FULL_PER_SECOND`] failures per peer address and second are recorded in
//! full; beyond that, the second's failures become one aggregated entry
//! (count, reason codes, first and last time), written when the second ends.

use crate::auth::AuthFailure;
use crate::base::clock;
use crate::proto::{AuditDecision, AuditEntry, AuditPrincipal, EntryKind};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures per peer and second recorded in full.
pub const FULL_PER_SECOND: u32 = 20;
/// Peers tracked at once; idle ones are forgotten first.
const MAX_PEERS: usize = 10_000;

struct Window {
    second: i64,
    full: u32,
    aggregated: u64,
    reasons: BTreeMap<&'static str, u64>,
    first: Option<prost_types::Timestamp>,
    last: Option<prost_types::Timestamp>,
}

impl Window {
    fn new(second: i64) -> Self {
        Self {
            second,
            full: 0,
            aggregated: 0,
            reasons: BTreeMap::new(),
            first: None,
            last: None,
        }
    }

    /// The aggregated entry for what this window held back, if anything.
    fn drain(&mut self, peer: IpAddr) -> Option<AuditEntry> {
        if self.aggregated == 0 {
            return None;
        }
        let reasons: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let n = std::mem::take(&mut self.aggregated);
        self.reasons.clear();
        let span = |t: &Option<prost_types::Timestamp>| {
            t.map(|t| format!("{}.{:09}", t.seconds, t.nanos))
                .unwrap_or_default()
        };
        Some(AuditEntry {
            kind: EntryKind::AuthFailure.into(),
            principal: Some(AuditPrincipal {
                peer_address: peer.to_string(),
                ..Default::default()
            }),
            decision: AuditDecision::Deny.into(),
            reason_code: "AUTH_FAILURES_AGGREGATED".into(),
            record_count: n,
            message: format!(
                "{n} more authentication failures from {peer} between {} and {} ({}); beyond {FULL_PER_SECOND}/s they are recorded in aggregate",
                span(&self.first.take()),
                span(&self.last.take()),
                reasons.join(", ")
            ),
            ..Default::default()
        })
    }
}

#[derive(Default)]
pub struct AuthFailures {
    peers: Mutex<HashMap<IpAddr, Window>>,
}

/// What to do with one failure.
pub enum Verdict {
    /// Record it in full now.
    Record,
    /// Counted into this second's aggregate; `flush` holds an aggregate of
    /// an earlier second that is due now.
    Aggregated,
}

impl AuthFailures {
    /// Counts a failure. Returns whether to record it in full, and any
    /// aggregated entry of this peer's previous second that is now due.
    pub fn count(&self, f: &AuthFailure) -> (Verdict, Option<AuditEntry>) {
        metrics::counter!("govshare_auth_failures_total", "reason" => f.code).increment(1);
        let Some(ip) = peer_ip(&f.peer) else {
            return (Verdict::Record, None);
        };
        let now = clock::to_timestamp(clock::now());
        let mut peers = self.peers.lock().expect("auth failures lock");
        if peers.len() >= MAX_PEERS && !peers.contains_key(&ip) {
            peers.retain(|_, w| w.second >= now.seconds - 1 || w.aggregated > 0);
        }
        let w = peers.entry(ip).or_insert_with(|| Window::new(now.seconds));
        let due = if w.second != now.seconds {
            let due = w.drain(ip);
            *w = Window::new(now.seconds);
            due
        } else {
            None
        };
        if w.full < FULL_PER_SECOND {
            w.full += 1;
            return (Verdict::Record, due);
        }
        w.aggregated += 1;
        *w.reasons.entry(f.code).or_default() += 1;
        w.first.get_or_insert(now);
        w.last = Some(now);
        (Verdict::Aggregated, due)
    }

    /// Aggregates of seconds that have ended (called once a second).
    pub fn due(&self) -> Vec<AuditEntry> {
        let now = clock::unix_seconds(clock::now());
        let mut peers = self.peers.lock().expect("auth failures lock");
        let mut out = Vec::new();
        for (ip, w) in peers.iter_mut().filter(|(_, w)| w.second < now) {
            out.extend(w.drain(*ip));
        }
        peers.retain(|_, w| w.second >= now - 10);
        out
    }
}

fn peer_ip(peer: &str) -> Option<IpAddr> {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .ok()
        .or_else(|| peer.parse().ok())
}
