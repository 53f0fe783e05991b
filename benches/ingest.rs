//! Webhook ingest load generator (`cargo bench --bench ingest -- [options]`).
//!
//! Opens N keep-alive HTTP/1.1 connections to a running cognie-sync and has one task per
//! connection POST signed Notion events back to back, each with a unique event id (so every
//! request takes the durable "accepted" path, never the cheaper "duplicate" one). Only the HTTP
//! round trip is timed; the body and its signature are built before the clock starts. Requests
//! that complete during the warm-up, or after the measured window ends, are not counted.
//!
//! Options (each also readable from the environment variable in brackets):
//!   --url URL            webhook endpoint [INGEST_URL]
//!                        (default http://127.0.0.1:8000/api/notion/webhook/notion)
//!   --secret S           NOTION_WEBHOOK_SECRET of the service [INGEST_SECRET, NOTION_WEBHOOK_SECRET]
//!   -c, --connections N  concurrent connections (default 64) [INGEST_CONNECTIONS]
//!   -d, --duration S     measured seconds (default 20) [INGEST_DURATION]
//!   -w, --warmup S       warm-up seconds, not measured (default 2) [INGEST_WARMUP]
//!   -t, --threads N      load-generator runtime threads (default 1) [INGEST_THREADS]
//!   -r, --rate R         fixed-rate mode: R requests per second in all, spread evenly over the
//!                        connections (open loop: a request is due at its slot whatever happened
//!                        to the one before, and its latency counts from the slot, so a service
//!                        falling behind shows as latency, not as a lower send rate); without
//!                        it every connection sends back to back [INGEST_RATE]
//!   --report-every S     also print p50/p99 of each S-second interval to stderr, to see
//!                        latency drift over a long run [INGEST_REPORT_EVERY]
//!
//! The last line printed is machine-readable:
//! `RESULT webhooks_per_sec=... requests=... accepted=... errors=... p50_ms=... p90_ms=... p99_ms=... max_ms=...`

use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const DEFAULT_URL: &str = "http://127.0.0.1:8000/api/notion/webhook/notion";

struct Options {
    url: String,
    secret: String,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    threads: usize,
    /// Requests per second in all (fixed-rate mode), or `None` for back to back.
    rate: Option<f64>,
    report_every: Option<Duration>,
}

fn usage() -> &'static str {
    "usage: ingest [--url URL] --secret SECRET [-c CONNECTIONS] [-d SECONDS] [-w WARMUP_SECONDS] [-t THREADS] [-r RATE] [--report-every SECONDS]"
}

fn parse_options() -> Result<Options, String> {
    let env = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()));
    let mut url = env(&["INGEST_URL"]).unwrap_or_else(|| DEFAULT_URL.to_owned());
    let mut secret = env(&["INGEST_SECRET", "NOTION_WEBHOOK_SECRET"]);
    let mut connections = env(&["INGEST_CONNECTIONS"]).unwrap_or_else(|| "64".into());
    let mut duration = env(&["INGEST_DURATION"]).unwrap_or_else(|| "20".into());
    let mut warmup = env(&["INGEST_WARMUP"]).unwrap_or_else(|| "2".into());
    let mut threads = env(&["INGEST_THREADS"]).unwrap_or_else(|| "1".into());
    let mut rate = env(&["INGEST_RATE"]).unwrap_or_default();
    let mut report_every = env(&["INGEST_REPORT_EVERY"]).unwrap_or_default();

    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // `--opt=value` or `--opt value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            // `cargo bench` appends `--bench` to a harness-less bench's arguments.
            "--bench" => continue,
            "-h" | "--help" => return Err(usage().into()),
            "--url" => &mut url,
            "--secret" => {
                let value = inline.or_else(|| args.next()).ok_or("--secret needs a value")?;
                secret = Some(value);
                continue;
            }
            "-c" | "--connections" => &mut connections,
            "-d" | "--duration" => &mut duration,
            "-w" | "--warmup" => &mut warmup,
            "-t" | "--threads" => &mut threads,
            "-r" | "--rate" => &mut rate,
            "--report-every" => &mut report_every,
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        };
        *slot = inline.or_else(|| args.next()).ok_or_else(|| format!("{flag} needs a value"))?;
    }

    let positive = |name: &str, v: &str| -> Result<u64, String> {
        v.parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{name} must be a positive integer, not {v:?}"))
    };
    let seconds = |name: &str, v: &str| -> Result<Duration, String> {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("{name} must be a number of seconds, not {v:?}"))
    };
    let options = Options {
        url,
        secret: secret
            .ok_or_else(|| format!("no secret: pass --secret or set NOTION_WEBHOOK_SECRET\n{}", usage()))?,
        connections: positive("connections", &connections)? as usize,
        duration: seconds("duration", &duration)?,
        warmup: seconds("warmup", &warmup)?,
        threads: positive("threads", &threads)? as usize,
        rate: match rate.as_str() {
            "" => None,
            raw => Some(raw.parse::<f64>().ok().filter(|r| r.is_finite() && *r > 0.0).ok_or_else(|| {
                format!("rate must be a positive number of requests per second, not {raw:?}")
            })?),
        },
        report_every: match report_every.as_str() {
            "" => None,
            raw => Some(seconds("report-every", raw)?).filter(|d| !d.is_zero()),
        },
    };
    if options.duration.is_zero() {
        return Err("duration must be more than 0 seconds".into());
    }
    Ok(options)
}

/// A ~1 KiB `page.content_updated` envelope split around its event id, so each request only
/// writes a fresh UUID between two precomputed halves.
struct BodyTemplate {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl BodyTemplate {
    fn new() -> Self {
        const ID_MARKER: &str = "00000000-0000-0000-0000-000000000000";
        let blocks: Vec<_> = (0..6)
            .map(|i| serde_json::json!({ "id": format!("1f3c8a2e-4b7d-8106-97f8-a9b0c1d2e3f{i}"), "type": "block" }))
            .collect();
        let envelope = serde_json::json!({
            "id": ID_MARKER,
            "timestamp": "2026-05-12T07:04:19.874Z",
            "workspace_id": "5c2d8e4f-1a3b-4c6d-9e7f-2a4b6c8d0e1f",
            "workspace_name": "Maya's Study Space",
            "subscription_id": "2b9f4e61-7c3a-4d85-b0e2-9f1a6c3d5e70",
            "integration_id": "1e7d2a9b-3c4f-8012-9a5b-00c7e3f1d2a8",
            "type": "page.content_updated",
            "authors": [{ "id": "a3f1c9d2-6b4e-4f7a-8c0d-1e2f3a4b5c6d", "type": "person" }],
            "accessible_by": [
                { "id": "a3f1c9d2-6b4e-4f7a-8c0d-1e2f3a4b5c6d", "type": "person" },
                { "id": "1e7d2a9b-3c4f-81a5-b8c2-0027d4e9f6a1", "type": "bot" }
            ],
            "attempt_number": 1,
            "api_version": "2025-09-03",
            "entity": { "id": "1f3c8a2e-4b7d-80a1-9c5e-d2f4a6b8c0e1", "type": "page" },
            "data": {
                "parent": {
                    "id": "1f3c8a2e-4b7d-8012-a6e9-c1d3f5a7b9e2",
                    "type": "database",
                    "data_source_id": "1f3c8a2e-4b7d-8034-b1f2-000c5e7a9d3b"
                },
                "updated_blocks": blocks
            }
        });
        let text = serde_json::to_string(&envelope).expect("a JSON value always serialises");
        let at = text.find(ID_MARKER).expect("the marker is in the body");
        Self { head: text.as_bytes()[..at].to_vec(), tail: text.as_bytes()[at + ID_MARKER.len()..].to_vec() }
    }

    fn len(&self) -> usize {
        self.head.len() + uuid::fmt::Hyphenated::LENGTH + self.tail.len()
    }

    /// A body with a fresh event id, and its `X-Notion-Signature` header value.
    fn build(&self, key: &HmacSha256) -> (Vec<u8>, String) {
        let mut body = Vec::with_capacity(self.len());
        body.extend_from_slice(&self.head);
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        body.extend_from_slice(uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id).as_bytes());
        body.extend_from_slice(&self.tail);
        let mut mac = key.clone();
        mac.update(&body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        (body, signature)
    }
}

/// What one connection saw during the measured window.
#[derive(Default)]
struct Tally {
    /// Round-trip times of completed requests, in microseconds.
    latencies_us: Vec<u32>,
    /// In fixed-rate mode: send-to-answer times (µs), without the time a request waited past
    /// its slot for its connection.
    round_trips_us: Vec<u32>,
    accepted: u64,
    /// Accepted at any time (warm-up and the tail after the window too): what the database
    /// should hold, to cross-check with a row count.
    accepted_all: u64,
    /// 200s whose `status` was not `accepted` (duplicate, ignored...).
    other_ok: u64,
    by_status: BTreeMap<u16, u64>,
    /// Transport failures (connect, reset, timeout), by a short description.
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.round_trips_us.extend(other.round_trips_us);
        self.accepted += other.accepted;
        self.accepted_all += other.accepted_all;
        self.other_ok += other.other_ok;
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// When a connection sends: back to back, or at fixed slots (fixed-rate mode).
#[derive(Clone, Copy)]
struct Schedule {
    /// The first slot of this connection.
    first: Instant,
    /// Time between this connection's slots: connections / rate.
    every: Option<Duration>,
}

/// Latencies (µs) completed in the current reporting interval, shared by every connection.
type IntervalLatencies = Arc<std::sync::Mutex<Vec<u32>>>;

#[allow(clippy::too_many_arguments)]
async fn connection_loop(
    client: reqwest::Client,
    url: Arc<str>,
    template: Arc<BodyTemplate>,
    key: HmacSha256,
    measure_from: Instant,
    measure_until: Instant,
    schedule: Schedule,
    interval: Option<IntervalLatencies>,
) -> Tally {
    let mut tally = Tally::default();
    let mut slot = 0u32;
    loop {
        // In fixed-rate mode the request is due at its slot, and late is late: the clock starts
        // at the slot, not when this connection got round to it.
        let due = schedule.every.map(|every| schedule.first + every * slot);
        slot += 1;
        if let Some(due) = due {
            if due >= measure_until {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        if Instant::now() >= measure_until {
            break;
        }
        let (body, signature) = template.build(&key);
        let request = client
            .post(&*url)
            .header("content-type", "application/json")
            .header("x-notion-signature", signature)
            .body(body);

        let sent = Instant::now();
        let started = due.unwrap_or(sent);
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                response.bytes().await.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        let finished = Instant::now();
        if let Ok((200, body)) = &outcome
            && says_accepted(body)
        {
            tally.accepted_all += 1;
        }

        if finished < measure_from || finished > measure_until {
            // Warm-up, or a request still in flight when the window closed.
            if outcome.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            continue;
        }
        match outcome {
            Ok((status, body)) => {
                let micros = (finished - started).as_micros().min(u32::MAX as u128) as u32;
                tally.latencies_us.push(micros);
                if due.is_some() {
                    tally.round_trips_us.push((finished - sent).as_micros().min(u32::MAX as u128) as u32);
                }
                if let Some(interval) = &interval {
                    interval.lock().expect("interval latencies").push(micros);
                }
                *tally.by_status.entry(status).or_default() += 1;
                if status == 200 {
                    if says_accepted(&body) {
                        tally.accepted += 1;
                    } else {
                        tally.other_ok += 1;
                    }
                }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout".to_owned()
                } else if e.is_connect() {
                    "connect".to_owned()
                } else {
                    let mut s = e.to_string();
                    s.truncate(80);
                    s
                };
                *tally.errors.entry(kind).or_default() += 1;
                // Do not spin on a dead server.
                if schedule.every.is_none() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    tally
}

/// Whether a 200's JSON says `"status":"accepted"` (cheaper than parsing it).
fn says_accepted(body: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"accepted\"";
    body.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_us.len()) - 1;
    sorted_us[idx] as f64 / 1000.0
}

async fn run(options: Options) -> Result<(), String> {
    let template = Arc::new(BodyTemplate::new());
    let key = HmacSha256::new_from_slice(options.secret.as_bytes()).expect("HMAC accepts keys of any length");
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(options.connections)
        .pool_idle_timeout(None)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;

    // One request before the clock starts: fail fast on a wrong URL or secret.
    let (body, signature) = template.build(&key);
    let probe = client
        .post(&options.url)
        .header("content-type", "application/json")
        .header("x-notion-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", options.url))?;
    let probe_status = probe.status();
    let probe_body = probe.text().await.unwrap_or_default();
    if !probe_status.is_success() || !says_accepted(probe_body.as_bytes()) {
        return Err(format!("probe request was not accepted: {probe_status} {probe_body}"));
    }

    eprintln!(
        "ingest: {} connections{}, {:.1}s warm-up + {:.1}s measured, {} client thread(s), body {} bytes, {}",
        options.connections,
        options.rate.map(|r| format!(" at {r}/s in all")).unwrap_or_default(),
        options.warmup.as_secs_f64(),
        options.duration.as_secs_f64(),
        options.threads,
        template.len(),
        options.url,
    );

    let url: Arc<str> = options.url.as_str().into();
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let measure_until = measure_from + options.duration;
    // Fixed rate: connection i takes slots i, i + C, i + 2C, ... of a rate-R clock.
    let every = options.rate.map(|rate| Duration::from_secs_f64(options.connections as f64 / rate));
    let offset =
        |i: usize| options.rate.map_or(Duration::ZERO, |rate| Duration::from_secs_f64(i as f64 / rate));
    let interval: Option<IntervalLatencies> = options.report_every.map(|_| Arc::default());
    let reporter = options.report_every.zip(interval.clone()).map(|(every, interval)| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at((measure_from + every).into(), every);
            let mut since = measure_from;
            loop {
                // The last interval ends with the measured window (it may be shorter).
                let end = tokio::select! {
                    _ = tick.tick() => false,
                    _ = tokio::time::sleep_until(measure_until.into()) => true,
                };
                let mut lat = std::mem::take(&mut *interval.lock().expect("interval latencies"));
                lat.sort_unstable();
                let seconds = since.elapsed().as_secs_f64();
                since = Instant::now();
                if !lat.is_empty() {
                    eprintln!(
                        "ingest: +{:>5.0}s  {:>7} requests ({:.1}/s)  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                        measure_from.elapsed().as_secs_f64(),
                        lat.len(),
                        lat.len() as f64 / seconds,
                        percentile_ms(&lat, 50.0),
                        percentile_ms(&lat, 99.0),
                        lat.last().map_or(f64::NAN, |us| *us as f64 / 1000.0),
                    );
                }
                if end {
                    return;
                }
            }
        })
    });
    let tasks: Vec<_> = (0..options.connections)
        .map(|i| {
            tokio::spawn(connection_loop(
                client.clone(),
                url.clone(),
                template.clone(),
                key.clone(),
                measure_from,
                measure_until,
                Schedule { first: start + offset(i), every },
                interval.clone(),
            ))
        })
        .collect();
    // The probe was accepted too.
    let mut total = Tally { accepted_all: 1, ..Tally::default() };
    for task in tasks {
        total.merge(task.await.map_err(|e| format!("a connection task failed: {e}"))?);
    }
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }

    let window = options.duration.as_secs_f64();
    let mut lat = std::mem::take(&mut total.latencies_us);
    lat.sort_unstable();
    let mut round_trips = std::mem::take(&mut total.round_trips_us);
    round_trips.sort_unstable();
    let (rt_p50, rt_p99) = (percentile_ms(&round_trips, 50.0), percentile_ms(&round_trips, 99.0));
    let requests = lat.len() as u64;
    let errors: u64 = total.errors.values().sum();
    let non_200: u64 = total.by_status.iter().filter(|(s, _)| **s != 200).map(|(_, n)| n).sum();
    let accepted_per_sec = total.accepted as f64 / window;
    let (p50, p90, p99) = (percentile_ms(&lat, 50.0), percentile_ms(&lat, 90.0), percentile_ms(&lat, 99.0));
    let max = lat.last().map_or(f64::NAN, |us| *us as f64 / 1000.0);
    let mean = if lat.is_empty() {
        f64::NAN
    } else {
        lat.iter().map(|&u| u as f64).sum::<f64>() / lat.len() as f64 / 1000.0
    };

    println!("requests completed:  {requests} in {window:.1}s ({:.1}/s)", requests as f64 / window);
    println!("accepted:            {} ({accepted_per_sec:.1}/s)", total.accepted);
    if total.other_ok > 0 {
        println!("200 but not accepted: {}", total.other_ok);
    }
    println!(
        "accepted in all:     {} (incl. probe, warm-up and requests in flight at the end)",
        total.accepted_all
    );
    println!("non-200 responses:   {non_200}");
    for (status, n) in total.by_status.iter().filter(|(s, _)| **s != 200) {
        println!("  HTTP {status}: {n}");
    }
    println!("transport errors:    {errors}");
    for (kind, n) in &total.errors {
        println!("  {kind}: {n}");
    }
    println!("latency ms:          p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  max {max:.2}  mean {mean:.2}");
    if options.rate.is_some() {
        println!(
            "                     (from each request's slot; send to answer: p50 {rt_p50:.2}  p99 {rt_p99:.2})"
        );
    }
    println!(
        "RESULT webhooks_per_sec={accepted_per_sec:.1} requests={requests} accepted={} non_200={non_200} errors={errors} \
         p50_ms={p50:.2} p90_ms={p90:.2} p99_ms={p99:.2} max_ms={max:.2} connections={} duration_s={window:.1} accepted_all={} \
         target_rate={} rt_p50_ms={rt_p50:.2} rt_p99_ms={rt_p99:.2}",
        total.accepted,
        options.connections,
        total.accepted_all,
        options.rate.map_or("none".to_owned(), |r| r.to_string()),
    );
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ingest: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = if options.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(options.threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ingest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest: {e}");
            ExitCode::FAILURE
        }
    }
}
