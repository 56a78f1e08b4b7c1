use std::time::Duration;

use tower_layer::Layer;

use super::RequestLog;

/// Wraps a service in [`RequestLog`].
#[derive(Debug, Clone, Copy)]
pub struct RequestLogLayer {
    slow: Duration,
}

impl RequestLogLayer {
    /// Logs each request, at `warn` when it takes `slow` or longer.
    pub fn new(slow: Duration) -> Self {
        Self { slow }
    }
}

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLog {
            inner,
            slow: self.slow,
        }
    }
}
