//! Grant limits beyond one call: calls per minute (a token bucket per
//! department and dataset, in memory on each node) and records per day (a
//! counter per department, dataset and local date in the shared store, so
//! it survives a restart and resets at local midnight).
//!
//! The daily limit is a *reservation*, not a check-then-add: a call reserves
//! the records it may return before it fetches, atomically in the store, and
//! settles the unused part afterwards. Parallel calls can therefore never
//! exceed the day's limit together.

use crate::control::authz::{Decision, Denial};
use crate::control::store::Store;
use crate::datasets::Dataset;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Limits {
    store: Store,
    buckets: Mutex<HashMap<(String, Dataset), Bucket>>,
}

fn day_key(department: &str, dataset: Dataset) -> String {
    format!(
        "{department}\0{}\0{}",
        dataset.name(),
        crate::base::clock::local_now().format("%Y-%m-%d")
    )
}

/// Records held against today's limit. What is not [`settle`]d as used goes
/// back to the day's budget when this is dropped — also when the call fails
/// or the client goes away.
///
/// [`settle`]: Reservation::settle
pub struct Reservation {
    store: Store,
    key: String,
    reserved: u64,
    pub limit: u64,
}

impl Reservation {
    /// How many records this call may return.
    pub fn granted(&self) -> u64 {
        self.reserved
    }

    /// Keeps `used` of the reserved records; the rest go back.
    pub fn settle(mut self, used: u64) {
        self.reserved -= used.min(self.reserved);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.reserved > 0 {
            if let Err(e) = self.store.release(&self.key, self.reserved) {
                tracing::error!(error = %e, "returning unused records to the daily quota failed");
            }
        }
    }
}

impl Limits {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call from the per-minute bucket.
    pub fn take_call(
        &self,
        department: &str,
        dataset: Dataset,
        d: &Decision,
    ) -> Result<(), Denial> {
        let Some(per_minute) = d.max_calls_per_minute() else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().expect("bucket lock");
        let now = Instant::now();
        let cap = per_minute as f64;
        let b = buckets
            .entry((department.to_string(), dataset))
            .or_insert(Bucket {
                tokens: cap,
                at: now,
            });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * cap / 60.0).min(cap);
        b.at = now;
        if b.tokens < 1.0 {
            return Err(Denial::new(
                "LIMIT_EXCEEDED",
                format!(
                    "max_calls_per_minute is {per_minute} for '{}'; slow down and retry",
                    dataset.name()
                ),
            ));
        }
        b.tokens -= 1.0;
        Ok(())
    }

    /// Reserves up to `want` records of today's limit. `Ok(None)`: no daily
    /// limit applies. A day already used up is `LIMIT_EXCEEDED`.
    pub fn reserve(
        &self,
        department: &str,
        dataset: Dataset,
        d: &Decision,
        want: u64,
    ) -> Result<Option<Reservation>, Denial> {
        let Some(limit) = d.max_records_per_day() else {
            return Ok(None);
        };
        let key = day_key(department, dataset);
        let reserved = self.store.reserve(&key, want, limit).map_err(|e| {
            tracing::error!(error = %e, "reserving against the daily quota failed");
            Denial::new(
                "STORE_UNAVAILABLE",
                "the quota counters cannot be read; nothing was released, retry later",
            )
        })?;
        let r = Reservation {
            store: self.store.clone(),
            key,
            reserved,
            limit,
        };
        if reserved == 0 && want > 0 {
            return Err(Denial::new(
                "LIMIT_EXCEEDED",
                format!(
                    "max_records_per_day is {limit} for '{}' and today's records are used up",
                    dataset.name()
                ),
            ));
        }
        Ok(Some(r))
    }
}
