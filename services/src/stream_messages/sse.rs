//! The bytes on the wire: server-sent events, one per message or change, and the heartbeat
//! comment.

use std::io::Write;

use bytes::Bytes;
use kalamdb_core::live::Change;
use kalamdb_core::StoredMessage;
use serde_json::json;

/// The comment line sent when nothing else has been for `heartbeat`.
pub(super) const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// One message as an SSE event. The stored JSON is compact, so it holds no line break and fits
/// on one `data:` line.
pub(super) fn event(message: &StoredMessage) -> Bytes {
    let mut frame = Vec::with_capacity(message.json.len() + 64);
    // Writing to a Vec cannot fail.
    let _ = write!(frame, "id: {}\nevent: message\ndata: ", message.msg_id);
    frame.extend_from_slice(&message.json);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// An edit or delete as an SSE event (`../shared/DESIGN.md` §6.2). It carries no `id:` line:
/// a browser's `Last-Event-ID` stays the newest message's id, which is what a resume needs.
pub(super) fn change_event(conversation_id: &str, change: &Change) -> Bytes {
    let (name, data) = match change {
        Change::Updated(message) => ("message_updated", message.json.clone()),
        Change::Deleted(id) => (
            "message_deleted",
            json!({"msg_id": id.to_string(), "conversation_id": conversation_id})
                .to_string()
                .into_bytes(),
        ),
        Change::Trimmed { before, deleted } => (
            "messages_deleted",
            json!({
                "conversation_id": conversation_id,
                "before_msg_id": before.to_string(),
                "deleted": deleted,
            })
            .to_string()
            .into_bytes(),
        ),
        Change::ConversationDeleted => (
            "conversation_deleted",
            json!({"conversation_id": conversation_id})
                .to_string()
                .into_bytes(),
        ),
    };
    let mut frame = Vec::with_capacity(data.len() + 40);
    let _ = write!(frame, "event: {name}\ndata: ");
    frame.extend_from_slice(&data);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_core::MessageId;

    #[test]
    fn change_events_carry_no_id_line() {
        let deleted = change_event("c", &Change::Deleted(MessageId::from_u64(9)));
        assert_eq!(
            &deleted[..],
            b"event: message_deleted\ndata: {\"conversation_id\":\"c\",\"msg_id\":\"9\"}\n\n"
        );
        let gone = change_event("c", &Change::ConversationDeleted);
        assert_eq!(
            &gone[..],
            b"event: conversation_deleted\ndata: {\"conversation_id\":\"c\"}\n\n"
        );
    }

    #[test]
    fn an_event_is_three_lines_and_a_blank_one() {
        let message = StoredMessage {
            msg_id: MessageId::from_u64(7),
            json: br#"{"msg_id":"7"}"#.to_vec(),
        };
        assert_eq!(
            &event(&message)[..],
            b"id: 7\nevent: message\ndata: {\"msg_id\":\"7\"}\n\n"
        );
    }
}
