//! The node's metrics, one registry per node, rendered as Prometheus text at `GET /metrics`.
//!
//! Every part of the host counts into the same [`Metrics`] (shared behind an `Arc`); the names
//! are the ones operators alert on and `deploy/grafana/ringkv.json` charts, so they are listed
//! here in one place. They follow Prometheus' conventions: every name starts `ringkv_`, counters
//! end in `_total` (added by the encoder), durations are `_seconds` and sizes `_bytes`, label
//! values are snake_case.
//!
//! What the core decides (a read's siblings, a transfer's chunks, the reap schedule) reaches
//! here as the replies, events and backlog the node loop observes
//! ([`Metrics::observe_read`], [`crate::node_loop`]); this module only converts.

mod process;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use ringkv_core::request::QuorumKind;

pub use process::resident_memory_bytes;

/// Which client operation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Op {
    /// `GET /kv`.
    Get,
    /// `PUT /kv`.
    Put,
    /// `DELETE /kv`.
    Delete,
    /// `GET /kv/{bucket}/{key}?changed_since=` (a watch: its time is mostly waiting).
    Watch,
    /// `GET /kv/{bucket}?list`.
    List,
    /// `POST /kv/{bucket}?mget` (one per multi-get; its keys are not counted as gets).
    Mget,
}

impl Op {
    /// The label value: `get`, `put`, `delete`, `watch`, `list` or `mget`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Watch => "watch",
            Op::List => "list",
            Op::Mget => "mget",
        }
    }
}

impl EncodeLabelValue for Op {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// How a client operation ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with the quorum met.
    Ok,
    /// Quorum not met (503).
    Unavailable,
    /// The node could not carry it out.
    Failed,
    /// Refused before it started (bad input, overload).
    Rejected,
}

impl Outcome {
    /// The label value: `ok`, `unavailable`, `failed` or `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Unavailable => "unavailable",
            Outcome::Failed => "failed",
            Outcome::Rejected => "rejected",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels of the request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The operation.
    pub op: Op,
    /// Its outcome.
    pub outcome: Outcome,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// The operation.
    pub op: Op,
}

/// Labels naming a reason (dropped messages, rejected frames, storage failures).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: String,
}

/// Labels of a quorum failure: the operation, the quorum the core says failed, and whether the
/// answer was `unavailable` (certainly no effect) or `outcome_unknown` (a write that may land).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuorumLabels {
    /// The operation.
    pub op: Op,
    /// `read`, `write` or `durable` ([`QuorumKind::as_str`]).
    pub quorum: &'static str,
    /// `unavailable` or `outcome_unknown`.
    pub outcome: &'static str,
}

impl QuorumLabels {
    /// The labels of `op` failing its `kind` quorum.
    pub fn new(op: Op, kind: QuorumKind, outcome_unknown: bool) -> QuorumLabels {
        QuorumLabels {
            op,
            quorum: kind.as_str(),
            outcome: if outcome_unknown {
                "outcome_unknown"
            } else {
                "unavailable"
            },
        }
    }
}

/// Which way a transfer chunk went.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `sent` (this node served a pull) or `received` (this node pulled).
    pub direction: &'static str,
}

/// Labels of the reap backlog.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReapLabels {
    /// `tombstone` (a deleted key) or `expired` (every value past its TTL).
    pub kind: &'static str,
}

/// Labels of `ringkv_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// The git commit the binary was built from, when the build sets `RINGKV_GIT_COMMIT` (say
/// `RINGKV_GIT_COMMIT=$(git rev-parse --short HEAD) cargo build --release`; cargo rebuilds when
/// it changes); `unknown` otherwise. No build script needed.
pub const GIT_COMMIT: &str = match option_env!("RINGKV_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

fn latency_histogram() -> Histogram {
    // 100 µs to ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

fn siblings_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0, 128.0])
}

fn object_size_histogram() -> Histogram {
    // 64 B to 64 MiB.
    Histogram::new(exponential_buckets(64.0, 4.0, 11))
}

fn clock_histogram() -> Histogram {
    Histogram::new([
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0, 64.0,
    ])
}

/// Every metric of one node.
pub struct Metrics {
    registry: Registry,
    /// Client requests by operation and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Client request latency in seconds, by operation.
    pub request_seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    /// Client requests the node is coordinating or waiting for.
    pub requests_in_flight: Gauge,
    /// Requests that ended without their quorum, by operation, quorum and outcome.
    pub quorum_failures: Family<QuorumLabels, Counter>,
    /// Live siblings per read that found a value.
    pub read_siblings: Histogram,
    /// Bytes of the values (every live sibling) per read that found a value.
    pub read_object_bytes: Histogram,
    /// Version-vector entries (actors) in the context of each read that found a key.
    pub read_clock_entries: Histogram,
    /// Hints this node holds for other nodes.
    pub hints_pending: Gauge,
    /// Keys anti-entropy repaired.
    pub anti_entropy_keys_repaired: Counter,
    /// Keys anti-entropy found differing between replicas.
    pub anti_entropy_keys_differing: Counter,
    /// Anti-entropy exchanges completed.
    pub anti_entropy_exchanges: Counter,
    /// Replicas read repair updated.
    pub read_repairs: Counter,
    /// Partitions whose transfer to the next ring is not done.
    pub transfer_partitions_pending: Gauge,
    /// Partition pulls this node has under way.
    pub transfer_pulls_active: Gauge,
    /// Records moved by transfers, by direction.
    pub transfer_keys: Family<DirectionLabels, Counter>,
    /// Bytes moved by transfers, by direction.
    pub transfer_bytes: Family<DirectionLabels, Counter>,
    /// Partition transfers whose last chunk was sent or received, by direction.
    pub transfer_partitions: Family<DirectionLabels, Counter>,
    /// Keys scheduled for a reap check, by kind.
    pub reap_pending: Family<ReapLabels, Gauge>,
    /// Records that failed their checksum (in the engine's record frame or in core's object).
    pub checksum_failures: Counter,
    /// Database files found damaged at start-up and moved aside (`on_damaged_store =
    /// "quarantine"`): the node started empty and is being refilled from its replicas.
    pub stores_quarantined: Counter,
    /// Crash recoveries that found the newest commit damaged and went back to the one before it
    /// (this replica lost those writes; the others have them).
    pub stores_rolled_back: Counter,
    /// Storage operations that failed, by reason (`full`, `io`).
    pub storage_failures: Family<ReasonLabels, Counter>,
    /// Operations per group commit.
    pub commit_batch: Histogram,
    /// Time a group commit took, fsync included, in seconds.
    pub commit_seconds: Histogram,
    /// The size of the database file, read at each render (0 for an in-memory store).
    pub storage_file_bytes: Gauge,
    storage_file: Mutex<Option<PathBuf>>,
    /// Peer messages handed to the transport.
    pub peer_messages_sent: Counter,
    /// Peer messages received and decoded.
    pub peer_messages_received: Counter,
    /// Peer messages dropped, by reason (`queue_full`, `no_address`, `refused_by_node`, ...).
    pub peer_messages_dropped: Family<ReasonLabels, Counter>,
    /// Peer connections closed for a bad frame or handshake, by reason: `bad_handshake`,
    /// `wrong_cluster`, `bad_secret` (no or wrong proof of the cluster secret), `tls` (a failed
    /// TLS handshake: no certificate, one the cluster CA did not sign, not TLS at all),
    /// `timeout`, `too_large`, `garbage`, ...
    pub peer_frames_rejected: Family<ReasonLabels, Counter>,
    /// Open peer connections (both directions).
    pub peer_connections: Gauge,
    /// Peers the failure detector does not hear from.
    pub peers_down: Gauge,
    /// Tombstones reaped.
    pub tombstones_reaped: Counter,
    /// HTTP connections open.
    pub http_connections: Gauge,
    /// HTTP connections refused at the connection limit.
    pub http_connections_refused: Counter,
    /// HTTPS connections closed before a request because their TLS handshake failed (`error`)
    /// or did not finish within the header-read timeout (`timeout`).
    pub http_tls_handshakes_failed: Family<ReasonLabels, Counter>,
    /// The process's resident memory (`VmRSS` of `/proc/self/status`), read at each render; 0
    /// where there is no `/proc`.
    pub process_resident_memory: Gauge,
    /// CPU time the process used, user and system, brought up to date at each render.
    pub process_cpu_seconds: Counter<f64, AtomicU64>,
    /// File descriptors the process has open, read at each render.
    pub process_open_fds: Gauge,
    /// Serialises the CPU counter's catch-up, so two renders do not both add the same time.
    cpu_update: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A metric whose HELP and TYPE are rendered even before its first sample: prometheus-client
/// leaves an empty family out, and then a scraper, an alert or the dashboard cannot tell a
/// family that never counted from a misspelled one.
#[derive(Clone, Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// Registers `metric` under `name` and returns it (a handle to the same metric).
fn register<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, Described(metric.clone()));
    metric
}

/// Registers `metric` under `name` with `unit` appended (`_bytes`, `_seconds`).
fn register_unit<M>(registry: &mut Registry, name: &str, help: &str, unit: Unit, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register_with_unit(name, help, unit, Described(metric.clone()));
    metric
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let metrics = Metrics::registered();
        metrics.start_at_zero();
        metrics
    }

    /// Every metric registered, with no sample yet.
    fn registered() -> Metrics {
        let mut registry = Registry::with_prefix("ringkv");
        let r = &mut registry;
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: GIT_COMMIT,
            })
            .set(1);
        register(
            r,
            "build_info",
            "The ringkv build this node runs (always 1; the labels say which)",
            build_info,
        );
        Metrics {
            requests: register(
                r,
                "requests",
                "Client requests by operation and outcome",
                Family::default(),
            ),
            request_seconds: register_unit(
                r,
                "request_duration",
                "Client request latency by operation",
                Unit::Seconds,
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
            requests_in_flight: register(
                r,
                "requests_in_flight",
                "Client requests the node is coordinating or waiting for",
                Gauge::default(),
            ),
            quorum_failures: register(
                r,
                "quorum_failures",
                "Requests that ended without their quorum, by operation, quorum (read, write, \
                 durable) and outcome (unavailable, outcome_unknown)",
                Family::default(),
            ),
            read_siblings: register(
                r,
                "read_siblings",
                "Live siblings per read that found a value",
                siblings_histogram(),
            ),
            read_object_bytes: register_unit(
                r,
                "read_object_size",
                "Bytes of the values (every live sibling) per read that found a value",
                Unit::Bytes,
                object_size_histogram(),
            ),
            read_clock_entries: register(
                r,
                "read_clock_entries",
                "Version-vector entries (actors) in the context of each read that found a key",
                clock_histogram(),
            ),
            hints_pending: register(
                r,
                "hints_pending",
                "Hints this node holds for other nodes, not yet delivered",
                Gauge::default(),
            ),
            anti_entropy_keys_repaired: register(
                r,
                "anti_entropy_keys_repaired",
                "Keys repaired by anti-entropy",
                Counter::default(),
            ),
            anti_entropy_keys_differing: register(
                r,
                "anti_entropy_keys_differing",
                "Keys anti-entropy found differing between replicas",
                Counter::default(),
            ),
            anti_entropy_exchanges: register(
                r,
                "anti_entropy_exchanges",
                "Anti-entropy exchanges completed",
                Counter::default(),
            ),
            read_repairs: register(
                r,
                "read_repairs",
                "Replicas updated by read repair",
                Counter::default(),
            ),
            transfer_partitions_pending: register(
                r,
                "transfer_partitions_pending",
                "Partitions of the ring whose transfer to the next ring is not done (cluster-wide, \
                 in this node's view)",
                Gauge::default(),
            ),
            transfer_pulls_active: register(
                r,
                "transfer_pulls_active",
                "Partition pulls this node has under way",
                Gauge::default(),
            ),
            transfer_keys: register(
                r,
                "transfer_keys",
                "Records moved by partition transfers, by direction (sent, received)",
                Family::default(),
            ),
            transfer_bytes: register_unit(
                r,
                "transfer",
                "Bytes (keys and encoded objects) moved by partition transfers, by direction",
                Unit::Bytes,
                Family::default(),
            ),
            transfer_partitions: register(
                r,
                "transfer_partitions",
                "Partition transfers whose last chunk was sent or received, by direction",
                Family::default(),
            ),
            reap_pending: register(
                r,
                "reap_pending_keys",
                "Keys this node has scheduled for a reap check, by kind (tombstone, expired)",
                Family::default(),
            ),
            checksum_failures: register(
                r,
                "checksum_failures",
                "Stored records that failed their checksum",
                Counter::default(),
            ),
            stores_quarantined: register(
                r,
                "stores_quarantined",
                "Damaged database files moved aside at start-up (the node started empty)",
                Counter::default(),
            ),
            stores_rolled_back: register(
                r,
                "stores_rolled_back",
                "Crash recoveries that rolled back a damaged newest commit",
                Counter::default(),
            ),
            storage_failures: register(
                r,
                "storage_failures",
                "Storage operations that failed, by reason (full, io)",
                Family::default(),
            ),
            commit_batch: register(
                r,
                "commit_batch_operations",
                "Storage operations per group commit",
                batch_histogram(),
            ),
            commit_seconds: register_unit(
                r,
                "commit_duration",
                "Group commit time, fsync included",
                Unit::Seconds,
                latency_histogram(),
            ),
            storage_file_bytes: register_unit(
                r,
                "storage_file_size",
                "Size of the database file, read when rendered (0 for an in-memory store)",
                Unit::Bytes,
                Gauge::default(),
            ),
            storage_file: Mutex::new(None),
            peer_messages_sent: register(
                r,
                "peer_messages_sent",
                "Peer messages sent",
                Counter::default(),
            ),
            peer_messages_received: register(
                r,
                "peer_messages_received",
                "Peer messages received",
                Counter::default(),
            ),
            peer_messages_dropped: register(
                r,
                "peer_messages_dropped",
                "Peer messages dropped, by reason",
                Family::default(),
            ),
            peer_frames_rejected: register(
                r,
                "peer_frames_rejected",
                "Peer connections closed for a bad frame or handshake, by reason",
                Family::default(),
            ),
            peer_connections: register(
                r,
                "peer_connections_open",
                "Open peer connections, both directions",
                Gauge::default(),
            ),
            peers_down: register(
                r,
                "peers_down",
                "Peers the failure detector does not hear from",
                Gauge::default(),
            ),
            tombstones_reaped: register(
                r,
                "tombstones_reaped",
                "Deleted or expired keys removed from this replica",
                Counter::default(),
            ),
            http_connections: register(
                r,
                "http_connections_open",
                "Open HTTP connections",
                Gauge::default(),
            ),
            http_connections_refused: register(
                r,
                "http_connections_refused",
                "HTTP connections refused at the limit",
                Counter::default(),
            ),
            http_tls_handshakes_failed: register(
                r,
                "http_tls_handshakes_failed",
                "HTTPS connections closed for a failed or unfinished TLS handshake, by reason",
                Family::default(),
            ),
            process_resident_memory: register_unit(
                r,
                "process_resident_memory",
                "Resident memory of the node's process (VmRSS), read when rendered",
                Unit::Bytes,
                Gauge::default(),
            ),
            process_cpu_seconds: register_unit(
                r,
                "process_cpu",
                "CPU time of the node's process, user and system, read when rendered",
                Unit::Seconds,
                Counter::default(),
            ),
            process_open_fds: register(
                r,
                "process_open_fds",
                "File descriptors the node's process has open, read when rendered",
                Gauge::default(),
            ),
            cpu_update: Mutex::new(()),
            registry,
        }
    }

    /// Creates the series of the known request outcomes and quorum failures at 0, so that a
    /// rate over the first one counted is not lost (Prometheus sees a series appear at its first
    /// sample) and a dashboard shows 0 rather than no data.
    fn start_at_zero(&self) {
        let ops = [Op::Get, Op::Put, Op::Delete, Op::Watch, Op::List, Op::Mget];
        let outcomes = [
            Outcome::Ok,
            Outcome::Unavailable,
            Outcome::Failed,
            Outcome::Rejected,
        ];
        for op in ops {
            for outcome in outcomes {
                self.requests
                    .get_or_create(&RequestLabels { op, outcome })
                    .inc_by(0);
            }
        }
        let mut failures = vec![(Op::Get, QuorumKind::Read, false)];
        for op in [Op::Put, Op::Delete] {
            for kind in [QuorumKind::Write, QuorumKind::Durable] {
                for outcome_unknown in [false, true] {
                    failures.push((op, kind, outcome_unknown));
                }
            }
        }
        for (op, kind, outcome_unknown) in failures {
            self.quorum_failures
                .get_or_create(&QuorumLabels::new(op, kind, outcome_unknown))
                .inc_by(0);
        }
    }

    /// Counts one reason in a reason-labelled family.
    pub fn count(family: &Family<ReasonLabels, Counter>, reason: &str) {
        family
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a request that ended without its quorum.
    pub fn count_quorum_failure(&self, op: Op, kind: QuorumKind, outcome_unknown: bool) {
        self.quorum_failures
            .get_or_create(&QuorumLabels::new(op, kind, outcome_unknown))
            .inc();
    }

    /// Records the shape of a read that found a key: its live sibling values and the number of
    /// entries in its context's clock. A read of an absent key records nothing; a deleted one
    /// (no live value, a tombstone's clock) only its clock.
    pub fn observe_read(&self, values: &[Vec<u8>], clock_entries: usize) {
        if clock_entries > 0 {
            self.read_clock_entries.observe(clock_entries as f64);
        }
        if values.is_empty() {
            return;
        }
        self.read_siblings.observe(values.len() as f64);
        let bytes: usize = values.iter().map(Vec::len).sum();
        self.read_object_bytes.observe(bytes as f64);
    }

    /// Counts a chunk of a partition transfer, `sent` or `received`.
    pub fn count_transfer(&self, direction: &'static str, keys: u32, bytes: u64, done: bool) {
        let labels = DirectionLabels { direction };
        self.transfer_keys
            .get_or_create(&labels)
            .inc_by(u64::from(keys));
        self.transfer_bytes.get_or_create(&labels).inc_by(bytes);
        if done {
            self.transfer_partitions.get_or_create(&labels).inc();
        }
    }

    /// Sets the reap backlog gauges.
    pub fn set_reap_backlog(&self, tombstones: u64, expired: u64) {
        for (kind, keys) in [("tombstone", tombstones), ("expired", expired)] {
            self.reap_pending
                .get_or_create(&ReapLabels { kind })
                .set(gauge_value(keys));
        }
    }

    /// The database file whose size `ringkv_storage_file_size_bytes` reports.
    pub fn set_storage_file(&self, path: PathBuf) {
        *self
            .storage_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(path);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.read_process();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Brings the values read from the system (process, database file) up to date.
    fn read_process(&self) {
        if let Some(bytes) = process::resident_memory_bytes() {
            self.process_resident_memory.set(gauge_value(bytes));
        }
        if let Some(fds) = process::open_fds() {
            self.process_open_fds.set(gauge_value(fds));
        }
        if let Some(seconds) = process::cpu_seconds() {
            let _serial = self
                .cpu_update
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let behind = seconds - self.process_cpu_seconds.get();
            if behind > 0.0 {
                self.process_cpu_seconds.inc_by(behind);
            }
        }
        let file = self
            .storage_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(bytes) = file.as_deref().and_then(process::file_bytes) {
            self.storage_file_bytes.set(gauge_value(bytes));
        }
    }
}

/// A count as a gauge's `i64` (saturating: no count reaches it).
pub(crate) fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
