//! The disk's own `fdatasync`: what a durable write waits for at least, measured in the same
//! run as the servers so that a single-client target can be stated against it (issue #23).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// The median time, in µs, of `count` appends of 4 KiB to a new file in `dir`, each followed by
/// `fdatasync` (`File::sync_data`): about what one durable group commit of the real server
/// costs in the disk alone.
pub(crate) fn fdatasync_p50_us(dir: &Path, count: usize) -> std::io::Result<u64> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    drop(file);
    std::fs::remove_file(&path)?;
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_measures_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p50 = fdatasync_p50_us(dir.path(), 5).unwrap();
        assert!(p50 < 10_000_000, "{p50} µs");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
