//! The access rules of `../shared/DESIGN.md` §6.3 that several endpoints share.
//!
//! The auth layer (`kalamdb-middleware`'s `auth`) has already turned the request's credentials
//! into a [`Principal`]. Only a user is held to anything here: a key, or a request without a
//! principal (auth switched off), may do everything an endpoint offers. A user reaches only the
//! conversations they are a member of, and every other conversation answers exactly as one
//! that does not exist (404), so existence is never revealed; what a user may not do at all
//! (post as someone else, manage members) is 403.

use http::Request;
use kalamdb_core::StoreHandle;
use kalamdb_http::{ApiError, Principal};

/// The user the request is restricted to, or `None` for a caller allowed everything.
pub(crate) fn user_of<B>(request: &Request<B>) -> Option<String> {
    Principal::user_of(request).map(|id| id.as_ref().to_owned())
}

/// A user posts only as themselves: `field` (`from`, or `messages[3].from`) must be their id.
pub(crate) fn require_own_from(user: &str, field: &str, from: &str) -> Result<(), ApiError> {
    if from == user {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{field} must be your own user id ({user:?}): a user token posts only as its user"
        )))
    }
}

/// The conversation must have `user` as a member; otherwise the same 404 as for no
/// conversation at all.
pub(crate) async fn require_member(
    store: &StoreHandle,
    conversation_id: &str,
    user: String,
) -> Result<(), ApiError> {
    match store.is_member(conversation_id.to_owned(), user).await? {
        Some(true) => Ok(()),
        _ => Err(crate::conversations::no_conversation(conversation_id)),
    }
}
