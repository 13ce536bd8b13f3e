//! Running `ringkv` as an operator does: the real binary under a systemd-style
//! `$NOTIFY_SOCKET`, its probes through a SIGTERM, JSON logs, and the CLI as scripts use it
//! (`--output json`, one-line errors, completions, `probe`).
//!
//! Needs the `ringkv` binary next to the test executable's folder (`scripts/test` builds it first).
mod common;

use common::{free_address, ringkv_binary};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringkv_client::{api, Client, ClientConfig};
use serde_json::Value;

/// Generous bound on anything a test waits for.
const DEADLINE: Duration = Duration::from_secs(60);

struct Server {
    child: Child,
    http: SocketAddr,
    /// Every stderr line so far (a thread keeps reading them).
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}", self.http)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a single-node `ringkv server` with JSON logs, telling `notify` (if any) its state,
/// and serving `shutdown_delay_ms` not ready after a SIGTERM.
fn start(dir: &Path, notify: Option<&Path>, shutdown_delay_ms: u64) -> Server {
    let config = dir.join("ringkv.toml");
    std::fs::write(
        &config,
        "partitions = 16\ntarget_n = 1\n[bucket]\nn = 1\nr = \"1\"\nw = \"1\"\n",
    )
    .expect("config written");
    let http = free_address();
    let mut command = Command::new(ringkv_binary());
    command
        .args(["--log-format", "json", "server", "--node-id", "solo"])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", &http.to_string()])
        .args(["--peer-listen", &free_address().to_string()])
        .args(["--shutdown-delay-ms", &shutdown_delay_ms.to_string()])
        .env("RUST_LOG", "info")
        .env_remove("RINGKV_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(socket) = notify {
        command.env("NOTIFY_SOCKET", socket);
    }
    let mut child = command.spawn().expect("ringkv server starts");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let pipe = child.stderr.take().expect("stderr piped");
    let lines = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    Server {
        child,
        http,
        stderr,
    }
}

fn client() -> Client {
    Client::new(ClientConfig {
        nodes: vec!["http://127.0.0.1:1".to_string()],
        ring_refresh: Duration::ZERO,
        ..ClientConfig::default()
    })
    .unwrap()
}

/// The next datagram on `socket` (waiting at most [`DEADLINE`]).
fn receive(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buffer = [0u8; 4096];
    let length = socket.recv(&mut buffer).expect("a notification in time");
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

async fn wait_ready(client: &Client, server: &Server) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(probe) = client.probe(&server.url(), true).await {
            if probe.status == "ok" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{} never ready", server.url());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ringkv(args: &[&str]) -> Output {
    Command::new(ringkv_binary())
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RINGKV_BACKTRACE")
        .env_remove("RINGKV_NODE")
        .stdin(Stdio::null())
        .output()
        .expect("ringkv runs")
}

fn stdout_json(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notify_probes_and_json_logs_through_a_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // Long enough to see /readyz answer 503 while the node still serves; the test does not
    // wait for it to pass: the process is killed once that is seen.
    let mut server = start(dir.path(), Some(&socket_path), 30_000);
    let client = client();

    assert_eq!(receive(&socket), "READY=1");
    let live = client.probe(&server.url(), false).await.unwrap();
    assert_eq!((live.status.as_str(), live.node.as_str()), ("ok", "solo"));
    wait_ready(&client, &server).await;
    let probe = ringkv(&["probe", "--ready", "--node", &server.url()]);
    assert!(probe.status.success(), "{probe:?}");

    let term = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(receive(&socket), "STOPPING=1");
    // Not ready, still live, still serving.
    let deadline = Instant::now() + DEADLINE;
    let stopping: api::Probe = loop {
        let probe = client.probe(&server.url(), true).await.unwrap();
        if probe.status != "ok" {
            break probe;
        }
        assert!(Instant::now() < deadline, "/readyz still 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stopping.status, "not_ready");
    assert_eq!(stopping.failed, ["stopping"]);
    assert!(server.child.try_wait().unwrap().is_none(), "exited early");
    assert_eq!(
        client.probe(&server.url(), false).await.unwrap().status,
        "ok"
    );
    let probe = ringkv(&["probe", "--ready", "--node", &server.url()]);
    assert_eq!(probe.status.code(), Some(1));
    let message = String::from_utf8_lossy(&probe.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("stopping"), "{message}");

    // Every log line is a JSON object with a level and a message.
    let lines = server.stderr.lock().unwrap().clone();
    assert!(!lines.is_empty());
    for line in &lines {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
        assert!(entry["level"].is_string(), "{line}");
        assert!(entry["timestamp"].is_string(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|line| line.contains("\"message\":\"serving\"")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_without_delay_exits_cleanly_and_notify_is_optional() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), None, 0);
    wait_ready(&client(), &server).await;
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_json_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), None, 0);
    wait_ready(&client(), &server).await;
    let url = server.url();
    let node = ["--node", url.as_str(), "--output", "json"];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(node.iter())
            .map(|a| a.to_string())
            .collect()
    };
    let run = |args: Vec<String>| ringkv(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let put = stdout_json(&run(with(&["put", "b", "k", "hello"])));
    assert_eq!(put.len(), 1);
    assert_eq!(put[0]["operation"], "put");
    assert_eq!(
        (&put[0]["bucket"], &put[0]["key"]),
        (&"b".into(), &"k".into())
    );
    assert_eq!(put[0]["bytes"], 5);
    assert_eq!(put[0]["replicas"], serde_json::json!(["solo"]));
    let context = put[0]["context"].as_str().unwrap().to_string();

    let get = stdout_json(&run(with(&["get", "b", "k"])));
    assert_eq!(get[0]["found"], true);
    assert_eq!(get[0]["values"], serde_json::json!(["hello"]));
    assert_eq!(get[0]["context"].as_str(), Some(context.as_str()));

    // A binary value is base64, as the API writes bytes that are not UTF-8.
    let mut put_binary = Command::new(ringkv_binary())
        .args(with(&["put", "b", "bin"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        put_binary
            .stdin
            .take()
            .unwrap()
            .write_all(&[0xff, 0x00, 0xfe])
            .unwrap();
    }
    assert!(put_binary.wait_with_output().unwrap().status.success());
    let get = stdout_json(&run(with(&["get", "b", "bin"])));
    assert_eq!(get[0]["values"], serde_json::json!([{"base64": "/wD+"}]));

    let mget = stdout_json(&run(with(&["mget", "b", "k", "absent"])));
    assert_eq!(mget.len(), 3, "{mget:?}");
    let items: Vec<api::MgetItem> = mget[..2]
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    let found = items
        .iter()
        .find(|i| i.key == api::KeyDoc::Text("k".into()))
        .unwrap();
    assert_eq!(
        (found.status, found.values.clone()),
        (200, vec![api::base64_encode(b"hello")])
    );
    let end: api::MgetEnd = serde_json::from_value(mget[2].clone()).unwrap();
    assert!(end.unprocessed.is_empty());

    let list = stdout_json(&run(with(&["list", "b"])));
    let mut keys: Vec<api::KeyDoc> = list
        .iter()
        .flat_map(|page| {
            serde_json::from_value::<api::ListPage>(page.clone())
                .unwrap()
                .keys
        })
        .collect();
    keys.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        keys,
        [
            api::KeyDoc::Text("bin".into()),
            api::KeyDoc::Text("k".into())
        ]
    );
    assert!(list.last().unwrap()["cursor"].is_null());

    let status = stdout_json(&run(with(&["cluster", "status"])));
    let cluster: api::ClusterStatus = serde_json::from_value(status[0]["status"].clone()).unwrap();
    assert_eq!(cluster.node, "solo");
    assert!(status[0]["members"].as_object().unwrap().is_empty());

    let probe = stdout_json(&run(with(&["probe", "--ready"])));
    assert_eq!(probe[0]["status"], "ok");

    let backup_file = dir.path().join("solo.backup");
    let backup_path = backup_file.to_str().unwrap();
    let backup = stdout_json(&run(with(&["backup", "--out", backup_path])));
    assert_eq!(backup[0]["operation"], "backup");
    assert_eq!(backup[0]["records"], 2, "{backup:?}");
    assert_eq!(
        backup[0]["bytes"],
        std::fs::metadata(&backup_file).unwrap().len()
    );
    let restore = stdout_json(&run(with(&["restore", backup_path])));
    assert_eq!(
        (&restore[0]["restored"], &restore[0]["failed"]),
        (&2.into(), &0.into()),
        "{restore:?}"
    );

    let delete = stdout_json(&run(with(&["delete", "b", "k"])));
    assert_eq!(delete[0]["operation"], "delete");
    // A missing key: the document says so, and the exit code is 3.
    let missing = run(with(&["get", "b", "k"]));
    assert_eq!(missing.status.code(), Some(3));
    let document: Value = serde_json::from_slice(&missing.stdout).unwrap();
    assert_eq!(document["found"], false);
    assert!(document["context"].is_string());
}

#[test]
fn errors_are_one_line_without_a_backtrace_unless_asked() {
    // RUST_BACKTRACE=1 is set for the child (see `ringkv`); nothing listens on port 1.
    let failed = ringkv(&["get", "b", "k", "--node", "http://127.0.0.1:1"]);
    assert_eq!(failed.status.code(), Some(1));
    let message = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with("ringkv: error: could not connect"),
        "{message}"
    );
    assert!(!message.to_lowercase().contains("backtrace"), "{message}");
    assert!(failed.stdout.is_empty());

    let verbose = ringkv(&["-v", "get", "b", "k", "--node", "http://127.0.0.1:1"]);
    let message = String::from_utf8_lossy(&verbose.stderr);
    assert!(message.contains("Stack backtrace"), "{message}");

    let completions = ringkv(&["completions", "bash"]);
    assert!(completions.status.success());
    let script = String::from_utf8_lossy(&completions.stdout);
    for word in [
        "_ringkv",
        "server",
        "get",
        "cluster",
        "probe",
        "completions",
    ] {
        assert!(script.contains(word), "{word} not in the bash completions");
    }
    for shell in ["zsh", "fish"] {
        let output = ringkv(&["completions", shell]);
        assert!(
            output.status.success() && !output.stdout.is_empty(),
            "{shell}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_is_not_ready_and_a_joining_one_becomes_ready() {
    let cluster = common::cluster::Cluster::start(2).await;
    let client = cluster.pinned_client(&[0, 1]);
    for i in 0..2 {
        let probe = client.probe(&cluster.url(i), true).await.unwrap();
        assert_eq!(probe.status, "ok", "n{}: {probe:?}", i + 1);
    }
    let leave = ringkv(&["cluster", "leave", "--node", &cluster.url(1), "-o", "json"]);
    let action = stdout_json(&leave);
    assert_eq!(action[0]["action"], "leave");
    let deadline = Instant::now() + DEADLINE;
    let probe = loop {
        let probe = client.probe(&cluster.url(1), true).await.unwrap();
        if probe.status != "ok" {
            break probe;
        }
        assert!(Instant::now() < deadline, "n2 still ready after leave");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(probe.failed, ["leaving"], "{probe:?}");
    // The node still serves: live, and the other member stays ready.
    assert_eq!(
        client.probe(&cluster.url(1), false).await.unwrap().status,
        "ok"
    );
    assert_eq!(
        client.probe(&cluster.url(0), true).await.unwrap().status,
        "ok"
    );
}
