//! Timeout: a request that has not been answered within `middleware.timeout.request_timeout_ms`
//! is abandoned and answered 503 `timeout` with `Retry-After` (by the rescue layer).
//!
//! This is tower's own [`tower::timeout::Timeout`]; this module owns its settings. Its timer is
//! tokio's, so tests drive it with `tokio::time::pause`.
//!
//! ```
//! use http::{Request, Response};
//! use kalamdb_http::{full, BoxError};
//! use kalamdb_middleware::{rescue::RescueLayer, timeout};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let service = ServiceBuilder::new()
//!     .layer(RescueLayer::new())
//!     .layer(timeout::Config { request_timeout_ms: 50 }.layer())
//!     .service_fn(|_: Request<()>| async {
//!         tokio::time::sleep(std::time::Duration::from_secs(1)).await;
//!         Ok::<_, BoxError>(Response::new(full("too late")))
//!     });
//! assert_eq!(service.oneshot(Request::new(())).await.unwrap().status(), 503);
//! # });
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use tower::timeout::error::Elapsed;
pub use tower::timeout::{Timeout, TimeoutLayer};

use crate::InvalidSetting;

/// `[middleware.timeout]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long a request may take, from entering the layer to its response head, in
    /// milliseconds. Default 30000; at least 1.
    pub request_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            request_timeout_ms: 30_000,
        }
    }
}

impl Config {
    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.request_timeout_ms == 0 {
            return Err(InvalidSetting::new(
                "middleware.timeout.request_timeout_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The layer these settings describe.
    pub fn layer(&self) -> TimeoutLayer {
        TimeoutLayer::new(Duration::from_millis(self.request_timeout_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rescue::RescueLayer;
    use http::{Request, Response, StatusCode};
    use kalamdb_http::{full, BoxError};
    use tower::{ServiceBuilder, ServiceExt};

    async fn respond_after(delay_ms: u64, timeout_ms: u64) -> StatusCode {
        ServiceBuilder::new()
            .layer(RescueLayer::new())
            .layer(
                Config {
                    request_timeout_ms: timeout_ms,
                }
                .layer(),
            )
            .service_fn(move |_: Request<()>| async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok::<_, BoxError>(Response::new(full("done")))
            })
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .status()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_request_is_503_and_a_quick_one_passes() {
        assert_eq!(
            respond_after(1_000, 500).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(respond_after(499, 500).await, StatusCode::OK);
    }

    #[test]
    fn zero_is_refused_naming_the_key() {
        let err = Config {
            request_timeout_ms: 0,
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.key, "middleware.timeout.request_timeout_ms");
        assert!(Config::default().validate().is_ok());
    }
}
