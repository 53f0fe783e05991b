//! Logging: human-readable or JSON lines on stdout (`LOG_FORMAT`), optionally also to a file
//! rotated daily (`LOG_FILE`, see [`daily_file`]), levels from `RUST_LOG`.

mod daily_file;

use std::path::Path;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Keep this alive for the life of the process: dropping it flushes buffered log lines.
pub struct TelemetryGuard {
    _guards: Vec<WorkerGuard>,
}

const DEFAULT_FILTER: &str = "info,sqlx=warn,apalis=warn,apalis_postgres=warn,apalis_core=warn";

pub fn init(format: LogFormat, log_file: Option<&Path>) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let mut guards = Vec::new();
    // Writing happens on a background thread so a slow terminal or disk never stalls a request;
    // `lossy(false)` makes a full buffer apply backpressure instead of dropping lines.
    let (stdout, guard) = NonBlockingBuilder::default().lossy(false).finish(std::io::stdout());
    guards.push(guard);
    let mut layers: Vec<Box<dyn Layer<_> + Send + Sync>> = vec![layer(format, stdout, true)];
    if let Some(path) = log_file {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if path.file_name().is_none() {
            anyhow::bail!("LOG_FILE `{}` names no file", path.display());
        }
        std::fs::create_dir_all(dir)?;
        let appender = daily_file::DailyFile::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open LOG_FILE `{}`: {e}", path.display()))?;
        let (file, guard) = NonBlockingBuilder::default().lossy(false).finish(appender);
        guards.push(guard);
        layers.push(layer(format, file, false));
    }
    // One global filter: per-layer filters inside a Vec of layers were seen to drop events.
    tracing_subscriber::registry().with(filter).with(layers).try_init()?;
    Ok(TelemetryGuard { _guards: guards })
}

fn layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer().with_writer(writer).with_target(false);
    match format {
        LogFormat::Pretty => base.with_ansi(ansi).boxed(),
        LogFormat::Json => {
            base.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
        }
    }
}
