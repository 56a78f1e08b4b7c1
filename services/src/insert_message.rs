//! `POST /api/v1/messages`: stores one message, exactly once per `Idempotency-Key`.

use http::{Request, Response, StatusCode};
use http_body::Body;
use kalamdb_core::{IdempotencyKey, Limits, NewMessage, StoreError, StoreHandle};
use kalamdb_http::{json_bytes_response, read_json, ApiError, BoxError, ResponseBody};
use sha2::{Digest, Sha256};

/// Stores the message in the request body and answers `{msg_id, conversation_id, timestamp}`.
///
/// With an `Idempotency-Key` header (1-255 visible ASCII characters) a retry of the same request
/// gets the first answer and stores nothing; the same key with a different message is 409
/// `idempotency_conflict`. The request's identity is the SHA-256 of the message's canonical JSON,
/// so whitespace or key order does not make a retry look different.
///
/// Rejections: 415 without a JSON content type, 400 for malformed JSON or an invalid field, 413
/// when the content or the metadata is over its limit, 503 when the store is unavailable. A
/// user (auth on) gets 403 when `from` is not their id and 404 for a conversation they are not a
/// member of; their message to a conversation that does not exist creates it, with them as its
/// member.
#[derive(Debug, Clone)]
pub struct InsertMessage {
    store: StoreHandle,
    limits: Limits,
}

impl InsertMessage {
    /// An endpoint writing to `store` and holding messages to `limits`.
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
        let key = idempotency_key(&parts.headers)?;
        let message: NewMessage = read_json(&parts.headers, body).await?;
        message.validate(&self.limits)?;
        let key = key.map(|key| IdempotencyKey {
            fingerprint: fingerprint(&message),
            key,
        });
        let inserted = match (user, key) {
            (Some(user), key) => {
                crate::access::require_own_from(&user, "from", &message.from)?;
                let mut inserted = self
                    .store
                    .insert_as_member(user, vec![message], key)
                    .await?;
                inserted
                    .pop()
                    .ok_or_else(|| StoreError::Internal("the writer returned no id".into()))?
            }
            (None, Some(key)) => self.store.insert_idempotent(message, key).await?,
            (None, None) => self.store.insert(message).await?,
        };
        metrics::counter!(crate::metrics::MESSAGES_INSERTED_TOTAL).increment(1);
        let mut json = Vec::with_capacity(inserted.approximate_json_len());
        inserted.write_json(&mut json);
        Ok(json_bytes_response(StatusCode::OK, json))
    }
}

/// The header retries carry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// [`IDEMPOTENCY_KEY`] as a name: looking a header up by a `&str` parses the name first, on
/// every insert.
const IDEMPOTENCY_KEY_NAME: http::HeaderName = http::HeaderName::from_static(IDEMPOTENCY_KEY);

/// The request's `Idempotency-Key`, if it sent one; a malformed one is a 400.
fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY_NAME) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(ApiError::validation(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// SHA-256 of the message in a canonical form: each field as JSON, object keys sorted at every
/// depth, so neither whitespace nor key order makes an honest retry look different.
fn fingerprint(message: &NewMessage) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for field in [&message.conversation_id, &message.from, &message.content] {
        feed(&mut hasher, &serde_json::Value::String(field.clone()));
    }
    feed(
        &mut hasher,
        &serde_json::Value::Object(message.metadata.clone()),
    );
    hasher.finalize().into()
}

fn feed(hasher: &mut Sha256, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for key in keys {
                feed(hasher, &Value::String(key.clone()));
                hasher.update(b":");
                feed(hasher, &map[key.as_str()]);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                feed(hasher, item);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        // Scalars print one way: strings escaped, numbers in serde_json's shortest form.
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

endpoint_service!(InsertMessage);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{post_json, send, store};
    use kalamdb_core::Store;

    const MESSAGE: &str = r#"{"conversation_id": "c", "from": "alice", "content": "hi", "metadata": {"role": "user"}}"#;

    fn endpoint(handle: StoreHandle) -> InsertMessage {
        InsertMessage::new(handle, Limits::default())
    }

    #[tokio::test]
    async fn stores_the_message_and_answers_its_id_and_time() {
        let (handle, mem, _) = store();
        let (status, json) = send(&endpoint(handle), post_json("/api/v1/messages", MESSAGE)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["conversation_id"], "c");
        let id: kalamdb_core::MessageId = json["msg_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(json["timestamp"], id.timestamp_ms());
        let stored = mem.get(id).unwrap().unwrap();
        let stored: serde_json::Value = serde_json::from_slice(&stored.json).unwrap();
        assert_eq!(stored["content"], "hi");
        assert_eq!(stored["metadata"]["role"], "user");
    }

    #[tokio::test]
    async fn a_retry_under_its_key_gets_the_first_answer_and_another_message_a_409() {
        let (handle, mem, _) = store();
        let with_key = |body: &str, key: &str| {
            let mut request = post_json("/api/v1/messages", body);
            request
                .headers_mut()
                .insert(IDEMPOTENCY_KEY, key.parse().unwrap());
            request
        };
        let service = endpoint(handle);
        let (_, first) = send(&service, with_key(MESSAGE, "k1")).await;
        // The same message, differently spaced: an honest retry.
        let retry = MESSAGE.replace(", ", ",");
        let (status, again) = send(&service, with_key(&retry, "k1")).await;
        assert_eq!((status, &again), (StatusCode::OK, &first));
        let other = MESSAGE.replace("hi", "bye");
        let (status, json) = send(&service, with_key(&other, "k1")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(json["error"], "idempotency_conflict");
        let (status, json) = send(&service, with_key(MESSAGE, "")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(json["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"));
        assert_eq!(mem.len(), 1);
    }

    #[tokio::test]
    async fn bad_requests_are_refused_and_store_nothing() {
        let (handle, mem, _) = store();
        let service = endpoint(handle);
        for (body, status, code) in [
            ("{", StatusCode::BAD_REQUEST, "invalid_json"),
            (
                r#"{"conversation_id": "c", "from": "a"}"#,
                StatusCode::BAD_REQUEST,
                "validation_failed",
            ),
            (
                r#"{"conversation_id": "c", "from": "a", "content": "x", "conversationId": "c"}"#,
                StatusCode::BAD_REQUEST,
                "validation_failed",
            ),
            (
                r#"{"conversation_id": "c\u0001", "from": "a", "content": "x"}"#,
                StatusCode::BAD_REQUEST,
                "validation_failed",
            ),
        ] {
            let (got, json) = send(&service, post_json("/api/v1/messages", body)).await;
            assert_eq!(
                (got, json["error"].as_str().unwrap()),
                (status, code),
                "{body}"
            );
        }
        let mut plain = post_json("/api/v1/messages", MESSAGE);
        plain.headers_mut().remove("content-type");
        let (status, _) = send(&service, plain).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(mem.is_empty());
    }

    #[tokio::test]
    async fn a_failing_store_is_a_503() {
        let (handle, _, faulty) = store();
        faulty.fail_writes(true);
        let (status, json) = send(&endpoint(handle), post_json("/api/v1/messages", MESSAGE)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json["error"], "unavailable");
    }
}
