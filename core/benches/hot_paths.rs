//! The coordinator's hot path: one put and one get through a node, storage answered inline.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringkv_core::bucket::{QuorumValue, RequestOptions};
use ringkv_core::config::NodeConfig;
use ringkv_core::node::Node;
use ringkv_core::request::ClientRequest;
use ringkv_core::ring::Member;
use ringkv_core::store::{drive, MemStore};
use ringkv_core::version::ConflictMode;

fn node() -> Node {
    let mut config = NodeConfig::new("n1");
    config.default_bucket.n = 1;
    config.default_bucket.r = QuorumValue::One;
    config.default_bucket.w = QuorumValue::One;
    // Blind puts into siblings mode would grow every object without bound; LWW keeps one value.
    config.default_bucket.conflict_mode = ConflictMode::LastWriterWins;
    Node::new(config, vec![Member::new("n1", 1)], 0).expect("valid ring")
}

fn coordinator_step(c: &mut Criterion) {
    let mut node = node();
    let mut store = MemStore::new();
    let mut id = 0u64;
    let value = vec![7u8; 100];
    c.bench_function("node put 100B (single replica, inline store)", |b| {
        b.iter(|| {
            id += 1;
            let request = ClientRequest::Put {
                bucket: b"bench".to_vec(),
                key: (id % 1024).to_be_bytes().to_vec(),
                context: Default::default(),
                value: value.clone(),
                options: RequestOptions::default(),
            };
            node.handle_client(0, id, request).expect("valid request");
            black_box(drive(&mut node, &mut store, 0));
        })
    });
    c.bench_function("node get (single replica, inline store)", |b| {
        b.iter(|| {
            id += 1;
            let request = ClientRequest::Get {
                bucket: b"bench".to_vec(),
                key: (id % 1024).to_be_bytes().to_vec(),
                options: RequestOptions::default(),
            };
            node.handle_client(0, id, request).expect("valid request");
            black_box(drive(&mut node, &mut store, 0));
        })
    });
}

/// What the node's put costs at least: hashing the key and storing one record, for ratios.
fn baseline(c: &mut Criterion) {
    let mut store = MemStore::new();
    let record = vec![7u8; 160];
    let mut id = 0u64;
    c.bench_function("baseline: key_position + MemStore put", |b| {
        b.iter(|| {
            id += 1;
            let key = (id % 1024).to_be_bytes().to_vec();
            let position = ringkv_core::ring::key_position(b"bench", &key);
            let op = ringkv_core::storage::StorageOp::Put {
                key: ringkv_core::storage::StorageKey::data(
                    ringkv_core::ring::PartitionId((position >> 120) as u32),
                    b"bench",
                    &key,
                ),
                record: record.clone(),
                sync: false,
            };
            black_box(store.apply(&op));
        })
    });
}

criterion_group!(benches, baseline, coordinator_step);
criterion_main!(benches);
