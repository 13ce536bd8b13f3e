//! The simulator: `ringkv_core::sim::Sim` for JavaScript.
//!
//! Arguments are converted here and checked by the core (`Sim::try_new`, `ClientRequest::check`),
//! so the page is refused exactly what the core refuses, with the core's words: a panic in this
//! module would trap.

use std::collections::BTreeMap;

use ringkv_core::bucket::{QuorumValue, RequestOptions, WriteCondition};
use ringkv_core::membership::RingState;
use ringkv_core::request::{ClientRequest, RequestLimits};
use ringkv_core::ring::Strategy;
use ringkv_core::sim::{Sim as CoreSim, SimConfig};
use ringkv_core::storage::Space;
use ringkv_core::version::{ConflictMode, Context};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::interop::{
    self, ids, text, HintDoc, MemberDoc, NodeDoc, OperationDoc, ReplicaDoc, RingDoc, TraceDoc,
    ViewDoc, ViewMemberDoc,
};
use crate::ring::Ring;
use crate::Error;

/// Most nodes a simulated cluster may have.
const MAX_NODES: usize = 64;
/// Longest single `run` (virtual time): far from clock overflow, and from freezing the tab.
const MAX_RUN_MS: f64 = 24.0 * 60.0 * 60.0 * 1_000.0;

/// Simulator options as JavaScript gives them (every field optional).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimOptions {
    pub nodes: usize,
    pub n: u32,
    pub r: String,
    pub w: String,
    pub seed: u64,
    pub partitions: u32,
    pub strategy: String,
    pub tokens_per_capacity: u32,
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub request_timeout_ms: u64,
    pub anti_entropy_interval_ms: u64,
    pub gossip_interval_ms: u64,
    pub conflict_mode: String,
    /// Zones the nodes are placed in, round-robin (`n1` in the first, ...); none by default.
    pub zones: Vec<String>,
    /// One-way delays between zones (the `*_delay_ms` above are then those inside a zone).
    pub wan_min_delay_ms: u64,
    pub wan_max_delay_ms: u64,
    /// Replicas per zone (`n` must be their sum); empty: `n` anywhere.
    pub n_per_zone: BTreeMap<String, u32>,
}

impl Default for SimOptions {
    fn default() -> Self {
        let c = SimConfig::default();
        SimOptions {
            nodes: c.nodes,
            n: c.n,
            r: "quorum".to_string(),
            w: "quorum".to_string(),
            seed: c.seed,
            partitions: c.partitions,
            strategy: "partitions".to_string(),
            tokens_per_capacity: 16,
            min_delay_ms: c.min_delay_ms,
            max_delay_ms: c.max_delay_ms,
            request_timeout_ms: c.request_timeout_ms,
            anti_entropy_interval_ms: c.anti_entropy_interval_ms,
            gossip_interval_ms: c.gossip_interval_ms,
            conflict_mode: "siblings".to_string(),
            zones: c.zones,
            wan_min_delay_ms: c.wan_min_delay_ms,
            wan_max_delay_ms: c.wan_max_delay_ms,
            n_per_zone: c.n_per_zone,
        }
    }
}

fn quorum(name: &str, value: &str) -> Result<QuorumValue, Error> {
    value
        .parse::<QuorumValue>()
        .map_err(|e| Error::invalid(format!("{name} = {value:?} is not a quorum: {e}")))
}

/// The page's own rule: a key the visualizer can show and type names a bucket and a key.
fn check_names(bucket: &str, key: &str) -> Result<(), Error> {
    if bucket.is_empty() || key.is_empty() {
        return Err(Error::invalid("bucket and key must not be empty"));
    }
    Ok(())
}

fn context(token: Option<String>) -> Result<Option<Context>, Error> {
    match token.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(token) => Context::from_base64(&token)
            .map(Some)
            .map_err(|e| Error::Context(e.to_string())),
    }
}

impl SimOptions {
    /// The core's configuration, or why these options cannot make a cluster.
    pub fn config(&self) -> Result<SimConfig, Error> {
        // A limit of the page (a tab draws every node), not of the core.
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(Error::invalid(format!(
                "nodes = {} is out of range 1..={MAX_NODES}",
                self.nodes
            )));
        }
        let config = SimConfig {
            nodes: self.nodes,
            n: self.n,
            r: quorum("r", &self.r)?,
            w: quorum("w", &self.w)?,
            dw: QuorumValue::Count(0),
            conflict_mode: self
                .conflict_mode
                .parse::<ConflictMode>()
                .map_err(|e| Error::invalid(e.to_string()))?,
            seed: self.seed,
            partitions: self.partitions,
            strategy: Strategy::named(&self.strategy, self.tokens_per_capacity)
                .map_err(|e| Error::invalid(e.to_string()))?,
            min_delay_ms: self.min_delay_ms,
            max_delay_ms: self.max_delay_ms,
            request_timeout_ms: self.request_timeout_ms,
            anti_entropy_interval_ms: self.anti_entropy_interval_ms,
            gossip_interval_ms: self.gossip_interval_ms,
            zones: self.zones.clone(),
            wan_min_delay_ms: self.wan_min_delay_ms,
            wan_max_delay_ms: self.wan_max_delay_ms,
            n_per_zone: self.n_per_zone.clone(),
            ..SimConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// A simulated cluster: nodes `n1`, `n2`, ... over the real protocol code, a virtual clock and
/// a seeded network. Everything is deterministic for a given seed.
#[wasm_bindgen]
pub struct Sim {
    sim: CoreSim,
}

impl Sim {
    /// A cluster from checked options.
    pub fn create(options: &SimOptions) -> Result<Sim, Error> {
        Ok(Sim {
            sim: CoreSim::try_new(options.config()?)?,
        })
    }

    /// The core simulator (read-only).
    pub fn core(&self) -> &CoreSim {
        &self.sim
    }

    fn known(&self, node: &str) -> Result<(), Error> {
        let nodes = self.sim.node_ids();
        if nodes.iter().any(|id| id.as_str() == node) {
            Ok(())
        } else {
            Err(Error::UnknownNode {
                node: node.to_string(),
                known: ids(&nodes).join(", "),
            })
        }
    }

    /// The check every simulated node makes, made here so that a request a node would refuse
    /// is an error and never enters the history.
    fn check(&self, request: &ClientRequest) -> Result<(), Error> {
        request
            .check(
                &self.sim.config().default_bucket(),
                &RequestLimits::default(),
            )
            .map(|_| ())
            .map_err(|e| Error::invalid(e.to_string()))
    }

    /// The ring state of the running node with the most advanced view.
    fn ring_state(&self) -> Option<&RingState> {
        self.sim
            .node_ids()
            .iter()
            .filter_map(|id| self.sim.view(id.as_str())?.ring())
            .max_by_key(|state| state.version)
    }

    /// Member statuses as the most advanced view has them.
    fn statuses(&self) -> BTreeMap<String, String> {
        let best = self
            .sim
            .node_ids()
            .into_iter()
            .filter_map(|id| self.sim.view(id.as_str()))
            .max_by_key(|view| view.ring().map(|s| s.version));
        best.map(|view| {
            view.members()
                .map(|m| (m.id.as_str().to_string(), m.status.to_string()))
                .collect()
        })
        .unwrap_or_default()
    }

    /// Every node: running or not, status, capacity, partitions owned and hints held.
    pub fn nodes(&self) -> Vec<NodeDoc> {
        let ring = self.sim.ring();
        let counts = ring.partition_counts();
        let statuses = self.statuses();
        self.sim
            .node_ids()
            .into_iter()
            .map(|id| {
                let hints = self.sim.store(id.as_str()).map_or(0, |store| {
                    store
                        .iter()
                        .filter(|(key, _)| matches!(key.space, Space::Hint { .. }))
                        .count() as u32
                });
                let name = id.as_str().to_string();
                NodeDoc {
                    up: self.sim.is_up(&name),
                    status: statuses
                        .get(&name)
                        .cloned()
                        .unwrap_or_else(|| "joining".to_string()),
                    capacity: ring.member(&id).map_or(1, |m| m.capacity),
                    partitions: counts.get(&id).copied().unwrap_or(0),
                    hints,
                    zone: self.sim.zone_of(&name).map(String::from),
                    id: name,
                }
            })
            .collect()
    }

    /// The ring the cluster places keys by, with statuses and the partitions still moving.
    pub fn ring_doc(&self) -> RingDoc {
        let mut doc = Ring::wrap(self.sim.ring().clone()).describe();
        let statuses = self.statuses();
        if let Some(state) = self.ring_state() {
            doc.version = Some(state.version);
            let moving: BTreeMap<u32, Vec<String>> = state
                .transfers(doc.target_n as usize)
                .into_iter()
                .map(|(p, to)| (p.0, ids(&to)))
                .collect();
            for partition in &mut doc.partitions {
                if let Some(to) = moving.get(&partition.id) {
                    partition.moving_to = to.clone();
                }
            }
        }
        for member in &mut doc.members {
            member.alive = self.sim.is_up(&member.id);
            member.drained = self.sim.is_drained(&member.id);
            if let Some(status) = statuses.get(&member.id) {
                member.status = status.clone();
            }
        }
        for node in self.nodes() {
            if !doc.members.iter().any(|m| m.id == node.id) {
                let drained = self.sim.is_drained(&node.id);
                doc.members.push(MemberDoc {
                    id: node.id,
                    status: node.status,
                    alive: node.up,
                    zone: node.zone,
                    capacity: node.capacity,
                    http_addr: String::new(),
                    peer_addr: String::new(),
                    partitions: 0,
                    handoff_partitions: None,
                    drained,
                });
            }
        }
        doc
    }

    /// A put at `node`, run to completion (blind without a context). `ttl` is a duration
    /// (`30s`, `5m`: the value expires after it); `condition` is `*` (create only if the key
    /// has no value) or a context token (write only if the key's context is still that one).
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &mut self,
        node: &str,
        bucket: &str,
        key: &str,
        value: &str,
        context_token: Option<String>,
        w: Option<String>,
        ttl: Option<String>,
        condition: Option<String>,
    ) -> Result<OperationDoc, Error> {
        self.known(node)?;
        check_names(bucket, key)?;
        let context = context(context_token)?.unwrap_or_default();
        let ttl_ms = ttl
            .map(|ttl| {
                ringkv_client::api::parse_duration_ms(&ttl)
                    .map_err(|e| Error::invalid(format!("ttl: {e}")))
            })
            .transpose()?;
        let condition = match condition.as_deref().map(str::trim) {
            None | Some("") => None,
            Some("*") => Some(WriteCondition::IfAbsent),
            Some(token) => Some(WriteCondition::IfMatch(
                Context::from_base64(token).map_err(|e| Error::Context(e.to_string()))?,
            )),
        };
        let options = RequestOptions {
            w: w.map(|w| quorum("w", &w)).transpose()?,
            ttl_ms,
            condition,
            ..RequestOptions::default()
        };
        let request = ClientRequest::Put {
            bucket: bucket.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
            context,
            value: value.as_bytes().to_vec(),
            options,
        };
        self.check(&request)?;
        let index = self.sim.submit(node, request);
        Ok(interop::operation(&self.sim.wait(index)))
    }

    /// A get at `node`, run to completion, with an optional read quorum.
    pub fn get(
        &mut self,
        node: &str,
        bucket: &str,
        key: &str,
        r: Option<String>,
    ) -> Result<OperationDoc, Error> {
        self.known(node)?;
        check_names(bucket, key)?;
        let options = RequestOptions {
            r: r.map(|r| quorum("r", &r)).transpose()?,
            ..RequestOptions::default()
        };
        self.check(&ClientRequest::Get {
            bucket: bucket.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
            options: options.clone(),
        })?;
        let op = self
            .sim
            .get_with(node, bucket.as_bytes(), key.as_bytes(), options);
        Ok(interop::operation(&op))
    }

    /// A delete at `node`, run to completion. Without a context the key is read at `node` first
    /// and what the read returns is deleted (an error when it finds nothing).
    pub fn delete(
        &mut self,
        node: &str,
        bucket: &str,
        key: &str,
        context_token: Option<String>,
    ) -> Result<OperationDoc, Error> {
        self.known(node)?;
        check_names(bucket, key)?;
        let context = match context(context_token)? {
            Some(context) => context,
            None => {
                // A delete needs the context of a read: read first, as the clients do.
                let read = self.sim.get(node, bucket.as_bytes(), key.as_bytes());
                match read.context() {
                    Some(context) if !read.values().is_empty() => context.clone(),
                    _ => {
                        return Err(Error::invalid(format!(
                            "nothing to delete: {bucket}/{key} is absent or already deleted"
                        )))
                    }
                }
            }
        };
        self.check(&ClientRequest::Delete {
            bucket: bucket.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
            context: context.clone(),
            options: RequestOptions::default(),
        })?;
        let op = self
            .sim
            .delete(node, bucket.as_bytes(), key.as_bytes(), Some(&context));
        Ok(interop::operation(&op))
    }

    /// Cuts every link between the groups, both ways.
    pub fn partition(&mut self, groups: Vec<Vec<String>>) -> Result<(), Error> {
        let mut seen = std::collections::BTreeSet::new();
        for node in groups.iter().flatten() {
            self.known(node)?;
            if !seen.insert(node.clone()) {
                return Err(Error::invalid(format!("{node} is in more than one group")));
            }
        }
        let groups: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(String::as_str).collect())
            .collect();
        let slices: Vec<&[&str]> = groups.iter().map(Vec::as_slice).collect();
        self.sim.partition(&slices);
        Ok(())
    }

    /// Crashes a node (its store survives).
    pub fn crash(&mut self, node: &str) -> Result<(), Error> {
        self.known(node)?;
        self.sim.crash(node);
        Ok(())
    }

    /// Restarts a crashed node.
    pub fn restart(&mut self, node: &str) -> Result<(), Error> {
        self.known(node)?;
        self.sim.restart(node);
        Ok(())
    }

    /// Starts a new node that joins through `n1`.
    pub fn join(&mut self, node: &str, capacity: u32) -> Result<(), Error> {
        if node.trim().is_empty() {
            return Err(Error::invalid("the new node's name is empty"));
        }
        if capacity == 0 || capacity > 64 {
            return Err(Error::invalid(format!(
                "capacity = {capacity} is out of range 1..=64"
            )));
        }
        if self.sim.node_ids().len() >= MAX_NODES {
            return Err(Error::invalid(format!("at most {MAX_NODES} nodes")));
        }
        if self.known(node).is_ok() {
            return Err(Error::invalid(format!("{node} is already a node")));
        }
        self.sim.join(node, capacity);
        self.known(node)
            .map_err(|_| Error::invalid(format!("{node} could not join")))
    }

    /// The nodes of a zone, or an error naming the zones there are.
    fn zone_nodes(&self, zone: &str) -> Result<Vec<String>, Error> {
        let nodes = self.sim.nodes_in_zone(zone);
        if nodes.is_empty() {
            let zones = &self.sim.config().zones;
            return Err(Error::invalid(if zones.is_empty() {
                format!("unknown zone {zone:?}: this simulation has no zones")
            } else {
                format!("unknown zone {zone:?}: the zones are {}", zones.join(", "))
            }));
        }
        Ok(ids(&nodes))
    }

    /// Cuts every link between a zone and the other zones, both ways; returns its nodes.
    pub fn isolate_zone(&mut self, zone: &str) -> Result<Vec<String>, Error> {
        self.zone_nodes(zone)?;
        Ok(ids(&self.sim.isolate_zone(zone)))
    }

    /// Restores the links between a zone and the rest.
    pub fn reconnect_zone(&mut self, zone: &str) -> Result<(), Error> {
        self.zone_nodes(zone)?;
        self.sim.reconnect_zone(zone);
        Ok(())
    }

    /// Crashes every node of a zone (their disks survive, or not with `lose_disks`).
    pub fn crash_zone(&mut self, zone: &str, lose_disks: bool) -> Result<Vec<String>, Error> {
        self.zone_nodes(zone)?;
        Ok(ids(&if lose_disks {
            self.sim.lose_zone(zone)
        } else {
            self.sim.crash_zone(zone)
        }))
    }

    /// Restarts every crashed node of a zone.
    pub fn restart_zone(&mut self, zone: &str) -> Result<(), Error> {
        self.zone_nodes(zone)?;
        self.sim.restart_zone(zone);
        Ok(())
    }

    /// Tells a node to leave: it hands its partitions over, then is removed.
    pub fn leave(&mut self, node: &str) -> Result<(), Error> {
        self.known(node)?;
        self.sim.leave(node);
        Ok(())
    }

    /// Runs for `ms` of virtual time.
    pub fn run(&mut self, ms: f64) -> Result<(), Error> {
        if !(0.0..=MAX_RUN_MS).contains(&ms) {
            return Err(Error::invalid(format!(
                "ms = {ms} is out of range 0..={MAX_RUN_MS}"
            )));
        }
        self.sim.run(ms as u64);
        Ok(())
    }

    /// Trace entries from `start` on.
    pub fn events(&self, start: usize) -> Vec<TraceDoc> {
        self.sim
            .trace()
            .iter()
            .enumerate()
            .skip(start)
            .map(|(i, entry)| interop::trace(i, entry))
            .collect()
    }

    /// Every operation so far.
    pub fn history(&self) -> Vec<OperationDoc> {
        self.sim.history().iter().map(interop::operation).collect()
    }

    /// The key's object on each of its replicas.
    pub fn replicas(&self, bucket: &str, key: &str) -> Vec<ReplicaDoc> {
        self.sim
            .replicas_of(bucket.as_bytes(), key.as_bytes())
            .iter()
            .map(interop::replica)
            .collect()
    }

    /// Every hint held anywhere.
    pub fn hints(&self) -> Vec<HintDoc> {
        let mut hints = Vec::new();
        for id in self.sim.node_ids() {
            let Some(store) = self.sim.store(id.as_str()) else {
                continue;
            };
            for (key, _) in store.iter() {
                if let Space::Hint { owner } = &key.space {
                    hints.push(HintDoc {
                        holder: id.as_str().to_string(),
                        owner: owner.as_str().to_string(),
                        bucket: text(&key.bucket),
                        key: text(&key.key),
                    });
                }
            }
        }
        hints
    }

    /// Each running node's cluster view: what gossip has told it so far.
    pub fn views(&self) -> Vec<ViewDoc> {
        self.sim
            .node_ids()
            .into_iter()
            .filter_map(|id| {
                let view = self.sim.view(id.as_str())?;
                Some(ViewDoc {
                    node: id.as_str().to_string(),
                    digest: format!("{:016x}", view.digest()),
                    ring_version: view.ring().map(|s| s.version),
                    members: view
                        .members()
                        .map(|m| ViewMemberDoc {
                            id: m.id.as_str().to_string(),
                            status: m.status.to_string(),
                        })
                        .collect(),
                })
            })
            .collect()
    }
}

#[wasm_bindgen]
impl Sim {
    /// A cluster of `options.nodes` healthy nodes at virtual time 0.
    #[wasm_bindgen(constructor)]
    pub fn js_new(
        #[wasm_bindgen(unchecked_param_type = "SimOptions | undefined")] options: JsValue,
    ) -> Result<Sim, JsError> {
        let options: SimOptions = if options.is_undefined() || options.is_null() {
            SimOptions::default()
        } else {
            interop::from_js(options, "options")?
        };
        Ok(Sim::create(&options)?)
    }

    /// Virtual time now, in milliseconds.
    #[wasm_bindgen(js_name = now)]
    pub fn js_now(&self) -> f64 {
        self.sim.now() as f64
    }

    /// Every node, running or not.
    #[wasm_bindgen(js_name = nodes, unchecked_return_type = "NodeDoc[]")]
    pub fn js_nodes(&self) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.nodes())?)
    }

    /// The ring as drawn (the shape of the server's `GET /ring`).
    #[wasm_bindgen(js_name = ringDoc, unchecked_return_type = "RingDoc")]
    pub fn js_ring_doc(&self) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.ring_doc())?)
    }

    /// The ring the cluster places keys by.
    #[wasm_bindgen(js_name = ring)]
    pub fn js_ring(&self) -> Ring {
        Ring::wrap(self.sim.ring().clone())
    }

    /// A put at `node`, run to completion; `context` from an earlier read (none: a blind write),
    /// `w` overrides the write quorum, `ttl` (`30s`, `5m`) makes the value expire, `condition`
    /// is `*` (create only) or a context (write only over it); a failed one is outcome
    /// `precondition_failed`.
    #[wasm_bindgen(js_name = put, unchecked_return_type = "OperationDoc")]
    #[allow(clippy::too_many_arguments)]
    pub fn js_put(
        &mut self,
        node: &str,
        bucket: &str,
        key: &str,
        value: &str,
        context: Option<String>,
        w: Option<String>,
        ttl: Option<String>,
        condition: Option<String>,
    ) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.put(
            node, bucket, key, value, context, w, ttl, condition,
        )?)?)
    }

    /// A get at `node`, run to completion; `r` overrides the read quorum.
    #[wasm_bindgen(js_name = get, unchecked_return_type = "OperationDoc")]
    pub fn js_get(
        &mut self,
        node: &str,
        bucket: &str,
        key: &str,
        r: Option<String>,
    ) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.get(node, bucket, key, r)?)?)
    }

    /// A delete at `node`, run to completion.
    #[wasm_bindgen(js_name = delete, unchecked_return_type = "OperationDoc")]
    pub fn js_delete(
        &mut self,
        node: &str,
        bucket: &str,
        key: &str,
        context: Option<String>,
    ) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.delete(node, bucket, key, context)?)?)
    }

    /// Cuts every link between the groups (arrays of node ids), both ways.
    #[wasm_bindgen(js_name = partition)]
    pub fn js_partition(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "string[][]")] groups: JsValue,
    ) -> Result<(), JsError> {
        Ok(self.partition(interop::from_js(groups, "groups")?)?)
    }

    /// Restores every link.
    #[wasm_bindgen(js_name = heal)]
    pub fn js_heal(&mut self) {
        self.sim.heal();
    }

    /// Crashes a node.
    #[wasm_bindgen(js_name = crash)]
    pub fn js_crash(&mut self, node: &str) -> Result<(), JsError> {
        Ok(self.crash(node)?)
    }

    /// Restarts a crashed node.
    #[wasm_bindgen(js_name = restart)]
    pub fn js_restart(&mut self, node: &str) -> Result<(), JsError> {
        Ok(self.restart(node)?)
    }

    /// Starts a new node that joins through `n1`.
    #[wasm_bindgen(js_name = join)]
    pub fn js_join(&mut self, node: &str, capacity: u32) -> Result<(), JsError> {
        Ok(self.join(node, capacity)?)
    }

    /// Cuts every link between a zone and the other zones, both ways; returns its nodes.
    #[wasm_bindgen(js_name = isolateZone)]
    pub fn js_isolate_zone(&mut self, zone: &str) -> Result<Vec<String>, JsError> {
        Ok(self.isolate_zone(zone)?)
    }

    /// Restores the links between a zone and the rest.
    #[wasm_bindgen(js_name = reconnectZone)]
    pub fn js_reconnect_zone(&mut self, zone: &str) -> Result<(), JsError> {
        Ok(self.reconnect_zone(zone)?)
    }

    /// Crashes every node of a zone; with `loseDisks` their disks are lost too.
    #[wasm_bindgen(js_name = crashZone)]
    pub fn js_crash_zone(&mut self, zone: &str, lose_disks: bool) -> Result<Vec<String>, JsError> {
        Ok(self.crash_zone(zone, lose_disks)?)
    }

    /// Restarts every crashed node of a zone.
    #[wasm_bindgen(js_name = restartZone)]
    pub fn js_restart_zone(&mut self, zone: &str) -> Result<(), JsError> {
        Ok(self.restart_zone(zone)?)
    }

    /// Tells a node to leave.
    #[wasm_bindgen(js_name = leave)]
    pub fn js_leave(&mut self, node: &str) -> Result<(), JsError> {
        Ok(self.leave(node)?)
    }

    /// Runs for `ms` of virtual time.
    #[wasm_bindgen(js_name = run)]
    pub fn js_run(&mut self, ms: f64) -> Result<(), JsError> {
        Ok(self.run(ms)?)
    }

    /// Trace entries from index `start` on (the trace only grows).
    #[wasm_bindgen(js_name = events, unchecked_return_type = "TraceDoc[]")]
    pub fn js_events(&self, start: u32) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.events(start as usize))?)
    }

    /// Length of the trace.
    #[wasm_bindgen(js_name = eventCount)]
    pub fn js_event_count(&self) -> u32 {
        self.sim.trace().len() as u32
    }

    /// Every operation so far.
    #[wasm_bindgen(js_name = history, unchecked_return_type = "OperationDoc[]")]
    pub fn js_history(&self) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.history())?)
    }

    /// The key's object on each of its replicas.
    #[wasm_bindgen(js_name = replicas, unchecked_return_type = "ReplicaDoc[]")]
    pub fn js_replicas(&self, bucket: &str, key: &str) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.replicas(bucket, key))?)
    }

    /// Every hint held anywhere.
    #[wasm_bindgen(js_name = hints, unchecked_return_type = "HintDoc[]")]
    pub fn js_hints(&self) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.hints())?)
    }

    /// Each running node's cluster view.
    #[wasm_bindgen(js_name = views, unchecked_return_type = "ViewDoc[]")]
    pub fn js_views(&self) -> Result<JsValue, JsError> {
        Ok(interop::to_js(&self.views())?)
    }

    /// Whether every written key has equal objects on all its replicas and no hint is left.
    #[wasm_bindgen(js_name = converged)]
    pub fn js_converged(&self) -> bool {
        self.sim.converged()
    }
}

#[cfg(test)]
mod tests;
