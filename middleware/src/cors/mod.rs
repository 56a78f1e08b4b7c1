//! CORS: lets browser apps on other origins call the API. This is tower-http's
//! [`CorsLayer`], built from `[middleware.cors]`; it is off while `allowed_origins` is empty.
//!
//! It never refuses a request: a preflight (`OPTIONS` with `Access-Control-Request-Method`) is
//! answered with an empty 200 and the allowed methods and headers, and any other request passes
//! through with `Access-Control-Allow-Origin` added when its origin is allowed. Whether a
//! disallowed origin may read the answer is the browser's call, so there is no plain-text error
//! to wrap. `x-request-id`, `retry-after` and `server-timing` are exposed to scripts.
//!
//! ```
//! use http::{Request, Response};
//! use kalamdb_http::{full, BoxError};
//! use kalamdb_middleware::cors;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let config = cors::Config {
//!     allowed_origins: vec!["https://chat.example".into()],
//!     ..cors::Config::default()
//! };
//! let service = ServiceBuilder::new()
//!     .option_layer(config.layer().unwrap())
//!     .service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(full("ok"))) });
//! let request = Request::get("/health").header("origin", "https://chat.example").body(()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["access-control-allow-origin"], "https://chat.example");
//! # });
//! ```

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, ExposeHeaders};
pub use tower_http::cors::{Cors, CorsLayer};

use crate::InvalidSetting;

/// `[middleware.cors]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Origins allowed to call the API, such as `"https://chat.example"`, or `["*"]` for any.
    /// Default empty: CORS is off and browsers keep to same-origin calls.
    pub allowed_origins: Vec<String>,
    /// Methods a cross-origin request may use. Default `["GET", "POST"]`.
    pub allowed_methods: Vec<String>,
    /// Request headers a cross-origin request may send.
    /// Default `["content-type", "x-request-id", "idempotency-key"]`.
    pub allowed_headers: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds. Default 600.
    pub max_age_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: vec!["GET".into(), "POST".into()],
            allowed_headers: vec![
                "content-type".into(),
                "x-request-id".into(),
                "idempotency-key".into(),
            ],
            max_age_secs: 600,
        }
    }
}

impl Config {
    /// Checks every origin, method and header; the error names the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.parts().map(|_| ())
    }

    /// The layer these settings describe, `None` while no origin is allowed.
    pub fn layer(&self) -> Result<Option<CorsLayer>, InvalidSetting> {
        let (origin, methods, headers) = self.parts()?;
        let Some(origin) = origin else {
            return Ok(None);
        };
        Ok(Some(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods(methods)
                .allow_headers(headers)
                .max_age(Duration::from_secs(self.max_age_secs))
                .expose_headers(ExposeHeaders::list([
                    HeaderName::from_static("x-request-id"),
                    HeaderName::from_static("retry-after"),
                    HeaderName::from_static("server-timing"),
                ])),
        ))
    }

    #[allow(clippy::type_complexity)]
    fn parts(&self) -> Result<(Option<AllowOrigin>, Vec<Method>, Vec<HeaderName>), InvalidSetting> {
        let origin = match self.allowed_origins.as_slice() {
            [] => None,
            [any] if any == "*" => Some(AllowOrigin::any()),
            origins => {
                let mut values = Vec::with_capacity(origins.len());
                for origin in origins {
                    values.push(parse_origin(origin)?);
                }
                Some(AllowOrigin::list(values))
            }
        };
        let methods = self
            .allowed_methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.as_bytes()).map_err(|_| {
                    InvalidSetting::new(
                        "middleware.cors.allowed_methods",
                        format!("{m:?} is not an HTTP method"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let headers = self
            .allowed_headers
            .iter()
            .map(|h| {
                HeaderName::try_from(h.as_str()).map_err(|_| {
                    InvalidSetting::new(
                        "middleware.cors.allowed_headers",
                        format!("{h:?} is not a header name"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((origin, methods, headers))
    }
}

/// An origin is a scheme and a host with an optional port, nothing more: a path or a trailing
/// slash would never match what a browser sends.
fn parse_origin(origin: &str) -> Result<HeaderValue, InvalidSetting> {
    let invalid = |why: &str| {
        InvalidSetting::new(
            "middleware.cors.allowed_origins",
            format!("{origin:?} {why}"),
        )
    };
    if origin == "*" {
        return Err(invalid("must be the only entry to allow any origin"));
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| invalid("must start with http:// or https://"))?;
    if rest.is_empty() || rest.contains('/') {
        return Err(invalid("must be scheme://host[:port] with no path"));
    }
    HeaderValue::from_str(origin).map_err(|_| invalid("is not a valid header value"))
}

#[cfg(test)]
mod tests;
