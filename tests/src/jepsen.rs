//! A Jepsen-style campaign against a [`NetCluster`]: concurrent clients record every operation
//! (invoked, then ok, failed or unknown, with timestamps), a seeded nemesis injects faults, and
//! once the faults stop and the cluster has healed, every key is read back with R = all and each
//! replica's own record is fetched. The core's history checker
//! ([`ringkv_core::checker::check`], Jepsen's set-full idea) then judges the run: no
//! acknowledged write lost, no value that was never written, siblings only from concurrent
//! writes, all replicas equal. Stale reads and convergence times are reported.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_client::{Client, ClientError, GetResult, Options, PutResult};
use ringkv_core::bucket::QuorumValue;
use ringkv_core::checker::{self, FinalReplica, Finals, OpKind, OpOutcome, Operation, Verdict};
use ringkv_core::id::NodeId;
use ringkv_core::request::{QuorumKind, Reply};
use ringkv_core::ring::{key_position, partition_of};

use ringkv_core::version::{ActorId, Context, Dot, Object};
use serde::Serialize;

use crate::netns::{HarnessError, NetCluster};

/// The reason recorded for an acknowledged write whose answer had no dot.
const MISSING_DOT: &str = "acknowledged without x-ringkv-dot";

fn failure(command: &str, detail: String) -> HarnessError {
    HarnessError::Command {
        command: command.into(),
        detail,
    }
}

/// The bucket every campaign writes.
pub const BUCKET: &[u8] = b"jepsen";

/// One kind of fault the nemesis injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum FaultKind {
    /// The nodes split into two groups that cannot reach each other.
    Partition,
    /// Some nodes stop hearing from others, but not the other way round.
    OneWay,
    /// One node can reach no peer.
    Isolate,
    /// Every node drops a share of its peers' packets.
    PacketLoss,
    /// A node is killed with SIGKILL, and restarted when the fault ends.
    Kill,
    /// A node is stopped with SIGSTOP, and continued when the fault ends.
    Pause,
    /// A node is stopped with SIGTERM and started again at once.
    Restart,
}

impl FaultKind {
    /// Every kind, in the order the nemesis cycles through them.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Partition,
        FaultKind::Kill,
        FaultKind::OneWay,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::PacketLoss,
        FaultKind::Restart,
    ];
}

/// What a campaign does.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    /// Seed of the nemesis and of the clients' choices.
    pub seed: u64,
    /// How long clients run with faults.
    pub duration: Duration,
    /// Concurrent clients (each bound to one node, round-robin).
    pub clients: usize,
    /// Keys written (few, so that writes conflict).
    pub keys: usize,
    /// How long one fault lasts.
    pub fault_for: Duration,
    /// Quiet time between faults.
    pub quiet_for: Duration,
    /// Kinds of fault to inject.
    pub faults: Vec<FaultKind>,
    /// Write quorum overrides of the clients' writes.
    pub options: Options,
    /// Longest wait for the cluster to converge after the faults stop.
    pub converge_within: Duration,
}

impl Default for CampaignConfig {
    fn default() -> Self {
        CampaignConfig {
            seed: 1,
            duration: Duration::from_secs(30),
            clients: 6,
            keys: 12,
            fault_for: Duration::from_secs(3),
            quiet_for: Duration::from_secs(1),
            faults: FaultKind::ALL.to_vec(),
            options: Options {
                timeout_ms: Some(2_000),
                ..Options::default()
            },
            converge_within: Duration::from_secs(120),
        }
    }
}

/// The history of a run, shared by its clients.
#[derive(Clone)]
pub struct Recorder {
    started: Instant,
    operations: Arc<Mutex<Vec<Operation>>>,
    missing_dots: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            started: Instant::now(),
            operations: Arc::new(Mutex::new(Vec::new())),
            missing_dots: Arc::default(),
        }
    }
}

impl Recorder {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Records an invocation; returns its index.
    fn invoke(&self, node: &str, key: &[u8], kind: OpKind) -> usize {
        let mut operations = self.operations.lock().expect("history lock");
        let index = operations.len();
        operations.push(Operation {
            index,
            node: NodeId::new(node),
            bucket: BUCKET.to_vec(),
            key: key.to_vec(),
            kind,
            invoked_at: self.now(),
            completed_at: None,
            outcome: None,
        });
        index
    }

    /// Records how operation `index` ended.
    fn complete(&self, index: usize, outcome: OpOutcome) {
        if matches!(&outcome, OpOutcome::Replied(Reply::Failed { reason }) if reason == MISSING_DOT)
        {
            self.missing_dots
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let now = self.now();
        let mut operations = self.operations.lock().expect("history lock");
        operations[index].completed_at = Some(now);
        operations[index].outcome = Some(outcome);
    }

    /// Whether operation `index` was refused (no connection).
    fn refused(&self, index: usize) -> bool {
        let operations = self.operations.lock().expect("history lock");
        matches!(operations[index].outcome, Some(OpOutcome::Refused))
    }

    /// The history so far.
    pub fn history(&self) -> Vec<Operation> {
        self.operations.lock().expect("history lock").clone()
    }
}

fn node_ids(ids: &[String]) -> Vec<NodeId> {
    ids.iter().map(NodeId::new).collect()
}

fn context_of(text: Option<&str>) -> Context {
    text.and_then(|t| Context::from_base64(t).ok())
        .unwrap_or_default()
}

/// `actor:counter`, as the server writes it in `x-ringkv-dot`.
fn parse_dot(text: &str) -> Option<Dot> {
    let (actor, counter) = text.rsplit_once(':')?;
    Some(Dot {
        actor: ActorId::new(actor),
        counter: counter.parse().ok()?,
    })
}

fn got(result: &GetResult) -> OpOutcome {
    OpOutcome::Replied(Reply::Got {
        values: result.values.iter().map(|v| v.to_vec()).collect(),
        context: context_of(result.context.as_deref()),
        replicas: node_ids(&result.replicas),
        fallbacks: node_ids(&result.fallbacks),
        read_your_writes: result.read_your_writes,
        expires_at: None,
    })
}

fn written(result: &PutResult) -> OpOutcome {
    match result.dot.as_deref().and_then(parse_dot) {
        Some(dot) => OpOutcome::Replied(Reply::Written {
            context: context_of(result.context.as_deref()),
            dot,
            replicas: node_ids(&result.replicas),
            durable: node_ids(&result.durable),
            fallbacks: node_ids(&result.fallbacks),
            read_your_writes: true,
        }),
        // Acknowledged, but the checker could not tell which sibling it is: the campaign fails.
        None => OpOutcome::Replied(Reply::Failed {
            reason: MISSING_DOT.into(),
        }),
    }
}

/// How a failed request ended, for the checker: a quorum failure is an outcome the write may
/// have reached some replicas with; anything that may have been sent is unknown; only a request
/// that was certainly not sent (no connection) or was refused as malformed is known not applied.
fn failed(error: &ClientError, kind: QuorumKind) -> OpOutcome {
    match error {
        ClientError::Unavailable {
            needed, answered, ..
        } => OpOutcome::Replied(Reply::Unavailable {
            kind,
            needed: needed.unwrap_or(0),
            answered: node_ids(answered),
        }),
        ClientError::Connect(_) => OpOutcome::Refused,
        // Every node tried refused it before writing anything.
        ClientError::StorageFull(reason) => OpOutcome::Replied(Reply::StorageFull {
            reason: reason.clone(),
        }),
        ClientError::BadRequest(reason) | ClientError::TooLarge(reason) => {
            OpOutcome::Replied(Reply::Failed {
                reason: reason.clone(),
            })
        }
        _ => OpOutcome::Lost,
    }
}

/// One client: reads, read-modify-writes, blind writes and deletes of random keys through
/// node `node`, until `stop`.
async fn client_loop(
    id: usize,
    node: String,
    client: Client,
    recorder: Recorder,
    config: CampaignConfig,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ (id as u64 + 1).wrapping_mul(0x9e37));
    let mut contexts: BTreeMap<Vec<u8>, Option<String>> = BTreeMap::new();
    let mut sequence = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let index;
        let key = format!("k{}", rng.gen_range(0..config.keys)).into_bytes();
        let roll: f64 = rng.gen();
        let options = &config.options;
        if roll < 0.4 {
            index = recorder.invoke(&node, &key, OpKind::Get);
            let outcome = match client.get(BUCKET, &key, options).await {
                Ok(result) => {
                    contexts.insert(key.clone(), result.context.clone());
                    got(&result)
                }
                Err(error) => failed(&error, QuorumKind::Read),
            };
            recorder.complete(index, outcome);
        } else {
            // Mostly with the context last read (read-modify-write), sometimes blind.
            let context = if roll < 0.85 {
                contexts.get(&key).cloned().flatten()
            } else {
                None
            };
            let parsed = context_of(context.as_deref());
            sequence += 1;
            let delete = roll > 0.95;
            let value = format!("c{id}-{sequence}").into_bytes();
            let kind = if delete {
                OpKind::Delete { context: parsed }
            } else {
                OpKind::Put {
                    value: value.clone(),
                    context: parsed,
                    ttl_ms: None,
                }
            };
            index = recorder.invoke(&node, &key, kind);
            let result = if delete {
                client
                    .delete(BUCKET, &key, context.as_deref(), options)
                    .await
            } else {
                client
                    .put(
                        BUCKET,
                        &key,
                        context.as_deref(),
                        Bytes::from(value),
                        options,
                    )
                    .await
            };
            let outcome = match result {
                Ok(result) => {
                    contexts.insert(key.clone(), result.context.clone());
                    written(&result)
                }
                Err(error) => failed(&error, QuorumKind::Write),
            };
            recorder.complete(index, outcome);
        }
        // A client of a node that is down would otherwise spin on refused connections.
        if recorder.refused(index) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A fault in force, to be undone.
enum Active {
    Network,
    Killed(usize),
    Paused(usize),
    Nothing,
}

/// The faults a nemesis injected, by kind.
pub type FaultCounts = BTreeMap<FaultKind, u64>;

/// Injects one fault of `kind`, chosen with `rng`.
async fn inject(
    cluster: &mut NetCluster,
    kind: FaultKind,
    rng: &mut ChaCha8Rng,
) -> Result<(Active, String), HarnessError> {
    let count = cluster.nodes.len();
    let mut order: Vec<usize> = (0..count).collect();
    for i in (1..count).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    let node = order[0];
    Ok(match kind {
        FaultKind::Partition => {
            let split = rng.gen_range(1..count);
            let (a, b) = order.split_at(split);
            cluster.partition(&[a.to_vec(), b.to_vec()])?;
            (Active::Network, format!("partition {a:?} | {b:?}"))
        }
        FaultKind::OneWay => {
            let split = rng.gen_range(1..count);
            let (from, to) = order.split_at(split);
            for &f in from {
                for &t in to {
                    cluster.cut(f, t)?;
                }
            }
            (Active::Network, format!("one-way {from:?} -/-> {to:?}"))
        }
        FaultKind::Isolate => {
            cluster.isolate(node)?;
            (Active::Network, format!("isolate {node}"))
        }
        FaultKind::PacketLoss => {
            let p = [0.1, 0.3, 0.5][rng.gen_range(0..3)];
            cluster.lose(p)?;
            (Active::Network, format!("loss {p}"))
        }
        FaultKind::Kill => {
            cluster.kill(node);
            (Active::Killed(node), format!("kill -9 {node}"))
        }
        FaultKind::Pause => {
            cluster.pause(node);
            (Active::Paused(node), format!("SIGSTOP {node}"))
        }
        FaultKind::Restart => {
            cluster.terminate(node).await;
            cluster.spawn(node)?;
            (Active::Nothing, format!("restart {node}"))
        }
    })
}

fn undo(cluster: &mut NetCluster, active: Active) -> Result<(), HarnessError> {
    match active {
        Active::Network => cluster.heal(),
        Active::Killed(node) => cluster.spawn(node),
        Active::Paused(node) => {
            cluster.resume(node);
            Ok(())
        }
        Active::Nothing => Ok(()),
    }
}

/// The figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The worst stale read, with the write it missed (for a look at why).
    pub worst_stale_read: Option<(Operation, Operation)>,
    /// Campaign name.
    pub name: String,
    /// Seed.
    pub seed: u64,
    /// Operations by kind and outcome: `get ok`, `put unknown`, ...
    pub operations: BTreeMap<String, u64>,
    /// Faults injected by kind.
    pub faults: FaultCounts,
    /// The faults in order, with when they started (ms into the run).
    pub fault_log: Vec<(u64, String)>,
    /// Acknowledged writes checked.
    pub acknowledged_writes: usize,
    /// Of those, still present at the end.
    pub present: usize,
    /// Of those, superseded by a write that saw them.
    pub superseded: usize,
    /// Of those, deletes whose key is gone.
    pub reaped: usize,
    /// Acknowledged writes lost (must be 0).
    pub lost: usize,
    /// Values read that no one wrote (must be 0).
    pub phantom_reads: usize,
    /// Final siblings that were not concurrent (must be 0).
    pub false_siblings: usize,
    /// Keys whose replicas differ at the end (must be 0).
    pub divergent: usize,
    /// Gets that missed an acknowledged write.
    pub stale_reads: usize,
    /// Successful gets.
    pub reads_ok: usize,
    /// Staleness percentiles of stale reads (p50, p90, p99, max), in ms.
    pub staleness_ms: [u64; 4],
    /// From the end of the faults until every node was up with one settled ring.
    pub settle_ms: u64,
    /// From the end of the faults until no node held a hint.
    pub hints_drained_ms: u64,
    /// From the end of the faults until every partition's replicas had equal Merkle roots.
    pub merkle_converged_ms: u64,
    /// The checker's verdict.
    pub ok: bool,
}

impl Report {
    /// A few lines for a test's output.
    pub fn summary(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k:?} {n}"))
            .collect();
        let ops: Vec<String> = self
            .operations
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!(
            "{} (seed {}): {}\n  operations: {}\n  faults: {}\n  acknowledged writes {}: present {}, \
             superseded {}, reaped {}, LOST {}; phantom reads {}, false siblings {}, divergent keys {}\n  \
             stale reads {} of {} ok gets, staleness p50/p90/p99/max {:?} ms\n  after the faults: \
             settled in {} ms, hints drained in {}, Merkle roots equal in {}",
            self.name,
            self.seed,
            if self.ok { "ok" } else { "FAILED" },
            ops.join(", "),
            faults.join(", "),
            self.acknowledged_writes,
            self.present,
            self.superseded,
            self.reaped,
            self.lost,
            self.phantom_reads,
            self.false_siblings,
            self.divergent,
            self.stale_reads,
            self.reads_ok,
            self.staleness_ms,
            self.settle_ms,
            never(self.hints_drained_ms),
            never(self.merkle_converged_ms),
        )
    }
}

fn never(ms: u64) -> String {
    if ms == u64::MAX {
        String::from("never")
    } else {
        format!("{ms} ms")
    }
}

fn percentiles(mut values: Vec<u64>) -> [u64; 4] {
    if values.is_empty() {
        return [0; 4];
    }
    values.sort_unstable();
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.9), at(0.99), values[values.len() - 1]]
}

fn outcome_name(outcome: &Option<OpOutcome>) -> &'static str {
    match outcome {
        Some(OpOutcome::Replied(
            Reply::Got { .. }
            | Reply::Written { .. }
            | Reply::Listed { .. }
            | Reply::Restored { .. }
            | Reply::Unchanged { .. },
        )) => "ok",
        Some(OpOutcome::Replied(Reply::Unavailable { .. })) => "unavailable",
        Some(OpOutcome::Replied(Reply::OutcomeUnknown { .. })) => "unknown",
        Some(
            OpOutcome::Replied(
                Reply::Failed { .. }
                | Reply::StorageFull { .. }
                | Reply::TooManySiblings { .. }
                | Reply::ObjectTooLarge { .. }
                | Reply::PreconditionFailed { .. },
            )
            | OpOutcome::Rejected(_),
        ) => "failed",
        Some(OpOutcome::Refused) => "refused",
        Some(OpOutcome::Lost) | None => "unknown",
    }
}

/// Runs a campaign on a settled cluster: clients and nemesis for `config.duration`, then heal,
/// restart and resume everything, wait for convergence, read back and check.
pub async fn run_campaign(
    name: &str,
    cluster: &mut NetCluster,
    config: &CampaignConfig,
) -> Result<(Report, Verdict), HarnessError> {
    run_campaign_then(name, cluster, config, |_| {}).await
}

/// [`run_campaign`], calling `after_load` once the clients have stopped and the faults are
/// healed, before the cluster is left to converge (to damage it on purpose, say).
pub async fn run_campaign_then(
    name: &str,
    cluster: &mut NetCluster,
    config: &CampaignConfig,
    after_load: impl FnOnce(&mut NetCluster),
) -> Result<(Report, Verdict), HarnessError> {
    let recorder = Recorder::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for id in 0..config.clients {
        let node = id % cluster.nodes.len();
        let client = cluster.client(node, Duration::from_secs(5));
        workers.push(tokio::spawn(client_loop(
            id,
            cluster.nodes[node].id.clone(),
            client,
            recorder.clone(),
            config.clone(),
            Arc::clone(&stop),
        )));
    }

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut faults = FaultCounts::new();
    let mut fault_log = Vec::new();
    let started = Instant::now();
    let nemesis = nemesis(
        cluster,
        config,
        &mut rng,
        &mut faults,
        &mut fault_log,
        started,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Heal everything before the clients' last requests end, also when the nemesis failed.
    cluster.heal()?;
    for i in 0..cluster.nodes.len() {
        cluster.resume(i);
        cluster.spawn(i)?;
    }
    for worker in workers {
        if let Err(error) = worker.await {
            return Err(failure("client", format!("a client task failed: {error}")));
        }
    }
    nemesis?;
    if recorder
        .missing_dots
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
    {
        return Err(failure(
            "client",
            "acknowledged writes came without x-ringkv-dot: the checker cannot place them".into(),
        ));
    }
    after_load(cluster);
    let healed = Instant::now();

    let settle = cluster.wait_settled(config.converge_within).await?;
    let (hints_drained, merkle_converged, hints_left) =
        wait_converged(cluster, healed, config.converge_within).await;

    let history = recorder.history();
    let finals = read_back(cluster, &history, &recorder).await?;
    // One machine's clock: no skew between the nodes.
    let mut verdict = checker::check(&history, &finals, 0);
    verdict.hints_left = hints_left;
    if let Err(differing) = &merkle_converged {
        verdict.divergent.push(format!(
            "Merkle roots still differ after {:?}: {differing}",
            config.converge_within
        ));
    }

    let mut operations = BTreeMap::new();
    for op in &history {
        let kind = match op.kind {
            OpKind::Get => "get",
            OpKind::Put { .. } => "put",
            OpKind::Delete { .. } => "delete",
        };
        *operations
            .entry(format!("{kind} {}", outcome_name(&op.outcome)))
            .or_insert(0) += 1;
    }
    let reads_ok = history
        .iter()
        .filter(|op| matches!(op.outcome, Some(OpOutcome::Replied(Reply::Got { .. }))))
        .count();
    let worst_stale_read = verdict
        .stale_reads
        .iter()
        .max_by_key(|s| s.staleness_ms)
        .map(|s| (history[s.index].clone(), history[s.missed].clone()));
    let report = Report {
        worst_stale_read,
        name: name.to_string(),
        seed: config.seed,
        operations,
        faults,
        fault_log,
        acknowledged_writes: verdict.acknowledged_writes,
        present: verdict.present,
        superseded: verdict.superseded,
        reaped: verdict.reaped,
        lost: verdict.lost.len(),
        phantom_reads: verdict.phantom_reads.len(),
        false_siblings: verdict.false_siblings.len(),
        divergent: verdict.divergent.len(),
        stale_reads: verdict.stale_reads.len(),
        reads_ok,
        staleness_ms: percentiles(verdict.stale_reads.iter().map(|s| s.staleness_ms).collect()),
        settle_ms: settle.as_millis() as u64,
        hints_drained_ms: hints_drained.map_or(u64::MAX, |d| d.as_millis() as u64),
        merkle_converged_ms: merkle_converged.map_or(u64::MAX, |d| d.as_millis() as u64),
        ok: verdict.is_ok(),
    };
    Ok((report, verdict))
}

/// Injects faults, one at a time, until `config.duration` is over.
async fn nemesis(
    cluster: &mut NetCluster,
    config: &CampaignConfig,
    rng: &mut ChaCha8Rng,
    faults: &mut FaultCounts,
    fault_log: &mut Vec<(u64, String)>,
    started: Instant,
) -> Result<(), HarnessError> {
    let mut round = 0usize;
    let mut kinds = config.faults.clone();
    while started.elapsed() + config.fault_for < config.duration && !kinds.is_empty() {
        tokio::time::sleep(config.quiet_for).await;
        // Every kind once per cycle, in a seeded order, so a short run still sees each.
        if round % kinds.len() == 0 {
            for i in (1..kinds.len()).rev() {
                kinds.swap(i, rng.gen_range(0..=i));
            }
        }
        let kind = kinds[round % kinds.len()];
        round += 1;
        let (active, what) = inject(cluster, kind, rng).await?;
        *faults.entry(kind).or_default() += 1;
        fault_log.push((started.elapsed().as_millis() as u64, what));
        tokio::time::sleep(config.fault_for).await;
        undo(cluster, active)?;
        let crashed = cluster.exited();
        if !crashed.is_empty() {
            return Err(failure(
                "nemesis",
                format!("nodes exited on their own: {crashed:?}"),
            ));
        }
    }
    let remaining = config.duration.saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await;
    Ok(())
}

/// Waits until no node holds a hint and every partition's replicas report equal Merkle roots.
/// Returns how long each took from `since` (`None`: not within `within`) and the hints left.
async fn wait_converged(
    cluster: &NetCluster,
    since: Instant,
    within: Duration,
) -> (Option<Duration>, Result<Duration, String>, Vec<String>) {
    let mut hints_drained = None;
    let mut merkle = None;
    let mut roots_differ = String::from("never compared");
    let mut hints_left = Vec::new();
    while since.elapsed() < within && (hints_drained.is_none() || merkle.is_none()) {
        let statuses = cluster.statuses().await;
        hints_left = statuses
            .iter()
            .zip(&cluster.nodes)
            .filter_map(|(status, node)| match status {
                Some(s) if s.hints_pending == 0 => None,
                Some(s) => Some(format!("{} holds {} hints", node.id, s.hints_pending)),
                None => Some(format!("{} did not answer", node.id)),
            })
            .collect();
        if hints_drained.is_none() && hints_left.is_empty() {
            hints_drained = Some(since.elapsed());
        }
        if merkle.is_none() {
            match roots_agree(cluster, &statuses).await {
                Ok(()) => merkle = Some(since.elapsed()),
                Err(differing) => roots_differ = differing,
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (hints_drained, merkle.ok_or(roots_differ), hints_left)
}

/// Whether every partition's replicas (by the ring) all report the same built root.
/// `Ok` when they do; else the partitions that differ, with each replica's root (`-`: none
/// built or no answer).
async fn roots_agree(
    cluster: &NetCluster,
    statuses: &[Option<ringkv_client::api::ClusterStatus>],
) -> Result<(), String> {
    let ring = cluster
        .client(0, Duration::from_secs(5))
        .ring()
        .await
        .map_err(|error| format!("no ring: {error}"))?;
    if ring.partitions.is_empty() {
        return Err("the ring has no partitions".into());
    }
    let mut differing = Vec::new();
    for partition in &ring.partitions {
        let roots: Vec<Option<&String>> = partition
            .replicas
            .iter()
            .map(|id| {
                let i = cluster.index_of(id)?;
                statuses[i].as_ref()?.merkle_roots.get(&partition.id)
            })
            .collect();
        if !roots.iter().all(|r| r.is_some() && *r == roots[0]) {
            let described: Vec<String> = partition
                .replicas
                .iter()
                .zip(&roots)
                .map(|(id, root)| format!("{id}={}", root.map_or("-", |r| r.as_str())))
                .collect();
            differing.push(format!("p{}: {}", partition.id, described.join(" ")));
        }
    }
    if differing.is_empty() {
        Ok(())
    } else {
        Err(differing.join("; "))
    }
}

/// Reads every key of the history back with R = all, and fetches each replica's own record.
async fn read_back(
    cluster: &NetCluster,
    history: &[Operation],
    recorder: &Recorder,
) -> Result<Finals, HarnessError> {
    let client = cluster.client(0, Duration::from_secs(10));
    let ring = client.ring().await.map_err(|e| HarnessError::Command {
        command: "GET /ring".into(),
        detail: e.to_string(),
    })?;
    let keys: std::collections::BTreeSet<Vec<u8>> =
        history.iter().map(|op| op.key.clone()).collect();
    let all = Options {
        r: Some(QuorumValue::All),
        ..Options::default()
    };
    let mut finals = Finals::new();
    for (n, key) in keys.into_iter().enumerate() {
        // Final reads are numbered after the history.
        let index = history.len() + n;
        let invoked_at = recorder.now();
        let outcome = match client.get(BUCKET, &key, &all).await {
            Ok(result) => got(&result),
            Err(error) => failed(&error, QuorumKind::Read),
        };
        let read = Operation {
            index,
            node: NodeId::new(&cluster.nodes[0].id),
            bucket: BUCKET.to_vec(),
            key: key.clone(),
            kind: OpKind::Get,
            invoked_at,
            completed_at: Some(recorder.now()),
            outcome: Some(outcome),
        };
        let partition = partition_of(key_position(BUCKET, &key), ring.partition_count);
        let owners = ring
            .partitions
            .get(partition.0 as usize)
            .map(|p| p.replicas.clone())
            .unwrap_or_default();
        let mut replicas = Vec::new();
        for owner in owners {
            let Some(i) = cluster.index_of(&owner) else {
                continue;
            };
            // Once converged, every owner answers, and with a whole record or none: anything
            // else would hide a replica from the checker.
            let url = cluster.nodes[i].url();
            let object = match client.replica(&url, BUCKET, &key).await {
                Ok(Some(record)) => Some(Object::decode(&record).map_err(|error| {
                    failure(
                        &url,
                        format!("its record of {key:?} does not decode: {error}"),
                    )
                })?),
                Ok(None) => None,
                Err(error) => return Err(failure(&url, format!("GET /replica failed: {error}"))),
            };
            replicas.push(FinalReplica {
                node: NodeId::new(owner),
                object,
            });
        }
        finals.insert((BUCKET.to_vec(), key), (read, replicas));
    }
    Ok(finals)
}

/// Writes `report` as JSON under `target/jepsen/` (for the figures of an issue note).
pub fn save_report(report: &Report) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("jepsen");
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{}-seed{}.json", report.name, report.seed));
    std::fs::write(&path, serde_json::to_vec_pretty(report).ok()?).ok()?;
    Some(path)
}
