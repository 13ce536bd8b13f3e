//! What bounds the store's memory: redb's page cache (the helpers are the parent's).

use super::*;

#[test]
fn the_cache_setting_decides_whether_repeated_reads_go_to_the_file() {
    let record = vec![7u8; 64 << 10];
    for cache_bytes in [0, DEFAULT_CACHE_BYTES] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let config = StorageConfig {
            cache_bytes,
            ..config(dir.path())
        };
        let mut h = Harness::open_faulty(config, Arc::clone(&faults));
        let key = data(1, "k");
        assert_eq!(h.put(&key, &record, true), SYNCED);
        assert_eq!(h.get(&key).as_ref(), Some(&record));
        let before = faults.read_bytes.load(Ordering::SeqCst);
        for _ in 0..10 {
            assert_eq!(h.get(&key).as_ref(), Some(&record));
        }
        let read = faults.read_bytes.load(Ordering::SeqCst) - before;
        if cache_bytes == 0 {
            assert!(
                read >= 10 * record.len(),
                "without a cache every read goes to the file, read {read} bytes"
            );
        } else {
            assert_eq!(read, 0, "a cached record is read from memory");
        }
        h.storage.shutdown().unwrap();
    }
}
