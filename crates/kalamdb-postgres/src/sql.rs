//! Every statement the store sends, in one place, so that one test can hold all of them to the
//! SQL that PostgreSQL, Citus, CockroachDB and YugabyteDB all run (`tests/sql_lint.rs`).
//!
//! Tables are named `{schema}.<table>`; [`Sql::new`] puts the configured schema in once, at
//! open. What stays out, and why, is the lint's list: no sequences (ids are Snowflakes minted
//! under the conversation's row lock), no `LISTEN`/`NOTIFY` (the bus is not the store), no
//! PostgreSQL-only types (`JSONB`, `SERIAL`, arrays) or functions (`now()`, `GREATEST`), no `::`
//! casts, no advisory locks, no `SKIP LOCKED`.

/// The schema's version this build writes and reads; [`MIGRATIONS`] brings any older one up.
pub const SCHEMA_VERSION: i32 = 1;

/// The DDL of each schema version, oldest first: `MIGRATIONS[v - 1]` takes a schema from
/// version `v - 1` to `v`. Each runs in one transaction together with the version's bump.
pub const MIGRATIONS: &[&[&str]] = &[&[
    // The head row of each conversation: its record, and `last_id`, the highest id ever minted
    // for it. An insert locks this row, then mints above `last_id` (lock, then mint), so a
    // conversation's ids commit in order however many servers write to it.
    "CREATE TABLE {schema}.conversations (
        conversation_id TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
        last_id BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        activity BIGINT NOT NULL,
        message_count BIGINT NOT NULL,
        last_message_id BIGINT,
        title TEXT,
        metadata TEXT NOT NULL
    )",
    "CREATE INDEX conversations_by_updated ON {schema}.conversations (updated_at DESC, conversation_id ASC)",
    "CREATE INDEX conversations_by_activity ON {schema}.conversations (activity)",
    // A conversation's messages in id order: every page is one range of this key.
    "CREATE TABLE {schema}.messages (
        conversation_id TEXT COLLATE \"C\" NOT NULL,
        msg_id BIGINT NOT NULL,
        body BYTEA NOT NULL,
        PRIMARY KEY (conversation_id, msg_id)
    )",
    // Reads by id alone (GET, PATCH, DELETE of one message).
    "CREATE INDEX messages_by_id ON {schema}.messages (msg_id)",
    "CREATE TABLE {schema}.members (
        conversation_id TEXT COLLATE \"C\" NOT NULL,
        user_id TEXT COLLATE \"C\" NOT NULL,
        PRIMARY KEY (conversation_id, user_id)
    )",
    "CREATE INDEX members_by_user ON {schema}.members (user_id)",
    "CREATE TABLE {schema}.idempotency (
        idem_key TEXT NOT NULL PRIMARY KEY,
        fingerprint BYTEA NOT NULL,
        created_ms BIGINT NOT NULL,
        conversation_id TEXT COLLATE \"C\" NOT NULL,
        msg_id BIGINT NOT NULL,
        timestamp_ms BIGINT NOT NULL
    )",
    "CREATE INDEX idempotency_by_conversation ON {schema}.idempotency (conversation_id)",
    "CREATE INDEX idempotency_by_age ON {schema}.idempotency (created_ms)",
    // Node-id leases: a server holds `node_id` while `expires_ms` (the database's clock) is
    // ahead; `holder` is a random token of the holding process.
    "CREATE TABLE {schema}.node_leases (
        node_id INTEGER NOT NULL PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_ms BIGINT NOT NULL
    )",
]];

/// The schema and its version row, created before any migration runs.
pub const BOOTSTRAP: &[&str] = &[
    "CREATE SCHEMA IF NOT EXISTS {schema}",
    "CREATE TABLE IF NOT EXISTS {schema}.schema_version (
        singleton INTEGER NOT NULL PRIMARY KEY,
        version INTEGER NOT NULL
    )",
    "INSERT INTO {schema}.schema_version (singleton, version) VALUES (1, 0)
        ON CONFLICT (singleton) DO NOTHING",
];

/// The database's clock in milliseconds since the Unix epoch: one clock for every server's
/// lease, whatever their own clocks say.
const DB_NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM CURRENT_TIMESTAMP) * 1000 AS BIGINT)";

/// The conversation columns a record is built from, in [`crate::store`]'s `record` order.
const RECORD: &str = "c.conversation_id, c.created_at, c.updated_at, c.message_count, \
    c.title, c.metadata, c.activity, c.last_message_id, m.body";

/// Every statement with the schema filled in. Built once per store.
#[derive(Debug, Clone)]
pub struct Sql {
    /// The schema the tables are in.
    pub schema: String,
    /// Locks the version row for a migration: `version`.
    pub lock_version: String,
    /// Sets the version: `$1` version.
    pub set_version: String,
    /// Creates the head row of a conversation if missing and locks it, returning its figures:
    /// `$1` id, `$2` placeholder created_at (-1 marks a row this insert created).
    pub lock_head_upsert: String,
    /// Locks an existing head row: `$1` id.
    pub lock_head: String,
    /// Inserts one message: [`insert_messages`] of one row.
    pub insert_one: String,
    /// Sets a head row's figures after an insert: `$1` id, `$2` last_id, `$3` created_at,
    /// `$4` updated_at, `$5` activity, `$6` message_count, `$7` last_message_id.
    pub update_head_after_insert: String,
    /// Sets a head row's count and last message after deletes: `$1` id, `$2` count,
    /// `$3` last_message_id.
    pub update_head_after_delete: String,
    /// Moves `updated_at` and `activity`: `$1` id, `$2` updated_at, `$3` activity.
    pub touch_head: String,
    /// Sets title and metadata: `$1` id, `$2` title, `$3` metadata, `$4` updated_at,
    /// `$5` activity.
    pub patch_head: String,
    /// Creates a conversation, nothing when the id is taken: `$1` id, `$2` created_at (also
    /// updated_at), `$3` activity, `$4` title, `$5` metadata.
    pub create_head: String,
    /// Deletes a head row: `$1` id.
    pub delete_head: String,
    /// One conversation's record with its last message: `$1` id.
    pub record: String,
    /// The highest message id stored: the id generator's seed at open.
    pub max_id: String,
    /// A probe of the connection.
    pub ping: String,
    /// The highest activity id: a listing's horizon.
    pub horizon: String,
    /// A listing's entries standing at `updated_at`: `$1` horizon, `$2` after at, `$3` after id,
    /// `$4` limit.
    pub list_by_updated: String,
    /// A listing's entries that moved since the horizon, standing at `created_at`: `$1`
    /// horizon, `$2` after at, `$3` after id, `$4` limit.
    pub list_moved: String,
    /// The same two for one member's conversations: `$5` user.
    pub list_member_by_updated: String,
    /// See [`Sql::list_member_by_updated`].
    pub list_member_moved: String,
    /// Membership of a user in an existing conversation: `$1` id, `$2` user; no row when the
    /// conversation does not exist, `NULL` when the user is not a member.
    pub is_member: String,
    /// Whether a conversation exists: `$1` id.
    pub exists: String,
    /// A conversation's members: `$1` id.
    pub members: String,
    /// Adds a member: `$1` id, `$2` user.
    pub add_member: String,
    /// Removes a member: `$1` id, `$2` user.
    pub remove_member: String,
    /// Removes every member: `$1` id.
    pub remove_members: String,
    /// One message by id: `$1` msg_id.
    pub get: String,
    /// One message of a locked conversation: `$1` id, `$2` msg_id.
    pub get_in: String,
    /// A page oldest first: `$1` id, `$2` above, `$3` below, `$4` limit.
    pub page_asc: String,
    /// A page newest first: as [`Sql::page_asc`].
    pub page_desc: String,
    /// The newest message id of a conversation: `$1` id.
    pub newest: String,
    /// Whether a message is stored: `$1` id, `$2` msg_id (an unknown commit's outcome).
    pub stored: String,
    /// Replaces a message's body: `$1` id, `$2` msg_id, `$3` body.
    pub set_body: String,
    /// Deletes one message: `$1` id, `$2` msg_id.
    pub delete_one: String,
    /// Deletes the messages below an id: `$1` id, `$2` bound.
    pub delete_below: String,
    /// Deletes every message: `$1` id.
    pub delete_all: String,
    /// An unexpired idempotency record: `$1` key, `$2` oldest created_ms kept.
    pub idempotency_get: String,
    /// Records a key, nothing when it is taken: `$1` key, `$2` fingerprint, `$3` created_ms,
    /// `$4` conversation, `$5` msg_id, `$6` timestamp.
    pub idempotency_put: String,
    /// Drops an expired record a new request wants to reuse: `$1` key, `$2` oldest kept.
    pub idempotency_drop_expired: String,
    /// Drops a conversation's records: `$1` id.
    pub idempotency_drop_conversation: String,
    /// Drops expired records, a bounded number at a time: `$1` oldest kept.
    pub idempotency_expire: String,
    /// Every lease row with the database's time.
    pub leases: String,
    /// Takes a free node id: `$1` node, `$2` holder, `$3` ttl ms.
    pub lease_insert: String,
    /// Takes an expired lease from its old holder: `$1` node, `$2` holder, `$3` ttl ms,
    /// `$4` old holder, `$5` old expiry.
    pub lease_steal: String,
    /// Renews a held lease: `$1` node, `$2` holder, `$3` ttl ms.
    pub lease_renew: String,
    /// Gives a lease up: `$1` node, `$2` holder.
    pub lease_release: String,
}

impl Sql {
    /// The statements over tables in `schema` (a validated identifier).
    pub fn new(schema: &str) -> Self {
        let s = |text: &str| fill(text, schema);
        let head_columns =
            "last_id, created_at, updated_at, activity, message_count, last_message_id";
        let list = |moved: bool, member: bool| {
            let at = if moved {
                "c.created_at"
            } else {
                "c.updated_at"
            };
            let activity = if moved {
                "c.activity > $1"
            } else {
                "c.activity <= $1"
            };
            let join = if member {
                "JOIN {schema}.members u ON u.conversation_id = c.conversation_id AND u.user_id = $5 "
            } else {
                ""
            };
            s(&format!(
                "SELECT {RECORD}, {at} FROM {{schema}}.conversations c {join}\
                 LEFT JOIN {{schema}}.messages m ON m.conversation_id = c.conversation_id \
                 AND m.msg_id = c.last_message_id \
                 WHERE {activity} AND ({at} < $2 OR ({at} = $2 AND c.conversation_id > $3)) \
                 ORDER BY {at} DESC, c.conversation_id ASC LIMIT $4"
            ))
        };
        Sql {
            schema: schema.to_owned(),
            lock_version: s("SELECT version FROM {schema}.schema_version WHERE singleton = 1 FOR UPDATE"),
            set_version: s("UPDATE {schema}.schema_version SET version = $1 WHERE singleton = 1"),
            // ON CONFLICT DO UPDATE locks the row it finds: one round trip both creates and
            // locks. The no-op assignment is what makes it return the existing row.
            lock_head_upsert: s(&format!(
                "INSERT INTO {{schema}}.conversations (conversation_id, last_id, created_at, \
                 updated_at, activity, message_count, last_message_id, title, metadata) \
                 VALUES ($1, 0, $2, 0, 0, 0, NULL, NULL, '{{}}') \
                 ON CONFLICT (conversation_id) DO UPDATE SET last_id = {{schema}}.conversations.last_id \
                 RETURNING {head_columns}"
            )),
            insert_one: insert_messages(schema, 1),
            lock_head: s(&format!(
                "SELECT {head_columns} FROM {{schema}}.conversations WHERE conversation_id = $1 FOR UPDATE"
            )),
            update_head_after_insert: s(
                "UPDATE {schema}.conversations SET last_id = $2, created_at = $3, updated_at = $4, \
                 activity = $5, message_count = $6, last_message_id = $7 WHERE conversation_id = $1",
            ),
            update_head_after_delete: s(
                "UPDATE {schema}.conversations SET message_count = $2, last_message_id = $3 \
                 WHERE conversation_id = $1",
            ),
            touch_head: s(
                "UPDATE {schema}.conversations SET updated_at = $2, activity = $3 WHERE conversation_id = $1",
            ),
            patch_head: s(
                "UPDATE {schema}.conversations SET title = $2, metadata = $3, updated_at = $4, \
                 activity = $5 WHERE conversation_id = $1",
            ),
            create_head: s(
                "INSERT INTO {schema}.conversations (conversation_id, last_id, created_at, updated_at, \
                 activity, message_count, last_message_id, title, metadata) \
                 VALUES ($1, 0, $2, $2, $3, 0, NULL, $4, $5) ON CONFLICT (conversation_id) DO NOTHING",
            ),
            delete_head: s("DELETE FROM {schema}.conversations WHERE conversation_id = $1"),
            record: s(&format!(
                "SELECT {RECORD} FROM {{schema}}.conversations c \
                 LEFT JOIN {{schema}}.messages m ON m.conversation_id = c.conversation_id \
                 AND m.msg_id = c.last_message_id WHERE c.conversation_id = $1"
            )),
            max_id: s("SELECT MAX(msg_id) FROM {schema}.messages"),
            ping: s("SELECT 1"),
            horizon: s("SELECT MAX(activity) FROM {schema}.conversations"),
            list_by_updated: list(false, false),
            list_moved: list(true, false),
            list_member_by_updated: list(false, true),
            list_member_moved: list(true, true),
            is_member: s(
                "SELECT u.user_id FROM {schema}.conversations c LEFT JOIN {schema}.members u \
                 ON u.conversation_id = c.conversation_id AND u.user_id = $2 \
                 WHERE c.conversation_id = $1",
            ),
            exists: s("SELECT 1 FROM {schema}.conversations WHERE conversation_id = $1"),
            members: s("SELECT user_id FROM {schema}.members WHERE conversation_id = $1"),
            add_member: s(
                "INSERT INTO {schema}.members (conversation_id, user_id) VALUES ($1, $2) \
                 ON CONFLICT (conversation_id, user_id) DO NOTHING",
            ),
            remove_member: s("DELETE FROM {schema}.members WHERE conversation_id = $1 AND user_id = $2"),
            remove_members: s("DELETE FROM {schema}.members WHERE conversation_id = $1"),
            get: s("SELECT body FROM {schema}.messages WHERE msg_id = $1"),
            get_in: s("SELECT body FROM {schema}.messages WHERE conversation_id = $1 AND msg_id = $2"),
            page_asc: s(
                "SELECT msg_id, body FROM {schema}.messages WHERE conversation_id = $1 \
                 AND msg_id > $2 AND msg_id < $3 ORDER BY msg_id ASC LIMIT $4",
            ),
            page_desc: s(
                "SELECT msg_id, body FROM {schema}.messages WHERE conversation_id = $1 \
                 AND msg_id > $2 AND msg_id < $3 ORDER BY msg_id DESC LIMIT $4",
            ),
            newest: s(
                "SELECT msg_id FROM {schema}.messages WHERE conversation_id = $1 \
                 ORDER BY msg_id DESC LIMIT 1",
            ),
            stored: s("SELECT 1 FROM {schema}.messages WHERE conversation_id = $1 AND msg_id = $2"),
            set_body: s(
                "UPDATE {schema}.messages SET body = $3 WHERE conversation_id = $1 AND msg_id = $2",
            ),
            delete_one: s("DELETE FROM {schema}.messages WHERE conversation_id = $1 AND msg_id = $2"),
            delete_below: s("DELETE FROM {schema}.messages WHERE conversation_id = $1 AND msg_id < $2"),
            delete_all: s("DELETE FROM {schema}.messages WHERE conversation_id = $1"),
            idempotency_get: s(
                "SELECT fingerprint, created_ms, conversation_id, msg_id, timestamp_ms \
                 FROM {schema}.idempotency WHERE idem_key = $1 AND created_ms >= $2",
            ),
            idempotency_put: s(
                "INSERT INTO {schema}.idempotency (idem_key, fingerprint, created_ms, conversation_id, \
                 msg_id, timestamp_ms) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (idem_key) DO NOTHING",
            ),
            idempotency_drop_expired: s(
                "DELETE FROM {schema}.idempotency WHERE idem_key = $1 AND created_ms < $2",
            ),
            idempotency_drop_conversation: s(
                "DELETE FROM {schema}.idempotency WHERE conversation_id = $1",
            ),
            idempotency_expire: s(
                "DELETE FROM {schema}.idempotency WHERE idem_key IN \
                 (SELECT idem_key FROM {schema}.idempotency WHERE created_ms < $1 LIMIT 1000)",
            ),
            leases: s(&format!(
                "SELECT node_id, holder, expires_ms, {DB_NOW_MS} FROM {{schema}}.node_leases"
            )),
            lease_insert: s(&format!(
                "INSERT INTO {{schema}}.node_leases (node_id, holder, expires_ms) \
                 VALUES ($1, $2, {DB_NOW_MS} + $3) ON CONFLICT (node_id) DO NOTHING"
            )),
            lease_steal: s(&format!(
                "UPDATE {{schema}}.node_leases SET holder = $2, expires_ms = {DB_NOW_MS} + $3 \
                 WHERE node_id = $1 AND holder = $4 AND expires_ms = $5 AND expires_ms < {DB_NOW_MS}"
            )),
            lease_renew: s(&format!(
                "UPDATE {{schema}}.node_leases SET expires_ms = {DB_NOW_MS} + $3 \
                 WHERE node_id = $1 AND holder = $2 AND expires_ms > {DB_NOW_MS}"
            )),
            lease_release: s("DELETE FROM {schema}.node_leases WHERE node_id = $1 AND holder = $2"),
        }
    }

    /// Every statement and every DDL, for the lint.
    pub fn all(&self) -> Vec<String> {
        let mut all = vec![
            &self.lock_version,
            &self.set_version,
            &self.lock_head_upsert,
            &self.lock_head,
            &self.insert_one,
            &self.update_head_after_insert,
            &self.update_head_after_delete,
            &self.touch_head,
            &self.patch_head,
            &self.create_head,
            &self.delete_head,
            &self.record,
            &self.max_id,
            &self.ping,
            &self.horizon,
            &self.list_by_updated,
            &self.list_moved,
            &self.list_member_by_updated,
            &self.list_member_moved,
            &self.is_member,
            &self.exists,
            &self.members,
            &self.add_member,
            &self.remove_member,
            &self.remove_members,
            &self.get,
            &self.get_in,
            &self.page_asc,
            &self.page_desc,
            &self.newest,
            &self.stored,
            &self.set_body,
            &self.delete_one,
            &self.delete_below,
            &self.delete_all,
            &self.idempotency_get,
            &self.idempotency_put,
            &self.idempotency_drop_expired,
            &self.idempotency_drop_conversation,
            &self.idempotency_expire,
            &self.leases,
            &self.lease_insert,
            &self.lease_steal,
            &self.lease_renew,
            &self.lease_release,
        ]
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
        all.push(insert_messages(&self.schema, 3));
        for ddl in BOOTSTRAP
            .iter()
            .chain(MIGRATIONS.iter().flat_map(|m| m.iter()))
        {
            all.push(fill(ddl, &self.schema));
        }
        all
    }
}

/// A multi-row insert of `rows` messages: `($1, $2, $3), ($4, $5, $6), ...` as (conversation,
/// msg_id, body). Arrays and `UNNEST` would be one statement for any count, but not one every
/// engine runs alike.
pub fn insert_messages(schema: &str, rows: usize) -> String {
    let mut sql = fill(
        "INSERT INTO {schema}.messages (conversation_id, msg_id, body) VALUES ",
        schema,
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let p = row * 3;
        sql.push_str(&format!("(${}, ${}, ${})", p + 1, p + 2, p + 3));
    }
    sql
}

/// `text` with `{schema}` replaced.
pub fn fill(text: &str, schema: &str) -> String {
    text.replace("{schema}", schema)
}

/// Whether `schema` is a plain lower-case SQL identifier: it is spliced into statements, so
/// nothing that needs quoting (or could end a statement) is let in.
pub fn valid_schema(schema: &str) -> bool {
    let mut bytes = schema.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        && schema.len() <= 63
}
