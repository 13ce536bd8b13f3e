//! `ringkv dev`: a local cluster in one process, on loopback, for trying ringkv out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use clap::Args;
use ringkv::server::{self, RunningServer, ServerConfig};
use ringkv_client::{Client, ClientConfig, Options};

/// Flags of `ringkv dev`.
#[derive(Args)]
pub struct DevArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Keep the data here (reused by the next run) instead of in a temporary folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP port of the first node; node i listens on this + i.
    #[arg(long, visible_alias = "port", default_value_t = 8087)]
    base_port: u16,
    /// Peer port of the first node (default: the base port + 100); node i listens on this + i.
    #[arg(long)]
    peer_port: Option<u16>,
    /// Start, show the cluster working, and stop (instead of serving until Ctrl-C).
    #[arg(long)]
    once: bool,
}

/// Starts the nodes (the first founds the cluster, the others join through it), waits until the
/// ring has settled, shows a write, a read and siblings, then serves until Ctrl-C.
pub async fn run(args: DevArgs) -> Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let http_ports = port_range(args.base_port, args.nodes)?;
    let peer_ports = port_range(
        args.peer_port
            .unwrap_or_else(|| args.base_port.saturating_add(100)),
        args.nodes,
    )?;
    let temporary;
    let root = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temporary = tempfile::Builder::new()
                .prefix("ringkv-dev-")
                .tempdir()
                .context("cannot create a temporary folder")?;
            temporary.path().to_path_buf()
        }
    };
    let mut servers: Vec<RunningServer> = Vec::new();
    let mut first_peer = None;
    for i in 0..args.nodes {
        let config = ServerConfig {
            node_id: Some(format!("n{}", i + 1)),
            data_dir: root.join(format!("n{}", i + 1)),
            listen: SocketAddr::from(([127, 0, 0, 1], http_ports[usize::from(i)])),
            peer_listen: SocketAddr::from(([127, 0, 0, 1], peer_ports[usize::from(i)])),
            seeds: first_peer.iter().cloned().collect(),
            // Quick gossip and repair, so changes show within a second or two.
            gossip_interval_ms: 200,
            hint_delivery_interval_ms: 500,
            anti_entropy_interval_ms: 2_000,
            ..ServerConfig::default()
        };
        let running = server::start(config)
            .await
            .with_context(|| format!("node n{} could not start", i + 1))?;
        first_peer.get_or_insert_with(|| running.peer_address.to_string());
        servers.push(running);
    }
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}", s.client_address))
        .collect();
    server::wait_until_settled(&servers, Duration::from_secs(60)).await?;

    println!(
        "ringkv dev: {} nodes, data in {}",
        servers.len(),
        root.display()
    );
    for server in &servers {
        println!(
            "  {}  http://{}  (peers {})",
            server.node.node_id(),
            server.client_address,
            server.peer_address
        );
    }
    show_it_working(&urls).await?;
    let node = &urls[0];
    println!("\nTry:");
    println!("  ringkv put --node {node} carts alice 'milk,eggs'");
    println!("  ringkv get --node {node} carts alice");
    println!("  ringkv cluster status --node {node}");
    println!("  curl -i {node}/kv/carts/alice");
    println!("  ringkv bench --nodes {} --duration 10s", urls.join(","));
    if std::path::Path::new("bindings-wasm/web/pkg/ringkv_wasm.js").is_file() {
        println!("  open {node}/ui   (the ring visualizer; its live mode draws this cluster)");
    }
    if args.once {
        println!("(--once: stopping)");
    } else {
        println!("Ctrl-C stops the cluster.");
        crate::termination().await;
    }
    for server in servers {
        server.shutdown().await;
    }
    Ok(())
}

/// `count` consecutive ports from `first`, or an error if they run past 65535.
fn port_range(first: u16, count: u16) -> Result<Vec<u16>> {
    (0..count)
        .map(|i| {
            first
                .checked_add(i)
                .with_context(|| format!("ports from {first} for {count} nodes run past 65535"))
        })
        .collect()
}

/// A write, a read, and two concurrent writes read back as siblings, through the client library.
async fn show_it_working(urls: &[String]) -> Result<()> {
    let client = Client::new(ClientConfig {
        nodes: urls.to_vec(),
        ..ClientConfig::default()
    })?;
    let options = Options::default();
    let written = client
        .put(
            b"carts",
            b"alice",
            None,
            Bytes::from_static(b"milk"),
            &options,
        )
        .await?;
    println!(
        "\nput carts/alice = milk          acked by {}",
        written.replicas.join(", ")
    );
    let read = client.get(b"carts", b"alice", &options).await?;
    println!(
        "get carts/alice -> {:?}  from {}",
        read.values
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>(),
        read.replicas.join(", ")
    );
    let context = read.context.clone();
    client
        .put(
            b"carts",
            b"alice",
            context.as_deref(),
            Bytes::from_static(b"milk,eggs"),
            &options,
        )
        .await?;
    client
        .put(
            b"carts",
            b"alice",
            context.as_deref(),
            Bytes::from_static(b"milk,bread"),
            &options,
        )
        .await?;
    let read = client.get(b"carts", b"alice", &options).await?;
    let values: Vec<Vec<u8>> = read.values.iter().map(|v| v.to_vec()).collect();
    println!(
        "two puts with the same context -> {} siblings {:?}",
        values.len(),
        values
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
    );
    let merged = crate::demo::merge_cart(&values);
    client
        .put(
            b"carts",
            b"alice",
            read.context.as_deref(),
            Bytes::from(merged.clone()),
            &options,
        )
        .await?;
    let read = client.get(b"carts", b"alice", &options).await?;
    println!(
        "the application merges them with the read's context -> {:?}",
        read.values
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
    );
    if read.values.len() != 1 || read.values[0].as_ref() != merged.as_slice() {
        bail!("the reconciled cart did not read back as one value");
    }
    Ok(())
}
