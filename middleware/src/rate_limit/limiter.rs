use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use kalamdb_http::Principal;

use super::{Config, KeyBy};

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Keyed<C> =
    RateLimiter<Key, DefaultKeyedStateStore<Key>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Whose allowance a request spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Principal(Principal),
}

enum Kind<C: Clock> {
    Global(Direct<C>),
    /// Per peer address, or (`by_principal`) per principal with the peer address for
    /// requests without one.
    Keyed {
        limiter: Keyed<C>,
        by_principal: bool,
    },
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
            KeyBy::Ip | KeyBy::Principal => Kind::Keyed {
                limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
                by_principal: config.key == KeyBy::Principal,
            },
        };
        Self {
            kind,
            last_prune: Mutex::new(clock.now()),
            clock,
            prune_every: Duration::from_millis(config.prune_interval_ms),
        }
    }

    /// Spends one request of the allowance of `principal` (when keyed by principal) or `peer`,
    /// or says how long until there is one.
    pub(super) fn check(
        &self,
        peer: Option<IpAddr>,
        principal: Option<&Principal>,
    ) -> Result<(), Duration> {
        let outcome = match &self.kind {
            Kind::Global(limiter) => limiter.check(),
            Kind::Keyed {
                limiter,
                by_principal,
            } => {
                self.prune_if_due(limiter);
                let key = match principal.filter(|_| *by_principal) {
                    Some(principal) => Key::Principal(principal.clone()),
                    // Requests without a peer (built by hand, not off a socket) share one
                    // allowance.
                    None => Key::Ip(peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
                };
                limiter.check_key(&key)
            }
        };
        outcome.map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// How many peers have state, for tests and metrics.
    pub(super) fn tracked_keys(&self) -> usize {
        match &self.kind {
            Kind::Global(_) => 1,
            Kind::Keyed { limiter, .. } => limiter.len(),
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
