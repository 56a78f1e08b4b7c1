use std::sync::Arc;

use tower_layer::Layer;

use super::{Auth, Verifier};

/// Wraps a service in [`Auth`]. Every service it builds shares one [`Verifier`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

/// What every [`Auth`] service of one layer shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) verifier: Verifier,
    pub(super) public_metrics: bool,
    /// Whether a path may carry its token as `?access_token=`.
    pub(super) query_token: fn(&str) -> bool,
}

impl AuthLayer {
    /// A layer checking credentials with `verifier`; `/metrics` is open when `public_metrics`,
    /// and `query_token` says which paths may carry the token in the query string.
    pub fn new(verifier: Verifier, public_metrics: bool, query_token: fn(&str) -> bool) -> Self {
        Self {
            shared: Arc::new(Shared {
                verifier,
                public_metrics,
                query_token,
            }),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}
