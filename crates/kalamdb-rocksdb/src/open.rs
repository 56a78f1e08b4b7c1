//! Opening a store: [`RocksStore::open`], the format check, the upgrade of older layouts, and
//! the id generator's seed.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use kalamdb_core::{IdGenerator, MessageId};
use rocksdb::{
    Cache, ColumnFamilyDescriptor, CompactionDecision, IteratorMode, LogLevel, Options, WriteBatch,
    WriteOptions, DB,
};

use crate::keys::{
    self, ActivityKind, ConversationState, CF_ACTIVITY, CF_CONVERSATIONS, CF_IDEMPOTENCY,
    CF_MESSAGES, CF_MESSAGE_INDEX, CF_META, COLUMN_FAMILIES, FORMAT_VERSION, META_FORMAT_VERSION,
    META_NODE_ID,
};
use crate::options::{cf_options, write_options, BLOCK_CACHE_BYTES};
use crate::store::now_ms;
use crate::{RocksStore, StoreOptions};

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// RocksDB refused to open the directory (missing permissions, full disk, a lock held by
    /// another process...).
    #[error("cannot open the RocksDB store at {path}: {reason}")]
    Rocks {
        /// The directory.
        path: PathBuf,
        /// RocksDB's own explanation.
        reason: String,
    },
    /// The directory was written by a newer, incompatible build.
    #[error("the store at {path} has format version {found}; this build reads version {FORMAT_VERSION} and upgrades versions 1 to 5")]
    Format {
        /// The directory.
        path: PathBuf,
        /// The version found on disk.
        found: String,
    },
    /// The id generator could not be set up.
    #[error(transparent)]
    Ids(#[from] kalamdb_core::IdError),
}

impl RocksStore {
    /// Opens (creating when missing) the store described by `options`.
    pub fn open(options: &StoreOptions) -> Result<Self, OpenError> {
        let path = options.path.clone();
        let rocks_err = |e: rocksdb::Error| OpenError::Rocks {
            path: path.clone(),
            reason: e.into_string(),
        };
        std::fs::create_dir_all(&path).map_err(|e| OpenError::Rocks {
            path: path.clone(),
            reason: e.to_string(),
        })?;

        // Erasure (`erase.rs`) also needs the MANIFEST, which records each table file's first
        // and last key, to start afresh on every change: a small snapshot of the live files per
        // flush or compaction, instead of an append-only log of every key range ever written.
        let mut db_options = Options::default()
            .get_options_from_string("max_manifest_file_size=1;max_manifest_space_amp_pct=0")
            .map_err(rocks_err)?;
        // RocksDB's info log names the key ranges of manual compactions, which are those of
        // deleted conversations: warnings and errors only.
        db_options.set_log_level(LogLevel::Warn);
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        // Erasure (`erase.rs`) relies on an obsolete WAL file being deleted: never kept for
        // reuse or in an archive, whatever RocksDB's defaults become.
        db_options.set_recycle_log_file_num(0);
        db_options.set_wal_ttl_seconds(0);
        db_options.set_wal_size_limit_mb(0);
        db_options.set_max_total_wal_size(options.max_wal_bytes);
        db_options.increase_parallelism(
            std::thread::available_parallelism().map_or(2, |n| n.get()) as i32,
        );
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let descriptors = COLUMN_FAMILIES.iter().map(|name| {
            let mut cf = cf_options(name, options.compression, &cache).map_err(rocks_err)?;
            if *name == CF_IDEMPOTENCY {
                let ttl_ms = u64::try_from(options.idempotency_ttl.as_millis()).unwrap_or(u64::MAX);
                cf.set_compaction_filter("kalamdb-idempotency-ttl", move |_level, _key, value| {
                    match keys::idempotency_created_ms(value) {
                        Some(created) if now_ms().saturating_sub(created) >= ttl_ms => {
                            CompactionDecision::Remove
                        }
                        _ => CompactionDecision::Keep,
                    }
                });
                cf.set_periodic_compaction_seconds(options.idempotency_ttl.as_secs().max(1));
            }
            Ok(ColumnFamilyDescriptor::new(*name, cf))
        });
        let descriptors = descriptors.collect::<Result<Vec<_>, OpenError>>()?;
        let db = DB::open_cf_descriptors(&db_options, &path, descriptors).map_err(rocks_err)?;

        if let Some(old) = check_format(&db, &path)?.filter(|v| *v != FORMAT_VERSION) {
            let failed = |reason| OpenError::Rocks {
                path: path.clone(),
                reason: format!("upgrading from format version {old}: {reason}"),
            };
            let rewritten = if old <= keys::LAST_OLD_KEY_FORMAT {
                upgrade_keys(&db).map_err(failed)?
            } else {
                0
            };
            // Format 4 differs only in what it cannot read: a state with deferred entries.
            let conversations = if old <= keys::LAST_FORMAT_WITHOUT_RECORDS {
                build_conversations(&db).map_err(failed)?
            } else {
                0
            };
            tracing::info!(
                path = %path.display(),
                rewritten_keys = rewritten,
                conversations,
                from = old,
                "upgraded the store to format version {FORMAT_VERSION}"
            );
        }
        let seed = highest_id(&db).map_err(rocks_err)?;
        let ids = IdGenerator::new(options.node_id, seed)?;
        let meta = db.cf_handle(CF_META).expect("meta column family is opened");
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
        batch.put_cf(meta, META_NODE_ID, options.node_id.to_be_bytes());
        db.write(batch).map_err(rocks_err)?;

        tracing::debug!(path = %path.display(), seed = %seed, "opened RocksDB store");
        let last_op = last_erase_op(&db).map_err(rocks_err)?;
        Ok(Self {
            db,
            path,
            writer: Mutex::new(ids),
            states: Mutex::default(),
            sync_writes: options.sync_writes,
            max_wal_bytes: options.max_wal_bytes,
            write_options: write_options(options.sync_writes),
            idempotency_ttl_ms: u64::try_from(options.idempotency_ttl.as_millis())
                .unwrap_or(u64::MAX),
            closed: AtomicBool::new(false),
            recent: crate::recent::Recent::new(
                options.recent_cache_bytes,
                options.recent_per_conversation,
            ),
            eraser: crate::erase::Eraser::new(
                last_op,
                last_op.is_some(),
                options.erase_within,
                options.retention,
            ),
        })
    }
}

/// The format version the store records, `None` for a new store. Refuses one this build cannot
/// read or upgrade.
fn check_format(db: &DB, path: &Path) -> Result<Option<u32>, OpenError> {
    let meta = db.cf_handle(CF_META).expect("meta column family is opened");
    let stored = db
        .get_cf(meta, META_FORMAT_VERSION)
        .map_err(|e| OpenError::Rocks {
            path: path.to_owned(),
            reason: e.into_string(),
        })?;
    let Some(bytes) = stored else {
        return Ok(None);
    };
    match <[u8; 4]>::try_from(bytes.as_slice()).map(u32::from_be_bytes) {
        Ok(version)
            if version == FORMAT_VERSION || keys::OLD_FORMAT_VERSIONS.contains(&version) =>
        {
            Ok(Some(version))
        }
        Ok(version) => Err(OpenError::Format {
            path: path.to_owned(),
            found: version.to_string(),
        }),
        Err(_) => Err(OpenError::Format {
            path: path.to_owned(),
            found: format!("{bytes:?}"),
        }),
    }
}

/// How many keys one upgrade batch rewrites: a few megabytes per write.
const UPGRADE_BATCH_KEYS: usize = 10_000;

/// Rewrites every `messages` key of an older format (1 or 2) into the current layout, then
/// records format version 3. Returns how many messages it rewrote.
///
/// Each batch deletes old keys and puts their new ones in one atomic write, so a crash leaves
/// every message under exactly one key, old or new; the next open carries on from there, since
/// every layout uses its own separator. The version is recorded last, with a WAL sync that also
/// makes every batch before it durable. Values do not change.
fn upgrade_keys(db: &DB) -> Result<u64, String> {
    let messages = db
        .cf_handle(CF_MESSAGES)
        .expect("messages column family is opened");
    let meta = db.cf_handle(CF_META).expect("meta column family is opened");
    let rocks = |e: rocksdb::Error| e.into_string();
    let mut rewritten = 0;
    let mut batch = WriteBatch::default();
    // The iterator reads a snapshot: the new keys written meanwhile are not met again.
    let mut entries = db.raw_iterator_cf(messages);
    entries.seek_to_first();
    while let (Some(key), Some(value)) = (entries.key(), entries.value()) {
        if let Some((conversation, id)) = keys::decode_old_message_key(key) {
            let conversation = std::str::from_utf8(conversation)
                .map_err(|_| format!("message {id} has a conversation id that is not UTF-8"))?;
            batch.delete_cf(messages, key);
            batch.put_cf(messages, keys::message_key(conversation, id), value);
            rewritten += 1;
            if batch.len() >= 2 * UPGRADE_BATCH_KEYS {
                db.write(std::mem::take(&mut batch)).map_err(rocks)?;
            }
        }
        entries.next();
    }
    entries.status().map_err(rocks)?;
    batch.put_cf(
        meta,
        META_FORMAT_VERSION,
        (keys::LAST_OLD_KEY_FORMAT + 1).to_be_bytes(),
    );
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    db.write_opt(batch, &synced).map_err(rocks)?;
    Ok(rewritten)
}

/// Builds every conversation's record and its entries in the server's listing from the stored
/// messages (format 3 had neither), then records the current version. Returns how many
/// conversations it built.
///
/// A conversation's keys are contiguous and run newest first, so one pass finds each one's
/// count, newest message (its first key) and oldest (its last). Every put is of a value computed
/// from the messages alone, so a rebuild cut short by a crash is simply done again on the next
/// open: the version is recorded last, with a WAL sync that makes every batch before it durable.
fn build_conversations(db: &DB) -> Result<u64, String> {
    let cf = |name| db.cf_handle(name).expect("every column family is opened");
    let (messages, records, activity, meta) = (
        cf(CF_MESSAGES),
        cf(CF_CONVERSATIONS),
        cf(CF_ACTIVITY),
        cf(CF_META),
    );
    let rocks = |e: rocksdb::Error| e.into_string();
    let mut built = 0;
    let mut batch = WriteBatch::default();
    let mut finish = |batch: &mut WriteBatch, conversation: &str, state: &ConversationState| {
        batch.put_cf(
            records,
            keys::conversation_key(conversation, keys::STATE),
            state.encode(),
        );
        for (kind, at) in [
            (ActivityKind::Updated, state.updated_at),
            (ActivityKind::Created, state.created_at),
        ] {
            batch.put_cf(activity, keys::activity_key("", kind, at, conversation), []);
        }
        built += 1;
    };
    let mut current: Option<(String, ConversationState)> = None;
    let mut entries = db.raw_iterator_cf(messages);
    entries.seek_to_first();
    while let Some(key) = entries.key() {
        let (conversation, id) = keys::decode_message_key(key)
            .ok_or_else(|| format!("a message key does not decode: {key:?}"))?;
        let at = id.timestamp_ms();
        match &mut current {
            Some((name, state)) if name.as_bytes() == conversation => {
                state.message_count += 1;
                state.created_at = at;
            }
            _ => {
                if let Some((name, state)) = current.take() {
                    finish(&mut batch, &name, &state);
                }
                let name = std::str::from_utf8(conversation)
                    .map_err(|_| format!("message {id} has a conversation id that is not UTF-8"))?;
                current = Some((
                    name.to_owned(),
                    ConversationState {
                        created_at: at,
                        updated_at: at,
                        message_count: 1,
                        last_id: Some(id),
                        activity: id.as_u64(),
                        ..ConversationState::default()
                    },
                ));
            }
        }
        if batch.len() >= UPGRADE_BATCH_KEYS {
            db.write(std::mem::take(&mut batch)).map_err(rocks)?;
        }
        entries.next();
    }
    entries.status().map_err(rocks)?;
    if let Some((name, state)) = current.take() {
        finish(&mut batch, &name, &state);
    }
    batch.put_cf(meta, META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    db.write_opt(batch, &synced).map_err(rocks)?;
    Ok(built)
}

/// The highest id in `message_index`, or [`MessageId::MIN`] for an empty store.
pub(crate) fn highest_id(db: &DB) -> Result<MessageId, rocksdb::Error> {
    let index = db
        .cf_handle(CF_MESSAGE_INDEX)
        .expect("index column family is opened");
    let stored = match db.iterator_cf(index, IteratorMode::End).next() {
        Some(entry) => {
            let (key, _) = entry?;
            keys::decode_index_key(&key).unwrap_or(MessageId::MIN)
        }
        None => MessageId::MIN,
    };
    // Deleting the newest messages takes their index entries: the floor remembers their ids.
    let meta = db.cf_handle(CF_META).expect("meta column family is opened");
    let floor = db
        .get_cf(meta, keys::META_ID_FLOOR)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(MessageId::MIN, |b| {
            MessageId::from_u64(u64::from_be_bytes(b))
        });
    Ok(stored.max(floor))
}

/// The highest operation number in the erase queue, `None` when it is empty.
fn last_erase_op(db: &DB) -> Result<Option<u64>, rocksdb::Error> {
    let meta = db.cf_handle(CF_META).expect("meta column family is opened");
    let past = keys::past_prefix(keys::META_ERASE_PREFIX);
    let mut entries = db.raw_iterator_cf(meta);
    entries.seek_for_prev(&past);
    let last = entries
        .key()
        .and_then(keys::decode_erase_key)
        .map(|(op, _)| op);
    entries.status()?;
    Ok(last)
}
