//! Placement at scale, on paper: balance and movement as the cluster grows, for both strategies.
//! Run with `cargo test --release -p ringkv-tests --test scale -- --ignored --nocapture`; the
//! table is copied into docs/scale.md.

use ringkv_core::ring::{Member, Ring, RingConfig, Strategy};

fn members(count: usize) -> Vec<Member> {
    (0..count)
        .map(|i| Member::new(format!("n{i:04}"), 1))
        .collect()
}

fn spread(values: impl Iterator<Item = f64>, ideal: f64) -> (f64, f64) {
    let values: Vec<f64> = values.collect();
    let max = values.iter().cloned().fold(0.0, f64::max) / ideal;
    let min = values.iter().cloned().fold(f64::INFINITY, f64::min) / ideal;
    (min, max)
}

#[test]
#[ignore = "prints a table; slow in debug"]
fn placement_as_the_cluster_grows() {
    println!("| strategy | nodes | Q or tokens | ownership min/max of fair share | replica load (N=3) min/max | keys moved by one join / ideal |");
    println!("|---|---|---|---|---|---|");
    for count in [10usize, 100, 1000] {
        for (name, strategy, partitions) in [
            ("partitions", Strategy::Partitions, 4096u32),
            (
                "tokens",
                Strategy::Tokens {
                    tokens_per_capacity: 64,
                },
                4096,
            ),
        ] {
            let config = RingConfig {
                partitions,
                strategy: strategy.clone(),
                target_n: 3,
                ..RingConfig::default()
            };
            let ring = Ring::new(config, members(count)).unwrap();
            let fair = 1.0 / count as f64;
            let (omin, omax) = spread(ring.ownership().into_values(), fair);
            let (lmin, lmax) = spread(ring.replica_load(3).into_values(), fair);
            let grown = ring.with_members(members(count + 1)).unwrap();
            let moved = ring.owner_moved_fraction(&grown);
            let ideal = 1.0 / (count + 1) as f64;
            let size = match strategy {
                Strategy::Partitions => format!("Q={partitions}"),
                Strategy::Tokens {
                    tokens_per_capacity,
                } => format!("{tokens_per_capacity}/node"),
            };
            println!(
                "| {name} | {count} | {size} | {omin:.2} / {omax:.2} | {lmin:.2} / {lmax:.2} | {:.2} |",
                moved / ideal
            );
        }
    }
}

#[test]
#[ignore = "a 1,000-node simulation; minutes in release"]
fn gossip_spreads_a_change_through_a_thousand_simulated_nodes() {
    use ringkv_core::bucket::BucketProps;
    use ringkv_core::io::Command;
    use ringkv_core::sim::{Sim, SimConfig};
    println!("| nodes | gossip interval | rounds until every view has the change | simulated ms |");
    println!("|---|---|---|---|");
    for nodes in [10usize, 100, 1000] {
        let mut sim = Sim::new(SimConfig {
            nodes,
            partitions: 4096,
            seed: 1,
            // Anti-entropy is not what is measured; keep it out of the way.
            anti_entropy_interval_ms: 3_600_000,
            ..SimConfig::default()
        });
        sim.run(1_000);
        let props = BucketProps {
            n: 2,
            ..BucketProps::default()
        };
        assert!(sim.command(
            "n1",
            Command::SetBucket {
                bucket: b"carts".to_vec(),
                props: props.clone(),
            }
        ));
        let start = sim.now();
        let interval = sim.config().gossip_interval_ms;
        let everyone = |sim: &Sim| {
            sim.node_ids()
                .iter()
                .all(|id| sim.view(id.as_str()).and_then(|v| v.bucket(b"carts")) == Some(&props))
        };
        while !everyone(&sim) {
            sim.run(interval);
            assert!(sim.now() - start < 200 * interval, "no convergence");
        }
        let elapsed = sim.now() - start;
        println!(
            "| {nodes} | {interval} ms | {} | {elapsed} |",
            elapsed / interval
        );
    }
}

/// What one gossip run at a given size measured.
struct GossipRun {
    nodes: usize,
    /// Gossip rounds from the change until every view held it.
    rounds: u64,
    /// Gossip bytes a node sent per second while the views were equal, on average.
    steady_bytes_per_node_s: f64,
    /// Gossip bytes a node sent per second while the change spread, on average.
    converging_bytes_per_node_s: f64,
    /// The most bytes one node sent per second while the change spread.
    converging_max_bytes_per_node_s: f64,
    /// Wall-clock seconds the simulator took per simulated second (from start to the end).
    wall_per_simulated_s: f64,
    /// Replica load at N = 3 of the cluster's ring, min and max as a fraction of fair share.
    load: (f64, f64),
}

/// Starts `nodes` simulated nodes, waits until their views are equal, measures the gossip bytes
/// of a quiet second, then changes a bucket's properties at one node and measures the rounds
/// and bytes until every view has the change.
fn gossip_run(nodes: usize, seed: u64) -> GossipRun {
    use ringkv_core::bucket::BucketProps;
    use ringkv_core::io::Command;
    use ringkv_core::sim::{Sim, SimConfig};
    let started = std::time::Instant::now();
    let mut sim = Sim::new(SimConfig {
        nodes,
        partitions: (4 * nodes as u32).next_power_of_two().max(1024),
        seed,
        // Anti-entropy is not what is measured; keep it out of the way.
        anti_entropy_interval_ms: 3_600_000,
        // No node restarts: the views they persist need not be kept (most of the memory
        // otherwise at thousands of nodes).
        keep_persisted_views: false,
        ..SimConfig::default()
    });
    let interval = sim.config().gossip_interval_ms;
    let ids = sim.node_ids();
    let total = |sim: &Sim| -> u64 { ids.iter().map(|id| sim.gossip_bytes(id.as_str())).sum() };
    let per_node =
        |sim: &Sim| -> Vec<u64> { ids.iter().map(|id| sim.gossip_bytes(id.as_str())).collect() };
    let digests_equal = |sim: &Sim| {
        let first = sim.view(ids[0].as_str()).map(|v| v.digest());
        ids.iter()
            .all(|id| sim.view(id.as_str()).map(|v| v.digest()) == first)
    };
    // Start-up: every node publishes its hand-off state once, so every entry changes once.
    sim.run(interval);
    while !digests_equal(&sim) {
        sim.run(interval / 2);
        assert!(sim.now() < 20 * 1000, "start-up changes never converged");
    }
    // A quiet stretch: only digests go round.
    let quiet_ms = 3 * interval;
    let before = total(&sim);
    sim.run(quiet_ms);
    let steady = (total(&sim) - before) as f64 / nodes as f64 / (quiet_ms as f64 / 1000.0);
    let props = BucketProps {
        n: 2,
        ..BucketProps::default()
    };
    let before = total(&sim);
    let before_each = per_node(&sim);
    assert!(sim.command(
        "n1",
        Command::SetBucket {
            bucket: b"carts".to_vec(),
            props: props.clone(),
        }
    ));
    let start = sim.now();
    let everyone = |sim: &Sim| {
        ids.iter()
            .all(|id| sim.view(id.as_str()).and_then(|v| v.bucket(b"carts")) == Some(&props))
    };
    while !everyone(&sim) {
        sim.run(interval);
        assert!(sim.now() - start < 100 * interval, "no convergence");
    }
    let elapsed = sim.now() - start;
    let seconds = elapsed as f64 / 1000.0;
    let converging = (total(&sim) - before) as f64 / nodes as f64 / seconds;
    let converging_max = per_node(&sim)
        .iter()
        .zip(&before_each)
        .map(|(after, before)| after - before)
        .max()
        .unwrap_or(0) as f64
        / seconds;
    let fair = 1.0 / nodes as f64;
    let load = spread(sim.ring().replica_load(3).into_values(), fair);
    GossipRun {
        nodes,
        rounds: elapsed / interval,
        steady_bytes_per_node_s: steady,
        converging_bytes_per_node_s: converging,
        converging_max_bytes_per_node_s: converging_max,
        wall_per_simulated_s: started.elapsed().as_secs_f64() / (sim.now() as f64 / 1000.0),
        load,
    }
}

/// Peak resident memory of this process so far, in MiB (Linux; 0 elsewhere).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// In the normal suite: a change converges in a bounded number of rounds, and the gossip bytes
/// a node sends per second stay small, both quiet and while the change spreads (a whole view of
/// this cluster is tens of kilobytes). `RINGKV_SCALE_NODES` sets the size (default 200).
#[test]
fn gossip_bytes_per_node_stay_bounded() {
    let nodes = std::env::var("RINGKV_SCALE_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let run = gossip_run(nodes, 3);
    println!(
        "{} nodes: {} rounds, steady {:.0} B/s a node, converging {:.0} B/s a node (max {:.0})",
        run.nodes,
        run.rounds,
        run.steady_bytes_per_node_s,
        run.converging_bytes_per_node_s,
        run.converging_max_bytes_per_node_s
    );
    // log2(200) is under 8: push-pull spreads in about that many rounds.
    assert!(run.rounds <= 15, "{} rounds", run.rounds);
    // A digest a round each way is about 25 bytes: 5 rounds a second.
    assert!(
        run.steady_bytes_per_node_s < 400.0,
        "{}",
        run.steady_bytes_per_node_s
    );
    // A summary (about 600 bytes) and a few entries an exchange, a few exchanges a round.
    assert!(
        run.converging_bytes_per_node_s < 8_000.0,
        "{}",
        run.converging_bytes_per_node_s
    );
    assert!(
        run.converging_max_bytes_per_node_s < 40_000.0,
        "{}",
        run.converging_max_bytes_per_node_s
    );
}

#[test]
#[ignore = "100 to 10,000 simulated nodes; minutes in release"]
fn gossip_at_scale_table() {
    let sizes: Vec<usize> = std::env::var("RINGKV_SCALE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000, 10_000]);
    println!("| nodes | rounds to converge | gossip B/s a node, quiet | gossip B/s a node, converging (max) | wall s per simulated s | peak RSS MiB | replica load (N=3) min/max |");
    println!("|---|---|---|---|---|---|---|");
    for nodes in sizes {
        let run = gossip_run(nodes, 1);
        println!(
            "| {} | {} | {:.0} | {:.0} ({:.0}) | {:.2} | {:.0} | {:.2} / {:.2} |",
            run.nodes,
            run.rounds,
            run.steady_bytes_per_node_s,
            run.converging_bytes_per_node_s,
            run.converging_max_bytes_per_node_s,
            run.wall_per_simulated_s,
            peak_rss_mib(),
            run.load.0,
            run.load.1
        );
    }
}
