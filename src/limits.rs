//! Grant limits beyond one call: calls per minute (a token bucket per
//! department and dataset, in memory) and records per day (a counter per
//! department, dataset and local date, persisted in the store so it survives
//! a restart; a new date is a new counter, so it resets at local midnight).

use crate::authz::{Decision, Denial};
use crate::catalog::Dataset;
use crate::store::Store;
use anyhow::Result;
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

/// What the limits leave for this call.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    /// Records the department may still pull today (`None`: no daily limit).
    pub remaining_today: Option<u64>,
}

fn day_key(department: &str, dataset: Dataset) -> String {
    format!(
        "{department}\0{}\0{}",
        dataset.name(),
        chrono::Local::now().format("%Y-%m-%d")
    )
}

impl Limits {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call from the per-minute bucket and reads today's counter.
    pub fn admit(
        &self,
        department: &str,
        dataset: Dataset,
        d: &Decision,
    ) -> Result<Allowance, Denial> {
        if let Some(per_minute) = d.max_calls_per_minute() {
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
        }
        let remaining_today = match d.max_records_per_day() {
            None => None,
            Some(limit) => {
                let used = self.used_today(department, dataset).map_err(|_| {
                    Denial::new(
                        "STORE_UNAVAILABLE",
                        "the quota counters cannot be read; retry later",
                    )
                })?;
                if used >= limit {
                    return Err(Denial::new(
                        "LIMIT_EXCEEDED",
                        format!(
                            "max_records_per_day is {limit} for '{}' and today's records are used up",
                            dataset.name()
                        ),
                    ));
                }
                Some(limit - used)
            }
        };
        Ok(Allowance { remaining_today })
    }

    /// Counts records released to a department today. Only calls under a
    /// daily limit are counted, so unlimited pulls pay no store write.
    pub fn consume(
        &self,
        department: &str,
        dataset: Dataset,
        allowance: Allowance,
        records: u64,
    ) -> Result<()> {
        if records > 0 && allowance.remaining_today.is_some() {
            self.store
                .add_to_counter(&day_key(department, dataset), records)?;
        }
        Ok(())
    }

    pub fn used_today(&self, department: &str, dataset: Dataset) -> Result<u64> {
        self.store.counter(&day_key(department, dataset))
    }
}
