//! What the kernel says about the gateway process: CPU time (in total and
//! per thread, grouped by thread name) and resident memory, from `/proc`;
//! and about the commands the bench runs to their end.

use std::collections::BTreeMap;

pub struct Sampler {
    pid: u32,
    tick: f64,
}

/// CPU seconds so far: in total, and per thread group.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    pub total: f64,
    pub threads: BTreeMap<String, f64>,
}

impl Cpu {
    pub fn plus(&self, other: &Cpu) -> Cpu {
        let mut threads = self.threads.clone();
        for (k, v) in &other.threads {
            *threads.entry(k.clone()).or_insert(0.0) += v;
        }
        Cpu {
            total: self.total + other.total,
            threads,
        }
    }

    pub fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            total: self.total - before.total,
            threads: self
                .threads
                .iter()
                .map(|(k, v)| (k.clone(), v - before.threads.get(k).copied().unwrap_or(0.0)))
                .collect(),
        }
    }
}

/// utime + stime of a `/proc/.../stat` line, in clock ticks.
fn ticks(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
}

/// Thread names without their numbers: "tokio-runtime-w", "audit-writer".
fn group(comm: &str) -> String {
    comm.trim()
        .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '#')
        .to_string()
}

impl Sampler {
    pub fn new(pid: u32) -> Self {
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Self {
            pid,
            tick: if tick > 0.0 { tick } else { 100.0 },
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// This process (for in-process measurements).
    pub fn own() -> Self {
        Self::new(std::process::id())
    }

    /// CPU seconds so far of every process named `comm` (PostgreSQL's
    /// server processes, say), whoever started them.
    pub fn cpu_of_all(&self, comm: &str) -> f64 {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return 0.0;
        };
        procs
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter(|e| {
                std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == comm)
            })
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter_map(|s| ticks(&s))
            .sum::<f64>()
            / self.tick
    }

    /// CPU seconds so far, in total.
    pub fn seconds(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| ticks(&s))
            .unwrap_or(0.0)
            / self.tick
    }

    pub fn cpu(&self) -> Cpu {
        let base = format!("/proc/{}", self.pid);
        let total = self.seconds();
        let mut threads = BTreeMap::new();
        if let Ok(tasks) = std::fs::read_dir(format!("{base}/task")) {
            for t in tasks.filter_map(Result::ok) {
                let p = t.path();
                let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
                let cpu = std::fs::read_to_string(p.join("stat"))
                    .ok()
                    .and_then(|s| ticks(&s))
                    .unwrap_or(0.0)
                    / self.tick;
                *threads.entry(group(&name)).or_insert(0.0) += cpu;
            }
        }
        Cpu { total, threads }
    }

    pub fn rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

/// The sum of a metric's samples on a gateway's `/metrics`.
pub async fn scrape(ops: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(ops).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// CPU seconds of the bench's children that have ended and been waited
/// for: the delta around one command run to its end is that command's
/// whole CPU, as long as no other child is reaped meanwhile (the bench
/// runs its phases one after another). `None` if the kernel will not say.
pub fn ended_children_cpu() -> Option<f64> {
    // SAFETY: rusage is plain integers, so all zeroes is a valid value;
    // getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live, writable rusage for the call's duration.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(usage.ru_utime) + secs(usage.ru_stime))
}
