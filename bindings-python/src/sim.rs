//! The simulator: [`ringkv_core::sim::Sim`] for Python.
//!
//! Arguments are converted here and checked by the core (`Sim::try_new`, `ClientRequest::check`),
//! so Python refuses exactly what the core refuses, with the core's words. Every call into the
//! simulator runs under `catch_unwind`: a panic retires the simulator and raises `SimulationError`
//! instead of crossing the FFI boundary. Long runs go in slices with a check for Ctrl-C in between.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use ringkv_core::bucket::{QuorumValue, RequestOptions, WriteCondition};
use ringkv_core::checker::{OpKind, OpOutcome, Operation, Verdict};
use ringkv_core::io::Event;
use ringkv_core::request::{ClientRequest, Reply, RequestLimits};
use ringkv_core::ring::Strategy;
use ringkv_core::sim::{Sim, SimConfig, TraceEntry, TraceKind, MAX_SIM_MS};
use ringkv_core::version::{ConflictMode, Context, Object};
use ringkv_core::NodeId;

use crate::errors;
use crate::ring::PyRing;
use crate::version::{PyContext, PyVersionVector};

/// Most nodes a simulated cluster may start with.
const MAX_NODES: usize = 1_000;
/// Longest single `run` (about 31 years of virtual time): keeps clock arithmetic far from overflow.
const MAX_RUN_MS: u64 = 1_000_000_000_000;
/// Virtual time run between two checks for Ctrl-C.
const RUN_SLICE_MS: u64 = 1_000;
/// Simulation steps between two checks for Ctrl-C while waiting for a request.
const WAIT_SLICE_STEPS: usize = 20_000;
/// Why a write with both conditions is refused (the HTTP API refuses both headers alike).
const BOTH_CONDITIONS: &str = "if_none_match and if_match together: give one condition \
     (if_none_match creates the key only if it has no value, if_match writes only over the \
     context given)";

fn quorum(name: &str, value: &str) -> PyResult<QuorumValue> {
    value
        .parse::<QuorumValue>()
        .map_err(|e| errors::invalid(format!("{name} = {value:?} is not a quorum: {e}")))
}

fn ids(ids: &[NodeId]) -> Vec<String> {
    ids.iter().map(|id| id.as_str().to_string()).collect()
}

/// A bucket or key for display: `str` when it is UTF-8, `bytes` otherwise.
fn text_or_bytes<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyAny> {
    match std::str::from_utf8(bytes) {
        Ok(text) => pyo3::types::PyString::new(py, text).into_any(),
        Err(_) => PyBytes::new(py, bytes).into_any(),
    }
}

fn bytes_list<'py>(py: Python<'py>, values: &[Vec<u8>]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, values.iter().map(|v| PyBytes::new(py, v)))
}

fn context_object(py: Python<'_>, context: &Context) -> PyResult<Py<PyContext>> {
    Py::new(py, PyContext::wrap(context.clone()))
}

/// One operation of the history as a dict (contexts as `Context` objects, bucket and key as
/// bytes); the Python layer turns it into a `Result` or into plain data.
fn operation_dict<'py>(py: Python<'py>, op: &Operation) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("index", op.index)?;
    d.set_item("op", op.kind.name())?;
    d.set_item("node", op.node.as_str())?;
    d.set_item("bucket", PyBytes::new(py, &op.bucket))?;
    d.set_item("key", PyBytes::new(py, &op.key))?;
    match &op.kind {
        OpKind::Get => {
            d.set_item("value", py.None())?;
            d.set_item("request_context", py.None())?;
            d.set_item("ttl_ms", py.None())?;
        }
        OpKind::Put {
            value,
            context,
            ttl_ms,
        } => {
            d.set_item("value", PyBytes::new(py, value))?;
            d.set_item("request_context", context_object(py, context)?)?;
            d.set_item("ttl_ms", *ttl_ms)?;
        }
        OpKind::Delete { context } => {
            d.set_item("value", py.None())?;
            d.set_item("request_context", context_object(py, context)?)?;
            d.set_item("ttl_ms", py.None())?;
        }
    }
    d.set_item("invoked_at", op.invoked_at)?;
    d.set_item("completed_at", op.completed_at)?;
    d.set_item("ok", op.is_ok())?;
    d.set_item("values", bytes_list(py, &op.values())?)?;
    // A failed condition is not a success, but its reply carries the key's current context:
    // the one to read or retry with, so it is the operation's context too (none when the key
    // has no history, as over HTTP, where a 412 then has no context header).
    let context = match &op.outcome {
        Some(OpOutcome::Replied(Reply::PreconditionFailed { context, .. })) => {
            Some(context).filter(|c| !c.is_empty())
        }
        _ => op.context(),
    };
    d.set_item(
        "context",
        match context {
            Some(context) => Some(context_object(py, context)?),
            None => None,
        },
    )?;
    d.set_item("replicas", ids(&op.replicas()))?;
    let mut fallbacks: Vec<String> = Vec::new();
    let mut durable: Vec<String> = Vec::new();
    let mut dot: Option<(String, u64)> = None;
    let mut read_your_writes: Option<bool> = None;
    let mut quorum: Option<&str> = None;
    let mut needed: Option<u32> = None;
    let mut expires_at: Option<u64> = None;
    let mut exists: Option<bool> = None;
    match &op.outcome {
        Some(OpOutcome::Replied(Reply::Got {
            fallbacks: f,
            read_your_writes: ryw,
            expires_at: e,
            ..
        })) => {
            fallbacks = ids(f);
            read_your_writes = Some(*ryw);
            expires_at = *e;
        }
        Some(OpOutcome::Replied(Reply::PreconditionFailed { exists: e, .. })) => {
            exists = Some(*e);
        }
        Some(OpOutcome::Replied(Reply::Written {
            dot: d,
            durable: du,
            fallbacks: f,
            read_your_writes: ryw,
            ..
        })) => {
            fallbacks = ids(f);
            durable = ids(du);
            dot = Some((d.actor.as_str().to_string(), d.counter));
            read_your_writes = Some(*ryw);
        }
        Some(OpOutcome::Replied(Reply::Unavailable {
            kind, needed: n, ..
        })) => {
            quorum = Some(kind.as_str());
            needed = Some(*n);
        }
        _ => {}
    }
    let outcome = op.outcome.as_ref().map(OpOutcome::name);
    let error = op.error();
    d.set_item("outcome", outcome)?;
    d.set_item("fallbacks", fallbacks)?;
    d.set_item("durable", durable)?;
    d.set_item("dot", dot)?;
    d.set_item("read_your_writes", read_your_writes)?;
    d.set_item("quorum", quorum)?;
    d.set_item("needed", needed)?;
    d.set_item("expires_at", expires_at)?;
    d.set_item("exists", exists)?;
    d.set_item("error", error)?;
    Ok(d)
}

/// The event's own fields (the kind and the line of text come from the core).
fn event_fields<'py>(py: Python<'py>, d: &Bound<'py, PyDict>, event: &Event) -> PyResult<()> {
    match event {
        Event::ChecksumFailure {
            bucket,
            key,
            detail,
        } => {
            d.set_item("bucket", text_or_bytes(py, bucket))?;
            d.set_item("key", text_or_bytes(py, key))?;
            d.set_item("reason", detail)?;
        }
        Event::ReadRepair {
            bucket,
            key,
            replicas,
        } => {
            d.set_item("bucket", text_or_bytes(py, bucket))?;
            d.set_item("key", text_or_bytes(py, key))?;
            d.set_item("replicas", ids(replicas))?;
        }
        Event::QuorumFailed {
            kind,
            needed,
            answered,
            outcome_unknown,
        } => {
            d.set_item("quorum", kind.as_str())?;
            d.set_item("needed", needed)?;
            d.set_item("answered", answered)?;
            d.set_item("outcome_unknown", outcome_unknown)?;
        }
        Event::StorageFailed { error } => {
            d.set_item("reason", error.to_string())?;
        }
        Event::MessageDropped { from, reason } => {
            d.set_item("peer", from.as_str())?;
            d.set_item("reason", reason)?;
        }
        Event::AntiEntropy {
            partition,
            peer,
            differing,
            repaired,
            requests,
        } => {
            d.set_item("partition", partition.0)?;
            d.set_item("peer", peer.as_str())?;
            d.set_item("differing", differing)?;
            d.set_item("repaired", repaired)?;
            d.set_item("requests", requests)?;
        }
        Event::AntiEntropyAbandoned {
            partition,
            peer,
            reason,
        } => {
            d.set_item("partition", partition.0)?;
            d.set_item("peer", peer.as_str())?;
            d.set_item("reason", reason)?;
        }
        Event::TombstoneReaped { bucket, key } => {
            d.set_item("bucket", text_or_bytes(py, bucket))?;
            d.set_item("key", text_or_bytes(py, key))?;
        }
        Event::PeerDown { peer } | Event::PeerUp { peer } => {
            d.set_item("peer", peer.as_str())?;
        }
        Event::DownAlert { peer, down_ms } => {
            d.set_item("peer", peer.as_str())?;
            d.set_item("down_ms", down_ms)?;
        }
        Event::ViewChanged { digest } => {
            d.set_item("digest", digest)?;
        }
        Event::ActorRenewed { actor } => {
            d.set_item("actor", actor)?;
        }
        // A kind this binding does not know yet: its kind and line are enough.
        _ => {}
    }
    Ok(())
}

/// One trace entry as plain data: `at`, `node`, `kind`, `detail` and the kind's own fields.
fn trace_dict<'py>(py: Python<'py>, entry: &TraceEntry) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("at", entry.at)?;
    d.set_item("node", entry.node.as_str())?;
    d.set_item("kind", entry.kind.name())?;
    match &entry.kind {
        TraceKind::Event(event) => event_fields(py, &d, event)?,
        TraceKind::Dropped { to, reason } => {
            d.set_item("to", to.as_str())?;
            d.set_item("reason", reason)?;
        }
        TraceKind::Crashed
        | TraceKind::Restarted
        | TraceKind::Links(_)
        | TraceKind::Decommissioned
        | TraceKind::DiskLost
        | TraceKind::Zone(_) => {}
    }
    let detail = entry.to_string();
    d.set_item("detail", detail)?;
    Ok(d)
}

fn verdict_dict<'py>(py: Python<'py>, verdict: &Verdict) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ok", verdict.is_ok())?;
    d.set_item("operations", verdict.operations)?;
    d.set_item("acknowledged_writes", verdict.acknowledged_writes)?;
    d.set_item("present", verdict.present)?;
    d.set_item("superseded", verdict.superseded)?;
    d.set_item("reaped", verdict.reaped)?;
    let lost = PyList::empty(py);
    for write in &verdict.lost {
        let w = PyDict::new(py);
        w.set_item("index", write.index)?;
        w.set_item("dot", (write.dot.actor.as_str(), write.dot.counter))?;
        lost.append(w)?;
    }
    d.set_item("lost", lost)?;
    let phantoms = PyList::empty(py);
    for (index, value) in &verdict.phantom_reads {
        phantoms.append((*index, PyBytes::new(py, value)))?;
    }
    d.set_item("phantom_reads", phantoms)?;
    d.set_item("divergent", verdict.divergent.clone())?;
    d.set_item("unreadable", verdict.unreadable.clone())?;
    d.set_item("reused_dots", verdict.reused_dots.clone())?;
    d.set_item("hints_left", verdict.hints_left.clone())?;
    d.set_item("false_siblings", verdict.false_siblings.clone())?;
    let stale = PyList::empty(py);
    for read in &verdict.stale_reads {
        let r = PyDict::new(py);
        r.set_item("index", read.index)?;
        r.set_item("missed", read.missed)?;
        r.set_item("staleness_ms", read.staleness_ms)?;
        stale.append(r)?;
    }
    d.set_item("stale_reads", stale)?;
    d.set_item("resurrected", verdict.resurrected.clone())?;
    d.set_item("discarded", verdict.discarded.clone())?;
    d.set_item("expired", verdict.expired)?;
    let expired_reads = PyList::empty(py);
    for read in &verdict.expired_reads {
        let r = PyDict::new(py);
        r.set_item("index", read.index)?;
        r.set_item("put", read.put)?;
        r.set_item("late_ms", read.late_ms)?;
        expired_reads.append(r)?;
    }
    d.set_item("expired_reads", expired_reads)?;
    Ok(d)
}

fn object_dict<'py>(py: Python<'py>, object: &Object) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let siblings = PyList::empty(py);
    for sibling in object.siblings() {
        let s = PyDict::new(py);
        s.set_item("value", sibling.value().map(|v| PyBytes::new(py, v)))?;
        s.set_item("deleted", sibling.content.is_tombstone())?;
        s.set_item("dot", (sibling.dot.actor.as_str(), sibling.dot.counter))?;
        s.set_item("timestamp", sibling.timestamp)?;
        s.set_item("expires_at", sibling.content.expires_at())?;
        siblings.append(s)?;
    }
    d.set_item("siblings", siblings)?;
    d.set_item(
        "clock",
        Py::new(
            py,
            PyVersionVector {
                vector: object.clock().clone(),
            },
        )?,
    )?;
    Ok(d)
}

/// A simulated cluster. See `ringkv.Sim` for the documented API.
#[pyclass(module = "ringkv._native", name = "Sim")]
pub struct PySim {
    /// `None` once a panic in the core retired it.
    sim: Option<Sim>,
    /// Why it was retired.
    failure: Option<String>,
    /// Seed of the run, kept for messages after a failure.
    seed: u64,
}

impl PySim {
    /// Runs `f` on the simulator, turning a panic into `SimulationError` (and retiring the
    /// simulator, whose state a panic may have left half-changed).
    fn guard<T>(&mut self, f: impl FnOnce(&mut Sim) -> T) -> PyResult<T> {
        let Some(sim) = self.sim.as_mut() else {
            return Err(errors::simulation(format!(
                "this simulator (seed {}) stopped after an internal error and cannot be used: {}",
                self.seed,
                self.failure.as_deref().unwrap_or("unknown")
            )));
        };
        match catch_unwind(AssertUnwindSafe(|| f(sim))) {
            Ok(value) => Ok(value),
            Err(payload) => {
                let message = errors::panic_message(payload.as_ref());
                self.sim = None;
                self.failure = Some(message.clone());
                Err(errors::simulation(format!(
                    "internal error in the simulator (seed {}): {message}; please report it with the seed",
                    self.seed
                )))
            }
        }
    }

    fn sim(&self) -> PyResult<&Sim> {
        self.sim.as_ref().ok_or_else(|| {
            errors::simulation(format!(
                "this simulator (seed {}) stopped after an internal error and cannot be used: {}",
                self.seed,
                self.failure.as_deref().unwrap_or("unknown")
            ))
        })
    }

    fn known(&self, node: &str) -> PyResult<NodeId> {
        let sim = self.sim()?;
        let id = NodeId::new(node);
        let nodes = sim.node_ids();
        if nodes.contains(&id) {
            Ok(id)
        } else {
            Err(errors::unknown_node(format!(
                "unknown node {node:?}: the nodes are {}",
                ids(&nodes).join(", ")
            )))
        }
    }

    /// The nodes of a zone, or an error naming the zones there are.
    fn zone_nodes(&self, zone: &str) -> PyResult<Vec<String>> {
        let sim = self.sim()?;
        let nodes = sim.nodes_in_zone(zone);
        if nodes.is_empty() {
            let mut zones: Vec<String> = sim
                .node_ids()
                .iter()
                .filter_map(|id| sim.zone_of(id.as_str()).map(String::from))
                .collect();
            zones.sort();
            zones.dedup();
            return Err(errors::invalid(if zones.is_empty() {
                format!("unknown zone {zone:?}: this simulation has no zones")
            } else {
                format!("unknown zone {zone:?}: the zones are {}", zones.join(", "))
            }));
        }
        Ok(ids(&nodes))
    }

    #[allow(clippy::too_many_arguments)]
    fn options(
        &self,
        r: Option<&str>,
        w: Option<&str>,
        dw: Option<&str>,
        n: Option<u32>,
        timeout_ms: Option<u64>,
        ttl_ms: Option<u64>,
        condition: Option<WriteCondition>,
    ) -> PyResult<RequestOptions> {
        let config = self.sim()?.config();
        let options = RequestOptions {
            n,
            r: r.map(|v| quorum("r", v)).transpose()?,
            w: w.map(|v| quorum("w", v)).transpose()?,
            dw: dw.map(|v| quorum("dw", v)).transpose()?,
            timeout_ms,
            ttl_ms,
            condition,
        };
        if let Some(timeout) = timeout_ms {
            // The simulator's own range for times, so that a deadline cannot overflow.
            if timeout == 0 || timeout > MAX_SIM_MS {
                return Err(errors::invalid(format!(
                    "timeout_ms = {timeout} is out of range 1..={MAX_SIM_MS}"
                )));
            }
        }
        config
            .default_bucket()
            .resolve(&options)
            .map_err(|e| errors::invalid(format!("invalid quorum: {e}")))?;
        Ok(options)
    }
}

#[pymethods]
impl PySim {
    /// A cluster of `nodes` healthy nodes named `n1`, `n2`, ... at time 0.
    #[new]
    #[pyo3(signature = (
        *, nodes = 5, n = 3, r = "quorum", w = "quorum", dw = "0", seed = 0, partitions = 64,
        strategy = "partitions", tokens_per_capacity = 16, min_delay_ms = 1, max_delay_ms = 10,
        loss = 0.0, max_disk_latency_ms = 2, request_timeout_ms = 1_000,
        lose_unsynced_on_crash = false, conflict_mode = "siblings", max_clock_entries = 64,
        anti_entropy_interval_ms = 250, gossip_interval_ms = 200, max_clock_skew_ms = 0,
        zones = None, wan_min_delay_ms = 20, wan_max_delay_ms = 80, n_per_zone = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        nodes: usize,
        n: u32,
        r: &str,
        w: &str,
        dw: &str,
        seed: u64,
        partitions: u32,
        strategy: &str,
        tokens_per_capacity: u32,
        min_delay_ms: u64,
        max_delay_ms: u64,
        loss: f64,
        max_disk_latency_ms: u64,
        request_timeout_ms: u64,
        lose_unsynced_on_crash: bool,
        conflict_mode: &str,
        max_clock_entries: usize,
        anti_entropy_interval_ms: u64,
        gossip_interval_ms: u64,
        max_clock_skew_ms: u64,
        zones: Option<Vec<String>>,
        wan_min_delay_ms: u64,
        wan_max_delay_ms: u64,
        n_per_zone: Option<std::collections::BTreeMap<String, u32>>,
    ) -> PyResult<Self> {
        // A limit of this binding (memory and time a notebook can afford), not of the core.
        if nodes == 0 || nodes > MAX_NODES {
            return Err(errors::invalid(format!(
                "nodes = {nodes} is out of range 1..={MAX_NODES}"
            )));
        }
        let conflict_mode = conflict_mode
            .parse::<ConflictMode>()
            .map_err(|e| errors::invalid(e.to_string()))?;
        let strategy = Strategy::named(strategy, tokens_per_capacity)
            .map_err(|e| errors::invalid(e.to_string()))?;
        let config = SimConfig {
            nodes,
            n,
            r: quorum("r", r)?,
            w: quorum("w", w)?,
            dw: quorum("dw", dw)?,
            conflict_mode,
            seed,
            partitions,
            strategy,
            min_delay_ms,
            max_delay_ms,
            loss,
            max_disk_latency_ms,
            request_timeout_ms,
            lose_unsynced_on_crash,
            max_clock_entries,
            anti_entropy_interval_ms,
            gossip_interval_ms,
            churn: false,
            max_clock_skew_ms,
            write_ttl_ms: None,
            zones: zones.unwrap_or_default(),
            wan_min_delay_ms,
            wan_max_delay_ms,
            n_per_zone: n_per_zone.unwrap_or_default(),
            keep_persisted_views: true,
        };
        let sim = catch_unwind(AssertUnwindSafe(|| Sim::try_new(config)))
            .map_err(|payload| {
                errors::simulation(format!(
                    "the simulator could not start: {}",
                    errors::panic_message(payload.as_ref())
                ))
            })?
            .map_err(|e| errors::invalid(e.to_string()))?;
        Ok(PySim {
            sim: Some(sim),
            failure: None,
            seed,
        })
    }

    /// The configuration, as a dict.
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.sim()?.config();
        let d = PyDict::new(py);
        d.set_item("nodes", c.nodes)?;
        d.set_item("n", c.n)?;
        d.set_item("r", c.r.to_string())?;
        d.set_item("w", c.w.to_string())?;
        d.set_item("dw", c.dw.to_string())?;
        d.set_item("conflict_mode", c.conflict_mode.to_string())?;
        d.set_item("seed", c.seed)?;
        d.set_item("partitions", c.partitions)?;
        d.set_item("strategy", c.strategy.name())?;
        d.set_item("tokens_per_capacity", c.strategy.tokens_per_capacity())?;
        d.set_item("min_delay_ms", c.min_delay_ms)?;
        d.set_item("max_delay_ms", c.max_delay_ms)?;
        d.set_item("loss", c.loss)?;
        d.set_item("max_disk_latency_ms", c.max_disk_latency_ms)?;
        d.set_item("request_timeout_ms", c.request_timeout_ms)?;
        d.set_item("lose_unsynced_on_crash", c.lose_unsynced_on_crash)?;
        d.set_item("max_clock_entries", c.max_clock_entries)?;
        d.set_item("anti_entropy_interval_ms", c.anti_entropy_interval_ms)?;
        d.set_item("gossip_interval_ms", c.gossip_interval_ms)?;
        d.set_item("max_clock_skew_ms", c.max_clock_skew_ms)?;
        d.set_item("zones", c.zones.clone())?;
        d.set_item("wan_min_delay_ms", c.wan_min_delay_ms)?;
        d.set_item("wan_max_delay_ms", c.wan_max_delay_ms)?;
        d.set_item("n_per_zone", c.n_per_zone.clone())?;
        Ok(d)
    }

    /// Virtual time now, in milliseconds.
    fn now(&self) -> PyResult<u64> {
        Ok(self.sim()?.now())
    }

    /// Every node, up or crashed, in name order.
    fn nodes(&self) -> PyResult<Vec<String>> {
        Ok(ids(&self.sim()?.node_ids()))
    }

    /// Whether the node is running.
    fn is_up(&self, node: &str) -> PyResult<bool> {
        self.known(node)?;
        Ok(self.sim()?.is_up(node))
    }

    /// The node's zone (`None`: the run has no zones, or it joined in none).
    fn zone_of(&self, node: &str) -> PyResult<Option<String>> {
        self.known(node)?;
        Ok(self.sim()?.zone_of(node).map(String::from))
    }

    /// The nodes of a zone, up or crashed, in name order.
    fn nodes_in_zone(&self, zone: &str) -> PyResult<Vec<String>> {
        self.zone_nodes(zone)
    }

    /// Cuts every link between the zone and the other zones, both ways.
    fn isolate_zone(&mut self, zone: &str) -> PyResult<Vec<String>> {
        self.zone_nodes(zone)?;
        self.guard(|sim| ids(&sim.isolate_zone(zone)))
    }

    /// Restores the links between the zone and the rest.
    fn reconnect_zone(&mut self, zone: &str) -> PyResult<()> {
        self.zone_nodes(zone)?;
        self.guard(|sim| sim.reconnect_zone(zone))
    }

    /// Crashes every node of the zone.
    fn crash_zone(&mut self, zone: &str) -> PyResult<Vec<String>> {
        self.zone_nodes(zone)?;
        self.guard(|sim| ids(&sim.crash_zone(zone)))
    }

    /// Crashes every node of the zone and loses their disks.
    fn lose_zone(&mut self, zone: &str) -> PyResult<Vec<String>> {
        self.zone_nodes(zone)?;
        self.guard(|sim| ids(&sim.lose_zone(zone)))
    }

    /// Restarts every crashed node of the zone.
    fn restart_zone(&mut self, zone: &str) -> PyResult<()> {
        self.zone_nodes(zone)?;
        self.guard(|sim| sim.restart_zone(zone))
    }

    /// Crashes a node (if up) and replaces its disk with an empty one.
    fn lose_disk(&mut self, node: &str) -> PyResult<()> {
        self.known(node)?;
        self.guard(|sim| {
            sim.lose_disk(node);
        })
    }

    /// Starts a request and returns its history index; it completes as the simulation runs.
    /// `ttl_ms` is a put's time to live; `if_none_match` (create only if the key has no value)
    /// and `if_match` (write only if the key's context is still this one) are the write
    /// conditions, one at most.
    #[pyo3(signature = (
        node, op, bucket, key, value = None, context = None, r = None, w = None, dw = None,
        n = None, timeout_ms = None, ttl_ms = None, if_none_match = false, if_match = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        node: &str,
        op: &str,
        bucket: &[u8],
        key: &[u8],
        value: Option<Vec<u8>>,
        context: Option<PyRef<'_, PyContext>>,
        r: Option<&str>,
        w: Option<&str>,
        dw: Option<&str>,
        n: Option<u32>,
        timeout_ms: Option<u64>,
        ttl_ms: Option<u64>,
        if_none_match: bool,
        if_match: Option<PyRef<'_, PyContext>>,
    ) -> PyResult<usize> {
        self.known(node)?;
        let condition = match (if_none_match, if_match) {
            (true, Some(_)) => return Err(errors::invalid(BOTH_CONDITIONS)),
            (true, None) => Some(WriteCondition::IfAbsent),
            (false, Some(matched)) => Some(WriteCondition::IfMatch(matched.context.clone())),
            (false, None) => None,
        };
        let options = self.options(r, w, dw, n, timeout_ms, ttl_ms, condition)?;
        let context = context.map(|c| c.context.clone()).unwrap_or_default();
        let (bucket, key) = (bucket.to_vec(), key.to_vec());
        let request = match op {
            "get" => ClientRequest::Get {
                bucket,
                key,
                options,
            },
            "put" => ClientRequest::Put {
                bucket,
                key,
                context,
                value: value.ok_or_else(|| errors::invalid("a put needs a value"))?,
                options,
            },
            "delete" => ClientRequest::Delete {
                bucket,
                key,
                context,
                options,
            },
            other => {
                return Err(errors::invalid(format!(
                    "unknown operation {other:?}: expected get, put or delete"
                )))
            }
        };
        // The check every simulated node makes, made here too so that a request a node would
        // refuse is an exception and never enters the history.
        request
            .check(
                &self.sim()?.config().default_bucket(),
                &RequestLimits::default(),
            )
            .map_err(|e| errors::invalid(e.to_string()))?;
        self.guard(|sim| sim.submit(node, request))
    }

    /// Runs until operation `index` has ended and returns it.
    fn wait<'py>(&mut self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyDict>> {
        let len = self.sim()?.history().len();
        if index >= len {
            return Err(errors::invalid(format!(
                "no operation {index}: the history has {len}"
            )));
        }
        loop {
            let finished = self.guard(|sim| {
                for _ in 0..WAIT_SLICE_STEPS {
                    if sim.history()[index].outcome.is_some() || !sim.step() {
                        return true;
                    }
                }
                sim.history()[index].outcome.is_some()
            })?;
            if finished {
                break;
            }
            py.check_signals()?;
        }
        operation_dict(py, &self.sim()?.history()[index])
    }

    /// Operation `index` as it stands, without running.
    fn operation<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyDict>> {
        let history = self.sim()?.history();
        let op = history.get(index).ok_or_else(|| {
            errors::invalid(format!(
                "no operation {index}: the history has {}",
                history.len()
            ))
        })?;
        operation_dict(py, op)
    }

    /// Every operation so far.
    fn history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for op in self.sim()?.history() {
            list.append(operation_dict(py, op)?)?;
        }
        Ok(list)
    }

    /// Trace entries from `start` on (the trace only grows).
    #[pyo3(signature = (start = 0))]
    fn events<'py>(&self, py: Python<'py>, start: usize) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for entry in self.sim()?.trace().iter().skip(start) {
            list.append(trace_dict(py, entry)?)?;
        }
        Ok(list)
    }

    /// Cuts every link between the groups, both ways.
    fn partition(&mut self, groups: Vec<Vec<String>>) -> PyResult<()> {
        for group in &groups {
            for node in group {
                self.known(node)?;
            }
        }
        let groups: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(String::as_str).collect())
            .collect();
        let slices: Vec<&[&str]> = groups.iter().map(Vec::as_slice).collect();
        self.guard(|sim| sim.partition(&slices))
    }

    /// Cuts the link from `from_node` to `to_node` only.
    fn cut(&mut self, from_node: &str, to_node: &str) -> PyResult<()> {
        self.known(from_node)?;
        self.known(to_node)?;
        self.guard(|sim| sim.cut(from_node, to_node))
    }

    /// Restores every link.
    fn heal(&mut self) -> PyResult<()> {
        self.guard(Sim::heal)
    }

    /// Sets the probability that a message is lost.
    fn set_loss(&mut self, loss: f64) -> PyResult<()> {
        if !(0.0..=1.0).contains(&loss) {
            return Err(errors::invalid(format!(
                "loss = {loss} is not a probability between 0 and 1"
            )));
        }
        self.guard(|sim| sim.set_loss(loss))
    }

    /// Crashes a node (no-op if it is down).
    fn crash(&mut self, node: &str) -> PyResult<()> {
        self.known(node)?;
        self.guard(|sim| sim.crash(node))
    }

    /// Restarts a crashed node (no-op if it is up).
    fn restart(&mut self, node: &str) -> PyResult<()> {
        self.known(node)?;
        self.guard(|sim| sim.restart(node))
    }

    /// Damages a node's stored record of a key; returns whether there was one.
    fn corrupt(&mut self, node: &str, bucket: &[u8], key: &[u8]) -> PyResult<bool> {
        self.known(node)?;
        self.guard(|sim| sim.corrupt(node, bucket, key))
    }

    /// Starts a new node that joins through `n1`, in `zone` (`None`: the next zone of the
    /// round-robin, or none in a run without zones).
    #[pyo3(signature = (node, capacity, zone = None))]
    fn join(&mut self, node: &str, capacity: u32, zone: Option<&str>) -> PyResult<()> {
        if node.is_empty() {
            return Err(errors::invalid("the new node's name is empty"));
        }
        if capacity == 0 {
            return Err(errors::invalid("capacity must be at least 1"));
        }
        if self.sim()?.node_ids().contains(&NodeId::new(node)) {
            return Err(errors::invalid(format!("{node} is already a node")));
        }
        if zone.is_some_and(|z| z.trim().is_empty() || z.trim() != z) {
            return Err(errors::invalid(format!(
                "zone {zone:?}: a zone needs a name, with no leading or trailing blanks"
            )));
        }
        self.guard(|sim| match zone {
            Some(zone) => sim.join_in_zone(node, capacity, Some(zone)),
            None => sim.join(node, capacity),
        })?;
        if !self.sim()?.node_ids().contains(&NodeId::new(node)) {
            return Err(errors::invalid(format!("{node} could not join")));
        }
        Ok(())
    }

    /// Tells a node to leave: it hands its partitions over, then is removed from the ring.
    fn leave(&mut self, node: &str) -> PyResult<()> {
        self.known(node)?;
        self.guard(|sim| sim.leave(node))
    }

    /// Runs for `ms` of virtual time.
    fn run(&mut self, py: Python<'_>, ms: u64) -> PyResult<()> {
        if ms > MAX_RUN_MS {
            return Err(errors::invalid(format!(
                "ms = {ms} is above the limit of {MAX_RUN_MS}"
            )));
        }
        let mut remaining = ms;
        loop {
            let slice = remaining.min(RUN_SLICE_MS);
            self.guard(|sim| sim.run(slice))?;
            remaining -= slice;
            if remaining == 0 {
                return Ok(());
            }
            py.check_signals()?;
        }
    }

    /// Heals, restarts every node, reads every key back and judges the history.
    fn check<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let verdict = self.guard(Sim::check)?;
        verdict_dict(py, &verdict)
    }

    /// Whether every key's replicas hold equal objects and no hint is left.
    fn converged(&self) -> PyResult<bool> {
        Ok(self.sim()?.converged())
    }

    /// Heals and runs without client reads until converged; how long that took, or `None`.
    fn heal_and_converge(&mut self, limit_ms: u64) -> PyResult<Option<u64>> {
        if limit_ms > MAX_RUN_MS {
            return Err(errors::invalid(format!(
                "limit_ms = {limit_ms} is above the limit of {MAX_RUN_MS}"
            )));
        }
        self.guard(|sim| sim.heal_and_converge(limit_ms))
    }

    /// Hints held anywhere, described.
    fn hints(&self) -> PyResult<Vec<String>> {
        Ok(self.sim()?.hints())
    }

    /// The stored object of a key on each of its replicas.
    fn replicas<'py>(
        &self,
        py: Python<'py>,
        bucket: &[u8],
        key: &[u8],
    ) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for replica in self.sim()?.replicas_of(bucket, key) {
            let d = PyDict::new(py);
            d.set_item("node", replica.node.as_str())?;
            match &replica.object {
                Some(object) => d.set_item("object", object_dict(py, object)?)?,
                None => d.set_item("object", py.None())?,
            }
            list.append(d)?;
        }
        Ok(list)
    }

    /// The ring the cluster places keys by now.
    fn ring(&self) -> PyResult<PyRing> {
        Ok(PyRing::wrap(self.sim()?.ring().clone()))
    }
}
