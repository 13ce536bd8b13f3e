//! `ringkv probe [--ready]`: a node's `/livez` or `/readyz` as an exit code, for container
//! healthchecks (`HEALTHCHECK CMD ringkv probe --ready`), Kubernetes exec probes and scripts.

use std::time::Duration;

use anyhow::bail;
use ringkv_client::{Client, ClientConfig};

use super::output::{print_json, OutputArgs};
use super::NodeArgs;

/// How long a probe waits for the node's answer: less than the usual healthcheck timeouts.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `ringkv probe [--node URL] [--ready]`.
#[derive(Clone, Debug, clap::Args)]
pub struct ProbeArgs {
    /// Ask `/readyz` (joined, storage open, not stopping or leaving) rather than `/livez` (the
    /// process serves HTTP).
    #[arg(long)]
    pub ready: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// Asks the node; succeeds (exit 0) on 200, else fails with one line naming the failed checks.
/// Prints nothing on success unless `--output json` (the node's [`ringkv_client::api::Probe`]).
pub async fn run_probe(args: ProbeArgs) -> anyhow::Result<()> {
    let node = args.node.single()?;
    let client = Client::new(ClientConfig {
        nodes: vec![node.clone()],
        ca_file: args.node.ca_file.clone(),
        ring_refresh: Duration::ZERO,
        request_timeout: PROBE_TIMEOUT,
        connect_timeout: PROBE_TIMEOUT,
        ..ClientConfig::default()
    })?;
    let what = if args.ready { "ready" } else { "live" };
    let probe = match client.probe(&node, args.ready).await {
        Ok(probe) => probe,
        Err(error) => bail!("{node} is not {what}: {error}"),
    };
    if args.output.json() {
        print_json(&probe)?;
    }
    if probe.status != "ok" {
        bail!(
            "{node} ({}) is not {what}: {}",
            probe.node,
            if probe.failed.is_empty() {
                probe.status.clone()
            } else {
                probe.failed.join(", ")
            }
        );
    }
    Ok(())
}
