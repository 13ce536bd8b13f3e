//! Randomized runs: clients, faults and churn drawn from the seed.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::bucket::{RequestOptions, WriteCondition};
use crate::id::NodeId;
use crate::request::ClientRequest;
use crate::version::Context;

use super::{Sim, SimConfig};

/// A randomized run: clients at random nodes read, write (mostly read-modify-write with the
/// context of their last read) and delete a few keys while the network partitions and heals and
/// nodes crash and restart. Returns the simulator, to be judged with [`Sim::check`].
pub fn random_run(config: SimConfig, operations: usize, keys: usize) -> Sim {
    let mut sim = Sim::new(config);
    let mut rng = ChaCha8Rng::seed_from_u64(sim.config.seed ^ 0x5eed_cafe);
    let nodes = sim.node_ids();
    let keys = keys.max(1);
    // What each client last learned of each key: (client, key) → context.
    let mut contexts: BTreeMap<(usize, usize), Context> = BTreeMap::new();
    let clients = 4;
    let mut in_flight: Vec<(usize, usize, usize)> = Vec::new(); // (history index, client, key)
    let mut written = 0usize;
    let mut issued = 0usize;
    let mut joined = 0usize;
    let mut active: Vec<NodeId> = nodes.clone();
    // Nodes told to leave: each is stopped, its disk discarded, once it says it is drained.
    let mut leavers: Vec<NodeId> = Vec::new();
    while issued < operations || !in_flight.is_empty() {
        leavers.retain(|node| !(sim.is_drained(node.as_str()) && sim.decommission(node.as_str())));
        // Membership churn, now and then: a node joins, or one leaves (never the seed, and
        // never below three members).
        if sim.config.churn && issued < operations && rng.gen_ratio(1, 25) {
            // Counted here, not from the ring: a leave takes effect only after its transfer,
            // and the operator must not let the cluster shrink below N meanwhile.
            if rng.gen_bool(0.5) || active.len() <= sim.config.n as usize {
                joined += 1;
                let name = NodeId::new(format!("j{joined}"));
                sim.join(name.as_str(), 1);
                active.push(name);
            } else {
                let leaving = active.remove(rng.gen_range(1..active.len()));
                sim.leave(leaving.as_str());
                leavers.push(leaving);
            }
        }
        // Faults, now and then.
        if issued < operations && rng.gen_ratio(1, 12) {
            let a = nodes[rng.gen_range(0..nodes.len())].clone();
            match rng.gen_range(0..7) {
                0 if nodes.len() > 1 => {
                    let split = rng.gen_range(1..nodes.len());
                    let (left, right) = nodes.split_at(split);
                    let left: Vec<&str> = left.iter().map(NodeId::as_str).collect();
                    let right: Vec<&str> = right.iter().map(NodeId::as_str).collect();
                    sim.partition(&[&left, &right]);
                }
                1 => {
                    let b = nodes[rng.gen_range(0..nodes.len())].clone();
                    if a != b {
                        sim.cut(a.as_str(), b.as_str());
                    }
                }
                2 | 6 => sim.heal(),
                // One node has a bad disk that damages records now and then. Only one, and only
                // when every acknowledged write has a second copy: damage to every copy of a
                // write loses it, and no protocol can help that.
                3 if sim.config.w.resolve(sim.config.n) >= 2 => {
                    let key = format!("k{}", rng.gen_range(0..keys)).into_bytes();
                    sim.corrupt(nodes[0].as_str(), b"b", &key);
                }
                4 => {
                    let down = nodes.iter().filter(|n| !sim.is_up(n.as_str())).count();
                    if down < 2 {
                        sim.crash(a.as_str());
                    }
                }
                _ => sim.restart(a.as_str()),
            }
        }
        // New operations from idle clients.
        for client in 0..clients {
            if issued >= operations || in_flight.iter().any(|(_, c, _)| *c == client) {
                continue;
            }
            if !rng.gen_ratio(2, 3) {
                continue;
            }
            let key_index = rng.gen_range(0..keys);
            let key = format!("k{key_index}").into_bytes();
            let node = nodes[rng.gen_range(0..nodes.len())].clone();
            let context = contexts
                .get(&(client, key_index))
                .cloned()
                .unwrap_or_default();
            let mut options = RequestOptions::default();
            if let Some(max_ttl) = sim.config.write_ttl_ms {
                if rng.gen_bool(0.5) {
                    options.ttl_ms = Some(rng.gen_range(1..=max_ttl.max(1)));
                }
                options.condition = match rng.gen_range(0..10) {
                    0 => Some(WriteCondition::IfAbsent),
                    1 => Some(WriteCondition::IfMatch(context.clone())),
                    _ => None,
                };
            }
            let request = match rng.gen_range(0..10) {
                0..=3 => ClientRequest::Get {
                    bucket: b"b".to_vec(),
                    key,
                    options: RequestOptions::default(),
                },
                4..=8 => {
                    written += 1;
                    let blind = rng.gen_ratio(1, 5);
                    ClientRequest::Put {
                        bucket: b"b".to_vec(),
                        key,
                        context: if blind { Context::default() } else { context },
                        value: format!("c{client}-v{written}").into_bytes(),
                        options,
                    }
                }
                _ => ClientRequest::Delete {
                    bucket: b"b".to_vec(),
                    key,
                    context,
                    // A delete has no time to live, and "only if absent" deletes nothing.
                    options: RequestOptions {
                        ttl_ms: None,
                        condition: options
                            .condition
                            .filter(|c| matches!(c, WriteCondition::IfMatch(_))),
                        ..options
                    },
                },
            };
            let index = sim.submit(node.as_str(), request);
            in_flight.push((index, client, key_index));
            issued += 1;
        }
        sim.run(rng.gen_range(1..20));
        let history = sim.history();
        in_flight.retain(|&(index, client, key)| {
            let op = &history[index];
            if op.outcome.is_none() {
                return true;
            }
            if let Some(context) = op.context() {
                contexts.insert((client, key), context.clone());
            }
            false
        });
        if issued >= operations && !in_flight.is_empty() {
            // Let stragglers finish: their coordinators' deadlines bound this.
            sim.run(sim.config.request_timeout_ms);
            let history = sim.history();
            in_flight.retain(|&(index, _, _)| history[index].outcome.is_none());
            if !in_flight.is_empty() {
                sim.run_until_quiet(10 * sim.config.request_timeout_ms);
                break;
            }
        }
    }
    // Leavers still draining get the time a drain takes, with the faults healed as the check
    // heals them, and are stopped and discarded as they drain. Why: a drain waits for the
    // leaver's partitions to move and its hints and orphans to be handed over, 2 to 19 s of
    // simulated time (median about 12 s over 40 seeds), while the operations above last 1.5
    // to 6 s; without this, about 1 leaver in 100 drained in time, and whether any did in a
    // campaign of 40 seeds was luck (the protocol's message counts reshuffle the seeds).
    if !leavers.is_empty() {
        sim.heal();
        for node in sim.node_ids() {
            sim.restart(node.as_str());
        }
        let deadline = sim.now() + LEAVERS_DRAIN_MS;
        while !leavers.is_empty() && sim.now() < deadline {
            sim.run(100);
            leavers
                .retain(|node| !(sim.is_drained(node.as_str()) && sim.decommission(node.as_str())));
        }
    }
    sim
}

/// How long [`random_run`] waits, after its operations, for the leavers to drain.
const LEAVERS_DRAIN_MS: crate::id::Millis = 60_000;
