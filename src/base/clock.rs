//! One place that reads the wall clock, so every timestamp agrees — and
//! so a demo or a test can move it: with `demo_clock_offset`, a demo
//! gateway lives days ahead (a disclosure delay passes, a deadline falls
//! due) without anyone waiting. A production gateway refuses the setting.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds added to the system clock (0 except in a demo that asks).
static OFFSET: AtomicI64 = AtomicI64::new(0);

/// Moves this process's clock by `by` seconds from the system's.
pub fn set_offset(by: i64) {
    OFFSET.store(by, Ordering::Relaxed);
}

pub fn now() -> SystemTime {
    let t = SystemTime::now();
    match OFFSET.load(Ordering::Relaxed) {
        0 => t,
        s if s > 0 => t + Duration::from_secs(s as u64),
        s => t - Duration::from_secs(s.unsigned_abs()),
    }
}

/// [`now`] in the server's time zone (days, deadlines, daily limits).
pub fn local_now() -> chrono::DateTime<chrono::Local> {
    chrono::DateTime::<chrono::Local>::from(now())
}

pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The wall clock now, as a protobuf timestamp.
pub fn now_timestamp() -> prost_types::Timestamp {
    to_timestamp(now())
}

pub fn from_timestamp(ts: &prost_types::Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::new(ts.seconds.max(0) as u64, ts.nanos.max(0) as u32)
}

/// An entry's time as a person at this gateway reads it, in local time
/// (`2026-12-06 12:50:00`); empty when there is none.
pub fn local_display(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// `seconds` since the epoch as RFC 3339 UTC (`2026-12-06T04:50:00Z`): how
/// messages name a time, so a person reads it and a program parses it.
pub fn rfc3339(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("@{seconds}"))
}
