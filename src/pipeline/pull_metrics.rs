//! The pull counters, `govshare_pulls_total` and
//! `govshare_records_released_total`. An allowed pull's two series are
//! found once per department and dataset and kept: building a labelled
//! series' key (the department's name copied in) and looking it up in the
//! registry on every pull was ~2.5 % of a `GetPerson`'s server CPU (`perf`
//! under `govshare bench --only unary`). Refusals, rarer and labelled with
//! their reason, are counted as they come. A handle is bound to the
//! recorder installed when it is made: the gateway installs its recorder
//! before it builds the pipeline.

use crate::datasets::Dataset;
use metrics::{Counter, SharedString};
use std::collections::HashMap;
use std::sync::RwLock;

/// One department's allowed pulls of one dataset and the records they
/// released.
struct Allowed {
    pulls: Counter,
    released: Counter,
}

/// The kept series, by department then dataset. Bounded by the registered
/// departments: only an authenticated principal's department is counted.
#[derive(Default)]
pub(super) struct PullMetrics {
    allowed: RwLock<HashMap<Box<str>, HashMap<Dataset, Allowed>>>,
}

impl PullMetrics {
    /// An allowed pull that released `records` records.
    pub(super) fn allowed(&self, department: &str, dataset: Dataset, records: u64) {
        self.series(department, dataset, |series| {
            series.pulls.increment(1);
            series.released.increment(records);
        });
    }

    /// A refused pull, for `reason` (no records released). The
    /// department's allowed series are made too, at 0, if they were not
    /// yet: a department registered after start has them all once it has
    /// asked for anything.
    pub(super) fn denied(
        &self,
        department: &str,
        dataset: Dataset,
        reason: impl Into<SharedString>,
    ) {
        pulls(department, dataset, "deny", reason.into()).increment(1);
        self.register(department, dataset);
    }

    /// Makes `department`'s series of `dataset` exist, at 0 (the first
    /// scrape shows them).
    pub(super) fn register(&self, department: &str, dataset: Dataset) {
        self.series(department, dataset, |_| ());
    }

    /// Hands `department`'s series of `dataset` to `use_them`, made first
    /// if new. Used under the read lock: the handles are not cloned (two
    /// shared reference counts touched on every pull) to be used.
    fn series(&self, department: &str, dataset: Dataset, use_them: impl FnOnce(&Allowed)) {
        {
            let kept = self.allowed.read().expect("pull metrics lock");
            if let Some(s) = kept.get(department).and_then(|d| d.get(&dataset)) {
                return use_them(s);
            }
        }
        let made = Allowed {
            pulls: pulls(department, dataset, "allow", "-".into()),
            released: metrics::counter!(
                "govshare_records_released_total",
                "department" => department.to_string(),
                "dataset" => dataset.name(),
            ),
        };
        let mut kept = self.allowed.write().expect("pull metrics lock");
        let department = kept.entry(department.into()).or_default();
        use_them(department.entry(dataset).or_insert(made));
    }
}

fn pulls(
    department: &str,
    dataset: Dataset,
    decision: &'static str,
    reason: SharedString,
) -> Counter {
    metrics::counter!(
        "govshare_pulls_total",
        "department" => department.to_string(),
        "dataset" => dataset.name(),
        "decision" => decision,
        "reason" => reason,
    )
}
