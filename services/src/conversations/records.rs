//! The conversation record endpoints: create, list, get, patch.

use std::io::Write;

use http::{Request, Response, StatusCode};
use http_body::Body;
use kalamdb_core::message::validate_name;
use kalamdb_core::{
    ConversationPage, ConversationPatch, ConversationQuery, Limits, ListCursor, NewConversation,
    StoreHandle,
};
use kalamdb_http::{json_bytes_response, read_json, ApiError, BoxError, ResponseBody};
use percent_encoding::percent_decode_str;

use super::{conversation_id, conversation_response, no_conversation};
use crate::QueryLimits;

/// `POST /api/v1/conversations`: `{conversation_id?, title?, metadata?, members?}` → 201 the
/// conversation; 409 `conflict` when the id is taken. Without an id the server makes one up. A
/// user (auth on) is made its only member; naming anyone else in `members` is 403.
#[derive(Debug, Clone)]
pub struct CreateConversation {
    store: StoreHandle,
    limits: Limits,
}

impl CreateConversation {
    /// An endpoint writing to `store`, with metadata bounded by `limits.max_metadata_size`.
    pub fn new(store: StoreHandle, limits: Limits) -> Self {
        Self { store, limits }
    }

    async fn handle<B>(self, request: Request<B>) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let user = crate::access::user_of(&request);
        let (parts, body) = request.into_parts();
        let mut new: NewConversation = read_json(&parts.headers, body).await?;
        new.validate(&self.limits)?;
        if let Some(user) = user {
            // A user's conversation has them as its member, and only them: members are added
            // by a key.
            if new.members.iter().any(|member| *member != user) {
                return Err(ApiError::forbidden(
                    "a user token cannot add members; a conversation it creates has its user \
                     as its only member",
                ));
            }
            new.members = vec![user];
        }
        let conversation = self.store.create_conversation(new).await?;
        Ok(conversation_response(StatusCode::CREATED, &conversation))
    }
}

endpoint_service!(CreateConversation);

/// `GET /api/v1/conversations?member=&limit=&cursor=`: one page of conversations, most recent
/// activity first, as `{conversations, count, has_more, next_cursor}`. Pass `next_cursor` back
/// as `cursor` for the next page; every conversation that existed when the first page was read
/// comes up at least once (`kalamdb_core::conversation`). A user (auth on) lists their own
/// conversations: `member` is theirs, and another user's is 403.
#[derive(Debug, Clone)]
pub struct ListConversations {
    store: StoreHandle,
    limits: QueryLimits,
}

impl ListConversations {
    /// An endpoint reading from `store`, with page sizes bounded by `limits` (the same as a
    /// query's).
    pub fn new(store: StoreHandle, limits: QueryLimits) -> Self {
        Self { store, limits }
    }

    async fn handle<B>(self, request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        let mut query = self.parse(request.uri().query().unwrap_or_default())?;
        if let Some(user) = crate::access::user_of(&request) {
            // A user lists their own conversations, whether or not they say so.
            match &query.member {
                Some(member) if *member != user => {
                    return Err(ApiError::forbidden(
                        "a user token lists only its own user's conversations; \
                         leave member out or set it to your user id",
                    ))
                }
                _ => query.member = Some(user),
            }
        }
        let page = self.store.list_conversations(query).await?;
        Ok(json_bytes_response(StatusCode::OK, encode_page(&page)))
    }

    fn parse(&self, query: &str) -> Result<ConversationQuery, ApiError> {
        let (mut member, mut limit, mut cursor) = (None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode_str(name).decode_utf8_lossy();
            let value = percent_decode_str(&value.replace('+', " "))
                .decode_utf8()
                .map_err(|_| ApiError::validation(format!("{name} is not UTF-8")))?
                .into_owned();
            let once = |seen: bool| {
                if seen {
                    Err(ApiError::validation(format!(
                        "{name} must be given at most once"
                    )))
                } else {
                    Ok(())
                }
            };
            match name.as_ref() {
                "member" => {
                    once(member.is_some())?;
                    validate_name("member", &value)?;
                    member = Some(value);
                }
                "limit" => {
                    once(limit.is_some())?;
                    let max = self.limits.max_limit;
                    // Digits only: `+5` or ` 5` is not what the contract calls a whole number.
                    let n = Some(&value)
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<usize>().ok())
                        .filter(|n| (1..=max).contains(n))
                        .ok_or_else(|| {
                            ApiError::validation(format!(
                                "limit must be a whole number between 1 and {max}, got {value:?}"
                            ))
                        })?;
                    limit = Some(n);
                }
                "cursor" => {
                    once(cursor.is_some())?;
                    let parsed: ListCursor = value
                        .parse()
                        .map_err(|e: kalamdb_core::conversation::BadCursor| {
                            ApiError::validation(e.to_string())
                        })?;
                    cursor = Some(parsed);
                }
                other => {
                    return Err(ApiError::validation(format!(
                        "unknown query parameter {other:?}; the parameters are member, limit and cursor"
                    )))
                }
            }
        }
        Ok(ConversationQuery {
            member,
            limit: limit.unwrap_or(self.limits.default_limit),
            cursor,
        })
    }
}

/// The page's JSON, each conversation's last message copied in as stored.
fn encode_page(page: &ConversationPage) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * page.conversations.len() + 96);
    out.extend_from_slice(b"{\"conversations\":[");
    for (i, conversation) in page.conversations.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        conversation.write_json(&mut out);
    }
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "],\"count\":{},\"has_more\":{},\"next_cursor\":",
        page.conversations.len(),
        page.has_more
    );
    match &page.next_cursor {
        // A cursor is digits, dots and hex: nothing to escape.
        Some(cursor) => {
            let _ = write!(out, "\"{cursor}\"}}");
        }
        None => out.extend_from_slice(b"null}"),
    }
    out
}

endpoint_service!(ListConversations);

/// `GET /api/v1/conversations/{conversation_id}`: the conversation, or 404 (also for a user who
/// is not one of its members).
#[derive(Debug, Clone)]
pub struct GetConversation {
    store: StoreHandle,
}

impl GetConversation {
    /// An endpoint reading from `store`.
    pub fn new(store: StoreHandle) -> Self {
        Self { store }
    }

    async fn handle<B>(self, mut request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        let (id, _) = conversation_id(&mut request)?;
        if let Some(user) = crate::access::user_of(&request) {
            crate::access::require_member(&self.store, &id, user).await?;
        }
        match self.store.conversation(id.clone()).await? {
            Some(conversation) => Ok(conversation_response(StatusCode::OK, &conversation)),
            None => Err(no_conversation(&id)),
        }
    }
}

endpoint_service!(GetConversation);

/// `PATCH /api/v1/conversations/{conversation_id}`: `{title?, metadata?}`, where `null` clears
/// a field → 200 the conversation, its `updated_at` moved to now (and it to the top of the
/// listings) when anything was set; 404 when it does not exist (or, for a user, when they are not
/// one of its members).
#[derive(Debug, Clone)]
pub struct PatchConversation {
    store: StoreHandle,
    limits: Limits,
}

impl PatchConversation {
    /// An endpoint writing to `store`, with metadata bounded by `limits.max_metadata_size`.
    pub fn new(store: StoreHandle, limits: Limits) -> Self {
        Self { store, limits }
    }

    async fn handle<B>(self, mut request: Request<B>) -> Result<Response<ResponseBody>, ApiError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let (id, _) = conversation_id(&mut request)?;
        let user = crate::access::user_of(&request);
        let (parts, body) = request.into_parts();
        let patch: ConversationPatch = read_json(&parts.headers, body).await?;
        patch.validate(&self.limits)?;
        if let Some(user) = user {
            crate::access::require_member(&self.store, &id, user).await?;
        }
        match self.store.update_conversation(id.clone(), patch).await? {
            Some(conversation) => Ok(conversation_response(StatusCode::OK, &conversation)),
            None => Err(no_conversation(&id)),
        }
    }
}

endpoint_service!(PatchConversation);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{get, post_json, send, store};
    use bytes::Bytes;
    use http_body_util::Full;
    use kalamdb_core::NewMessage;
    use serde_json::{json, Value};

    fn patch(uri: &str, body: &str) -> Request<Full<Bytes>> {
        Request::patch(uri)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    fn message(conversation_id: &str, content: &str) -> NewMessage {
        NewMessage {
            conversation_id: conversation_id.into(),
            from: "alice".into(),
            content: content.into(),
            metadata: Default::default(),
        }
    }

    #[tokio::test]
    async fn create_answers_201_and_a_taken_id_409() {
        let (handle, _, _) = store();
        let create = CreateConversation::new(handle.clone(), Limits::default());
        let body = r#"{"conversation_id":"trip","title":"Trip","metadata":{"k":1},"members":["bob","alice"]}"#;
        let (status, json) = send(&create, post_json("/api/v1/conversations", body)).await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        assert_eq!(json["conversation_id"], "trip");
        assert_eq!(json["title"], "Trip");
        assert_eq!(json["metadata"], json!({"k": 1}));
        assert_eq!(json["message_count"], 0);
        assert_eq!(json["last_message"], Value::Null);
        assert_eq!(json["created_at"], json["updated_at"]);
        assert_eq!(
            handle.members("trip".into()).await.unwrap().unwrap(),
            ["alice", "bob"]
        );

        let (status, json) = send(&create, post_json("/api/v1/conversations", body)).await;
        assert_eq!(
            (status, &json["error"]),
            (StatusCode::CONFLICT, &json!("conflict"))
        );
        assert!(json["message"].as_str().unwrap().contains("trip"));

        // Without an id the server makes one up; each create is a new conversation.
        let (status, first) = send(&create, post_json("/api/v1/conversations", "{}")).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, second) = send(&create, post_json("/api/v1/conversations", "{}")).await;
        assert_ne!(first["conversation_id"], second["conversation_id"]);
        assert!(first["conversation_id"]
            .as_str()
            .unwrap()
            .starts_with("conv_"));
    }

    #[tokio::test]
    async fn create_refuses_bad_fields_by_name_and_stores_nothing() {
        let (handle, _, _) = store();
        let create = CreateConversation::new(
            handle.clone(),
            Limits {
                max_message_size: 10,
                max_metadata_size: 8,
            },
        );
        for (body, field, status) in [
            (r#"{"title":""}"#, "title", StatusCode::BAD_REQUEST),
            (
                r#"{"conversation_id":"a\tb"}"#,
                "conversation_id",
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"members":["ok",""]}"#,
                "members",
                StatusCode::BAD_REQUEST,
            ),
            (r#"{"metadata":[]}"#, "metadata", StatusCode::BAD_REQUEST),
            (
                r#"{"metadata":{"long":"value"}}"#,
                "metadata",
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (r#"{"titel":"x"}"#, "titel", StatusCode::BAD_REQUEST),
        ] {
            let (got, json) = send(&create, post_json("/api/v1/conversations", body)).await;
            assert_eq!(got, status, "{body}: {json}");
            assert!(
                json["message"].as_str().unwrap().contains(field),
                "{body}: {json}"
            );
        }
        let page = handle
            .list_conversations(ConversationQuery {
                member: None,
                limit: 10,
                cursor: None,
            })
            .await
            .unwrap();
        assert!(page.conversations.is_empty());
    }

    #[tokio::test]
    async fn get_answers_the_record_with_exact_count_and_last_message() {
        let (handle, _, _) = store();
        for i in 0..3 {
            handle
                .insert(message("c1", &format!("m{i}")))
                .await
                .unwrap();
        }
        let service = GetConversation::new(handle);
        let (status, json) = send(&service, get("/api/v1/conversations/c1")).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["message_count"], 3);
        assert_eq!(json["last_message"]["content"], "m2");
        assert_eq!(json["updated_at"], json["last_message"]["timestamp"]);
        assert_eq!(
            (&json["title"], &json["metadata"]),
            (&Value::Null, &json!({}))
        );

        let (status, json) = send(&service, get("/api/v1/conversations/nope")).await;
        assert_eq!(
            (status, &json["error"]),
            (StatusCode::NOT_FOUND, &json!("not_found"))
        );
    }

    #[tokio::test]
    async fn patch_sets_and_clears_fields_and_404s_an_unknown_conversation() {
        let (handle, _, _) = store();
        handle.insert(message("c1", "hi")).await.unwrap();
        let service = PatchConversation::new(handle, Limits::default());
        let (status, json) = send(
            &service,
            patch(
                "/api/v1/conversations/c1",
                r#"{"title":"T","metadata":{"a":1}}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(
            (&json["title"], &json["metadata"]),
            (&json!("T"), &json!({"a": 1}))
        );
        assert_eq!(json["message_count"], 1);

        // Null clears; an absent field stays.
        let (_, json) = send(
            &service,
            patch("/api/v1/conversations/c1", r#"{"title":null}"#),
        )
        .await;
        assert_eq!(
            (&json["title"], &json["metadata"]),
            (&Value::Null, &json!({"a": 1}))
        );
        let (_, json) = send(
            &service,
            patch("/api/v1/conversations/c1", r#"{"metadata":null}"#),
        )
        .await;
        assert_eq!(json["metadata"], json!({}));

        let (status, json) = send(
            &service,
            patch("/api/v1/conversations/c1", r#"{"title":""}"#),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
        let (status, _) = send(
            &service,
            patch("/api/v1/conversations/nope", r#"{"title":"x"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_list_runs_by_activity_and_pages_with_its_cursor() {
        let (handle, _, _) = store();
        for conversation in ["a", "b", "c"] {
            handle.insert(message(conversation, "x")).await.unwrap();
            // Distinct milliseconds, so the order is the insert order.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let service = ListConversations::new(handle.clone(), QueryLimits::default());
        let (status, json) = send(&service, get("/api/v1/conversations?limit=2")).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let ids = |json: &Value| -> Vec<String> {
            json["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["conversation_id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(&json), ["c", "b"]);
        assert_eq!(
            (json["count"].as_u64(), json["has_more"].as_bool()),
            (Some(2), Some(true))
        );
        let cursor = json["next_cursor"].as_str().unwrap().to_owned();
        let (_, next) = send(
            &service,
            get(&format!("/api/v1/conversations?limit=2&cursor={cursor}")),
        )
        .await;
        assert_eq!(ids(&next), ["a"]);
        assert_eq!(
            (next["has_more"].as_bool(), &next["next_cursor"]),
            (Some(false), &Value::Null)
        );

        // A member's listing holds only their conversations.
        handle
            .set_member("a".into(), "bob".into(), true)
            .await
            .unwrap();
        let (_, json) = send(&service, get("/api/v1/conversations?member=bob")).await;
        assert_eq!(ids(&json), ["a"]);
    }

    #[tokio::test]
    async fn the_list_refuses_bad_parameters_by_name() {
        let (handle, _, _) = store();
        let service = ListConversations::new(handle, QueryLimits::default());
        for (query, names) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("limit=%2B5", "limit"),
            ("limit=1&limit=2", "limit"),
            ("cursor=garbage", "cursor"),
            ("member=", "member"),
            ("member=%0a", "member"),
            ("order=desc", "order"),
        ] {
            let (status, json) =
                send(&service, get(&format!("/api/v1/conversations?{query}"))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {json}");
            assert!(
                json["message"].as_str().unwrap().contains(names),
                "{query}: {json}"
            );
        }
    }
}
