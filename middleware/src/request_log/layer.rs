use tower_layer::Layer;

use super::RequestLog;

/// Wraps a service in [`RequestLog`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLogLayer;

impl RequestLogLayer {
    /// The layer.
    pub fn new() -> Self {
        RequestLogLayer
    }
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLog { inner }
    }
}
