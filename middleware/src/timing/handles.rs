//! The metric handles of one timing layer, each looked up once.

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;

use http::StatusCode;
use metrics::{Counter, Gauge, Histogram};
use rustc_hash::FxBuildHasher;

use super::future::status_label;
use super::{REQUESTS_IN_FLIGHT, REQUESTS_TOTAL, REQUEST_DURATION_SECONDS};

/// `route`, `method`, and the status (`None` for an error passed on).
type Labels = (&'static str, &'static str, Option<StatusCode>);

/// Every handle one layer (and all its clones) has used so far.
///
/// Naming a labelled metric through the `metrics` macros builds its key and looks it up in the
/// recorder on every call: about 2,500 instructions a request, a twentieth of a whole insert.
/// The labels come from few values (see the module docs), so the map stays small, and they are
/// the server's own, not a client's, so they are hashed with Fx rather than the default SipHash,
/// which took half of this lookup. A handle is bound to the recorder in effect when its labels
/// first occur.
#[derive(Default)]
pub(super) struct Handles {
    in_flight: OnceLock<Gauge>,
    answered: RwLock<HashMap<Labels, (Counter, Histogram), FxBuildHasher>>,
}

impl Handles {
    /// The requests-in-flight gauge, looked up on its first use.
    pub(super) fn in_flight(&self) -> &Gauge {
        self.in_flight
            .get_or_init(|| metrics::gauge!(REQUESTS_IN_FLIGHT))
    }

    /// Counts one request answered with `labels` after `elapsed`.
    pub(super) fn record(&self, labels: Labels, elapsed: Duration) {
        let record = |(count, duration): &(Counter, Histogram)| {
            count.increment(1);
            duration.record(elapsed.as_secs_f64());
        };
        // A panic cannot leave the map half-updated: inserting is its only change.
        if let Some(found) = self
            .answered
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&labels)
        {
            return record(found);
        }
        let (route, method, status) = labels;
        let status = status.map_or_else(|| "error".to_owned(), status_label);
        let created = (
            metrics::counter!(REQUESTS_TOTAL, "route" => route, "method" => method, "status" => status),
            metrics::histogram!(REQUEST_DURATION_SECONDS, "route" => route),
        );
        let mut answered = self
            .answered
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        record(answered.entry(labels).or_insert(created));
    }
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles").finish_non_exhaustive()
    }
}
