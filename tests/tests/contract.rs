//! A model-based black-box test of the HTTP contract (README, "HTTP API"). Seeded clients send
//! raw HTTP/1.1 to a real cluster of 3 to 5 `ringkv server` processes: gets, puts with the
//! context of their last read, blind puts, conditional puts (`If-None-Match: *`, `If-Match`
//! with the last read's context), deletes with and without a context, writes with another key's
//! (or bucket's) context, malformed conditional and expiry headers, and malformed queries and
//! escapes; meanwhile a seeded nemesis kills (SIGKILL), pauses (SIGSTOP) or restarts (SIGTERM)
//! one node at a time. Each answer is judged against what its status promises:
//!
//! - 204: acknowledged. The value is in the final state unless a write that may have taken
//!   effect saw it (was made with the context of a read that returned it), and it is not there
//!   if such a write was acknowledged.
//! - 200, 300 (`multipart/mixed`, `X-Ringkv-Siblings` parts), 404: every value read was written
//!   to that key by a write that may have taken effect.
//! - 400 (another key's context, a delete without one, the refused headers, bad queries and
//!   escapes), 409, 413, 507, 503 `unavailable` or `too_few_members`, a refused connection: the
//!   write had no effect, and its value is never read. A write with a read's context never gets
//!   a 409.
//! - 412 `precondition_failed` (a conditional put only): nothing was written, and its value is
//!   never read. A 204 to a conditional put is an acknowledged write like any other. Conditions
//!   are best effort (README): two creators checking at once may both get 204, and their values
//!   are then both kept as siblings; the model and the checker accept that and nothing less.
//! - 503 `outcome_unknown`, a connection broken after the request was sent: either.
//! - Never another 5xx, and never a broken or refused connection, or an unparseable answer,
//!   from a node that was up from before the request was sent until its answer.
//!
//! Once the faults are over and the cluster has converged, every key is read with R = all
//! through every node (they must agree) and judged with the model, and the history, with each
//! owner's own record, goes through the core's checker (`ringkv_core::checker`).
//!
//! `RINGKV_CONTRACT_SEED` replays a run's random choices (the cluster's size, the faults and each
//! client's picks; not the timing, so not what the clients happen to read, on which some picks
//! depend); `RINGKV_CONTRACT_SECS` (default 45) is how long the load runs.
mod common;

use common::answers::*;
use common::cluster::*;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_core::checker::{self, Finals, OpKind, Operation};
use ringkv_core::id::NodeId;

const BUCKET: &str = "contract";
/// Written only with contexts of [`BUCKET`]'s keys, which must be refused: it stays empty.
const OTHER_BUCKET: &str = "contract-other";
/// Few keys, so that writes conflict; two need percent-encoding.
const KEYS: [&str; 8] = [
    "k0",
    "k1",
    "k2",
    "k3",
    "k4",
    "k5",
    "with space",
    "with/slash",
];
const CLIENTS: usize = 4;
/// Longest wait for one answer (a paused node answers once continued; nothing in the test
/// pauses a node this long).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// Headers the README says are refused with 400, naming them: malformed conditions and times to
/// live, and the date conditions and absolute expiry that are not supported.
const REFUSED_HEADERS: [(&str, &str); 7] = [
    ("If-Match", "\"c0-1\""),
    ("If-None-Match", "\"c0-1\""),
    ("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT"),
    ("If-Unmodified-Since", "Sat, 01 Jan 2000 00:00:00 GMT"),
    ("X-Ringkv-TTL", "0"),
    ("Expires", "Sat, 01 Jan 2000 00:00:00 GMT"),
    ("Content-Range", "bytes 0-3/4"),
];
/// Queries the README says are refused with 400 (n = 3).
const BAD_QUERIES: [&str; 9] = [
    "w=banana",
    "w=0",
    "w=4",
    "r=0",
    "n=0",
    "n=4",
    "timeout_ms=0",
    "colour=blue",
    "w=1&w=2",
];
/// Valid quorums, some of which a single fault defeats (more 503s to judge).
const GOOD_WRITE_QUERIES: [&str; 7] = [
    "w=1",
    "w=quorum",
    "dw=1",
    "w=3&dw=one",
    "w=all",
    "w=all&timeout_ms=300",
    "w=3&dw=3&timeout_ms=500",
];
const GOOD_READ_QUERIES: [&str; 5] = ["r=1", "r=one", "r=quorum", "r=all", "r=all&timeout_ms=300"];

// ----- the history -----

/// What a request asks, as far as the model cares.
#[derive(Clone, Debug)]
enum Intent {
    Get,
    /// A HEAD: judged as a get, but its values are not known.
    Head,
    /// A put of a fresh value, with the context of read `read` (history index) or none; when
    /// `conditional`, with `If-Match` that context (or `If-None-Match: *` without one).
    Put {
        value: String,
        read: Option<usize>,
        conditional: bool,
    },
    /// A delete with the context of read `read`.
    Delete {
        read: usize,
    },
    /// A request that must be answered 400 `bad_request` (naming `names`, when given). Its
    /// value, if it has one, must never be read.
    Refused {
        value: Option<String>,
        names: Option<&'static str>,
    },
}

/// One request and its answer.
#[derive(Debug)]
struct Op {
    client: usize,
    node: usize,
    bucket: String,
    key: String,
    /// The kind of request, for the counts.
    label: &'static str,
    intent: Intent,
    /// Request line and the headers that matter, for the report.
    request: String,
    /// The context header sent.
    context: Option<String>,
    invoked_ms: u64,
    completed_ms: u64,
    /// Whether the node was up from before the request was sent until its answer.
    live: bool,
    answer: Result<RawAnswer, NoAnswer>,
}

/// One request to send.
struct Plan {
    node: usize,
    bucket: String,
    key: String,
    label: &'static str,
    intent: Intent,
    method: &'static str,
    target: String,
    headers: Vec<(&'static str, String)>,
    context: Option<String>,
    body: Option<Vec<u8>>,
}

/// A client: its own seeded choices, and the context of its last read of each key.
struct Client {
    id: usize,
    rng: ChaCha8Rng,
    nodes: Vec<SocketAddr>,
    liveness: Arc<Liveness>,
    history: Arc<Mutex<Vec<Op>>>,
    started: Instant,
    sequence: u64,
    /// Key -> (history index of the read, its context).
    last_read: BTreeMap<&'static str, (usize, String)>,
}

impl Client {
    async fn run(mut self, until: Instant) {
        while Instant::now() < until {
            let plan = self.plan();
            self.send(plan).await;
        }
    }

    fn value(&mut self) -> String {
        self.sequence += 1;
        format!("c{}-{}", self.id, self.sequence)
    }

    fn plan(&mut self) -> Plan {
        let node = self.rng.gen_range(0..self.nodes.len());
        let key = KEYS[self.rng.gen_range(0..KEYS.len())];
        let roll = self.rng.gen_range(0..100);
        let value = self.value();
        let mut plan = Plan {
            node,
            bucket: BUCKET.into(),
            key: key.into(),
            label: "get",
            intent: Intent::Get,
            method: "GET",
            target: format!("/kv/{BUCKET}/{}", encode(key)),
            headers: Vec::new(),
            context: None,
            body: None,
        };
        let read = self.last_read.get(key).cloned();
        // A context of another key this client has read, if any.
        let others: Vec<(&'static str, String)> = self
            .last_read
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(k, (_, c))| (*k, c.clone()))
            .collect();
        match roll {
            0..=29 => {
                if self.rng.gen_bool(0.1) {
                    plan.method = "HEAD";
                    plan.label = "head";
                    plan.intent = Intent::Head;
                }
                self.add_quorum(&mut plan, &GOOD_READ_QUERIES);
            }
            30..=66 => {
                // Mostly with the context of the last read; blind without one, or at random.
                let read = read.filter(|_| roll < 55);
                let conditional = self.rng.gen_bool(0.2);
                plan.label = match (conditional, read.is_some()) {
                    (false, true) => "put",
                    (false, false) => "blind put",
                    (true, true) => "put if-match",
                    (true, false) => "put if-none-match",
                };
                plan.method = "PUT";
                plan.intent = Intent::Put {
                    value: value.clone(),
                    read: read.as_ref().map(|r| r.0),
                    conditional,
                };
                if conditional {
                    match &read {
                        Some((_, context)) => plan.headers.push(("If-Match", context.clone())),
                        None => plan.headers.push(("If-None-Match", "*".into())),
                    }
                }
                plan.context = read.map(|r| r.1);
                plan.body = Some(value.into_bytes());
                self.add_quorum(&mut plan, &GOOD_WRITE_QUERIES);
            }
            67..=78 => {
                plan.method = "DELETE";
                match read.filter(|_| roll < 75) {
                    Some((index, context)) => {
                        plan.label = "delete";
                        plan.intent = Intent::Delete { read: index };
                        plan.context = Some(context);
                        self.add_quorum(&mut plan, &GOOD_WRITE_QUERIES);
                    }
                    // README: 400 without a context (it would delete nothing).
                    None => {
                        plan.label = "delete without context";
                        if self.rng.gen_bool(0.3) {
                            // An empty header is no context either.
                            plan.context = Some(String::new());
                        }
                        plan.intent = Intent::Refused {
                            value: None,
                            names: None,
                        };
                    }
                }
            }
            79..=85 if !others.is_empty() => {
                // README: a context read from another bucket or key is refused with 400.
                let (other, context) = others[self.rng.gen_range(0..others.len())].clone();
                plan.context = Some(context);
                plan.intent = Intent::Refused {
                    value: None,
                    names: None,
                };
                if roll < 84 {
                    plan.label = "another key's context";
                } else {
                    // The same key name, in another bucket.
                    plan.label = "another bucket's context";
                    plan.bucket = OTHER_BUCKET.into();
                    plan.key = other.into();
                    plan.target = format!("/kv/{OTHER_BUCKET}/{}", encode(other));
                }
                if self.rng.gen_bool(0.7) {
                    plan.method = "PUT";
                    plan.intent = Intent::Refused {
                        value: Some(value.clone()),
                        names: None,
                    };
                    plan.body = Some(value.into_bytes());
                } else {
                    plan.method = "DELETE";
                }
            }
            79..=85 => {}
            86..=91 => {
                let (name, header_value) =
                    REFUSED_HEADERS[self.rng.gen_range(0..REFUSED_HEADERS.len())];
                plan.label = "refused header";
                plan.headers.push((name, header_value.into()));
                plan.context = read.map(|r| r.1);
                plan.method = ["PUT", "PUT", "DELETE", "GET"][self.rng.gen_range(0..4)];
                // Content-Range is refused on a PUT only.
                if name == "Content-Range" {
                    plan.method = "PUT";
                }
                let value = (plan.method == "PUT").then_some(value);
                plan.body = value.clone().map(String::into_bytes);
                plan.intent = Intent::Refused {
                    value,
                    names: Some(name),
                };
            }
            _ => {
                plan.label = "malformed";
                plan.method = "PUT";
                plan.context = read.map(|r| r.1);
                match self.rng.gen_range(0..4) {
                    0 | 1 => {
                        let query = BAD_QUERIES[self.rng.gen_range(0..BAD_QUERIES.len())];
                        plan.target = format!("{}?{query}", plan.target);
                    }
                    2 => {
                        plan.target = if self.rng.gen_bool(0.5) {
                            format!("{}%zz", plan.target)
                        } else {
                            format!("/kv/con%g1tract/{}", encode(key))
                        };
                    }
                    _ => plan.context = Some("not a context!".into()),
                }
                plan.body = Some(value.clone().into_bytes());
                plan.intent = Intent::Refused {
                    value: Some(value),
                    names: None,
                };
            }
        }
        plan
    }

    /// A quarter of the time, one of `queries`.
    fn add_quorum(&mut self, plan: &mut Plan, queries: &[&str]) {
        if self.rng.gen_bool(0.25) {
            let query = queries[self.rng.gen_range(0..queries.len())];
            plan.target = format!("{}?{query}", plan.target);
        }
    }

    async fn send(&mut self, plan: Plan) {
        let mut headers: Vec<(&str, &str)> =
            plan.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        if let Some(context) = &plan.context {
            headers.push(("X-Ringkv-Context", context));
        }
        let bytes = request(plan.method, &plan.target, &headers, plan.body.as_deref());
        let described = format!(
            "{} {}{}",
            plan.method,
            plan.target,
            plan.headers
                .iter()
                .map(|(n, v)| format!(" [{n}: {v}]"))
                .collect::<String>()
        );
        let before = self.liveness.get(plan.node);
        let invoked_ms = self.started.elapsed().as_millis() as u64;
        let answer = try_raw_http(
            self.nodes[plan.node],
            &bytes,
            plan.method == "HEAD",
            ANSWER_WITHIN,
        )
        .await;
        let completed_ms = self.started.elapsed().as_millis() as u64;
        let after = self.liveness.get(plan.node);
        let live = before.0 && after.0 && before.1 == after.1;
        let failed = answer.is_err();
        let context_read = match (&plan.intent, &answer) {
            (Intent::Get, Ok(a)) if matches!(a.status, 200 | 300 | 404) => Some(
                a.header("x-ringkv-context")
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            ),
            _ => None,
        };
        let key = KEYS
            .into_iter()
            .find(|k| *k == plan.key && plan.bucket == BUCKET);
        let index = {
            let mut history = self.history.lock().unwrap();
            history.push(Op {
                client: self.id,
                node: plan.node,
                bucket: plan.bucket,
                key: plan.key,
                label: plan.label,
                intent: plan.intent,
                request: described,
                context: plan.context,
                invoked_ms,
                completed_ms,
                live,
                answer,
            });
            history.len() - 1
        };
        match (context_read, key) {
            (Some(Some(context)), Some(key)) => {
                self.last_read.insert(key, (index, context));
            }
            (Some(None), Some(key)) => {
                self.last_read.remove(key);
            }
            _ => {}
        }
        // A client of a node that is down would otherwise spin on refused connections.
        if failed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ----- the nemesis -----

/// Until `until`, one fault at a time, each undone before the next: SIGKILL then restart,
/// SIGSTOP then SIGCONT, or SIGTERM then restart. Returns the cluster, all up, and a log.
async fn nemesis(
    mut cluster: Cluster,
    liveness: Arc<Liveness>,
    seed: u64,
    started: Instant,
    until: Instant,
) -> (Cluster, Vec<String>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfa17_fa17);
    let mut log = Vec::new();
    loop {
        let quiet = Duration::from_millis(rng.gen_range(300..1500));
        let hold = Duration::from_millis(rng.gen_range(500..3000));
        let node = rng.gen_range(0..cluster.nodes.len());
        let kind = rng.gen_range(0..3);
        if Instant::now() + quiet + hold >= until {
            break;
        }
        tokio::time::sleep(quiet).await;
        let at = started.elapsed().as_millis();
        let id = cluster.nodes[node].id.clone();
        liveness.set(node, false);
        let what = match kind {
            0 => {
                cluster.kill(node);
                tokio::time::sleep(hold).await;
                cluster.spawn(node);
                cluster.wait_healthy(node).await;
                "SIGKILL, restarted"
            }
            1 => {
                cluster.pause(node);
                tokio::time::sleep(hold).await;
                cluster.resume(node);
                "SIGSTOP, SIGCONT"
            }
            _ => {
                cluster.stop(node);
                tokio::time::sleep(hold).await;
                cluster.spawn(node);
                cluster.wait_healthy(node).await;
                "SIGTERM, restarted"
            }
        };
        liveness.set(node, true);
        log.push(format!(
            "{at} ms: {id} {what} after {} ms, up at {} ms",
            hold.as_millis(),
            started.elapsed().as_millis()
        ));
    }
    (cluster, log)
}

// ----- judging one answer -----

/// What a write's answer says about its effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    /// Certainly none (or not a write).
    None,
    /// Maybe.
    Unknown,
    /// Acknowledged.
    Acked,
}

/// One answer, judged.
#[derive(Debug)]
struct Judged {
    effect: Effect,
    /// A GET's values (sorted); `None` when it read nothing.
    values: Option<Vec<String>>,
    problems: Vec<String>,
}

fn judge(op: &Op) -> Judged {
    let mut problems = Vec::new();
    let mut values = None;
    let answer = match &op.answer {
        Ok(answer) => answer,
        Err(no_answer) => {
            if op.live {
                problems.push(format!(
                    "no answer from a node up throughout: {no_answer:?}"
                ));
            }
            let effect = match no_answer {
                NoAnswer::Refused(_) => Effect::None,
                _ => Effect::Unknown,
            };
            return Judged {
                effect,
                values,
                problems,
            };
        }
    };
    let status = answer.status;
    let kind = answer.kind();
    if status >= 500 && status != 503 && status != 507 {
        problems.push(format!(
            "a {status} {kind}: the README has no 5xx but 503 and 507"
        ));
    }
    if matches!(status, 200 | 204 | 300 | 404) {
        problems.extend(context_problem(answer, &op.bucket, &op.key));
    }
    let effect = match (status, kind.as_str()) {
        (204, _) => Effect::Acked,
        (400 | 409 | 412 | 413 | 507, _) => Effect::None,
        (503, "unavailable" | "too_few_members" | "no_ring") => Effect::None,
        _ => Effect::Unknown,
    };
    match &op.intent {
        Intent::Refused { names, .. } => {
            let message = String::from_utf8_lossy(&answer.body);
            if status != 400 || kind != "bad_request" {
                problems.push(format!("expected 400 bad_request, got {status} {kind}"));
            } else if let Some(name) = names.filter(|n| !message.contains(n)) {
                problems.push(format!("the 400 does not name {name}: {message}"));
            }
        }
        Intent::Get | Intent::Head => match status {
            200 | 300 | 404 => {
                if answer.header("x-ringkv-replicas").is_none() {
                    problems.push("a read's answer without X-Ringkv-Replicas".into());
                }
                if status != 404 && answer.header("x-ringkv-context").is_none_or(str::is_empty) {
                    problems.push(format!("a {status} without X-Ringkv-Context"));
                }
                if matches!(op.intent, Intent::Head) {
                    if !answer.body.is_empty() {
                        problems.push("an answer to HEAD with a body".into());
                    }
                } else {
                    match values_of(answer) {
                        Ok(mut read) => {
                            read.sort();
                            values = Some(read);
                        }
                        Err(problem) => problems.push(problem),
                    }
                }
            }
            // The answer to a HEAD has no body to tell its kind.
            503 if matches!(op.intent, Intent::Head) => {}
            503 => {
                let kind = check_503(answer, &mut problems);
                // `shutting_down`: in flight when the node got SIGTERM (not in the README's
                // table, but a 503 that promises nothing for a read).
                let kinds = ["unavailable", "too_few_members", "no_ring", "shutting_down"];
                if !kinds.contains(&kind.as_str()) {
                    problems.push(format!("a read answered 503 {kind}"));
                }
            }
            _ => problems.push(format!("a read answered {status} {kind}")),
        },
        Intent::Put { .. } | Intent::Delete { .. } if status == 204 => {
            let dot = answer.header("x-ringkv-dot").unwrap_or_default();
            let well_formed = dot
                .rsplit_once(':')
                .is_some_and(|(a, c)| !a.is_empty() && c.parse::<u64>().is_ok());
            if !well_formed || answer.header("x-ringkv-context").is_none_or(str::is_empty) {
                problems.push(format!("a 204 without a context or a dot (dot {dot:?})"));
            }
        }
        Intent::Put { .. } | Intent::Delete { .. } => match status {
            503 => {
                let kind = check_503(answer, &mut problems);
                if !matches!(
                    kind.as_str(),
                    "unavailable"
                        | "outcome_unknown"
                        | "too_few_members"
                        | "no_ring"
                        | "shutting_down"
                ) {
                    problems.push(format!("a write answered 503 {kind}"));
                }
            }
            412 if kind == "precondition_failed"
                && matches!(
                    op.intent,
                    Intent::Put {
                        conditional: true,
                        ..
                    }
                ) => {}
            409 if kind == "too_many_siblings"
                && matches!(op.intent, Intent::Put { read: None, .. }) => {}
            409 => problems.push(format!(
                "a 409 {kind} to a write with a read's context (README: it always passes)"
            )),
            507 => {}
            _ => problems.push(format!("a well-formed write answered {status} {kind}")),
        },
    }
    Judged {
        effect,
        values,
        problems,
    }
}

// ----- the final state -----

/// Reads every key until every node agrees on each, owners' records are equal, and nothing
/// changed since the previous round; panics after [`CONVERGE`].
async fn converge(cluster: &Cluster) -> BTreeMap<(String, String), FinalKey> {
    let ring = cluster.client(&[0]).ring().await.expect("the ring");
    let deadline = Instant::now() + CONVERGE;
    let mut previous: Option<BTreeMap<(String, String), FinalKey>> = None;
    loop {
        let mut round = BTreeMap::new();
        for bucket in [BUCKET, OTHER_BUCKET] {
            for key in KEYS {
                let owners = owners(&ring, bucket.as_bytes(), key.as_bytes());
                let state = read_final(cluster, &owners, bucket, key, ANSWER_WITHIN).await;
                round.insert((bucket.to_string(), key.to_string()), state);
            }
        }
        let agreed = round.values().all(FinalKey::agreed);
        if agreed && previous.as_ref() == Some(&round) {
            return round;
        }
        if Instant::now() > deadline {
            let differing: Vec<_> = round.iter().filter(|(_, s)| !s.agreed()).collect();
            panic!("the keys did not converge within {CONVERGE:?}: {differing:#?}");
        }
        previous = Some(round);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ----- the model -----

/// A broken promise: the request (history index; `None` for the final state) and what.
struct Violation {
    op: Option<usize>,
    bucket: String,
    key: String,
    what: String,
}

/// Judges the reads of the history and the final state against the writes' answers.
fn check_model(
    ops: &[Op],
    judged: &[Judged],
    finals: &BTreeMap<(String, String), FinalKey>,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (i, (op, judged)) in ops.iter().zip(judged).enumerate() {
        for problem in &judged.problems {
            violations.push(Violation {
                op: Some(i),
                bucket: op.bucket.clone(),
                key: op.key.clone(),
                what: problem.clone(),
            });
        }
    }
    // Who wrote each value (values are unique), the reads that returned it, and the writes made
    // with each read's context.
    let mut writer: BTreeMap<&str, usize> = BTreeMap::new();
    let mut read_by: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut written_with: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, (op, judged)) in ops.iter().zip(judged).enumerate() {
        match &op.intent {
            Intent::Put { value, .. }
            | Intent::Refused {
                value: Some(value), ..
            } => {
                writer.insert(value, i);
            }
            _ => {}
        }
        if let Intent::Put { read: Some(r), .. } | Intent::Delete { read: r } = op.intent {
            written_with.entry(r).or_default().push(i);
        }
        for value in judged.values.iter().flatten() {
            read_by.entry(value).or_default().push(i);
        }
    }
    let judge_values = |values: &[String], bucket: &str, key: &str| -> Vec<String> {
        let mut wrong = Vec::new();
        if values.windows(2).any(|w| w[0] == w[1]) {
            wrong.push(format!("the same value twice: {values:?}"));
        }
        for value in values {
            match writer.get(value.as_str()) {
                None => wrong.push(format!("{value:?}, which nobody wrote")),
                Some(&w) if ops[w].bucket != bucket || ops[w].key != key => wrong.push(format!(
                    "{value:?}, written to {}/{} by #{w}",
                    ops[w].bucket, ops[w].key
                )),
                Some(&w) if judged[w].effect == Effect::None => wrong.push(format!(
                    "{value:?}, whose write #{w} certainly had no effect ({})",
                    outcome(&ops[w])
                )),
                Some(_) => {}
            }
        }
        wrong
    };
    for (i, (op, judged)) in ops.iter().zip(judged).enumerate() {
        for wrong in judge_values(
            judged.values.as_deref().unwrap_or_default(),
            &op.bucket,
            &op.key,
        ) {
            violations.push(Violation {
                op: Some(i),
                bucket: op.bucket.clone(),
                key: op.key.clone(),
                what: format!("read {wrong}"),
            });
        }
    }
    for ((bucket, key), state) in finals {
        let values = state.values();
        let mut broken = |op: Option<usize>, what: String| {
            violations.push(Violation {
                op,
                bucket: bucket.clone(),
                key: key.clone(),
                what,
            })
        };
        for wrong in judge_values(&values, bucket, key) {
            broken(None, format!("the final state holds {wrong}"));
        }
        for (w, op) in ops.iter().enumerate() {
            let Intent::Put { value, .. } = &op.intent else {
                continue;
            };
            if judged[w].effect != Effect::Acked || op.bucket != *bucket || op.key != *key {
                continue;
            }
            // The writes that saw this value and may have replaced it.
            let successors: Vec<usize> = read_by
                .get(value.as_str())
                .into_iter()
                .flatten()
                .flat_map(|r| written_with.get(r).into_iter().flatten())
                .copied()
                .filter(|&s| judged[s].effect != Effect::None)
                .collect();
            let present = values.contains(value);
            if successors.is_empty() && !present {
                broken(
                    Some(w),
                    format!(
                        "the acknowledged {value:?} is lost: no write saw it, and the final \
                         state is {values:?}"
                    ),
                );
            }
            if let Some(s) = successors
                .iter()
                .find(|&&s| judged[s].effect == Effect::Acked)
            {
                if present {
                    broken(
                        Some(w),
                        format!(
                            "{value:?} is still there, though the acknowledged #{s} was made \
                             with the context of a read that returned it"
                        ),
                    );
                }
            }
        }
    }
    violations
}

// ----- the core's checker -----

/// Runs the core's checker on the well-formed gets, puts and deletes of [`BUCKET`] and the
/// final state; returns what it finds wrong.
fn run_checker(
    ops: &[Op],
    judged: &[Judged],
    finals: &BTreeMap<(String, String), FinalKey>,
) -> (Vec<Violation>, String) {
    let mut history = Vec::new();
    let mut origin = Vec::new();
    for (i, (op, judged)) in ops.iter().zip(judged).enumerate() {
        let context = context_of(op.context.as_deref());
        let kind = match &op.intent {
            Intent::Get => OpKind::Get,
            Intent::Put { value, .. } => OpKind::Put {
                value: value.clone().into_bytes(),
                context,
                ttl_ms: None,
            },
            Intent::Delete { .. } => OpKind::Delete { context },
            Intent::Head | Intent::Refused { .. } => continue,
        };
        history.push(Operation {
            index: history.len(),
            node: NodeId::new(format!("n{}", op.node + 1)),
            bucket: op.bucket.clone().into_bytes(),
            key: op.key.clone().into_bytes(),
            kind,
            invoked_at: op.invoked_ms,
            completed_at: Some(op.completed_ms),
            outcome: Some(checker_outcome(&op.answer, judged.values.as_deref())),
        });
        origin.push(i);
    }
    let mut finals_in = Finals::new();
    for ((bucket, key), state) in finals.iter().filter(|((b, _), _)| b == BUCKET) {
        let (read, replicas) = state.for_checker(bucket, key, history.len() + finals_in.len());
        finals_in.insert(
            (bucket.clone().into_bytes(), key.clone().into_bytes()),
            (read, replicas),
        );
    }
    // One machine's clock: no skew between the nodes.
    let verdict = checker::check(&history, &finals_in, 0);
    let summary = format!(
        "checker: {} acknowledged writes, {} present, {} superseded, {} reaped; {} stale reads",
        verdict.acknowledged_writes,
        verdict.present,
        verdict.superseded,
        verdict.reaped,
        verdict.stale_reads.len()
    );
    let at = |index: usize| origin.get(index).copied();
    let violation = |index: Option<usize>, what: String| {
        let (bucket, key) = match index {
            Some(i) => (ops[i].bucket.clone(), ops[i].key.clone()),
            None => (BUCKET.to_string(), String::from("?")),
        };
        Violation {
            op: index,
            bucket,
            key,
            what: format!("checker: {what}"),
        }
    };
    let mut violations = Vec::new();
    for lost in &verdict.lost {
        violations.push(violation(
            at(lost.index),
            format!("lost write, dot {}", lost.dot),
        ));
    }
    for (index, value) in &verdict.phantom_reads {
        let what = format!("phantom read {:?}", String::from_utf8_lossy(value));
        violations.push(violation(at(*index), what));
    }
    for (a, b) in &verdict.reused_dots {
        violations.push(violation(at(*a), format!("same dot as #{:?}", at(*b))));
    }
    for (a, b) in &verdict.false_siblings {
        let what = format!("a sibling of #{:?}, which it had seen", at(*b));
        violations.push(violation(at(*a), what));
    }
    for what in verdict.divergent.iter().chain(&verdict.unreadable) {
        violations.push(violation(None, what.clone()));
    }
    (violations, summary)
}

// ----- the report -----

fn outcome(op: &Op) -> String {
    match &op.answer {
        Ok(answer) if answer.status >= 400 => format!("{} {}", answer.status, answer.kind()),
        Ok(answer) => answer.status.to_string(),
        Err(NoAnswer::Refused(_)) => "connection refused".into(),
        Err(NoAnswer::Broken(_)) => "connection broken".into(),
        Err(NoAnswer::TimedOut) => "no answer in time".into(),
    }
}

/// One line per request: when, who, what, and the answer.
fn describe(i: usize, op: &Op, judged: &Judged) -> String {
    let context = match (&op.intent, &op.context) {
        (Intent::Put { read: Some(r), .. } | Intent::Delete { read: r }, _) => {
            format!(" (context of #{r})")
        }
        (_, Some(c)) => format!(" (context {:?})", &c[..c.len().min(16)]),
        _ => String::new(),
    };
    let value = match &op.intent {
        Intent::Put { value, .. }
        | Intent::Refused {
            value: Some(value), ..
        } => format!(" {value:?}"),
        _ => String::new(),
    };
    let mut answer = outcome(op);
    if let Some(values) = &judged.values {
        answer.push_str(&format!(" {values:?}"));
    }
    if let Some(dot) = op
        .answer
        .as_ref()
        .ok()
        .and_then(|a| a.header("x-ringkv-dot"))
    {
        answer.push_str(&format!(" dot {dot}"));
    }
    format!(
        "#{i} {}-{} ms c{} n{}{} {}: {}{context}{value} -> {answer}",
        op.invoked_ms,
        op.completed_ms,
        op.client,
        op.node + 1,
        if op.live { "" } else { " (down or paused)" },
        op.label,
        op.request,
    )
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    )
}

// ----- the test -----

/// One test at a time (a second cluster would starve the first's failure detectors).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_keep_the_documented_promises_under_faults() {
    let _serial = SERIAL.lock().await;
    let seed = env_u64("RINGKV_CONTRACT_SEED").unwrap_or_else(rand::random);
    let secs = env_u64("RINGKV_CONTRACT_SECS").unwrap_or(45);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let count = rng.gen_range(3..=5);
    println!(
        "contract: seed {seed} (replay: RINGKV_CONTRACT_SEED={seed}), {count} nodes, {secs} s of load"
    );
    let wall = Instant::now();
    let cluster = Cluster::start(count).await;
    let liveness = Arc::new(Liveness::new(count));
    let history = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let client = Client {
                id,
                rng: ChaCha8Rng::seed_from_u64(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9)),
                nodes: cluster.nodes.iter().map(|n| n.http).collect(),
                liveness: liveness.clone(),
                history: history.clone(),
                started,
                sequence: 0,
                last_read: BTreeMap::new(),
            };
            tokio::spawn(client.run(until))
        })
        .collect();
    let (mut cluster, fault_log) = tokio::spawn(nemesis(cluster, liveness, seed, started, until))
        .await
        .expect("the nemesis");
    for client in clients {
        client.await.expect("a client");
    }
    let everyone: Vec<usize> = (0..count).collect();
    cluster.wait_settled(&everyone).await;
    cluster.wait_hints_drained(&everyone).await;
    let finals = converge(&cluster).await;

    let ops = std::mem::take(&mut *history.lock().unwrap());
    let judged: Vec<Judged> = ops.iter().map(judge).collect();
    let mut violations = check_model(&ops, &judged, &finals);
    let (found, checker_summary) = run_checker(&ops, &judged, &finals);
    violations.extend(found);

    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for op in &ops {
        *counts
            .entry(format!("{:<25} {}", op.label, outcome(op)))
            .or_default() += 1;
    }
    let final_values: usize = finals.values().map(|f| f.values().len()).sum();
    println!(
        "contract: seed {seed}: {} requests in {secs} s, faults:\n  {}\n{}\n  {checker_summary}\n  \
         {final_values} values in the final state; {:.0} s in all",
        ops.len(),
        fault_log.join("\n  "),
        counts
            .iter()
            .map(|(what, n)| format!("  {what:<50} {n}"))
            .collect::<Vec<_>>()
            .join("\n"),
        wall.elapsed().as_secs_f64()
    );
    if violations.is_empty() {
        return;
    }
    let all: Vec<String> = ops
        .iter()
        .zip(&judged)
        .enumerate()
        .map(|(i, (op, j))| describe(i, op, j))
        .collect();
    let file = cluster.path().join("contract-history.txt");
    std::fs::write(&file, all.join("\n")).expect("history written");
    let mut report = format!(
        "seed {seed}: {} broken promises (replay: RINGKV_CONTRACT_SEED={seed} \
         RINGKV_CONTRACT_SECS={secs}; whole history in {})\n",
        violations.len(),
        file.display()
    );
    // Each key's first violation, by history index (the final state's after every request).
    let mut keys: BTreeMap<(String, String), usize> = BTreeMap::new();
    for v in violations.iter().take(30) {
        let op = v.op.map(|i| all[i].clone()).unwrap_or("final state".into());
        report.push_str(&format!("{}/{}: {}\n    {op}\n", v.bucket, v.key, v.what));
        let first = keys
            .entry((v.bucket.clone(), v.key.clone()))
            .or_insert(usize::MAX);
        *first = (*first).min(v.op.unwrap_or(ops.len()));
    }
    for ((bucket, key), first) in keys.iter().take(3) {
        // The key's requests from 50 before its first violation, at most 300.
        report.push_str(&format!(
            "history of {bucket}/{key} around its first violation:\n"
        ));
        let lines: Vec<(usize, &String)> = ops
            .iter()
            .zip(&all)
            .enumerate()
            .filter(|(_, (op, _))| op.bucket == *bucket && op.key == *key)
            .map(|(i, (_, line))| (i, line))
            .collect();
        let at = lines
            .iter()
            .position(|(i, _)| i >= first)
            .unwrap_or(lines.len());
        for (_, line) in lines.iter().skip(at.saturating_sub(50)).take(300) {
            report.push_str(&format!("  {line}\n"));
        }
        if let Some(state) = finals.get(&(bucket.clone(), key.clone())) {
            report.push_str(&format!("  final: {:?}\n", state.reads));
        }
    }
    panic!("{report}");
}
