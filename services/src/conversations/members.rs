//! The members endpoints: list, add, remove.

use http::{Request, Response, StatusCode};
use kalamdb_core::message::validate_name;
use kalamdb_core::StoreHandle;
use kalamdb_http::{json_response, ApiError, ResponseBody};
use serde::Serialize;

use super::{conversation_id, no_content, no_conversation};

/// `GET /api/v1/conversations/{conversation_id}/members`: `{"members": [...]}` in byte order,
/// or 404 (also for a user who is not one of them).
#[derive(Debug, Clone)]
pub struct ListMembers {
    store: StoreHandle,
}

impl ListMembers {
    /// An endpoint reading from `store`.
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    async fn handle<B>(self, mut request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        #[derive(Serialize)]
        struct Members {
            members: Vec<String>,
        }
        let (id, _) = conversation_id(&mut request)?;
        if let Some(user) = crate::access::user_of(&request) {
            crate::access::require_member(&self.store, &id, user).await?;
        }
        match self.store.members(id.clone()).await? {
            Some(members) => Ok(json_response(StatusCode::OK, &Members { members })),
            None => Err(no_conversation(&id)),
        }
    }
}

endpoint_service!(ListMembers);

/// `PUT` (add) and `DELETE` (remove) of `/api/v1/conversations/{conversation_id}/members/{user_id}`:
/// 204 whether or not it changed anything, 404 when the conversation does not exist.
async fn set_member<B>(
    store: StoreHandle,
    mut request: Request<B>,
    member: bool,
) -> Result<Response<ResponseBody>, ApiError> {
    let (id, params) = conversation_id(&mut request)?;
    let user = params.require("user_id")?.to_owned();
    validate_name("user_id", &user)?;
    if let Some(caller) = crate::access::user_of(&request) {
        // A user may leave a conversation they are in, and do nothing else to its members.
        if member || caller != user {
            return Err(ApiError::forbidden(
                "a user token cannot add members or remove anyone but its own user",
            ));
        }
        crate::access::require_member(&store, &id, caller).await?;
    }
    if store.set_member(id.clone(), user, member).await? {
        Ok(no_content())
    } else {
        Err(no_conversation(&id))
    }
}

/// `PUT /api/v1/conversations/{conversation_id}/members/{user_id}`: adds the member (204, also
/// when already one; 404 when the conversation does not exist). Users (auth on) cannot: 403.
#[derive(Debug, Clone)]
pub struct PutMember {
    store: StoreHandle,
}

impl PutMember {
    /// An endpoint writing to `store`.
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    async fn handle<B>(self, request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        set_member(self.store, request, true).await
    }
}

endpoint_service!(PutMember);

/// `DELETE /api/v1/conversations/{conversation_id}/members/{user_id}`: removes the member (204,
/// also when not one; 404 when the conversation does not exist). A user (auth on) may remove
/// only themselves (403 otherwise), from a conversation they are in (404 otherwise).
#[derive(Debug, Clone)]
pub struct DeleteMember {
    store: StoreHandle,
}

impl DeleteMember {
    /// An endpoint writing to `store`.
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    async fn handle<B>(self, request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        set_member(self.store, request, false).await
    }
}

endpoint_service!(DeleteMember);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{get, send, store};
    use bytes::Bytes;
    use http_body_util::Full;
    use kalamdb_core::NewConversation;
    use serde_json::json;

    fn request(method: &str, uri: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn members_are_added_and_removed_idempotently() {
        let (handle, _, _) = store();
        handle
            .create_conversation(NewConversation {
                conversation_id: Some("c 1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let (put, delete, list) = (
            PutMember::new(handle.clone()),
            DeleteMember::new(handle.clone()),
            ListMembers::new(handle),
        );
        let uri = "/api/v1/conversations/c%201/members";
        for user in ["bob", "alice", "bob"] {
            let (status, _) = send(&put, request("PUT", &format!("{uri}/{user}"))).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
        let (status, json) = send(&list, get(uri)).await;
        assert_eq!(
            (status, json),
            (StatusCode::OK, json!({"members": ["alice", "bob"]}))
        );
        for _ in 0..2 {
            let (status, _) = send(&delete, request("DELETE", &format!("{uri}/bob"))).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
        let (_, json) = send(&list, get(uri)).await;
        assert_eq!(json, json!({"members": ["alice"]}));
    }

    #[tokio::test]
    async fn an_unknown_conversation_is_a_404_and_a_bad_user_a_400() {
        let (handle, _, _) = store();
        let (put, delete, list) = (
            PutMember::new(handle.clone()),
            DeleteMember::new(handle.clone()),
            ListMembers::new(handle.clone()),
        );
        let uri = "/api/v1/conversations/nope/members";
        let (status, _) = send(&put, request("PUT", &format!("{uri}/bob"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = send(&delete, request("DELETE", &format!("{uri}/bob"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = send(&list, get(uri)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Nothing was created on the way.
        assert!(handle.conversation("nope".into()).await.unwrap().is_none());

        let (status, json) = send(&put, request("PUT", &format!("{uri}/a%09b"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            json["message"].as_str().unwrap().contains("user_id"),
            "{json}"
        );
    }
}
