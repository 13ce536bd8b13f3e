//! `ringkv bench`: a load generator for a running cluster.
//!
//! `concurrency` workers share one [`Client`] (one connection pool, partition-aware routing) and
//! issue operations until the time (`--duration`) or operation (`--ops`) budget is spent. Each
//! operation picks a key (uniformly or with a Zipf distribution, from a per-worker generator seeded
//! from `--seed`) and a kind by the `--mix` weights. Writes carry the context the worker last saw
//! for the key (from its last read or write of it), the way a read-modify-write application
//! would, so sibling counts stay bounded; a key the worker never saw is written without a context.
//!
//! Latencies of successful operations are recorded per kind in HDR histograms (microseconds, 3
//! significant digits) and merged at the end into a [`BenchReport`]; failures are counted by kind.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rand_distr::{Distribution, Zipf};
use ringkv_client::api;
use ringkv_client::{Client, ClientConfig, ClientError, Options};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::cli::RequestArgs;

/// The largest `--value-size` accepted (the server refuses far smaller values anyway).
const MAX_VALUE_SIZE: u64 = 1 << 30;

/// A worker remembers at most this many contexts; beyond, it forgets one to make room.
const MAX_REMEMBERED_CONTEXTS: usize = 1 << 16;

/// Error messages kept in the report to explain failures.
const MAX_ERROR_SAMPLES: usize = 5;

/// Arguments of `ringkv bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Nodes to start from (comma-separated or repeated; default `$RINGKV_NODE`, else
    /// http://127.0.0.1:8087); the ring leads requests to the owners.
    #[arg(long = "nodes", visible_alias = "node", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// PEM CA file that https:// nodes' certificates must chain to (default: the Mozilla roots).
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The zone (datacenter, rack) the load comes from: a key's owners in this zone are sent
    /// its requests first (default $RINGKV_ZONE; ignored with --no-routing).
    #[arg(long)]
    pub zone: Option<String>,
    /// How long to measure, like `500ms`, `30s`, `2m` (10s when neither this nor --ops is given).
    #[arg(long, value_parser = parse_duration, conflicts_with = "ops")]
    pub duration: Option<Duration>,
    /// How many operations to measure, instead of a duration.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Concurrent workers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value_t = KeyDistribution::Uniform)]
    pub distribution: KeyDistribution,
    /// Exponent of the Zipf distribution (higher: hotter hot keys).
    #[arg(long, default_value_t = 0.99)]
    pub zipf_exponent: f64,
    /// Size of written values, like `100`, `4KiB`, `1MiB`.
    #[arg(long, value_parser = parse_size, default_value = "100")]
    pub value_size: usize,
    /// Relative weights of operation kinds, like `get=90,put=10` (missing kinds weigh 0).
    #[arg(long, value_parser = parse_mix, default_value = "get=50,put=50,delete=0")]
    pub mix: Mix,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub request: RequestArgs,
    /// Bucket to use.
    #[arg(long, default_value = "bench")]
    pub bucket: String,
    /// Print the report as JSON (no progress bar); the same as `--output json`.
    #[arg(long)]
    pub json: bool,
    /// Report format: text or json (as `--json`).
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: crate::cli::OutputFormat,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Seed of the key and kind choices (random when not given; the report shows it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write every key once (read, then write with its context) before measuring.
    #[arg(long)]
    pub prefill: bool,
    /// Send every request to the given nodes in turn instead of routing to the key's owners.
    #[arg(long)]
    pub no_routing: bool,
    /// Target throughput in ops/s shared by all workers (0: as fast as they go). A worker that
    /// falls more than one interval behind its schedule has its latency measured from the
    /// schedule, so a slow answer also counts against the operations it delayed.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

/// How keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// Key `i` (from 0) with probability proportional to `1 / (i + 1)^exponent`.
    Zipfian,
}

/// The kinds of operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// A read.
    Get,
    /// A write.
    Put,
    /// A delete.
    Delete,
}

impl OpKind {
    const ALL: [OpKind; 3] = [OpKind::Get, OpKind::Put, OpKind::Delete];

    /// The kind's name in `--mix` and the report.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Delete => "delete",
        }
    }

    fn index(self) -> usize {
        match self {
            OpKind::Get => 0,
            OpKind::Put => 1,
            OpKind::Delete => 2,
        }
    }
}

/// Relative weights of the operation kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Weight of reads.
    pub get: u32,
    /// Weight of writes.
    pub put: u32,
    /// Weight of deletes.
    pub delete: u32,
}

impl Mix {
    fn total(&self) -> u64 {
        u64::from(self.get) + u64::from(self.put) + u64::from(self.delete)
    }

    fn weight(&self, kind: OpKind) -> u32 {
        match kind {
            OpKind::Get => self.get,
            OpKind::Put => self.put,
            OpKind::Delete => self.delete,
        }
    }

    /// The kind a roll in `0..total` stands for.
    fn kind_for(&self, roll: u64) -> OpKind {
        if roll < u64::from(self.get) {
            OpKind::Get
        } else if roll < u64::from(self.get) + u64::from(self.put) {
            OpKind::Put
        } else {
            OpKind::Delete
        }
    }

    fn choose(&self, rng: &mut impl Rng) -> OpKind {
        self.kind_for(rng.gen_range(0..self.total().max(1)))
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "get={},put={},delete={}",
            self.get, self.put, self.delete
        )
    }
}

/// Parses `get=50,put=50,delete=0`: kinds in any order, each at most once, missing kinds 0, at
/// least one positive weight.
pub fn parse_mix(text: &str) -> Result<Mix, String> {
    let mut weights: BTreeMap<OpKind, u32> = BTreeMap::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (name, weight) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected kind=weight"))?;
        let kind = OpKind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| format!("{name:?}: the kinds are get, put and delete"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("{item:?}: the weight must be a whole number"))?;
        if weights.insert(kind, weight).is_some() {
            return Err(format!("{} is given twice", kind.name()));
        }
    }
    let weight = |kind| weights.get(&kind).copied().unwrap_or(0);
    let mix = Mix {
        get: weight(OpKind::Get),
        put: weight(OpKind::Put),
        delete: weight(OpKind::Delete),
    };
    if mix.total() == 0 {
        return Err(String::from("at least one weight must be positive"));
    }
    Ok(mix)
}

/// Parses a positive duration as every other duration of the CLI and API is read
/// ([`api::parse_duration_ms`]: `500ms`, `10s`, `2m`, `1h`; bare numbers are seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match api::parse_duration_ms(text) {
        Ok(0) => Err(String::from("the duration must be positive")),
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(error) => Err(error.to_string()),
    }
}

/// Parses a byte size: a whole number, optionally followed by `B`, `KiB`/`K`, `MiB`/`M`, `GiB`/`G`
/// (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000), any case.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a size like 100, 4KiB, 1MiB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "{other:?}: the units are B, KiB, MiB, GiB, KB, MB, GB"
            ))
        }
    };
    let size = number
        .checked_mul(multiplier)
        .filter(|&size| size <= MAX_VALUE_SIZE)
        .ok_or_else(|| format!("{text:?}: at most {MAX_VALUE_SIZE} bytes"))?;
    usize::try_from(size).map_err(|_| format!("{text:?} does not fit in memory"))
}

/// Chooses key indexes in `0..keys`.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Every key equally likely.
    Uniform {
        /// Number of keys.
        keys: u64,
    },
    /// Zipf-distributed ranks; rank 1 is key 0.
    Zipf {
        /// Number of keys.
        keys: u64,
        /// The distribution of ranks `1..=keys`.
        distribution: Zipf<f64>,
    },
}

impl KeyChooser {
    /// A chooser over `keys` keys (at least one).
    pub fn new(
        distribution: KeyDistribution,
        keys: u64,
        exponent: f64,
    ) -> Result<KeyChooser, String> {
        if keys == 0 {
            return Err(String::from("--keys must be at least 1"));
        }
        match distribution {
            KeyDistribution::Uniform => Ok(KeyChooser::Uniform { keys }),
            KeyDistribution::Zipfian => {
                if !exponent.is_finite() || exponent <= 0.0 {
                    return Err(format!("--zipf-exponent {exponent}: must be positive"));
                }
                let distribution = Zipf::new(keys, exponent)
                    .map_err(|error| format!("zipf distribution: {error}"))?;
                Ok(KeyChooser::Zipf { keys, distribution })
            }
        }
    }

    /// A key index in `0..keys`.
    pub fn choose(&self, rng: &mut impl Rng) -> u64 {
        match self {
            KeyChooser::Uniform { keys } => rng.gen_range(0..*keys),
            KeyChooser::Zipf { keys, distribution } => {
                let rank = distribution.sample(rng);
                // Ranks are floats in [1, keys]; clamp in case of rounding at the edges.
                (rank as u64).saturating_sub(1).min(keys - 1)
            }
        }
    }
}

/// The key with index `index`.
fn key_name(index: u64) -> Vec<u8> {
    format!("key-{index:08}").into_bytes()
}

/// Latency percentiles of one kind of operation, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OpStats {
    /// Successful operations.
    pub count: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median latency.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
}

impl OpStats {
    fn from_histogram(histogram: &Histogram<u64>) -> OpStats {
        if histogram.is_empty() {
            return OpStats::default();
        }
        OpStats {
            count: histogram.len(),
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// Failed operations by cause.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// Quorum not met (503).
    pub unavailable: u64,
    /// Reads without an answer in time.
    pub timeout: u64,
    /// Writes sent without an answer: they may or may not have been applied.
    pub outcome_unknown: u64,
    /// No node could be connected to.
    pub connect: u64,
    /// Anything else (bad request, server errors, undecodable answers).
    pub other: u64,
}

impl ErrorCounts {
    /// All failures.
    pub fn total(&self) -> u64 {
        self.unavailable + self.timeout + self.outcome_unknown + self.connect + self.other
    }

    fn count(&mut self, error: &ClientError) {
        let counter = match error {
            ClientError::Unavailable { .. } => &mut self.unavailable,
            ClientError::Timeout(_) => &mut self.timeout,
            ClientError::OutcomeUnknown(_) => &mut self.outcome_unknown,
            ClientError::Connect(_) => &mut self.connect,
            _ => &mut self.other,
        };
        *counter += 1;
    }

    fn add(&mut self, other: &ErrorCounts) {
        self.unavailable += other.unavailable;
        self.timeout += other.timeout;
        self.outcome_unknown += other.outcome_unknown;
        self.connect += other.connect;
        self.other += other.other;
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Operations measured (successful and failed).
    pub ops: u64,
    /// Measured wall-clock time.
    pub seconds: f64,
    /// Operations per second.
    pub throughput: f64,
    /// Workers.
    pub concurrency: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Key distribution.
    pub distribution: KeyDistribution,
    /// Zipf exponent (when zipfian).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipf_exponent: Option<f64>,
    /// Bytes per written value.
    pub value_size: usize,
    /// Operation weights.
    pub mix: String,
    /// Seed of the key and kind choices.
    pub seed: u64,
    /// Latencies of successful operations, by kind (`get`, `put`, `delete`).
    pub per_op: BTreeMap<String, OpStats>,
    /// Failed operations by cause.
    pub errors: ErrorCounts,
    /// Reads that found no value.
    pub not_found: u64,
    /// Reads that returned siblings (more than one value).
    pub siblings_seen: u64,
    /// The most siblings one read returned.
    pub max_siblings: u64,
    /// Keys written by `--prefill` (not measured).
    pub prefilled: u64,
    /// Prefill writes that failed.
    pub prefill_errors: u64,
    /// A few distinct error messages, to explain failures.
    pub error_samples: Vec<String>,
}

/// Everything the workers share.
struct Plan {
    client: Client,
    bucket: Vec<u8>,
    chooser: KeyChooser,
    mix: Mix,
    options: Options,
    value: Bytes,
    /// Time between two operations of one worker, when a rate is set.
    pace: Option<Duration>,
}

/// When workers stop.
enum Budget {
    /// After this many operations in all.
    Ops { total: u64, claimed: AtomicU64 },
    /// At this instant.
    Until(Instant),
}

impl Budget {
    /// Whether a worker may start one more operation.
    fn claim(&self) -> bool {
        match self {
            Budget::Ops { total, claimed } => claimed.fetch_add(1, Ordering::Relaxed) < *total,
            Budget::Until(deadline) => Instant::now() < *deadline,
        }
    }
}

/// What one worker saw.
struct WorkerOutcome {
    histograms: Vec<Histogram<u64>>,
    errors: ErrorCounts,
    not_found: u64,
    siblings_seen: u64,
    max_siblings: u64,
    error_samples: Vec<String>,
}

impl WorkerOutcome {
    fn new() -> anyhow::Result<WorkerOutcome> {
        let histograms = OpKind::ALL
            .iter()
            .map(|_| Histogram::new(3))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| anyhow!("histogram: {error}"))?;
        Ok(WorkerOutcome {
            histograms,
            errors: ErrorCounts::default(),
            not_found: 0,
            siblings_seen: 0,
            max_siblings: 0,
            error_samples: Vec::new(),
        })
    }

    fn record_error(&mut self, error: &ClientError) {
        self.errors.count(error);
        let message = error.to_string();
        if self.error_samples.len() < MAX_ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    fn merge(&mut self, other: WorkerOutcome) -> anyhow::Result<()> {
        for (mine, theirs) in self.histograms.iter_mut().zip(&other.histograms) {
            mine.add(theirs)
                .map_err(|error| anyhow!("merging histograms: {error:?}"))?;
        }
        self.errors.add(&other.errors);
        self.not_found += other.not_found;
        self.siblings_seen += other.siblings_seen;
        self.max_siblings = self.max_siblings.max(other.max_siblings);
        for message in other.error_samples {
            if self.error_samples.len() < MAX_ERROR_SAMPLES
                && !self.error_samples.contains(&message)
            {
                self.error_samples.push(message);
            }
        }
        Ok(())
    }
}

/// Contexts a worker last saw, by key index.
#[derive(Default)]
struct Contexts(HashMap<u64, String>);

impl Contexts {
    fn get(&self, key: u64) -> Option<&str> {
        self.0.get(&key).map(String::as_str)
    }

    fn set(&mut self, key: u64, context: Option<String>) {
        match context {
            Some(context) => {
                if self.0.len() >= MAX_REMEMBERED_CONTEXTS && !self.0.contains_key(&key) {
                    if let Some(&forget) = self.0.keys().next() {
                        self.0.remove(&forget);
                    }
                }
                self.0.insert(key, context);
            }
            None => {
                self.0.remove(&key);
            }
        }
    }
}

async fn worker(
    plan: Arc<Plan>,
    budget: Arc<Budget>,
    completed: Arc<AtomicU64>,
    seed: u64,
) -> anyhow::Result<WorkerOutcome> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut outcome = WorkerOutcome::new()?;
    let mut contexts = Contexts::default();
    let mut scheduled = Instant::now();
    while budget.claim() {
        let index = plan.chooser.choose(&mut rng);
        let kind = plan.mix.choose(&mut rng);
        let key = key_name(index);
        let started = match plan.pace {
            Some(pace) => {
                tokio::time::sleep_until(scheduled.into()).await;
                let this = scheduled;
                scheduled += pace;
                // The timer wakes up to a millisecond late, which is not the server's doing; a
                // worker behind by more than a whole interval is, and is measured from its
                // schedule.
                let woke = Instant::now();
                if woke > this + pace {
                    this
                } else {
                    woke
                }
            }
            None => Instant::now(),
        };
        let result = match kind {
            OpKind::Get => plan
                .client
                .get(&plan.bucket, &key, &plan.options)
                .await
                .map(|read| {
                    let siblings = read.values.len() as u64;
                    if siblings == 0 {
                        outcome.not_found += 1;
                    }
                    if siblings > 1 {
                        outcome.siblings_seen += 1;
                        outcome.max_siblings = outcome.max_siblings.max(siblings);
                    }
                    contexts.set(index, read.context);
                }),
            OpKind::Put => plan
                .client
                .put(
                    &plan.bucket,
                    &key,
                    contexts.get(index),
                    plan.value.clone(),
                    &plan.options,
                )
                .await
                .map(|written| contexts.set(index, written.context)),
            // A delete needs a context: without one from this run, it reads first (as the CLI
            // does), and finding nothing to delete is not a failure of the store.
            OpKind::Delete => match contexts.get(index) {
                Some(context) => plan
                    .client
                    .delete(&plan.bucket, &key, Some(context), &plan.options)
                    .await
                    .map(|written| contexts.set(index, written.context)),
                None => plan
                    .client
                    .delete_current(&plan.bucket, &key, &plan.options)
                    .await
                    .map(|written| {
                        if let Some(written) = written {
                            contexts.set(index, written.context);
                        }
                    }),
            },
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(()) => {
                if let Some(histogram) = outcome.histograms.get_mut(kind.index()) {
                    // Auto-resizing histograms accept any value; a failure would only lose one
                    // sample.
                    let _ = histogram.record(micros.max(1));
                }
            }
            Err(error) => outcome.record_error(&error),
        }
        completed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(outcome)
}

/// Writes keys `first, first + step, ...` once each: read, then write with the context read.
async fn prefill_worker(
    plan: Arc<Plan>,
    completed: Arc<AtomicU64>,
    first: u64,
    step: u64,
) -> (u64, u64) {
    let (mut written, mut failed) = (0, 0);
    let mut index = first;
    while index < plan.chooser_keys() {
        let key = key_name(index);
        let context = match plan.client.get(&plan.bucket, &key, &plan.options).await {
            Ok(read) => read.context,
            Err(_) => None,
        };
        match plan
            .client
            .put(
                &plan.bucket,
                &key,
                context.as_deref(),
                plan.value.clone(),
                &plan.options,
            )
            .await
        {
            Ok(_) => written += 1,
            Err(_) => failed += 1,
        }
        completed.fetch_add(1, Ordering::Relaxed);
        index += step;
    }
    (written, failed)
}

impl Plan {
    fn chooser_keys(&self) -> u64 {
        match &self.chooser {
            KeyChooser::Uniform { keys } | KeyChooser::Zipf { keys, .. } => *keys,
        }
    }
}

fn progress_bar(hidden: bool, length: u64, template: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Updates `bar` from `completed` until `done` resolves; `by_time` shows elapsed seconds as the
/// position (duration runs), else the operation count.
async fn drive_progress(
    bar: ProgressBar,
    completed: Arc<AtomicU64>,
    by_time: bool,
    mut done: tokio::sync::oneshot::Receiver<()>,
) {
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = &mut done => break,
            _ = ticker.tick() => {}
        }
        let count = completed.load(Ordering::Relaxed);
        let now = Instant::now();
        let interval = now.saturating_duration_since(last.0).as_secs_f64();
        if interval > 0.0 {
            let rate = count.saturating_sub(last.1) as f64 / interval;
            bar.set_message(format!("{count} ops, {rate:.0} ops/s"));
        }
        last = (now, count);
        if by_time {
            bar.set_position(now.saturating_duration_since(started).as_secs());
        } else {
            bar.set_position(count);
        }
    }
    bar.finish_and_clear();
}

/// Runs the benchmark and returns its report without printing it.
pub async fn execute(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.ops == Some(0) {
        bail!("--ops must be at least 1");
    }
    let chooser = KeyChooser::new(args.distribution, args.keys, args.zipf_exponent)
        .map_err(|error| anyhow!(error))?;
    let seed = args.seed.unwrap_or_else(|| rand::thread_rng().next_u64());
    let client = Client::new(ClientConfig {
        nodes: crate::cli::resolve_nodes(&args.nodes),
        ca_file: args.ca_file.clone(),
        ring_refresh: if args.no_routing {
            Duration::ZERO
        } else {
            ClientConfig::default().ring_refresh
        },
        max_idle_per_host: args.concurrency,
        zone: crate::cli::resolve_zone(args.zone.as_deref()),
        ..ClientConfig::default()
    })
    .context("bad --nodes")?;
    if !args.no_routing {
        // Route from the first operation on; without a ring the requests still work.
        if let Err(error) = client.refresh_ring().await {
            tracing::warn!(%error, "cannot read the ring; sending requests to the given nodes");
        }
    }
    let mut value = vec![0u8; args.value_size];
    StdRng::seed_from_u64(seed).fill_bytes(&mut value);
    let duration = args.duration.unwrap_or(Duration::from_secs(10));
    let json = args.json || args.output == crate::cli::OutputFormat::Json;
    let hidden = args.no_progress || json;
    let plan = Arc::new(Plan {
        client,
        bucket: args.bucket.clone().into_bytes(),
        chooser,
        mix: args.mix,
        options: args.request.options(),
        value: Bytes::from(value),
        pace: (args.rate > 0)
            .then(|| Duration::from_secs_f64(args.concurrency.max(1) as f64 / args.rate as f64)),
    });

    let (prefilled, prefill_errors) = if args.prefill {
        prefill(&plan, args.concurrency, hidden).await?
    } else {
        (0, 0)
    };

    // The deadline starts after the prefill, with the measurement.
    let budget = Arc::new(match args.ops {
        Some(total) => Budget::Ops {
            total,
            claimed: AtomicU64::new(0),
        },
        None => Budget::Until(Instant::now() + duration),
    });
    let completed = Arc::new(AtomicU64::new(0));
    let (bar, by_time) = match args.ops {
        Some(total) => (
            progress_bar(
                hidden,
                total,
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
            ),
            false,
        ),
        None => (
            progress_bar(
                hidden,
                duration.as_secs().max(1),
                "{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}",
            ),
            true,
        ),
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let progress = tokio::spawn(drive_progress(bar, completed.clone(), by_time, done_rx));

    let started = Instant::now();
    let mut workers = JoinSet::new();
    for index in 0..args.concurrency as u64 {
        let worker_seed = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        workers.spawn(worker(
            plan.clone(),
            budget.clone(),
            completed.clone(),
            worker_seed,
        ));
    }
    let mut total = WorkerOutcome::new()?;
    while let Some(joined) = workers.join_next().await {
        total.merge(joined.context("a worker panicked")??)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = done_tx.send(());
    let _ = progress.await;

    let per_op: BTreeMap<String, OpStats> = OpKind::ALL
        .iter()
        .filter(|kind| args.mix.weight(**kind) > 0)
        .filter_map(|kind| {
            total
                .histograms
                .get(kind.index())
                .map(|histogram| (kind.name().to_owned(), OpStats::from_histogram(histogram)))
        })
        .collect();
    let succeeded: u64 = per_op.values().map(|stats| stats.count).sum();
    let ops = succeeded + total.errors.total();
    Ok(BenchReport {
        ops,
        seconds,
        throughput: if seconds > 0.0 {
            ops as f64 / seconds
        } else {
            0.0
        },
        concurrency: args.concurrency,
        keys: args.keys,
        distribution: args.distribution,
        zipf_exponent: (args.distribution == KeyDistribution::Zipfian)
            .then_some(args.zipf_exponent),
        value_size: args.value_size,
        mix: args.mix.to_string(),
        seed,
        per_op,
        errors: total.errors,
        not_found: total.not_found,
        siblings_seen: total.siblings_seen,
        max_siblings: total.max_siblings,
        prefilled,
        prefill_errors,
        error_samples: total.error_samples,
    })
}

async fn prefill(plan: &Arc<Plan>, concurrency: usize, hidden: bool) -> anyhow::Result<(u64, u64)> {
    let keys = plan.chooser_keys();
    let bar = progress_bar(
        hidden,
        keys,
        "prefill {elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
    );
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let completed = Arc::new(AtomicU64::new(0));
    let progress = tokio::spawn(drive_progress(bar, completed.clone(), false, done_rx));
    let step = (concurrency as u64).min(keys).max(1);
    let mut workers = JoinSet::new();
    for first in 0..step {
        workers.spawn(prefill_worker(plan.clone(), completed.clone(), first, step));
    }
    let (mut written, mut failed) = (0, 0);
    while let Some(joined) = workers.join_next().await {
        let (w, f) = joined.context("a prefill worker panicked")?;
        written += w;
        failed += f;
    }
    let _ = done_tx.send(());
    let _ = progress.await;
    Ok((written, failed))
}

/// Runs the benchmark and prints its report (a table, or JSON with `--json`) on stdout.
pub async fn run(args: BenchArgs) -> anyhow::Result<BenchReport> {
    let report = execute(&args).await?;
    let text = if args.json || args.output == crate::cli::OutputFormat::Json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        render_table(&report)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A reader that stopped early (`ringkv bench | head -3`) wanted no more: not a failure
        // of the benchmark (`print!` panicked here).
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        result => result.context("cannot write the report to stdout")?,
    }
    Ok(report)
}

/// The report as a readable table.
pub fn render_table(report: &BenchReport) -> String {
    let mut text = String::new();
    let distribution = match report.zipf_exponent {
        Some(exponent) => format!("zipfian, exponent {exponent}"),
        None => String::from("uniform"),
    };
    text.push_str(&format!(
        "ringkv bench: {} workers, {} keys ({distribution}), {}-byte values, mix {}, seed {}\n",
        report.concurrency, report.keys, report.value_size, report.mix, report.seed
    ));
    if report.prefilled > 0 || report.prefill_errors > 0 {
        text.push_str(&format!(
            "prefilled {} keys ({} failed)\n",
            report.prefilled, report.prefill_errors
        ));
    }
    text.push_str(&format!(
        "{} ops in {:.2} s: {:.1} ops/s\n\n",
        report.ops, report.seconds, report.throughput
    ));
    text.push_str(&format!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "op", "ok", "mean µs", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
    ));
    let in_kind_order = OpKind::ALL
        .iter()
        .filter_map(|kind| report.per_op.get_key_value(kind.name()));
    for (name, stats) in in_kind_order {
        text.push_str(&format!(
            "{name:<8} {:>10} {:>10.0} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            stats.count,
            stats.mean_us,
            stats.p50_us,
            stats.p90_us,
            stats.p99_us,
            stats.p999_us,
            stats.max_us
        ));
    }
    let errors = &report.errors;
    text.push_str(&format!(
        "\nerrors: {} (unavailable {}, timeout {}, outcome unknown {}, connect {}, other {})\n",
        errors.total(),
        errors.unavailable,
        errors.timeout,
        errors.outcome_unknown,
        errors.connect,
        errors.other
    ));
    for sample in &report.error_samples {
        text.push_str(&format!("  e.g. {sample}\n"));
    }
    text.push_str(&format!(
        "reads: {} not found, {} with siblings (at most {})\n",
        report.not_found, report.siblings_seen, report.max_siblings
    ));
    text
}

#[cfg(test)]
mod tests;
