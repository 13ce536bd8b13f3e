//! `ringkv server` as real processes: killed with SIGKILL under write load, stopped with SIGTERM,
//! and restarted from their data folders.
//!
//! Needs the `ringkv` binary next to the test executable's folder (`scripts/test` builds it first).
mod common;

use common::{free_address, ringkv_binary};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringkv_client::{Client, ClientConfig, ClientError, Options};

struct Node {
    child: Child,
    http: SocketAddr,
}

fn start(data_dir: &Path, http: SocketAddr, peer: SocketAddr, config: &Path) -> Node {
    let child = Command::new(ringkv_binary())
        .args(["server", "--node-id", "solo", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--listen",
            &http.to_string(),
            "--peer-listen",
            &peer.to_string(),
        ])
        .env("RINGKV_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ringkv server starts");
    Node { child, http }
}

async fn wait_healthy(client: &Client, node: &Node) {
    let url = format!("http://{}", node.http);
    for _ in 0..300 {
        if client.health(&url).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} not healthy after 15 s");
}

fn single_node_config(dir: &Path, dw: &str) -> PathBuf {
    let path = dir.join("ringkv.toml");
    std::fs::write(
        &path,
        format!(
            "partitions = 16\ntarget_n = 1\n[bucket]\nn = 1\nr = \"1\"\nw = \"1\"\ndw = \"{dw}\"\n"
        ),
    )
    .unwrap();
    path
}

fn client_for(node: &Node) -> Client {
    Client::new(ClientConfig {
        nodes: vec![format!("http://{}", node.http)],
        request_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_write_load_loses_no_durably_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = single_node_config(dir.path(), "1");
    let data = dir.path().join("data");
    let http = free_address();
    let peer = free_address();
    let mut node = start(&data, http, peer, &config);
    let client = client_for(&node);
    wait_healthy(&client, &node).await;

    // Writers run until the process dies under them; every acknowledged key is remembered.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for worker in 0..8u32 {
        let client = client.clone();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0u32.. {
                let key = format!("w{worker}-{i}");
                let value = Bytes::from(format!("value of {key}").repeat(20));
                match client
                    .put(
                        b"b",
                        key.as_bytes(),
                        None,
                        value.clone(),
                        &Options::default(),
                    )
                    .await
                {
                    Ok(_) => acknowledged.lock().unwrap().push((key, value)),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.child.kill().expect("SIGKILL");
    let _ = node.child.wait();
    for writer in writers {
        let _ = writer.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "too few writes before the kill: {}",
        acknowledged.len()
    );

    let mut node = start(&data, http, peer, &config);
    let client = client_for(&node);
    wait_healthy(&client, &node).await;
    let mut lost = Vec::new();
    for (key, value) in &acknowledged {
        let read = client
            .get(b"b", key.as_bytes(), &Options::default())
            .await
            .unwrap();
        if read.values != vec![value.clone()] {
            lost.push(key.clone());
        }
    }
    let _ = node.child.kill();
    let _ = node.child.wait();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost after SIGKILL: {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_and_flushes_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    // dw = 0: acknowledged before fsync, so only a clean shutdown's flush keeps them.
    let config = single_node_config(dir.path(), "0");
    let data = dir.path().join("data");
    let http = free_address();
    let peer = free_address();
    let mut node = start(&data, http, peer, &config);
    let client = client_for(&node);
    wait_healthy(&client, &node).await;
    for i in 0..50u32 {
        client
            .put(
                b"b",
                format!("k{i}").as_bytes(),
                None,
                Bytes::from(format!("v{i}")),
                &Options::default(),
            )
            .await
            .unwrap();
    }
    let status = Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = node.child.wait().expect("the server exits");
    assert!(exit.success(), "exit status after SIGTERM: {exit:?}");

    let mut node = start(&data, http, peer, &config);
    let client = client_for(&node);
    wait_healthy(&client, &node).await;
    for i in 0..50u32 {
        let read = client
            .get(b"b", format!("k{i}").as_bytes(), &Options::default())
            .await
            .unwrap();
        assert_eq!(read.values, vec![Bytes::from(format!("v{i}"))], "k{i}");
    }
    // A value over the limit is refused without harming the node.
    let too_big = Bytes::from(vec![0u8; 9 * 1024 * 1024]);
    let error = client
        .put(b"b", b"big", None, too_big, &Options::default())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::TooLarge(_)), "{error:?}");
    let read = client.get(b"b", b"k1", &Options::default()).await.unwrap();
    assert_eq!(read.values, vec![Bytes::from_static(b"v1")]);
    let _ = node.child.kill();
    let _ = node.child.wait();
}
