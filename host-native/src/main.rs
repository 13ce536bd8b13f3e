//! `ringkv`: the command-line entry point (server, local cluster, client commands, load
//! generator, and the simulator's stories).

mod demo;
mod dev;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use ringkv::server::{self, ServerConfig};
use ringkv::storage::Compression;

#[derive(Parser)]
#[command(
    name = "ringkv",
    version,
    about = "A Dynamo-style distributed key-value store"
)]
struct Cli {
    /// Log lines on stderr as text, or as JSON objects (one a line). The level and filters
    /// come from RUST_LOG (else RINGKV_LOG, else info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// On an error, print its causes one a line and its backtrace when one was captured
    /// (RUST_BACKTRACE=1), rather than one line; also RINGKV_BACKTRACE=1.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line (tracing-subscriber's json format).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: HTTP API for clients, TCP for peers, records on disk.
    Server(Box<ServerArgs>),
    /// Start a local cluster (3 nodes on loopback, data in a temporary folder), show it working,
    /// and serve until Ctrl-C.
    Dev(dev::DevArgs),
    /// Read a key: its value, or all its siblings, and the context to write with.
    Get(ringkv::cli::GetArgs),
    /// Write a value (from an argument, a file or stdin).
    Put(ringkv::cli::PutArgs),
    /// Delete a key (a tombstone, with the context of a read).
    Delete(ringkv::cli::DeleteArgs),
    /// Read many keys of a bucket at once.
    Mget(ringkv::cli::MgetArgs),
    /// List a bucket's keys (a scan for admin and export: eventually consistent).
    List(ringkv::cli::ListArgs),
    /// Wait for a key to change (a long poll), and print it.
    Watch(ringkv::cli::WatchArgs),
    /// Exit 0 if the node is live (`/livez`), or ready with --ready (`/readyz`: joined, storage
    /// open, not stopping or leaving); else print why and exit 1. For container healthchecks.
    Probe(ringkv::cli::ProbeArgs),
    /// Print a shell completion script: `source <(ringkv completions bash)`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Cluster membership: status, join, leave, remove.
    Cluster {
        #[command(subcommand)]
        command: ringkv::cli::ClusterCommand,
    },
    /// Back up a node, a bucket or the whole cluster to a file (see docs/backup.md).
    Backup(ringkv::cli::BackupArgs),
    /// Restore a backup: merge every record into its key's replicas (never overwrites newer data).
    Restore(ringkv::cli::RestoreArgs),
    /// Load generator: a mix of gets, puts and deletes, with latency percentiles.
    Bench(ringkv::bench::BenchArgs),
    /// The Dynamo cart story in a simulated cluster (no sockets or disks).
    Demo {
        /// Seed of the simulation.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Run randomized simulations with partitions and crashes and check their histories.
    Sim {
        /// First seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How many seeds to run.
        #[arg(long, default_value_t = 20)]
        runs: u64,
        /// Client operations per run.
        #[arg(long, default_value_t = 200)]
        operations: usize,
    },
}

/// Flags of `ringkv server`; each overrides the configuration file.
#[derive(Args)]
struct ServerArgs {
    /// TOML configuration file (every key of `ServerConfig`; unknown keys are errors).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where the node keeps its data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP API address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Peer transport address.
    #[arg(long)]
    peer_listen: Option<SocketAddr>,
    /// HTTP address others should use, when listening on a wildcard address.
    #[arg(long)]
    advertise: Option<String>,
    /// Peer address others should use, when listening on a wildcard address.
    #[arg(long)]
    peer_advertise: Option<String>,
    /// Peer address of a node to join through (repeatable).
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// Weight in the ring.
    #[arg(long)]
    capacity: Option<u32>,
    /// Failure domain.
    #[arg(long)]
    zone: Option<String>,
    /// This node's id (kept in the data folder after the first start).
    #[arg(long)]
    node_id: Option<String>,
    /// Cluster name.
    #[arg(long)]
    cluster: Option<String>,
    /// Value compression on disk: none or lz4.
    #[arg(long)]
    compression: Option<String>,
    /// PEM certificate of the HTTP API (with --tls-key: serve HTTPS).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// PEM certificate presented to peers (with --peer-tls-key and --peer-tls-ca: mutual TLS
    /// on every peer link).
    #[arg(long)]
    peer_tls_cert: Option<PathBuf>,
    /// PEM private key of --peer-tls-cert.
    #[arg(long)]
    peer_tls_key: Option<PathBuf>,
    /// PEM CA that signed every node's peer certificate.
    #[arg(long)]
    peer_tls_ca: Option<PathBuf>,
    /// File holding the cluster secret peers must prove they know (no flag takes the secret
    /// itself: command lines are visible to every user of the machine).
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// Stop by itself once drained: after `ringkv cluster leave`, when every hint and orphaned
    /// record is handed over.
    #[arg(long)]
    stop_when_drained: bool,
    /// At SIGTERM/SIGINT, serve this long (ms) with /readyz answering 503 before shutting
    /// down, so that load balancers stop sending requests first (default 2000).
    #[arg(long)]
    shutdown_delay_ms: Option<u64>,
}

impl ServerArgs {
    fn into_config(self) -> Result<ServerConfig> {
        let mut config = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.peer_listen {
            config.peer_listen = v;
        }
        if self.advertise.is_some() {
            config.advertise = self.advertise;
        }
        if self.peer_advertise.is_some() {
            config.peer_advertise = self.peer_advertise;
        }
        if !self.seeds.is_empty() {
            config.seeds = self.seeds;
        }
        if let Some(v) = self.capacity {
            config.capacity = v;
        }
        if self.zone.is_some() {
            config.zone = self.zone;
        }
        if self.node_id.is_some() {
            config.node_id = self.node_id;
        }
        if let Some(v) = self.cluster {
            config.cluster = v;
        }
        for (flag, setting) in [
            (self.tls_cert, &mut config.tls_cert),
            (self.tls_key, &mut config.tls_key),
            (self.peer_tls_cert, &mut config.peer_tls_cert),
            (self.peer_tls_key, &mut config.peer_tls_key),
            (self.peer_tls_ca, &mut config.peer_tls_ca),
        ] {
            if flag.is_some() {
                *setting = flag;
            }
        }
        if self.cluster_secret_file.is_some() {
            // The flag replaces a secret from the file rather than clashing with it.
            config.cluster_secret = None;
            config.cluster_secret_file = self.cluster_secret_file;
        }
        if self.stop_when_drained {
            config.stop_when_drained = true;
        }
        if let Some(v) = self.shutdown_delay_ms {
            config.shutdown_delay_ms = v;
        }
        if let Some(v) = self.compression {
            config.compression = match v.as_str() {
                "none" => Compression::None,
                "lz4" => Compression::Lz4,
                other => anyhow::bail!("--compression {other:?}: expected none or lz4"),
            };
        }
        Ok(config)
    }
}

/// The log filter: `RUST_LOG`, else `RINGKV_LOG` (the older name), else `info`.
fn log_filter() -> tracing_subscriber::EnvFilter {
    ["RUST_LOG", "RINGKV_LOG"]
        .into_iter()
        .filter(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
        .find_map(|name| tracing_subscriber::EnvFilter::try_from_env(name).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"))
}

fn init_logging(format: LogFormat) {
    // Colours only for a terminal: a file or the journal would keep the escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Tells systemd (when it started us with `Type=notify`) where the server is; a failure to
/// tell it is logged, not fatal.
fn notify_systemd(state: &str) {
    if let Err(error) = ringkv::systemd::notify(state) {
        tracing::warn!(%error, state, "could not notify systemd ($NOTIFY_SOCKET)");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run_server(args: ServerArgs, log_format: LogFormat) -> Result<()> {
    let config = args.into_config()?;
    let scheme = if config.tls_cert.is_some() {
        "HTTPS"
    } else {
        "HTTP"
    };
    let running = server::start(config)
        .await
        .context("the server could not start")?;
    // With JSON logs, stdout stays free of text: the server logs its "serving" event anyway.
    if log_format == LogFormat::Text {
        println!(
            "ringkv {} serving {scheme} on {} and peers on {}",
            running.node.node_id(),
            running.client_address,
            running.peer_address
        );
    }
    notify_systemd(ringkv::systemd::READY);
    running
        .run_until(async {
            termination().await;
            notify_systemd(ringkv::systemd::STOPPING);
            tracing::info!(
                "shutting down: not ready, then finishing requests in flight and flushing storage"
            );
        })
        .await?;
    Ok(())
}

/// Whether the user asked for errors in full (`--verbose` or `RINGKV_BACKTRACE=1`).
fn wants_backtrace(verbose: bool) -> bool {
    verbose || std::env::var("RINGKV_BACKTRACE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Prints a failed command's error: one line `ringkv: error: <causes joined by ': '>`, or in
/// full when asked. Returns the exit code: 3 for a key not found, else 1.
fn report(error: &anyhow::Error, verbose: bool, log_format: LogFormat) -> ExitCode {
    if verbose {
        eprintln!("ringkv: error: {error:?}");
    } else {
        let line = one_line(error);
        match log_format {
            LogFormat::Text => eprintln!("ringkv: error: {line}"),
            // A log shipper reading a JSON log must be able to read why the process stopped.
            LogFormat::Json => tracing::error!("{line}"),
        }
    }
    if error.downcast_ref::<ringkv::cli::NotFound>().is_some() {
        ExitCode::from(NOT_FOUND_EXIT)
    } else {
        ExitCode::FAILURE
    }
}

/// The error and its causes on one line, joined by ": ". A cause whose text already ends its
/// error's message (thiserror's `{source}`) is said once.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    words.join(" ")
}

/// The exit code of `get` (and `--output json` reads) for a key that holds no value.
const NOT_FOUND_EXIT: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = wants_backtrace(cli.verbose);
    let log_format = cli.log_format;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error, verbose, log_format),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo { seed } => return demo::story(seed),
        Command::Sim {
            seed,
            runs,
            operations,
        } => return demo::sim(seed, runs, operations),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "ringkv",
                &mut std::io::stdout().lock(),
            );
            return Ok(());
        }
        _ => {}
    }
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => run_server(*args, cli.log_format).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Get(args) => ringkv::cli::run_get(args).await,
            Command::Put(args) => ringkv::cli::run_put(args).await,
            Command::Delete(args) => ringkv::cli::run_delete(args).await,
            Command::Mget(args) => ringkv::cli::run_mget(args).await,
            Command::List(args) => ringkv::cli::run_list(args).await,
            Command::Watch(args) => ringkv::cli::run_watch(args).await,
            Command::Cluster { command } => ringkv::cli::run_cluster(command).await,
            Command::Probe(args) => ringkv::cli::run_probe(args).await,
            Command::Backup(args) => ringkv::cli::run_backup(args).await,
            Command::Restore(args) => ringkv::cli::run_restore(args).await,
            Command::Bench(args) => ringkv::bench::run(args).await.map(|_| ()),
            Command::Demo { .. } | Command::Sim { .. } | Command::Completions { .. } => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_are_one_line_with_their_causes() {
        let error = anyhow::anyhow!("connection refused\n(os error 111)")
            .context("could not connect")
            .context("the server could not start");
        assert_eq!(
            one_line(&error),
            "the server could not start: could not connect: connection refused (os error 111)"
        );
        assert_eq!(report(&error, false, LogFormat::Text), ExitCode::FAILURE);
        let not_found = anyhow::Error::from(ringkv::cli::NotFound {
            bucket: "b".into(),
            key: "k".into(),
        });
        assert_eq!(
            report(&not_found, false, LogFormat::Text),
            ExitCode::from(NOT_FOUND_EXIT)
        );
    }

    #[test]
    fn a_cause_already_in_its_errors_message_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let error = anyhow::Error::from(ringkv::server::ServerError::Listen {
            address: "127.0.0.1:1".parse().unwrap(),
            source: io,
        })
        .context("the server could not start");
        assert_eq!(
            one_line(&error),
            "the server could not start: cannot listen on 127.0.0.1:1: Address already in use"
        );
    }
}
