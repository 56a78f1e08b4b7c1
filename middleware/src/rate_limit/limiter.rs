use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::{Config, KeyBy};

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Keyed<C> =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<<C as Clock>::Instant>>;

enum Kind<C: Clock> {
    Global(Direct<C>),
    PerIp(Keyed<C>),
}

/// The limiter every clone of a layer's services shares.
pub(super) struct Limiter<C: Clock> {
    kind: Kind<C>,
    clock: C,
    prune_every: Duration,
    last_prune: Mutex<C::Instant>,
}

impl<C: Clock + Clone> Limiter<C> {
    pub(super) fn new(config: &Config, clock: C) -> Self {
        let per_second = NonZeroU32::new(config.requests_per_second)
            .expect("middleware.rate_limit.requests_per_second is validated to be at least 1");
        let burst = NonZeroU32::new(config.burst)
            .expect("middleware.rate_limit.burst is validated to be at least 1");
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let kind = match config.key {
            KeyBy::Global => Kind::Global(RateLimiter::direct_with_clock(quota, clock.clone())),
            KeyBy::Ip => Kind::PerIp(RateLimiter::dashmap_with_clock(quota, clock.clone())),
        };
        Self {
            kind,
            last_prune: Mutex::new(clock.now()),
            clock,
            prune_every: Duration::from_millis(config.prune_interval_ms),
        }
    }

    /// Spends one request of `peer`'s allowance, or says how long until there is one.
    pub(super) fn check(&self, peer: Option<IpAddr>) -> Result<(), Duration> {
        let outcome = match &self.kind {
            Kind::Global(limiter) => limiter.check(),
            Kind::PerIp(limiter) => {
                self.prune_if_due(limiter);
                // Requests without a peer (built by hand, not off a socket) share one allowance.
                let key = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                limiter.check_key(&key)
            }
        };
        outcome.map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// How many peers have state, for tests and metrics.
    pub(super) fn tracked_keys(&self) -> usize {
        match &self.kind {
            Kind::Global(_) => 1,
            Kind::PerIp(limiter) => limiter.len(),
        }
    }

    fn prune_if_due(&self, limiter: &Keyed<C>) {
        // Another request already pruning (or checking) is enough: never wait for it.
        let Ok(mut last) = self.last_prune.try_lock() else {
            return;
        };
        let now = self.clock.now();
        if Duration::from(now.duration_since(*last)) < self.prune_every {
            return;
        }
        *last = now;
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}
