//! Placement hot paths: hashing a key, finding its replicas, and re-claiming on a join.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringkv_core::ring::{key_position, Member, Ring, RingConfig, Strategy};

fn members(count: usize) -> Vec<Member> {
    (0..count)
        .map(|i| Member::new(format!("n{i:04}"), 1 + (i % 4) as u32))
        .collect()
}

fn ring(count: usize, partitions: u32, strategy: Strategy) -> Ring {
    let config = RingConfig {
        partitions,
        strategy,
        target_n: 3,
        ..RingConfig::default()
    };
    Ring::new(config, members(count)).expect("valid ring")
}

fn keys() -> Vec<u128> {
    (0u32..1024)
        .map(|i| key_position(b"bench", &i.to_be_bytes()))
        .collect()
}

fn hashing(c: &mut Criterion) {
    c.bench_function("key_position (5 B bucket, 16 B key)", |b| {
        b.iter(|| key_position(black_box(b"users"), black_box(b"alice@example.com")))
    });
}

fn preference_lists(c: &mut Criterion) {
    let keys = keys();
    let tokens = Strategy::Tokens {
        tokens_per_capacity: 64,
    };
    let rings = [
        (
            "partitions 16 nodes / 256",
            ring(16, 256, Strategy::Partitions),
        ),
        (
            "tokens 16 nodes / 64 per capacity",
            ring(16, 256, tokens.clone()),
        ),
        (
            "partitions 1000 nodes / 4096",
            ring(1000, 4096, Strategy::Partitions),
        ),
        (
            "tokens 1000 nodes / 64 per capacity",
            ring(1000, 4096, tokens),
        ),
    ];
    for (name, ring) in &rings {
        let mut i = 0;
        c.bench_function(&format!("preference_list n=3, {name}"), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                ring.preference_list(black_box(keys[i]), 3)
            })
        });
    }
}

fn claims(c: &mut Criterion) {
    let mut group = c.benchmark_group("claim");
    group.sample_size(20);
    for (count, partitions) in [(100usize, 256u32), (100, 4096), (1000, 4096)] {
        let before = ring(count, partitions, Strategy::Partitions);
        let after = members(count + 1);
        group.bench_function(
            format!("with_members, one join to {count} nodes / {partitions}"),
            |b| {
                b.iter(|| {
                    before
                        .with_members(black_box(after.clone()))
                        .expect("valid")
                })
            },
        );
    }
    let all = members(1000);
    group.bench_function("Ring::new 1000 nodes / 4096", |b| {
        b.iter(|| {
            Ring::new(
                RingConfig {
                    partitions: 4096,
                    ..RingConfig::default()
                },
                all.clone(),
            )
            .expect("valid")
        })
    });
    group.finish();
}

criterion_group!(benches, hashing, preference_lists, claims);
criterion_main!(benches);
