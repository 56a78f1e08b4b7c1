use tower_layer::Layer;

use super::SetRequestId;

/// Wraps a service in [`SetRequestId`].
#[derive(Debug, Clone, Copy)]
pub struct RequestIdLayer {
    trust_incoming: bool,
}

impl RequestIdLayer {
    /// Keeps well-formed client ids when `trust_incoming`, else always makes a new one.
    pub fn new(trust_incoming: bool) -> Self {
        Self { trust_incoming }
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId {
            inner,
            trust_incoming: self.trust_incoming,
        }
    }
}
