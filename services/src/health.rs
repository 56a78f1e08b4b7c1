//! `GET /health`: liveness and a real probe of the store.

use std::time::Instant;

use http::header::RETRY_AFTER;
use http::{HeaderValue, Request, Response, StatusCode};
use kalamdb_core::StoreHandle;
use kalamdb_http::{json_response, ApiError, ResponseBody};
use serde::Serialize;

/// Answers 200 `{status: "ok", version, uptime_secs, storage: "ok"}`, or 503 with
/// `status: "degraded"` and `storage: "error"` when the store fails its probe.
#[derive(Debug, Clone)]
pub struct Health {
    store: StoreHandle,
    started: Instant,
}

#[derive(Debug, Serialize)]
struct HealthBody {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
    storage: &'static str,
}

impl Health {
    /// An endpoint probing `store`, counting uptime from `started`.
    pub fn new(store: StoreHandle, started: Instant) -> Self {
        Self { store, started }
    }

    async fn handle<B>(self, _request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        let probe = self.store.health_check().await;
        if let Err(e) = &probe {
            tracing::warn!(error = %e, "health check: storage probe failed");
        }
        let healthy = probe.is_ok();
        let body = HealthBody {
            status: if healthy { "ok" } else { "degraded" },
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs(),
            storage: if healthy { "ok" } else { "error" },
        };
        if healthy {
            return Ok(json_response(StatusCode::OK, &body));
        }
        let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
        // Like every 503: a load balancer or client may retry shortly.
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        Ok(response)
    }
}

endpoint_service!(Health);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{answer, get, send, store};
    use kalamdb_core::Store;
    use tower::ServiceExt;

    #[tokio::test]
    async fn ok_while_the_store_answers_degraded_once_it_fails() {
        let (handle, mem, _) = store();
        let service = Health::new(handle, Instant::now());
        let (status, json) = send(&service, get("/health")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["status"], "ok");
        assert_eq!(json["storage"], "ok");
        assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));

        mem.close().unwrap();
        let response = service.oneshot(get("/health")).await.unwrap();
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let (status, json) = answer(response).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            (json["status"].as_str(), json["storage"].as_str()),
            (Some("degraded"), Some("error"))
        );
    }
}
