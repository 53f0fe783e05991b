//! Prometheus metrics, rendered in the text exposition format at `GET /metrics`: webhooks by
//! outcome, step durations by step and outcome, Notion requests by status, rate-limit waits,
//! queue depth, and process metrics. One registry per process, kept in memory (counters start
//! at zero on restart, as Prometheus expects).

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::store::QueueStats;

/// Upper bounds (seconds) of the step duration histogram's buckets.
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    /// (outcome, reason) → count; reason is empty except for rejections.
    webhooks: BTreeMap<(&'static str, &'static str), u64>,
    /// (step, outcome) → durations.
    steps: BTreeMap<(String, &'static str), Histogram>,
    /// HTTP status (or `error` for no response) → count.
    notion_requests: BTreeMap<String, u64>,
    rate_limit_waits: u64,
    step_jobs_redelivered: u64,
    steps_taken_over: u64,
}

pub struct Metrics {
    inner: Mutex<Inner>,
    started_at: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        let started_at =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default();
        Self { inner: Mutex::default(), started_at }
    }
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// A delivery answered: `accepted`, `duplicate`, `ignored`, `verification_received`, or
    /// `rejected` with a reason (`signature_mismatch`, `payload_too_large`, ...), or `error`.
    pub fn webhook(&self, outcome: &'static str, reason: &'static str) {
        self.with(|m| *m.webhooks.entry((outcome, reason)).or_default() += 1);
    }

    /// A step attempt ended (`succeeded`, `waiting`, `retrying`, `failed`) after `seconds`.
    pub fn step_finished(&self, step: &str, outcome: &'static str, seconds: f64) {
        self.with(|m| {
            let h = m.steps.entry((step.to_owned(), outcome)).or_default();
            if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
                h.counts[i] += 1;
            }
            h.sum += seconds;
            h.count += 1;
        });
    }

    /// A Notion request was answered with `status` (or failed without an answer: `None`).
    pub fn notion_request(&self, status: Option<u16>) {
        let key = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.with(|m| *m.notion_requests.entry(key).or_default() += 1);
    }

    /// A step had to wait for a rate-limit slot.
    pub fn rate_limit_wait(&self) {
        self.with(|m| m.rate_limit_waits += 1);
    }

    /// A step job failed on an unexpected database error and was enqueued again.
    pub fn step_job_redelivered(&self) {
        self.with(|m| m.step_jobs_redelivered += 1);
    }

    /// This process's lease sweeper made `n` steps runnable again whose worker had stopped
    /// heartbeating (died, hung, or lost the database for longer than its lease).
    pub fn steps_taken_over(&self, n: usize) {
        self.with(|m| m.steps_taken_over += n as u64);
    }

    /// The exposition text. `queue` comes from the database at scrape time (absent when the
    /// database is unreachable: the other metrics are still served).
    pub fn render(&self, queue: Option<&QueueStats>) -> String {
        let mut out = String::new();
        self.with(|m| {
            header(&mut out, "cognie_webhooks_total", "counter", "Webhook deliveries by outcome (and rejection reason).");
            for ((outcome, reason), n) in &m.webhooks {
                let _ = writeln!(out, "cognie_webhooks_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} {n}");
            }
            header(&mut out, "cognie_step_duration_seconds", "histogram", "Step attempt durations by step and outcome.");
            for ((step, outcome), h) in &m.steps {
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(h.counts) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "cognie_step_duration_seconds_bucket{{step=\"{step}\",outcome=\"{outcome}\",le=\"{bound}\"}} {cumulative}"
                    );
                }
                let labels = format!("step=\"{step}\",outcome=\"{outcome}\"");
                let _ = writeln!(out, "cognie_step_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "cognie_step_duration_seconds_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "cognie_step_duration_seconds_count{{{labels}}} {}", h.count);
            }
            header(&mut out, "cognie_notion_requests_total", "counter", "Notion API requests by HTTP status.");
            for (status, n) in &m.notion_requests {
                let _ = writeln!(out, "cognie_notion_requests_total{{status=\"{status}\"}} {n}");
            }
            header(&mut out, "cognie_rate_limit_waits_total", "counter", "Steps rescheduled to wait for a rate-limit slot.");
            let _ = writeln!(out, "cognie_rate_limit_waits_total {}", m.rate_limit_waits);
            header(
                &mut out,
                "cognie_step_jobs_redelivered_total",
                "counter",
                "Step jobs that failed on an unexpected database error and were enqueued again (see the error log).",
            );
            let _ = writeln!(out, "cognie_step_jobs_redelivered_total {}", m.step_jobs_redelivered);
            header(
                &mut out,
                "cognie_steps_taken_over_total",
                "counter",
                "Steps whose worker stopped heartbeating, handed on by this process's lease sweeper.",
            );
            let _ = writeln!(out, "cognie_steps_taken_over_total {}", m.steps_taken_over);
        });
        if let Some(q) = queue {
            header(
                &mut out,
                "cognie_workflow_runs",
                "gauge",
                "Workflow runs by state (succeeded is estimated on large tables, see /api/queue/stats).",
            );
            for (state, n) in &q.runs {
                let _ = writeln!(out, "cognie_workflow_runs{{state=\"{state}\"}} {n}");
            }
            header(
                &mut out,
                "cognie_queue_depth",
                "gauge",
                "Runs waiting to run now or later (pending + waiting).",
            );
            let depth =
                q.runs.get("pending").copied().unwrap_or(0) + q.runs.get("waiting").copied().unwrap_or(0);
            let _ = writeln!(out, "cognie_queue_depth {depth}");
            header(
                &mut out,
                "cognie_oldest_pending_age_seconds",
                "gauge",
                "Age of the oldest run due but not started.",
            );
            let _ = writeln!(
                out,
                "cognie_oldest_pending_age_seconds {}",
                q.oldest_pending_age_seconds.unwrap_or(0.0)
            );
        }
        process_metrics(&mut out, self.started_at);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Resident memory, CPU time and open file descriptors, from /proc (Linux only).
fn process_metrics(out: &mut String, started_at: f64) {
    header(out, "process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.");
    let _ = writeln!(out, "process_start_time_seconds {started_at}");
    if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
    {
        header(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        let _ = writeln!(out, "process_resident_memory_bytes {}", pages * 4096);
    }
    if let Some(ticks) = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = s.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    }) {
        header(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
        let _ = writeln!(out, "process_cpu_seconds_total {}", ticks as f64 / 100.0);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        header(out, "process_open_fds", "gauge", "Number of open file descriptors.");
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.webhook("accepted", "");
        m.webhook("accepted", "");
        m.webhook("rejected", "signature_mismatch");
        m.step_finished("fetch", "succeeded", 0.02);
        m.step_finished("fetch", "succeeded", 3.0);
        m.notion_request(Some(429));
        m.steps_taken_over(2);
        m.steps_taken_over(1);
        let text = m.render(None);
        assert!(text.contains("cognie_webhooks_total{outcome=\"accepted\",reason=\"\"} 2"), "{text}");
        assert!(text.contains("cognie_webhooks_total{outcome=\"rejected\",reason=\"signature_mismatch\"} 1"));
        assert!(text.contains(
            "cognie_step_duration_seconds_bucket{step=\"fetch\",outcome=\"succeeded\",le=\"0.025\"} 1"
        ));
        assert!(text.contains(
            "cognie_step_duration_seconds_bucket{step=\"fetch\",outcome=\"succeeded\",le=\"5\"} 2"
        ));
        assert!(text.contains("cognie_step_duration_seconds_count{step=\"fetch\",outcome=\"succeeded\"} 2"));
        assert!(text.contains("cognie_notion_requests_total{status=\"429\"} 1"));
        assert!(text.contains("\ncognie_steps_taken_over_total 3\n"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"));
    }
}
