//! Hot paths of the `merkle` module on a 100k-key partition: one write, a root after one write, a
//! full exchange between trees that differ in 10 keys, and (as the baseline the others are
//! measured against) building a tree from a scan of 100k keys.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ringkv_core::merkle::{Exchange, ExchangeOutcome, ExchangeStep, MerkleConfig, MerkleTree};

const KEYS: u32 = 100_000;
const BUCKET: &[u8] = b"bench";

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("key-{i:08}").into_bytes())
        .collect()
}

fn build(keys: &[Vec<u8>]) -> MerkleTree {
    let mut tree = MerkleTree::new(MerkleConfig::default()).expect("the default config is valid");
    for (i, key) in keys.iter().enumerate() {
        tree.update(BUCKET, key, Some(i as u64));
    }
    tree
}

/// Runs an exchange to completion with `local` initiating and `remote` answering.
fn exchange(local: &mut MerkleTree, remote: &mut MerkleTree, max_items: usize) -> ExchangeOutcome {
    let (mut exchange, mut request) = Exchange::new(max_items);
    loop {
        let response = remote.answer(&request).expect("valid request");
        match exchange
            .on_response(local, response)
            .expect("valid response")
        {
            ExchangeStep::Request(next) => request = next,
            ExchangeStep::Done(outcome) => return outcome,
        }
    }
}

fn tree_ops(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("merkle 100k keys");
    group.sample_size(10);
    group.bench_function("build from 100k keys (baseline)", |b| {
        b.iter(|| build(black_box(&keys)))
    });
    group.finish();

    let mut tree = build(&keys);
    tree.root();
    let key = &keys[KEYS as usize / 2];
    let mut digest = 0u64;
    c.bench_function("merkle 100k keys: update one key", |b| {
        b.iter(|| {
            digest = digest.wrapping_add(1);
            tree.update(BUCKET, black_box(key), Some(digest));
        })
    });
    c.bench_function("merkle 100k keys: update one key, then root", |b| {
        b.iter(|| {
            digest = digest.wrapping_add(1);
            tree.update(BUCKET, black_box(key), Some(digest));
            tree.root()
        })
    });
}

fn exchanges(c: &mut Criterion) {
    let keys = keys();
    let mut local = build(&keys);
    let mut remote = local.clone();
    for i in 0..10 {
        remote.update(BUCKET, &keys[i * 9_973], Some(u64::MAX));
    }
    // Roots and inner hashes are cached after the first run: what is measured is the exchange.
    let outcome = exchange(&mut local, &mut remote, 64);
    assert_eq!(outcome.differing.len(), 10);
    eprintln!(
        "exchange 100k keys / 10 differing: {} requests, {} hashes compared",
        outcome.requests, outcome.hashes_compared
    );
    c.bench_function(
        "merkle exchange 100k keys, 10 differing, max_items 64",
        |b| b.iter(|| exchange(&mut local, &mut remote, 64)),
    );
    let mut same = local.clone();
    c.bench_function("merkle exchange 100k keys, equal trees", |b| {
        b.iter(|| exchange(&mut local, &mut same, 64))
    });
}

criterion_group!(benches, tree_ops, exchanges);
criterion_main!(benches);
