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
