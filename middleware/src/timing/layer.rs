use tower_layer::Layer;

use super::{RouteOf, Timing};

/// Wraps a service in [`Timing`].
#[derive(Debug, Clone, Copy)]
pub struct TimingLayer {
    route_of: RouteOf,
}

impl TimingLayer {
    /// Times requests, labelling each with the route `route_of` names for its path.
    pub fn new(route_of: RouteOf) -> Self {
        Self { route_of }
    }
}

impl<S> Layer<S> for TimingLayer {
    type Service = Timing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timing {
            inner,
            route_of: self.route_of,
            handles: Default::default(),
        }
    }
}
