//! A cluster of real `ringkv server` processes, one per Linux network namespace, joined by veth
//! pairs to a bridge, with the faults Jepsen injects: partitions (full, one-way, a node isolated
//! from all), random packet loss, and process faults (`kill -9`, `SIGSTOP`/`SIGCONT`, restart).
//!
//! Needs root and iproute2 + iptables; [`NetCluster::unavailable`] says why it cannot run, so a
//! test can skip with a clear message. Every namespace, link and process is removed when the
//! cluster is dropped, also when a test panics; namespaces left by a run that was killed are
//! swept by the next one.
//!
//! Addressing: the bridge (in the test's own namespace, where the clients run) is `10.R.S.1`,
//! node `i` is `10.R.S.(10 + i)`, with the same ports in every namespace. Faults are iptables
//! rules on the nodes' INPUT chains that match peers' addresses only, so clients always reach
//! every node, as in Jepsen: a partitioned node still takes requests.

use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringkv_client::{Client, ClientConfig};

/// HTTP port of every node (each in its own namespace).
pub const HTTP_PORT: u16 = 8087;
/// Peer port of every node.
pub const PEER_PORT: u16 = 7087;
/// Port of node `i`'s delaying proxy on the bridge address: this plus `i`.
const PROXY_BASE_PORT: u16 = 9100;
/// Names of everything this harness creates start with this.
const PREFIX: &str = "rkv";

/// A failure of the harness itself (not of the system under test).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A setup or fault command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and error output.
        detail: String,
    },
    /// A file could not be written or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs a command and fails with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> Result<(), HarnessError> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Command {
            command: format!("{program} {}", args.join(" ")),
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// One node: its namespace, address, data and process.
#[derive(Debug)]
pub struct NetNode {
    /// Node id (`n1`, `n2`, ...).
    pub id: String,
    /// Its network namespace.
    pub namespace: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
    /// Data folder.
    pub data_dir: PathBuf,
    /// Log file (stdout and stderr of every run).
    pub log: PathBuf,
    /// Peer address of the seed it joins through (`None` for the founder).
    seed: Option<String>,
    /// The running process, if any.
    child: Option<Child>,
    /// Whether the process is stopped with SIGSTOP.
    paused: bool,
    /// The peer address it advertises, when not its own (a proxy).
    advertise: Option<SocketAddr>,
}

impl NetNode {
    /// Base URL of its HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}:{HTTP_PORT}", self.ip)
    }

    /// Its peer address.
    pub fn peer_address(&self) -> SocketAddr {
        SocketAddr::from((self.ip, PEER_PORT))
    }

    /// Whether the process runs (it may be paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is stopped with SIGSTOP.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn pid(&self) -> Option<String> {
        self.child.as_ref().map(|c| c.id().to_string())
    }
}

/// The cluster, its network and its temporary folder.
pub struct NetCluster {
    /// Name prefix of this run's namespaces and links (holds the process id).
    tag: String,
    bridge: String,
    subnet: (u8, u8),
    dir: Option<tempfile::TempDir>,
    config: PathBuf,
    binary: PathBuf,
    /// The nodes.
    pub nodes: Vec<NetNode>,
    /// Whether to keep the temporary folder (set when the run failed, for the logs).
    keep_files: bool,
    /// Delaying proxies in front of every node's peer port, when the cluster has them.
    proxies: Vec<DelayProxy>,
}

/// Delay added to every chunk of peer traffic by [`DelayProxy`], drawn uniformly per chunk.
#[derive(Clone, Copy, Debug)]
pub struct LinkDelay {
    /// Least delay.
    pub min: Duration,
    /// Greatest delay.
    pub max: Duration,
}

impl NetCluster {
    /// Why this machine cannot run the harness, if it cannot (probed once per process: tests
    /// running side by side would otherwise race on the probe's namespace).
    pub fn unavailable() -> Option<String> {
        static PROBED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        PROBED.get_or_init(Self::probe).clone()
    }

    fn probe() -> Option<String> {
        let uid = output("id", &["-u"]);
        if uid.trim() != "0" {
            return Some(format!(
                "needs root for network namespaces (running as uid {})",
                uid.trim()
            ));
        }
        for (tool, args) in [("ip", &["-V"][..]), ("iptables", &["--version"][..])] {
            if Command::new(tool).args(args).output().is_err() {
                return Some(format!("needs `{tool}` (iproute2 and iptables)"));
            }
        }
        // A namespace can be made and can hold an iptables rule (the kernel may lack netfilter).
        let probe = format!("{PREFIX}probe{}", std::process::id());
        let probed = run("ip", &["netns", "add", &probe]).and_then(|_| {
            run(
                "ip",
                &[
                    "netns", "exec", &probe, "iptables", "-w", "-A", "INPUT", "-j", "ACCEPT",
                ],
            )
        });
        let _ = run("ip", &["netns", "del", &probe]);
        probed
            .err()
            .map(|error| format!("cannot make a network namespace with iptables rules: {error}"))
    }

    /// Creates the network and starts `count` nodes with the server configuration `config`
    /// (TOML; node id, folders and addresses are set here). `n1` founds the cluster and the
    /// others join through it. Returns once every node answers `/health`; call
    /// [`NetCluster::wait_settled`] to wait for the ring.
    pub async fn start(
        binary: &Path,
        count: usize,
        config: &str,
    ) -> Result<NetCluster, HarnessError> {
        Self::start_with(binary, count, config, None).await
    }

    /// [`NetCluster::start`], with every peer link going through a [`DelayProxy`] that adds
    /// `delay` when given: each node advertises its proxy as its peer address. (Proxied traffic
    /// reaches a node from the bridge's address, so iptables faults do not apply to it; process
    /// faults do.)
    pub async fn start_with(
        binary: &Path,
        count: usize,
        config: &str,
        delay: Option<LinkDelay>,
    ) -> Result<NetCluster, HarnessError> {
        sweep_leftovers();
        let pid = std::process::id();
        let tag = format!("{PREFIX}{pid}");
        let subnet = (222, (pid % 250) as u8);
        let dir = tempfile::Builder::new().prefix("ringkv-netns").tempdir()?;
        let config_path = dir.path().join("ringkv.toml");
        std::fs::write(&config_path, config)?;
        let mut cluster = NetCluster {
            bridge: format!("{tag}br"),
            tag,
            subnet,
            config: config_path,
            binary: binary.to_path_buf(),
            dir: Some(dir),
            nodes: Vec::new(),
            keep_files: false,
            proxies: Vec::new(),
        };
        cluster.create_bridge()?;
        for i in 1..=count {
            cluster.add_node(i)?;
        }
        if let Some(delay) = delay {
            for i in 0..count {
                let listen = SocketAddr::from((cluster.gateway(), PROXY_BASE_PORT + i as u16));
                let target = cluster.nodes[i].peer_address();
                let proxy = DelayProxy::start(listen, target, delay, i as u64 + 1).await?;
                cluster.nodes[i].advertise = Some(listen);
                cluster.proxies.push(proxy);
            }
        }
        cluster.spawn(0)?;
        cluster.wait_healthy(0, Duration::from_secs(60)).await?;
        for i in 1..count {
            cluster.spawn(i)?;
        }
        for i in 1..count {
            cluster.wait_healthy(i, Duration::from_secs(60)).await?;
        }
        Ok(cluster)
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, 1)
    }

    fn create_bridge(&mut self) -> Result<(), HarnessError> {
        run("ip", &["link", "add", &self.bridge, "type", "bridge"])?;
        let address = format!("{}/24", self.gateway());
        run("ip", &["addr", "add", &address, "dev", &self.bridge])?;
        run("ip", &["link", "set", &self.bridge, "up"])
    }

    fn add_node(&mut self, i: usize) -> Result<(), HarnessError> {
        let id = format!("n{i}");
        let namespace = format!("{}n{i}", self.tag);
        let veth = format!("{}v{i}", self.tag);
        let ip = Ipv4Addr::new(10, self.subnet.0, self.subnet.1, 10 + i as u8);
        // Known before it exists, so that teardown removes it even if a later step fails.
        let path = self.path().to_path_buf();
        let seed = self.nodes.first().map(|n| n.peer_address().to_string());
        self.nodes.push(NetNode {
            data_dir: path.join(&id),
            log: path.join(format!("{id}.log")),
            id,
            namespace: namespace.clone(),
            ip,
            seed,
            child: None,
            paused: false,
            advertise: None,
        });
        run("ip", &["netns", "add", &namespace])?;
        run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
            ],
        )?;
        run("ip", &["link", "set", &veth, "master", &self.bridge, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &namespace];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        in_ns(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        in_ns(&["ip", "link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// The temporary folder holding the configuration, data folders and logs.
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(tempfile::TempDir::path)
            .unwrap_or_else(|| Path::new("/nonexistent"))
    }

    /// Starts node `i`'s process (same id, address, data and seed every time).
    pub fn spawn(&mut self, i: usize) -> Result<(), HarnessError> {
        let node = &self.nodes[i];
        if node.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let http = format!("{}:{HTTP_PORT}", node.ip);
        let peer = node.peer_address().to_string();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &node.namespace])
            .arg(&self.binary)
            .args(["server", "--node-id", &node.id, "--config"])
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &http, "--peer-listen", &peer])
            // A SIGTERM here tests a restart, not a load balancer: no not-ready period first.
            .args(["--shutdown-delay-ms", "0"]);
        if let Some(seed) = &node.seed {
            command.args(["--seed", seed]);
        }
        if let Some(advertise) = node.advertise {
            command.args(["--peer-advertise", &advertise.to_string()]);
        }
        // `ip netns exec` execs the server, so the child's pid is the server's.
        let child = command
            .env("RINGKV_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let node = &mut self.nodes[i];
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// `kill -9` node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGTERM node `i` and wait (up to 30 s, then SIGKILL) for it to exit, without holding up
    /// the clients' tasks.
    pub async fn terminate(&mut self, i: usize) {
        self.resume(i);
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = run("kill", &["-TERM", &child.id().to_string()]);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP node `i` (a long GC pause, a VM migration).
    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            if run("kill", &["-STOP", &pid]).is_ok() {
                self.nodes[i].paused = true;
            }
        }
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            let _ = run("kill", &["-CONT", &pid]);
        }
        self.nodes[i].paused = false;
    }

    /// Returns the ids of nodes that should run but have exited on their own (a crash).
    pub fn exited(&mut self) -> Vec<String> {
        let mut exited = Vec::new();
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                if let Ok(Some(status)) = child.try_wait() {
                    exited.push(format!("{} ({status})", node.id));
                    node.child = None;
                }
            }
        }
        exited
    }

    fn iptables(&self, i: usize, args: &[&str]) -> Result<(), HarnessError> {
        let mut all = vec!["netns", "exec", &self.nodes[i].namespace, "iptables", "-w"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Node `to` stops receiving anything from node `from` (a one-way cut; TCP then fails both
    /// ways on that pair, as acknowledgements are lost too, but the node sending first differs).
    pub fn cut(&self, from: usize, to: usize) -> Result<(), HarnessError> {
        let source = self.nodes[from].ip.to_string();
        self.iptables(to, &["-A", "INPUT", "-s", &source, "-j", "DROP"])
    }

    /// Splits the nodes into `groups` that cannot reach each other.
    pub fn partition(&self, groups: &[Vec<usize>]) -> Result<(), HarnessError> {
        for (g, group) in groups.iter().enumerate() {
            for (h, other) in groups.iter().enumerate() {
                if g != h {
                    for &a in group {
                        for &b in other {
                            self.cut(a, b)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Node `i` can reach no peer and no peer can reach it (clients still can).
    pub fn isolate(&self, i: usize) -> Result<(), HarnessError> {
        let others: Vec<usize> = (0..self.nodes.len()).filter(|&j| j != i).collect();
        self.partition(&[vec![i], others])
    }

    /// Every node drops each packet from its peers with probability `p`.
    pub fn lose(&self, p: f64) -> Result<(), HarnessError> {
        let probability = format!("{p}");
        for i in 0..self.nodes.len() {
            for j in (0..self.nodes.len()).filter(|&j| j != i) {
                let source = self.nodes[j].ip.to_string();
                self.iptables(
                    i,
                    &[
                        "-A",
                        "INPUT",
                        "-s",
                        &source,
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &probability,
                        "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Removes every network fault.
    pub fn heal(&self) -> Result<(), HarnessError> {
        for i in 0..self.nodes.len() {
            self.iptables(i, &["-F", "INPUT"])?;
        }
        Ok(())
    }

    /// A client that sends every request to node `i` only (no routing by the ring), as a
    /// Jepsen client bound to one node.
    pub fn client(&self, i: usize, request_timeout: Duration) -> Client {
        Client::new(ClientConfig {
            nodes: vec![self.nodes[i].url()],
            request_timeout,
            connect_timeout: Duration::from_secs(1),
            ring_refresh: Duration::ZERO,
            ..ClientConfig::default()
        })
        .expect("a client of a valid URL")
    }

    /// Waits until node `i` answers `/health` with a ring.
    pub async fn wait_healthy(&mut self, i: usize, within: Duration) -> Result<(), HarnessError> {
        let client = self.client(i, Duration::from_secs(2));
        let url = self.nodes[i].url();
        let deadline = Instant::now() + within;
        loop {
            if let Some(exited) = self.exited().first() {
                return Err(harness_failure("start", format!("{exited} exited")));
            }
            if matches!(client.health(&url).await, Ok(h) if h.status == "ok") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(harness_failure(
                    "wait",
                    format!("{url} not healthy in time"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every node reports the same ring version, with every node up, alive in every
    /// other's view and nothing moving. Returns the time it took.
    pub async fn wait_settled(&mut self, within: Duration) -> Result<Duration, HarnessError> {
        let started = Instant::now();
        loop {
            let mut versions = std::collections::BTreeSet::new();
            let mut settled = true;
            for i in 0..self.nodes.len() {
                let client = self.client(i, Duration::from_secs(2));
                match client.cluster_status(Some(&self.nodes[i].url())).await {
                    Ok(status) => {
                        versions.insert(status.ring_version);
                        settled &= status.transfers_pending == 0
                            && status.members.len() == self.nodes.len()
                            && status.members.iter().all(|m| m.alive && m.status == "up");
                    }
                    Err(_) => settled = false,
                }
            }
            if settled && versions.len() == 1 {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                return Err(harness_failure(
                    "wait",
                    format!("the ring did not settle within {within:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Each node's `/cluster` document, by node index (`None` if it did not answer).
    pub async fn statuses(&self) -> Vec<Option<ringkv_client::api::ClusterStatus>> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let client = self.client(i, Duration::from_secs(5));
            out.push(client.cluster_status(Some(&node.url())).await.ok());
        }
        out
    }

    /// Node index by id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Keeps the temporary folder after the cluster is dropped (for its logs) and returns it.
    pub fn keep(&mut self) -> PathBuf {
        self.keep_files = true;
        self.path().to_path_buf()
    }

    /// The last `lines` lines of every node's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("----- {} ({})\n", node.id, node.log.display()));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Removes processes, namespaces and links.
    fn teardown(&mut self) {
        self.proxies.clear();
        for i in 0..self.nodes.len() {
            self.resume(i);
            self.kill(i);
        }
        for node in &self.nodes {
            let _ = run("ip", &["netns", "del", &node.namespace]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        if self.keep_files {
            if let Some(dir) = self.dir.take() {
                let _ = dir.keep();
            }
        }
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn harness_failure(command: &str, detail: String) -> HarnessError {
    HarnessError::Command {
        command: command.to_string(),
        detail,
    }
}

/// Deletes namespaces and bridges of earlier runs whose process is gone (a run killed before its
/// cleanup ran), so they neither pile up nor hold addresses.
fn sweep_leftovers() {
    let dead_tag = |name: &str| -> Option<String> {
        let rest = name.strip_prefix(PREFIX)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let pid: u32 = digits.parse().ok()?;
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        (!alive).then(|| format!("{PREFIX}{digits}"))
    };
    for line in output("ip", &["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if dead_tag(name).is_some() {
            // Servers a killed run left behind would go on loading the machine.
            for pid in output("ip", &["netns", "pids", name]).split_whitespace() {
                let _ = run("kill", &["-CONT", pid]);
                let _ = run("kill", &["-KILL", pid]);
            }
            let _ = run("ip", &["netns", "del", name]);
        }
    }
    for line in output("ip", &["-o", "link", "show", "type", "bridge"]).lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        if dead_tag(name).is_some() {
            let _ = run("ip", &["link", "del", name]);
        }
    }
}

/// A TCP proxy that delays every chunk it forwards by a random time in a range. Order within a
/// connection is kept (TCP's promise); messages on different links overtake each other, which is
/// the reordering a peer sees. The kernel here has no netem, so delay comes from user space.
pub struct DelayProxy {
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    /// Listens on `listen` and forwards every connection to `target`.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        delay: LinkDelay,
        seed: u64,
    ) -> Result<DelayProxy, HarnessError> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let task = tokio::spawn(async move {
            let mut connection = 0u64;
            while let Ok((inbound, _)) = listener.accept().await {
                connection += 1;
                let seed = seed.wrapping_mul(1_000_003).wrapping_add(connection);
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    let forward = delayed_copy(in_read, out_write, delay, seed);
                    let backward = delayed_copy(out_read, in_write, delay, seed ^ 0x5555);
                    // When either direction ends, both do (the connection is gone).
                    tokio::select! {
                        _ = forward => {}
                        _ = backward => {}
                    }
                });
            }
        });
        Ok(DelayProxy { task })
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, each chunk delivered at `max(previous delivery, arrival + delay)`.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: LinkDelay,
    seed: u64,
) {
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(256);
    let reader = async move {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut last = tokio::time::Instant::now();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            let extra = rng.gen_range(delay.min..=delay.max);
            last = last.max(tokio::time::Instant::now() + extra);
            if sender.send((last, buffer[..read].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}
