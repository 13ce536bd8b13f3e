//! What bounds the store's memory: redb's page cache and the size of a scan page (the helpers
//! are the parent's).

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

#[test]
fn a_scan_page_ends_at_its_byte_budget_but_holds_at_least_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::open(StorageConfig {
        max_scan_bytes: 10_000,
        ..config(dir.path())
    });
    let sizes = [
        ("a", 4_000),
        ("b", 4_000),
        ("c", 30_000),
        ("d", 100),
        ("e", 100),
    ];
    for (key, size) in sizes {
        assert_eq!(h.put(&data(1, key), &vec![1u8; size], false), WRITTEN);
    }
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let (items, done) = h.scan(ScanRange::Partition(PartitionId(1)), after, 100);
        after = items.last().map(|(key, _)| key.clone());
        pages.push(
            items
                .iter()
                .map(|(key, record)| (String::from_utf8(key.key.clone()).unwrap(), record.len()))
                .collect::<Vec<_>>(),
        );
        if done {
            break;
        }
    }
    let page = |keys: &[&str]| {
        keys.iter()
            .map(|key| {
                let size = sizes.iter().find(|(k, _)| k == key).unwrap().1;
                (key.to_string(), size)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pages,
        vec![page(&["a", "b"]), page(&["c"]), page(&["d", "e"])],
        "a, b fit the budget; c alone is over it and still makes a page of its own"
    );
    h.storage.shutdown().unwrap();
}
