//! The bytes on the wire: server-sent events, one per message, and the heartbeat comment.

use std::io::Write;

use bytes::Bytes;
use kalamdb_core::StoredMessage;

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

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_core::MessageId;

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
