//! What the store's integration tests share.

use kalamdb_rocksdb::keys::{self, CF_META, META_FORMAT_VERSION};

/// The format version the store at `path` records, read without opening it as a store.
pub(crate) fn format_version(path: &std::path::Path) -> u32 {
    let db = rocksdb::DB::open_cf_for_read_only(
        &rocksdb::Options::default(),
        path,
        keys::COLUMN_FAMILIES,
        false,
    )
    .unwrap();
    let meta = db.cf_handle(CF_META).unwrap();
    let bytes = db.get_cf(meta, META_FORMAT_VERSION).unwrap().unwrap();
    u32::from_be_bytes(bytes.try_into().unwrap())
}
