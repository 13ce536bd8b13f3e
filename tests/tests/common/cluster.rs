//! A cluster of real `ringkv server` processes on loopback ports, and raw HTTP helpers: what
//! `multiprocess.rs`, `durability.rs` and `bad_input.rs` share.
//!
//! Every process is SIGKILLed when its [`Cluster`] is dropped, passed or failed; on failure the
//! nodes' logs are printed and the temporary folder is kept.
// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use super::{free_address, ringkv_binary};

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::api::{ClusterStatus, RingDoc};
use ringkv_client::{Client, ClientConfig, ClientError, Options};
use ringkv_core::bucket::QuorumValue;
use ringkv_core::ring::{key_position, partition_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Fast timings so that detection, hand-off and anti-entropy happen within seconds.
pub const CONFIG: &str = "\
partitions = 64
gossip_interval_ms = 100
hint_delivery_interval_ms = 200
anti_entropy_interval_ms = 300
request_timeout_ms = 2000
[bucket]
n = 3
r = \"2\"
w = \"2\"
";

/// Deadline of every wait for convergence (never an assertion about speed).
pub const CONVERGE: Duration = Duration::from_secs(60);

pub fn all() -> Options {
    Options {
        r: Some(QuorumValue::All),
        ..Options::default()
    }
}

pub fn sorted(values: &[Bytes]) -> Vec<Bytes> {
    let mut values = values.to_vec();
    values.sort();
    values
}

/// One `ringkv server` process (and what it needs to be started again).
pub struct NodeProc {
    pub id: String,
    pub http: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub seed: Option<String>,
    /// More `ringkv server` flags.
    pub args: Vec<String>,
    pub child: Option<Child>,
}

/// Real server processes sharing one temporary folder.
pub struct Cluster {
    pub dir: Option<tempfile::TempDir>,
    pub config: PathBuf,
    pub nodes: Vec<NodeProc>,
}

impl Cluster {
    /// Starts `count` nodes (`n1` founds the cluster, the others join through it) and waits
    /// until the ring has settled.
    pub async fn start(count: usize) -> Cluster {
        Cluster::start_with(count, CONFIG, |_| {}).await
    }

    /// [`Cluster::start`] with another configuration file, and `customize` called on each node
    /// before it is first started (to move its data folder, say).
    pub async fn start_with(
        count: usize,
        config: &str,
        mut customize: impl FnMut(&mut NodeProc),
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary folder");
        let config_path = dir.path().join("ringkv.toml");
        std::fs::write(&config_path, config).expect("config written");
        let mut cluster = Cluster {
            dir: Some(dir),
            config: config_path,
            nodes: Vec::new(),
        };
        cluster.add(None);
        customize(&mut cluster.nodes[0]);
        cluster.spawn(0);
        cluster.wait_healthy(0).await;
        let seed = cluster.nodes[0].peer.to_string();
        for _ in 1..count {
            let i = cluster.add(Some(seed.clone()));
            customize(&mut cluster.nodes[i]);
            cluster.spawn(i);
        }
        for i in 1..count {
            cluster.wait_healthy(i).await;
        }
        cluster.wait_settled(&(0..count).collect::<Vec<_>>()).await;
        cluster
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("temporary folder").path()
    }

    /// Describes node `n{len+1}` (fresh ports and data folder) without starting it.
    pub fn add(&mut self, seed: Option<String>) -> usize {
        let id = format!("n{}", self.nodes.len() + 1);
        let node = NodeProc {
            http: free_address(),
            peer: free_address(),
            data_dir: self.path().join(&id),
            log: self.path().join(format!("{id}.log")),
            seed,
            args: Vec::new(),
            child: None,
            id,
        };
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Starts node `i`'s process (same id, ports, data folder and seed every time).
    pub fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is already running", node.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let mut command = Command::new(ringkv_binary());
        command
            .args(["server", "--node-id", &node.id, "--config"])
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args([
                "--listen",
                &node.http.to_string(),
                "--peer-listen",
                &node.peer.to_string(),
                // A SIGTERM here tests a restart, not a load balancer: no not-ready period first.
                "--shutdown-delay-ms",
                "0",
            ]);
        if let Some(seed) = &node.seed {
            command.args(["--seed", seed]);
        }
        command.args(&node.args);
        let child = command
            .env("RINGKV_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("ringkv server starts");
        node.child = Some(child);
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait (at most 30 s) for a clean exit: redb's file is closed cleanly, so the
    /// next open does not run its crash recovery (which verifies redb's page checksums).
    pub fn stop(&mut self, i: usize) {
        let Some(mut child) = self.nodes[i].child.take() else {
            return;
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {}", self.nodes[i].id);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(exit)) = child.try_wait() {
                assert!(exit.success(), "{} exited with {exit}", self.nodes[i].id);
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within 30 s of SIGTERM", self.nodes[i].id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: node `i` keeps its sockets but stops answering (a connection to it is accepted
    /// by the kernel and then hangs) until [`Cluster::resume`].
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// SIGCONT: node `i`, paused, runs again.
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid(i).to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {}", self.nodes[i].id);
    }

    /// The process id of node `i` (running).
    pub fn pid(&self, i: usize) -> u32 {
        self.nodes[i].child.as_ref().expect("running").id()
    }

    /// Node `i`'s database file.
    pub fn db_file(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.join("ringkv.redb")
    }

    /// Deletes node `i`'s data folder (it must be stopped).
    pub fn wipe(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none());
        std::fs::remove_dir_all(&self.nodes[i].data_dir).expect("data folder removed");
    }

    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.nodes[i].http)
    }

    /// A client of nodes `which` that routes by the ring (re-read every second).
    pub fn client(&self, which: &[usize]) -> Client {
        self.make_client(which, Duration::from_secs(1))
    }

    /// A client that sends every request to nodes `which` only (no ring routing).
    pub fn pinned_client(&self, which: &[usize]) -> Client {
        self.make_client(which, Duration::ZERO)
    }

    pub fn make_client(&self, which: &[usize], ring_refresh: Duration) -> Client {
        Client::new(ClientConfig {
            nodes: which.iter().map(|&i| self.url(i)).collect(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            ring_refresh,
            ..ClientConfig::default()
        })
        .expect("client")
    }

    /// Panics if a node that should be running has exited.
    pub fn assert_running(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                if let Ok(Some(exit)) = child.try_wait() {
                    node.child = None;
                    panic!("{} exited unexpectedly: {exit}", node.id);
                }
            }
        }
    }

    /// Waits until node `i` answers `/health` with a ring.
    pub async fn wait_healthy(&mut self, i: usize) {
        let client = self.pinned_client(&[i]);
        let url = self.url(i);
        let deadline = Instant::now() + CONVERGE;
        loop {
            self.assert_running();
            if let Ok(health) = client.health(&url).await {
                if health.status == "ok" {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{url} not healthy in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn status(&self, i: usize) -> Result<ClusterStatus, ClientError> {
        self.pinned_client(&[i])
            .cluster_status(Some(&self.url(i)))
            .await
    }

    /// Waits until every node of `members` reports the same ring, in which exactly `members`
    /// own partitions, every one of them `up` and alive, and nothing moving. Other members of
    /// the view may only be `removed`.
    pub async fn wait_settled(&mut self, members: &[usize]) {
        let expected: BTreeSet<String> =
            members.iter().map(|&i| self.nodes[i].id.clone()).collect();
        let deadline = Instant::now() + CONVERGE;
        loop {
            self.assert_running();
            let mut last = Vec::new();
            let mut settled = true;
            let mut versions = BTreeSet::new();
            for &i in members {
                match self.status(i).await {
                    Ok(status) => {
                        versions.insert(status.ring_version);
                        settled &= status.ring_version.is_some() && status.transfers_pending == 0;
                        for member in &status.members {
                            if expected.contains(&member.id) {
                                settled &=
                                    member.status == "up" && member.alive && member.partitions > 0;
                            } else {
                                settled &= member.status == "removed" && member.partitions == 0;
                            }
                        }
                        let seen: BTreeSet<&String> =
                            status.members.iter().map(|m| &m.id).collect();
                        settled &= expected.iter().all(|id| seen.contains(id));
                        last.push(status);
                    }
                    Err(error) => {
                        settled = false;
                        last.push(ClusterStatus {
                            cluster: format!("error: {error}"),
                            node: self.nodes[i].id.clone(),
                            claimant: None,
                            ring_version: None,
                            members: Vec::new(),
                            hints_pending: 0,
                            transfers_pending: 0,
                            in_flight: 0,
                            buckets: Vec::new(),
                            merkle_roots: Default::default(),
                        })
                    }
                }
            }
            if settled && versions.len() == 1 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the ring of {expected:?} did not settle in time; last views: {last:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `i`'s view says member `id` is drained (left, everything handed over).
    pub async fn wait_drained(&mut self, i: usize, id: &str) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let status = self.status(i).await;
            let member = status
                .as_ref()
                .ok()
                .and_then(|s| s.members.iter().find(|m| m.id == id));
            if member.is_some_and(|m| m.drained) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} not drained after {CONVERGE:?}: {member:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (at most [`CONVERGE`]) for node `i`'s process to exit by itself, and returns how.
    pub async fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        let deadline = Instant::now() + CONVERGE;
        let mut child = self.nodes[i].child.take().expect("running");
        loop {
            if let Ok(Some(exit)) = child.try_wait() {
                return exit;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit by itself within {CONVERGE:?}",
                    self.nodes[i].id
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until no node of `which` holds a hint.
    pub async fn wait_hints_drained(&mut self, which: &[usize]) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            self.assert_running();
            let mut pending = BTreeMap::new();
            for &i in which {
                let hints = match self.status(i).await {
                    Ok(status) => status.hints_pending,
                    Err(_) => u64::MAX,
                };
                if hints > 0 {
                    pending.insert(self.nodes[i].id.clone(), hints);
                }
            }
            if pending.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hints still pending after {CONVERGE:?}: {pending:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A counter or gauge of node `i`'s `/metrics` (summed over its label sets).
    pub async fn metric(&self, i: usize, name: &str) -> f64 {
        let answer = raw_http(
            self.nodes[i].http,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        String::from_utf8_lossy(&answer.body)
            .lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "----- {} ({}) log, last 200 lines -----",
                    node.id,
                    node.log.display()
                );
                if let Ok(file) = std::fs::File::open(&node.log) {
                    let lines: Vec<String> =
                        BufReader::new(file).lines().map_while(Result::ok).collect();
                    for line in &lines[lines.len().saturating_sub(200)..] {
                        eprintln!("{line}");
                    }
                }
            }
            if let Some(dir) = self.dir.take() {
                eprintln!("kept the cluster's folder: {}", dir.keep().display());
            }
        }
    }
}

/// Whether each node is up, with a generation that every fault and every recovery bumps: a
/// request whose node was up, in the same generation, before it was sent and after its answer
/// was served by a node that was up throughout.
pub struct Liveness(Mutex<Vec<(bool, u64)>>);

impl Liveness {
    /// `count` nodes, all up.
    pub fn new(count: usize) -> Liveness {
        Liveness(Mutex::new(vec![(true, 0); count]))
    }

    pub fn get(&self, i: usize) -> (bool, u64) {
        self.0.lock().unwrap()[i]
    }

    pub fn set(&self, i: usize, up: bool) {
        let mut nodes = self.0.lock().unwrap();
        nodes[i] = (up, nodes[i].1 + 1);
    }
}

/// An HTTP answer read off a raw connection.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn kind(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("kind")?.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Sends `request` as is on a new connection and reads until the server closes it.
pub async fn raw_exchange(address: SocketAddr, request: &[u8]) -> Vec<u8> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
        stream.write_all(request).await?;
        let mut answer = Vec::new();
        // A reset after the answer (the server closing with our bytes unread) ends it too.
        let mut buffer = [0u8; 8192];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                Err(_) if !answer.is_empty() => break,
                Err(error) => return Err(error),
            }
        }
        std::io::Result::Ok(answer)
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the server answers and closes within 30 s")
        .expect("raw exchange")
}

/// Why a request got no whole HTTP answer.
#[derive(Debug)]
pub enum NoAnswer {
    /// The connection was refused (or could not be made): nothing was sent.
    Refused(std::io::Error),
    /// The request was sent, at least in part, and the connection broke, or closed before a
    /// whole answer (one cut short of its `Content-Length` included).
    Broken(String),
    /// No whole answer within the time limit.
    TimedOut,
}

/// [`raw_http`] for requests that may fail: to a node that is down or paused, say. An answer
/// counts only when whole: its head parsed and its body as long as its `Content-Length` (for
/// the answer to a HEAD, which has no body, pass `head`).
pub async fn try_raw_http(
    address: SocketAddr,
    request: &[u8],
    head: bool,
    limit: Duration,
) -> Result<RawAnswer, NoAnswer> {
    let exchange = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(NoAnswer::Refused)?;
        let broken = |error: std::io::Error| NoAnswer::Broken(error.to_string());
        stream.write_all(request).await.map_err(broken)?;
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buffer[..n]),
                // A reset after a whole answer ends it too (checked below).
                Err(_) if !bytes.is_empty() => break,
                Err(error) => return Err(broken(error)),
            }
        }
        let answer = parse_answer(&bytes).ok_or_else(|| {
            NoAnswer::Broken(format!(
                "not a whole HTTP answer: {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        let length = answer
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok());
        if let Some(length) = length.filter(|_| !head) {
            if answer.body.len() != length {
                return Err(NoAnswer::Broken(format!(
                    "a body of {} bytes, not its Content-Length of {length}",
                    answer.body.len()
                )));
            }
        }
        Ok(answer)
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or(Err(NoAnswer::TimedOut))
}

/// Sends `bytes` to a peer port and waits until the node closes the connection (reset or not).
pub async fn until_closed(address: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(address)
        .await
        .expect("the peer port accepts");
    let exchange = async {
        stream.write_all(bytes).await?;
        let mut buffer = [0u8; 8192];
        while stream.read(&mut buffer).await? > 0 {}
        std::io::Result::Ok(())
    };
    // An error (reset, broken pipe) closes the connection as much as an end of stream does.
    let _ = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the node closes the connection within 30 s");
}

/// One HTTP/1.1 request (which should say `Connection: close`), its answer parsed.
pub async fn raw_http(address: SocketAddr, request: &[u8]) -> RawAnswer {
    let bytes = raw_exchange(address, request).await;
    parse_answer(&bytes).unwrap_or_else(|| {
        panic!(
            "not an HTTP answer to {:?}: {:?}",
            String::from_utf8_lossy(&request[..request.len().min(200)]),
            String::from_utf8_lossy(&bytes)
        )
    })
}

pub fn parse_answer(bytes: &[u8]) -> Option<RawAnswer> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16)
                    .ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = decoded;
    }
    Some(RawAnswer {
        status,
        headers,
        body,
    })
}

pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: ringkv\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A request with `Connection: close` and an optional body (sent with its `Content-Length`).
pub fn request(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: ringkv\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    bytes
}

/// Node `i` still serves: healthy, and a write and a read through it succeed.
pub async fn assert_serves(cluster: &Cluster, i: usize, round: &str) {
    let client = cluster.pinned_client(&[i]);
    let health = client.health(&cluster.url(i)).await.expect("health");
    assert_eq!(health.status, "ok", "after {round}");
    let key = format!("alive-{round}");
    client
        .put(
            b"b",
            key.as_bytes(),
            None,
            Bytes::from(key.clone()),
            &Options::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("a put after {round}: {e}"));
    let read = client
        .get(b"b", key.as_bytes(), &Options::default())
        .await
        .unwrap_or_else(|e| panic!("a get after {round}: {e}"));
    assert_eq!(read.values, vec![Bytes::from(key)], "after {round}");
}

/// A failed write: its key, the node it was sent to, when, and the error.
pub struct FailedWrite {
    pub key: String,
    pub coordinator: usize,
    pub sent: Instant,
    pub error: ClientError,
}

/// What the writers of a load saw.
#[derive(Default)]
pub struct WriteLog {
    pub acked: Vec<(String, Bytes)>,
    pub failed: Vec<FailedWrite>,
    pub with_fallbacks: u64,
}

/// One writer per node of `coordinators` (each pinned to it), putting distinct keys
/// `{prefix}{node}-{i}` with `options` until `stop` is set.
pub fn write_load(
    cluster: &Cluster,
    coordinators: &[usize],
    prefix: &str,
    options: &Options,
    stop: &Arc<AtomicBool>,
    log: &Arc<Mutex<WriteLog>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    coordinators
        .iter()
        .map(|&coordinator| {
            let client = cluster.pinned_client(&[coordinator]);
            let stop = stop.clone();
            let log = log.clone();
            let options = options.clone();
            let prefix = format!("{prefix}{}-", coordinator + 1);
            tokio::spawn(async move {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}{i}");
                    i += 1;
                    let value = Bytes::from(format!("value of {key}"));
                    let sent = Instant::now();
                    let result = client
                        .put(b"load", key.as_bytes(), None, value.clone(), &options)
                        .await;
                    let mut log = log.lock().unwrap();
                    match result {
                        Ok(written) => {
                            if !written.fallbacks.is_empty() {
                                log.with_fallbacks += 1;
                            }
                            log.acked.push((key, value));
                        }
                        Err(error) => log.failed.push(FailedWrite {
                            key,
                            coordinator,
                            sent,
                            error,
                        }),
                    }
                }
            })
        })
        .collect()
}

/// Reads every key with `r=all` (through `client`, 4 at a time) and returns the ones whose
/// value is not the expected one, with what was read.
pub async fn mismatches(
    client: &Client,
    bucket: &[u8],
    expected: &[(String, Vec<Bytes>)],
) -> Vec<String> {
    let expected = Arc::new(expected.to_vec());
    let bucket = Arc::new(bucket.to_vec());
    let next = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (client, expected, next, bucket) = (
            client.clone(),
            expected.clone(),
            next.clone(),
            bucket.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut wrong = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((key, values)) = expected.get(index) else {
                    return wrong;
                };
                match client.get(&bucket, key.as_bytes(), &all()).await {
                    Ok(read) if sorted(&read.values) == sorted(values) => {}
                    Ok(read) => wrong.push(format!(
                        "{key}: expected {values:?}, read {:?}",
                        read.values
                    )),
                    Err(error) => wrong.push(format!("{key}: {error}")),
                }
            }
        }));
    }
    let mut wrong = Vec::new();
    for reader in readers {
        wrong.extend(reader.await.unwrap());
    }
    wrong
}

/// The ids of `bucket`/`key`'s preference list (N = target_n = 3), owner first.
pub fn owners(ring: &RingDoc, bucket: &[u8], key: &[u8]) -> Vec<String> {
    let partition = partition_of(key_position(bucket, key), ring.partition_count);
    ring.partitions[partition.0 as usize].replicas.clone()
}
