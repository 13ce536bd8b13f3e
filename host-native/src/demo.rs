//! The simulated stories behind `ringkv demo` and `ringkv sim`: the real protocol core driven by
//! the deterministic simulator, no sockets or disks.

use anyhow::{bail, Result};
use ringkv_core::bucket::{QuorumValue, RequestOptions};
use ringkv_core::checker::{OpOutcome, Operation};
use ringkv_core::request::Reply;
use ringkv_core::sim::{random_run, Sim, SimConfig};
use ringkv_core::version::Context;

fn show(label: &str, op: &Operation) {
    let values: Vec<String> = op
        .values()
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let outcome = if op.is_ok() { "ok" } else { "FAILED" };
    let replicas: Vec<String> = op.replicas().iter().map(|r| r.to_string()).collect();
    let fallbacks = match &op.outcome {
        Some(OpOutcome::Replied(
            Reply::Written { fallbacks, .. } | Reply::Got { fallbacks, .. },
        )) if !fallbacks.is_empty() => {
            let names: Vec<String> = fallbacks.iter().map(|f| f.to_string()).collect();
            format!(" (fallback {})", names.join(","))
        }
        _ => String::new(),
    };
    println!(
        "  t={:>5}ms {label:<44} {outcome:<6} replicas={:<12} values={values:?}{fallbacks}",
        op.completed_at.unwrap_or(op.invoked_at),
        replicas.join(",")
    );
}

/// The Dynamo cart story in a simulated 5-node cluster.
pub fn story(seed: u64) -> Result<()> {
    let mut sim = Sim::new(SimConfig {
        nodes: 5,
        seed,
        ..SimConfig::default()
    });
    let (bucket, key) = (&b"carts"[..], &b"alice"[..]);
    let owners: Vec<String> = sim
        .ring()
        .preference_list(ringkv_core::ring::key_position(bucket, key), 3)
        .iter()
        .map(|n| n.to_string())
        .collect();
    println!("ringkv dev: a simulated 5-node cluster, N=3 R=2 W=2, seed {seed}");
    println!("  carts/alice lives on {}", owners.join(", "));
    let (a, b, c) = (owners[0].as_str(), owners[1].as_str(), owners[2].as_str());
    let others: Vec<String> = sim
        .node_ids()
        .into_iter()
        .map(|n| n.to_string())
        .filter(|n| !owners.contains(n))
        .collect();

    let put = sim.put(a, bucket, key, b"milk", None);
    show("put milk", &put);
    let read = sim.get(c, bucket, key);
    show("get", &read);
    let context = read.context().cloned().unwrap_or_default();

    let mut left = vec![a, b];
    left.push(others[0].as_str());
    let mut right = vec![c];
    right.push(others[1].as_str());
    sim.partition(&[&left, &right]);
    println!("-- partition: {left:?} | {right:?}; the failure detectors notice within seconds");
    sim.run(5_000);
    show(
        &format!("put milk,eggs on {a} (context of the read)"),
        &sim.put(a, bucket, key, b"milk,eggs", Some(&context)),
    );
    let minority = sim.put(c, bucket, key, b"milk,bread", Some(&context));
    show(&format!("put milk,bread on {c} (same context)"), &minority);
    println!(
        "   (each side writes to the owners it can reach, and to a fallback with a hint: {} here)",
        others[1]
    );

    sim.heal();
    println!("-- heal; the hints are delivered to their owners");
    sim.run(5_000);
    let all = RequestOptions {
        r: Some(QuorumValue::All),
        ..RequestOptions::default()
    };
    let read = sim.get_with(others[0].as_str(), bucket, key, all);
    show("get (r=all): two siblings, one context", &read);
    let merged = merge_cart(&read.values());
    let context: Context = read.context().cloned().unwrap_or_default();
    show(
        &format!("put {} with that context", String::from_utf8_lossy(&merged)),
        &sim.put(b, bucket, key, &merged, Some(&context)),
    );
    show("get: reconciled", &sim.get(a, bucket, key));
    let verdict = sim.check();
    println!(
        "checker: {} acknowledged writes, {} present, {} superseded, {} lost, replicas converged: {}",
        verdict.acknowledged_writes,
        verdict.present,
        verdict.superseded,
        verdict.lost.len(),
        verdict.divergent.is_empty()
    );
    if !verdict.is_ok() {
        bail!("the checker found anomalies: {verdict:?}");
    }
    println!("Run `ringkv sim --runs 100` for randomized runs with partitions and crashes.");
    Ok(())
}

/// The application's merge of cart siblings: the union of their items.
pub fn merge_cart(values: &[Vec<u8>]) -> Vec<u8> {
    let mut items: Vec<String> = values
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    items.sort();
    items.dedup();
    items.join(",").into_bytes()
}

/// Randomized simulations with partitions and crashes, each checked.
pub fn sim(first: u64, runs: u64, operations: usize) -> Result<()> {
    let mut failures = 0;
    for seed in first..first + runs {
        let mut sim = random_run(
            SimConfig {
                seed,
                loss: 0.01,
                ..SimConfig::default()
            },
            operations,
            4,
        );
        let verdict = sim.check();
        println!(
            "seed {seed:>5}: {:>4} ops, {:>4} acked writes ({} present, {} superseded), lost {}, phantom {}, divergent {}",
            verdict.operations,
            verdict.acknowledged_writes,
            verdict.present,
            verdict.superseded,
            verdict.lost.len(),
            verdict.phantom_reads.len(),
            verdict.divergent.len()
        );
        if !verdict.is_ok() {
            failures += 1;
            println!("  anomalies: {verdict:?}");
        }
    }
    if failures > 0 {
        bail!("{failures} of {runs} runs had anomalies");
    }
    Ok(())
}
