//! Liveness and readiness.

use std::{sync::Arc, time::Duration};

use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::{Json, PlainText},
};

use super::{ApiTags, error::ErrorBody, recent::Recent};
use crate::{
    metrics::Metrics,
    store::{QueueStats, Store},
};

/// What the health and metrics endpoints read: they are served with the API, and alone on
/// `OPS_BIND_ADDR` (see [`super::ops_routes`]). They need no token, so what they read from the
/// database is read at most once per interval (see [`Recent`]).
pub struct OpsState {
    store: Store,
    metrics: Arc<Metrics>,
    readiness: Recent<Readiness>,
    queue: Recent<Option<QueueStats>>,
}

impl OpsState {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            metrics,
            readiness: Recent::new(READINESS_MAX_AGE),
            queue: Recent::new(QUEUE_STATS_MAX_AGE),
        }
    }
}

/// How long readiness waits for the database before it says "not ready".
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// How old a readiness answer may be (probes come every few seconds).
const READINESS_MAX_AGE: Duration = Duration::from_secs(1);
/// How old the queue gauges of `/metrics` may be (scrapes come every 15 s or more).
const QUEUE_STATS_MAX_AGE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
enum Readiness {
    Ready,
    MigrationsPending,
    Unavailable,
}

pub struct HealthApi;

#[derive(Debug, Object)]
pub struct HealthStatus {
    /// `ok`
    pub status: String,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The database is reachable and every migration is applied.
    #[oai(status = 200)]
    Ready(Json<HealthStatus>),
    /// Not ready: the database is unreachable or migrations are pending.
    #[oai(status = 503)]
    NotReady(Json<ErrorBody>),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process is up and serving HTTP.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<HealthStatus> {
        Json(HealthStatus { status: "ok".into() })
    }

    /// Readiness: the database is reachable and migrations are applied. Load balancers should
    /// route webhooks only to ready instances.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&Arc<OpsState>>) -> ReadyResponse {
        let check = || async {
            match tokio::time::timeout(READY_TIMEOUT, state.store.is_ready()).await {
                Ok(Ok(true)) => Readiness::Ready,
                Ok(Ok(false)) => Readiness::MigrationsPending,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "readiness check failed");
                    Readiness::Unavailable
                }
                Err(_) => Readiness::Unavailable,
            }
        };
        match state.readiness.get(check).await {
            Readiness::Ready => ReadyResponse::Ready(Json(HealthStatus { status: "ok".into() })),
            Readiness::MigrationsPending => ReadyResponse::NotReady(ErrorBody::new(
                "migrations_pending",
                "database migrations are not applied yet",
            )),
            Readiness::Unavailable => ReadyResponse::NotReady(ErrorBody::unavailable()),
        }
    }

    /// Prometheus metrics (text exposition format): webhooks by outcome, step durations,
    /// Notion requests by status, rate-limit waits, redelivered step jobs, runs by state, queue
    /// depth, process metrics.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, state: Data<&Arc<OpsState>>) -> PlainText<String> {
        let read =
            || async { tokio::time::timeout(READY_TIMEOUT, state.store.queue_stats()).await.ok()?.ok() };
        let queue = state.queue.get(read).await;
        PlainText(state.metrics.render(queue.as_ref()))
    }
}
