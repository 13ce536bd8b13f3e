//! The zone-loss campaign: clients in the surviving zones keep reading and writing, each at a
//! coordinator of its own zone, while one zone is cut off, then lost, then comes back.
//!
//! A run goes through [`ZonePhase`]s of `phase_ms` each: `Healthy`, `Isolated` (the zone's links to
//! every other zone cut), `Down` (its nodes crashed, or lost with their disks:
//! [`ZoneLoss`]), and `Back` (links restored, nodes restarted). Every choice is drawn from the
//! configuration's seed. The run returns the simulator, to be judged with
//! [`Sim::heal_and_converge`] and [`Sim::check`], and a [`ZoneLossReport`] of how the clients
//! fared in each phase.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::bucket::RequestOptions;
use crate::id::{Millis, NodeId};
use crate::request::ClientRequest;
use crate::version::Context;

use super::{Sim, SimConfig};

/// How the zone goes away after it has been cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneLoss {
    /// Its nodes crash (memory lost, disks kept, less unsynced writes when
    /// [`SimConfig::lose_unsynced_on_crash`] says so) and restart over their disks.
    Crash,
    /// Its nodes crash and their disks are lost ([`Sim::lose_disk`]): they come back empty.
    Disks,
}

/// A stretch of a zone-loss run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ZonePhase {
    /// Every zone up and connected.
    Healthy,
    /// The zone cut off from the others ([`Sim::isolate_zone`]).
    Isolated,
    /// The zone's nodes down ([`Sim::crash_zone`] or [`Sim::lose_zone`]).
    Down,
    /// The zone reconnected and restarted.
    Back,
}

/// How a zone-loss run goes.
#[derive(Clone, Debug)]
pub struct ZoneLossPlan {
    /// The zone that goes away.
    pub lost_zone: String,
    /// The zones whose clients read and write, each at its own zone's nodes.
    pub client_zones: Vec<String>,
    /// Clients per client zone.
    pub clients_per_zone: usize,
    /// Keys the clients share.
    pub keys: usize,
    /// How the zone goes away.
    pub loss: ZoneLoss,
    /// Length of the `Healthy`, `Isolated` and `Down` phases in virtual ms.
    pub phase_ms: Millis,
    /// Length of the `Back` phase: clients go on this long after the zone returned, then stop
    /// (the replicas' convergence is judged from there).
    pub back_ms: Millis,
    /// Quorum options of every client read (`r`).
    pub read: RequestOptions,
    /// Quorum options of every client write (`w`, `dw`).
    pub write: RequestOptions,
}

/// How many of the clients' requests of a phase succeeded, and why the others failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests issued in the phase.
    pub issued: usize,
    /// Of those, the ones that succeeded.
    pub ok: usize,
    /// The others: `index node op: error`.
    pub failures: Vec<String>,
}

impl Tally {
    /// `ok / issued` (1 when nothing was issued).
    pub fn ratio(&self) -> f64 {
        if self.issued == 0 {
            1.0
        } else {
            self.ok as f64 / self.issued as f64
        }
    }
}

/// What the clients saw in each phase.
#[derive(Clone, Debug, Default)]
pub struct ZoneLossReport {
    /// Requests by the phase they were invoked in.
    pub phases: BTreeMap<ZonePhase, Tally>,
    /// When the zone came back (reconnected and restarted), in virtual ms.
    pub returned_at: Millis,
    /// Records (data, hints, views) on the zone's disks when they were lost ([`ZoneLoss::Disks`]).
    pub records_lost: usize,
}

impl ZoneLossReport {
    /// The tally of a phase (empty if nothing was issued in it).
    pub fn phase(&self, phase: ZonePhase) -> Tally {
        self.phases.get(&phase).cloned().unwrap_or_default()
    }
}

/// Runs the plan on a cluster built from `config` (which should have zones: see
/// [`SimConfig::zones`]). Returns the simulator, with every request ended, and the report.
pub fn zone_loss_run(config: SimConfig, plan: &ZoneLossPlan) -> (Sim, ZoneLossReport) {
    let mut sim = Sim::new(config);
    let mut rng = ChaCha8Rng::seed_from_u64(sim.config.seed ^ 0x2011_e5ca_de00);
    let keys = plan.keys.max(1);
    // Each client: its zone's nodes.
    let mut clients: Vec<Vec<NodeId>> = Vec::new();
    for zone in &plan.client_zones {
        let nodes = sim.nodes_in_zone(zone);
        assert!(!nodes.is_empty(), "zone {zone} has no node");
        for _ in 0..plan.clients_per_zone {
            clients.push(nodes.clone());
        }
    }
    // Gossip settles (every node sees every other up) before the clients start.
    sim.run(2 * sim.config.gossip_interval_ms.max(500));
    let mut contexts: BTreeMap<(usize, usize), Context> = BTreeMap::new();
    // (history index, client, key, phase)
    let mut in_flight: Vec<(usize, usize, usize, ZonePhase)> = Vec::new();
    let mut issued: Vec<(usize, ZonePhase)> = Vec::new();
    let mut written = 0usize;
    let mut report = ZoneLossReport::default();
    for phase in [
        ZonePhase::Healthy,
        ZonePhase::Isolated,
        ZonePhase::Down,
        ZonePhase::Back,
    ] {
        match phase {
            ZonePhase::Healthy => {}
            ZonePhase::Isolated => {
                sim.isolate_zone(&plan.lost_zone);
            }
            ZonePhase::Down => {
                match plan.loss {
                    ZoneLoss::Crash => sim.crash_zone(&plan.lost_zone),
                    ZoneLoss::Disks => {
                        report.records_lost = sim
                            .nodes_in_zone(&plan.lost_zone)
                            .iter()
                            .filter_map(|node| sim.store(node.as_str()))
                            .map(|store| store.len())
                            .sum();
                        sim.lose_zone(&plan.lost_zone)
                    }
                };
            }
            ZonePhase::Back => {
                sim.reconnect_zone(&plan.lost_zone);
                sim.restart_zone(&plan.lost_zone);
            }
        }
        if phase == ZonePhase::Back {
            report.returned_at = sim.now();
        }
        let length = if phase == ZonePhase::Back {
            plan.back_ms
        } else {
            plan.phase_ms
        };
        let end = sim.now() + length;
        while sim.now() < end {
            for (client, nodes) in clients.iter().enumerate() {
                if in_flight.iter().any(|&(_, c, _, _)| c == client) || !rng.gen_ratio(2, 3) {
                    continue;
                }
                let key_index = rng.gen_range(0..keys);
                let key = format!("k{key_index}").into_bytes();
                let node = nodes[rng.gen_range(0..nodes.len())].clone();
                let context = contexts
                    .get(&(client, key_index))
                    .cloned()
                    .unwrap_or_default();
                let request = if rng.gen_ratio(2, 5) {
                    ClientRequest::Get {
                        bucket: b"b".to_vec(),
                        key,
                        options: plan.read.clone(),
                    }
                } else {
                    written += 1;
                    let blind = rng.gen_ratio(1, 5);
                    ClientRequest::Put {
                        bucket: b"b".to_vec(),
                        key,
                        context: if blind { Context::default() } else { context },
                        value: format!("c{client}-v{written}").into_bytes(),
                        options: plan.write.clone(),
                    }
                };
                let index = sim.submit(node.as_str(), request);
                in_flight.push((index, client, key_index, phase));
                issued.push((index, phase));
            }
            sim.run(rng.gen_range(1..20));
            let history = sim.history();
            in_flight.retain(|&(index, client, key, _)| {
                let op = &history[index];
                if op.outcome.is_none() {
                    return true;
                }
                if let Some(context) = op.context() {
                    contexts.insert((client, key), context.clone());
                }
                false
            });
        }
    }
    // Stragglers end by their coordinators' deadlines.
    sim.run(2 * sim.config.request_timeout_ms);
    for (index, phase) in issued {
        let op = &sim.history()[index];
        let tally = report.phases.entry(phase).or_default();
        tally.issued += 1;
        if op.is_ok() {
            tally.ok += 1;
        } else {
            tally.failures.push(format!(
                "#{index} {} at {} (t={}): {}",
                op.kind.name(),
                op.node,
                op.invoked_at,
                op.error().unwrap_or_else(|| String::from("no answer"))
            ));
        }
    }
    (sim, report)
}
