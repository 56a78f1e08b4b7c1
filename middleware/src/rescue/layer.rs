use tower_layer::Layer;

use super::Rescue;

/// Wraps a service in [`Rescue`]. It has no settings: rescue is always on.
#[derive(Debug, Clone, Copy, Default)]
pub struct RescueLayer;

impl RescueLayer {
    /// The layer.
    pub fn new() -> Self {
        RescueLayer
    }
}

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rescue { inner }
    }
}
