//! Hot paths of the `version` module: merge, update, record and context codecs.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringkv_core::version::{ActorId, ConflictMode, Content, Context, Object, VersionVector};

const MODE: ConflictMode = ConflictMode::Siblings;

fn actors() -> Vec<ActorId> {
    (0..5).map(|i| ActorId::new(format!("n{i}.1"))).collect()
}

/// Two replicas of one key, each holding 3 siblings (one shared ancestor and two concurrent
/// writes of its own), with 5-actor clocks.
fn replicas() -> (Object, Object) {
    let actors = actors();
    let mut base = Object::new();
    for (i, a) in actors.iter().enumerate() {
        let ctx = base.context();
        base.update(
            ctx.clock(),
            a,
            Content::Value(vec![i as u8; 100]),
            i as u64,
            MODE,
        );
    }
    let (mut left, mut right) = (base.clone(), base);
    for (i, a) in actors[..2].iter().enumerate() {
        left.update(
            &VersionVector::new(),
            a,
            Content::Value(vec![7; 100]),
            10 + i as u64,
            MODE,
        );
    }
    for (i, a) in actors[2..4].iter().enumerate() {
        right.update(
            &VersionVector::new(),
            a,
            Content::Value(vec![9; 100]),
            20 + i as u64,
            MODE,
        );
    }
    assert_eq!((left.siblings().len(), right.siblings().len()), (3, 3));
    (left, right)
}

fn merge(c: &mut Criterion) {
    let (left, right) = replicas();
    c.bench_function("object merge 3+3 siblings, 5 actors", |b| {
        b.iter_batched(
            || left.clone(),
            |mut o| {
                o.merge(black_box(&right), MODE);
                o
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("object merge with itself (no change)", |b| {
        b.iter_batched(
            || left.clone(),
            |mut o| {
                o.merge(black_box(&left), MODE);
                o
            },
            BatchSize::SmallInput,
        )
    });
}

fn update(c: &mut Criterion) {
    let (left, _) = replicas();
    let actor = actors()[0].clone();
    let ctx = left.context();
    c.bench_function("object update with read context, 3 siblings", |b| {
        b.iter_batched(
            || left.clone(),
            |mut o| {
                o.update(
                    black_box(ctx.clock()),
                    &actor,
                    Content::Value(vec![1; 100]),
                    1_000,
                    MODE,
                );
                o
            },
            BatchSize::SmallInput,
        )
    });
}

fn codec(c: &mut Criterion) {
    let (left, _) = replicas();
    for (name, size) in [("1 KiB", 1 << 10), ("1 MiB", 1 << 20)] {
        let mut o = left.clone();
        let ctx = o.context();
        o.update(
            ctx.clock(),
            &actors()[0],
            Content::Value(vec![0x5a; size]),
            99,
            MODE,
        );
        let bytes = o.encode();
        let mut group = c.benchmark_group(format!("object codec {name}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("encode", |b| b.iter(|| black_box(&o).encode()));
        group.bench_function("decode", |b| b.iter(|| Object::decode(black_box(&bytes))));
        // Baseline: one crc32 pass over the record. Decode makes two (record, then value) and a
        // copy; encode one pass and a copy.
        group.bench_function("checksum (baseline)", |b| {
            b.iter(|| ringkv_core::version::checksum(black_box(&bytes)))
        });
        group.finish();
        // Sizing walks the structure without touching value bytes: constant in the value size.
        c.bench_function(&format!("object encoded_len {name}"), |b| {
            b.iter(|| black_box(&o).encoded_len())
        });
    }
}

fn context(c: &mut Criterion) {
    let (left, _) = replicas();
    let ctx: Context = left.context();
    let bytes = ctx.encode();
    let text = ctx.to_base64();
    let mut group = c.benchmark_group("context 5 actors");
    group.bench_function("encode", |b| b.iter(|| black_box(&ctx).encode()));
    group.bench_function("decode", |b| b.iter(|| Context::decode(black_box(&bytes))));
    group.bench_function("to_base64", |b| b.iter(|| black_box(&ctx).to_base64()));
    group.bench_function("from_base64", |b| {
        b.iter(|| Context::from_base64(black_box(&text)))
    });
    group.finish();
}

criterion_group!(benches, merge, update, codec, context);
criterion_main!(benches);
