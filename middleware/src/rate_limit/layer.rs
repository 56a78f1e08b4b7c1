use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use tower_layer::Layer;

use super::limiter::Limiter;
use super::{Config, RateLimit};

/// Wraps a service in [`RateLimit`]. Every service it builds, and every clone of those, spends
/// from the same allowances.
pub struct RateLimitLayer<C: Clock = DefaultClock> {
    limiter: Arc<Limiter<C>>,
}

impl<C: Clock> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<C: Clock> std::fmt::Debug for RateLimitLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer").finish_non_exhaustive()
    }
}

impl<C: Clock + Clone> RateLimitLayer<C> {
    /// A limiter on `clock`: tests pass governor's `FakeRelativeClock`.
    ///
    /// # Panics
    /// When `config` fails [`Config::validate`].
    pub fn with_clock(config: &Config, clock: C) -> Self {
        Self {
            limiter: Arc::new(Limiter::new(config, clock)),
        }
    }

    /// How many peers the limiter holds state for (1 for a global limiter).
    pub fn tracked_keys(&self) -> usize {
        self.limiter.tracked_keys()
    }
}

impl<S, C: Clock> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
        }
    }
}
