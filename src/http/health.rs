//! Liveness and readiness.

use std::{sync::Arc, time::Duration};

use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::{Json, PlainText},
};

use super::{ApiTags, error::ErrorBody};
use crate::{metrics::Metrics, store::Store};

/// What the health and metrics endpoints read: they are served with the API, and alone on
/// `OPS_BIND_ADDR` (see [`super::ops_routes`]).
pub struct OpsState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

/// How long readiness waits for the database before it says "not ready".
const READY_TIMEOUT: Duration = Duration::from_secs(2);

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
        match tokio::time::timeout(READY_TIMEOUT, state.store.is_ready()).await {
            Ok(Ok(true)) => ReadyResponse::Ready(Json(HealthStatus { status: "ok".into() })),
            Ok(Ok(false)) => ReadyResponse::NotReady(ErrorBody::new(
                "migrations_pending",
                "database migrations are not applied yet",
            )),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness check failed");
                ReadyResponse::NotReady(ErrorBody::unavailable())
            }
            Err(_) => ReadyResponse::NotReady(ErrorBody::unavailable()),
        }
    }

    /// Prometheus metrics (text exposition format): webhooks by outcome, step durations,
    /// Notion requests by status, rate-limit waits, redelivered step jobs, runs by state, queue
    /// depth, process metrics.
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self, state: Data<&Arc<OpsState>>) -> PlainText<String> {
        let queue = match tokio::time::timeout(READY_TIMEOUT, state.store.queue_stats()).await {
            Ok(Ok(stats)) => Some(stats),
            _ => None,
        };
        PlainText(state.metrics.render(queue.as_ref()))
    }
}
