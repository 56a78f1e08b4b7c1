//! Reading a conversation's history a page at a time: [`Query`] in, [`Page`] out.

use serde::{Deserialize, Serialize};

use crate::id::MessageId;
use crate::message::StoredMessage;

/// The direction a page runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// One page request over one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The conversation to read.
    pub conversation_id: String,
    /// Only messages with a larger id (exclusive).
    pub since: Option<MessageId>,
    /// Only messages with a smaller id (exclusive).
    pub before: Option<MessageId>,
    /// The most messages to return.
    pub limit: usize,
    /// Which end of the range the page starts from.
    pub order: Order,
}

/// One page of a conversation, in the query's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// The messages, as stored.
    pub messages: Vec<StoredMessage>,
    /// Whether another message satisfies the same bounds beyond this page.
    pub has_more: bool,
}

impl Page {
    /// The cursor for the next page: the last message's id when there is more, else `None`.
    /// Pass it as `since` (ascending) or `before` (descending).
    pub fn next_cursor(&self) -> Option<MessageId> {
        if self.has_more {
            self.messages.last().map(|m| m.msg_id)
        } else {
            None
        }
    }
}
