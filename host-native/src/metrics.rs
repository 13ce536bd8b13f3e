//! The node's metrics, one registry per node, rendered as Prometheus text at `GET /metrics`.
//!
//! Every part of the host counts into the same [`Metrics`] (shared behind an `Arc`); the names
//! are the ones operators alert on, so they are listed here in one place.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Which client operation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
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

/// How a client operation ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
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

/// Labels naming a reason (dropped messages, rejected frames, quorum kinds).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

/// Every metric of one node.
pub struct Metrics {
    registry: Registry,
    /// Client requests by operation and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Client request latency in seconds, by operation.
    pub request_seconds: Family<OpLabels, Histogram, fn() -> Histogram>,
    /// Requests that ended without their quorum, by quorum kind.
    pub quorum_failures: Family<ReasonLabels, Counter>,
    /// Hints this node holds for other nodes.
    pub hints_pending: Gauge,
    /// Keys anti-entropy repaired.
    pub anti_entropy_repairs: Counter,
    /// Anti-entropy exchanges completed.
    pub anti_entropy_exchanges: Counter,
    /// Replicas read repair updated.
    pub read_repairs: Counter,
    /// Partitions whose transfer to the next ring is not done.
    pub partitions_moving: Gauge,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ringkv");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests by operation and outcome",
            requests.clone(),
        );
        let request_seconds =
            Family::<OpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "request_duration_seconds",
            "Client request latency",
            request_seconds.clone(),
        );
        let quorum_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "quorum_failures",
            "Requests that ended without their quorum, by kind",
            quorum_failures.clone(),
        );
        let hints_pending = Gauge::default();
        registry.register(
            "hints_pending",
            "Hints held for other nodes",
            hints_pending.clone(),
        );
        let anti_entropy_repairs = Counter::default();
        registry.register(
            "anti_entropy_repairs",
            "Keys repaired by anti-entropy",
            anti_entropy_repairs.clone(),
        );
        let anti_entropy_exchanges = Counter::default();
        registry.register(
            "anti_entropy_exchanges",
            "Anti-entropy exchanges completed",
            anti_entropy_exchanges.clone(),
        );
        let read_repairs = Counter::default();
        registry.register(
            "read_repairs",
            "Replicas updated by read repair",
            read_repairs.clone(),
        );
        let partitions_moving = Gauge::default();
        registry.register(
            "partitions_moving",
            "Partitions whose transfer is not done",
            partitions_moving.clone(),
        );
        let checksum_failures = Counter::default();
        registry.register(
            "checksum_failures",
            "Stored records that failed their checksum",
            checksum_failures.clone(),
        );
        let stores_quarantined = Counter::default();
        registry.register(
            "stores_quarantined",
            "Damaged database files moved aside at start-up (the node started empty)",
            stores_quarantined.clone(),
        );
        let stores_rolled_back = Counter::default();
        registry.register(
            "stores_rolled_back",
            "Crash recoveries that rolled back a damaged newest commit",
            stores_rolled_back.clone(),
        );
        let storage_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "storage_failures",
            "Storage operations that failed",
            storage_failures.clone(),
        );
        let commit_batch = batch_histogram();
        registry.register(
            "commit_batch_ops",
            "Operations per group commit",
            commit_batch.clone(),
        );
        let commit_seconds = latency_histogram();
        registry.register(
            "commit_duration_seconds",
            "Group commit time, fsync included",
            commit_seconds.clone(),
        );
        let peer_messages_sent = Counter::default();
        registry.register(
            "peer_messages_sent",
            "Peer messages sent",
            peer_messages_sent.clone(),
        );
        let peer_messages_received = Counter::default();
        registry.register(
            "peer_messages_received",
            "Peer messages received",
            peer_messages_received.clone(),
        );
        let peer_messages_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "peer_messages_dropped",
            "Peer messages dropped, by reason",
            peer_messages_dropped.clone(),
        );
        let peer_frames_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "peer_frames_rejected",
            "Peer connections closed for a bad frame or handshake",
            peer_frames_rejected.clone(),
        );
        let peer_connections = Gauge::default();
        registry.register(
            "peer_connections",
            "Open peer connections",
            peer_connections.clone(),
        );
        let peers_down = Gauge::default();
        registry.register("peers_down", "Peers not heard from", peers_down.clone());
        let tombstones_reaped = Counter::default();
        registry.register(
            "tombstones_reaped",
            "Tombstones reaped",
            tombstones_reaped.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "Open HTTP connections",
            http_connections.clone(),
        );
        let http_connections_refused = Counter::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections refused at the limit",
            http_connections_refused.clone(),
        );
        let http_tls_handshakes_failed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_tls_handshakes_failed",
            "HTTPS connections closed for a failed or unfinished TLS handshake, by reason",
            http_tls_handshakes_failed.clone(),
        );
        let process_resident_memory = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of the node's process (VmRSS), read when rendered",
            Unit::Bytes,
            process_resident_memory.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            quorum_failures,
            hints_pending,
            anti_entropy_repairs,
            anti_entropy_exchanges,
            read_repairs,
            partitions_moving,
            checksum_failures,
            stores_quarantined,
            stores_rolled_back,
            storage_failures,
            commit_batch,
            commit_seconds,
            peer_messages_sent,
            peer_messages_received,
            peer_messages_dropped,
            peer_frames_rejected,
            peer_connections,
            peers_down,
            tombstones_reaped,
            http_connections,
            http_connections_refused,
            http_tls_handshakes_failed,
            process_resident_memory,
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        if let Some(bytes) = resident_memory_bytes() {
            self.process_resident_memory
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process's resident set size, from `VmRSS` in `/proc/self/status` (in kB there, whatever
/// the page size); `None` without `/proc` (not Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_rendered_in_bytes() {
        let rendered = Metrics::new().render();
        let line = rendered
            .lines()
            .find(|line| line.starts_with("ringkv_process_resident_memory_bytes "))
            .unwrap_or_else(|| panic!("no resident memory gauge in {rendered}"));
        let value: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if cfg!(target_os = "linux") {
            // A running test process holds at least its own code and stacks.
            assert!(value >= 1 << 20, "{line}");
            assert_eq!(resident_memory_bytes().map(|b| b > 0), Some(true));
        }
    }
}
