use tower_layer::Layer;

use super::Timing;

/// Wraps a service in [`Timing`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TimingLayer;

impl TimingLayer {
    /// The layer.
    pub fn new() -> Self {
        TimingLayer
    }
}

impl<S> Layer<S> for TimingLayer {
    type Service = Timing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timing { inner }
    }
}
