//! Conversations as records (`../shared/DESIGN.md` §6.1): create, list by activity, read and
//! change one, and its members.
//!
//! - `records.rs`: [`CreateConversation`], [`ListConversations`], [`GetConversation`],
//!   [`PatchConversation`].
//! - `members.rs`: [`ListMembers`], [`PutMember`], [`DeleteMember`] (both idempotent).
//! - `deletes.rs`: [`TrimConversation`] (its older messages) and [`DeleteConversation`]
//!   (everything of it).
//!
//! A conversation that does not exist is a 404 `not_found` everywhere but on create; the
//! listing's cursor rules are `kalamdb_core::conversation`'s.

mod deletes;
mod members;
mod records;

pub use deletes::{DeleteConversation, TrimConversation};
pub use members::{DeleteMember, ListMembers, PutMember};
pub use records::{CreateConversation, GetConversation, ListConversations, PatchConversation};

use http::{Request, Response, StatusCode};
use kalamdb_core::message::validate_name;
use kalamdb_core::Conversation;
use kalamdb_http::{full, json_bytes_response, ApiError, ResponseBody};

use crate::router::PathParams;

/// The path's `{conversation_id}`, checked like a message's.
fn conversation_id<B>(request: &mut Request<B>) -> Result<(String, PathParams), ApiError> {
    let params = PathParams::take(request)?;
    let id = params.require("conversation_id")?.to_owned();
    validate_name("conversation_id", &id)?;
    Ok((id, params))
}

/// The 404 of a conversation that does not exist.
pub(crate) fn no_conversation(conversation_id: &str) -> ApiError {
    ApiError::not_found(format!("no conversation has id {conversation_id:?}"))
}

/// A conversation as a JSON response.
fn conversation_response(
    status: StatusCode,
    conversation: &Conversation,
) -> Response<ResponseBody> {
    json_bytes_response(status, conversation.to_json())
}

/// 204 No Content.
pub(crate) fn no_content() -> Response<ResponseBody> {
    let mut response = Response::new(full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}
