//! Hot paths of the `membership` module: merging and fingerprinting cluster views, phi, and the
//! choice of a gossip partner.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ringkv_core::membership::{
    choose_gossip_peer, ClusterView, DetectorConfig, FailureDetector, MemberInfo, MemberStatus,
};
use ringkv_core::ring::{RingConfig, Strategy};
use ringkv_core::NodeId;

fn id(i: usize) -> NodeId {
    NodeId::new(format!("n{i:04}"))
}

/// A view of `n` Up members with addresses and zones, and a claimed ring of 4096 partitions.
fn view(n: usize) -> ClusterView {
    let mut view = ClusterView::new("bench").expect("short name");
    for i in 0..n {
        let mut info = MemberInfo::new(
            id(i),
            format!("10.0.{}.{}:7000", i / 256, i % 256),
            format!("10.0.{}.{}:8000", i / 256, i % 256),
            1,
        );
        info.zone = Some(format!("zone-{}", i % 3));
        info.status = MemberStatus::Up;
        view.set_member(info).expect("valid member");
    }
    let config = RingConfig {
        partitions: 4096,
        strategy: Strategy::Partitions,
        target_n: 3,
        ..RingConfig::default()
    };
    view.claim(&id(0), &config).expect("claimant");
    view
}

fn bench_view(c: &mut Criterion) {
    let left = view(1000);
    // The other side has seen ten changes this one has not.
    let mut right = left.clone();
    for i in (0..1000).step_by(100) {
        right.set_status(&id(i), MemberStatus::Down);
    }
    c.bench_function("merge_1000_members_10_differ", |b| {
        b.iter_batched(
            || left.clone(),
            // The view is returned so that dropping it is not timed.
            |mut ours| {
                let changed = ours.merge(&right);
                (ours, changed)
            },
            BatchSize::LargeInput,
        )
    });
    c.bench_function("digest_1000_members", |b| {
        b.iter(|| black_box(&left).digest())
    });
    // What a node does with a view that arrives by gossip.
    let bytes = left.encode();
    c.bench_function("decode_1000_members", |b| {
        b.iter(|| ClusterView::decode(black_box(&bytes)))
    });
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let seeds = [id(0), id(1), id(2)];
    c.bench_function("choose_gossip_peer_1000_members", |b| {
        b.iter(|| choose_gossip_peer(&id(500), black_box(&left), &|_| true, &seeds, &mut rng))
    });
}

fn bench_detector(c: &mut Criterion) {
    let mut detector = FailureDetector::new(DetectorConfig::default());
    let peer = NodeId::new("peer");
    // A full window of jittered intervals.
    let mut now = 0;
    for i in 0..200u64 {
        now += 900 + (i * 37) % 200;
        detector.heartbeat(&peer, now);
    }
    c.bench_function("phi_one_peer", |b| {
        b.iter(|| black_box(&detector).phi(black_box(&peer), black_box(now + 1500)))
    });
}

criterion_group!(benches, bench_view, bench_detector);
criterion_main!(benches);
