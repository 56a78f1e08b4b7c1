//! [`Principal`]: who a request comes from, as the auth layer established it.

use std::fmt;
use std::sync::Arc;

/// The caller of a request, which the auth layer (`kalamdb-middleware`'s `auth`) puts in the
/// request's extensions once its credentials check out, and in the response's for the request
/// log. Endpoints apply the access rules of `../shared/DESIGN.md` §6.3 from it.
///
/// A request without one was let through with auth switched off (or is to `/health`): it may
/// do everything. Only [`Principal::User`] is held to membership.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// An API key with the `admin` role: everything, `/metrics` and operator endpoints included.
    Admin {
        /// The key's configured name (never the key).
        name: Arc<str>,
    },
    /// An API key with the `service` role: every conversation, any `from`, members managed.
    Service {
        /// The key's configured name (never the key).
        name: Arc<str>,
    },
    /// An end user's token: only the conversations the user is a member of.
    User {
        /// The user id, from the token's `auth.jwt.user_claim` claim.
        id: Arc<str>,
    },
}

impl Principal {
    /// The user a request is restricted to, or `None` for a key (or no auth at all).
    pub fn user_of<B>(request: &http::Request<B>) -> Option<Arc<str>> {
        match request.extensions().get::<Principal>() {
            Some(Principal::User { id }) => Some(Arc::clone(id)),
            _ => None,
        }
    }

    /// Whether this principal may call admin endpoints.
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin { .. })
    }
}

/// As the logs and the rate limiter name it: `key:<name>` or `user:<id>`.
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Admin { name } | Principal::Service { name } => write!(f, "key:{name}"),
            Principal::User { id } => write!(f, "user:{id}"),
        }
    }
}
