//! What a stream request asks for: the conversation, and where to start.

use http::{HeaderMap, Request};
use kalamdb_core::message::validate_name;
use kalamdb_core::{Clock, MessageId, SystemClock};
use kalamdb_http::ApiError;
use percent_encoding::percent_decode_str;

use crate::router::PathParams;

/// How far past the server's clock a resume id may lie: ids can run a little ahead of the wall
/// clock after it steps back, and other nodes' clocks differ; a day covers both.
const FUTURE_SLACK_MS: u64 = 24 * 60 * 60 * 1000;
/// What a stream request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StreamRequest {
    pub(super) conversation_id: String,
    /// Start after this id, reading the store first.
    pub(super) since: Option<MessageId>,
}

impl StreamRequest {
    pub(super) fn parse<B>(request: &mut Request<B>) -> Result<Self, ApiError> {
        let params = PathParams::take(request)?;
        let conversation_id = params.require("conversation_id")?.to_owned();
        validate_name("conversation_id", &conversation_id)?;

        let mut since = None;
        for pair in request.uri().query().unwrap_or_default().split('&') {
            if pair.is_empty() {
                continue;
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "since_msg_id" if since.is_none() => {
                    since = Some(parse_id("since_msg_id", value)?);
                }
                "since_msg_id" => {
                    return Err(ApiError::validation(
                        "since_msg_id must be given at most once",
                    ))
                }
                // The credentials of a browser's EventSource, which the auth layer has read
                // (and which a server without auth ignores, as it does the header).
                "access_token" => {}
                other => {
                    let name = percent_decode_str(other).decode_utf8_lossy();
                    return Err(ApiError::validation(format!(
                        "unknown query parameter {name:?}; the only ones are since_msg_id and access_token"
                    )));
                }
            }
        }
        if let Some(last) = last_event_id(request.headers())? {
            since = Some(last);
        }
        if let Some(since) = since {
            check_not_future(since)?;
        }
        Ok(Self {
            conversation_id,
            since,
        })
    }
}

/// `Last-Event-ID`, when set and not empty (an empty one means "no id", as in the SSE spec).
fn last_event_id(headers: &HeaderMap) -> Result<Option<MessageId>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("\u{fffd}").trim();
    if text.is_empty() {
        return Ok(None);
    }
    parse_id("Last-Event-ID", text).map(Some)
}

/// Refuses a resume id from far in the future: the stream sends only ids above it, so it would
/// stay silent until the clock caught up, which for a mistyped id means forever.
fn check_not_future(since: MessageId) -> Result<(), ApiError> {
    let now_ms = SystemClock.now_ms();
    if since.timestamp_ms() > now_ms.saturating_add(FUTURE_SLACK_MS) {
        return Err(ApiError::validation(format!(
            "the resume id {since} is from the future (its time is {} ms since the Unix epoch); \
             pass the id of a message you received",
            since.timestamp_ms()
        )));
    }
    Ok(())
}

fn parse_id(field: &str, value: &str) -> Result<MessageId, ApiError> {
    value
        .parse()
        .map_err(|e| ApiError::validation(format!("{field} {e}; got {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_http::ErrorCode;

    fn parse(uri: &str, last_event_id: Option<&str>) -> Result<StreamRequest, ApiError> {
        let mut request = Request::builder().uri(uri);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        StreamRequest::parse(&mut request.body(()).unwrap())
    }

    #[test]
    fn reads_the_conversation_and_where_to_start() {
        let request = parse("/api/v1/conversations/conv%20one%2Fa/stream", None).unwrap();
        assert_eq!(request.conversation_id, "conv one/a");
        assert_eq!(request.since, None);

        let request = parse("/api/v1/conversations/c/stream?since_msg_id=42", None).unwrap();
        assert_eq!(request.since, Some(MessageId::from_u64(42)));

        // The header is the newer position: a reconnecting EventSource keeps the URL's.
        let request = parse("/api/v1/conversations/c/stream?since_msg_id=42", Some("99")).unwrap();
        assert_eq!(request.since, Some(MessageId::from_u64(99)));
        let request = parse("/api/v1/conversations/c/stream?since_msg_id=42", Some("")).unwrap();
        assert_eq!(request.since, Some(MessageId::from_u64(42)));
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        for (uri, header, needle) in [
            (
                "/api/v1/conversations/c/stream?since_msg_id=x",
                None,
                "since_msg_id",
            ),
            (
                "/api/v1/conversations/c/stream?since_msg_id=",
                None,
                "since_msg_id",
            ),
            (
                "/api/v1/conversations/c/stream?since_msg_id=1&since_msg_id=2",
                None,
                "once",
            ),
            ("/api/v1/conversations/c/stream?limit=5", None, "limit"),
            (
                "/api/v1/conversations/c/stream",
                Some("abc"),
                "Last-Event-ID",
            ),
            ("/api/v1/conversations/%ZZ/stream", None, "percent-encoded"),
            ("/api/v1/conversations/%+1/stream", None, "percent-encoded"),
            ("/api/v1/conversations/a%2/stream", None, "percent-encoded"),
            ("/api/v1/conversations/%FF/stream", None, "percent-encoded"),
            (
                "/api/v1/conversations/a%00b/stream",
                None,
                "conversation_id",
            ),
        ] {
            let error = parse(uri, header).unwrap_err();
            assert_eq!(error.code(), ErrorCode::ValidationFailed, "{uri}");
            assert!(
                error.message().contains(needle),
                "{uri}: {}",
                error.message()
            );
        }
    }
}
