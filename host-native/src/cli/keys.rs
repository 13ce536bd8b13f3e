//! `ringkv list`, `ringkv mget` and `ringkv watch`: a bucket's keys, many keys at once, and
//! waiting for a key to change.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};

use anyhow::Context as _;
use bytes::Bytes;
use ringkv_client::api;
use ringkv_client::WatchResult;

use super::{os_bytes, preview, write_get, NodeArgs, RequestArgs};

/// A key as a line of text: itself when it is printable UTF-8, else `base64:<...>`.
fn key_text(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if !text.chars().any(char::is_control) && !text.starts_with("base64:") => {
            text.to_owned()
        }
        _ => format!("base64:{}", api::base64_encode(key)),
    }
}

/// A key given on the command line: `base64:<...>` names a binary key.
fn key_arg(arg: &OsString) -> anyhow::Result<Bytes> {
    let bytes = os_bytes(arg);
    match bytes.strip_prefix(b"base64:") {
        Some(encoded) => api::base64_decode(&String::from_utf8_lossy(encoded))
            .map(Bytes::from)
            .with_context(|| format!("{} is not base64", String::from_utf8_lossy(encoded))),
        None => Ok(Bytes::from(bytes)),
    }
}

/// `ringkv list <bucket>`.
#[derive(Clone, Debug, clap::Args)]
pub struct ListArgs {
    /// Bucket.
    pub bucket: OsString,
    /// Keys per page (1 to 1,000).
    #[arg(long, default_value_t = 1_000)]
    pub limit: u32,
    /// Start from this cursor (printed by an earlier page).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Print one page and its cursor, rather than walk the whole listing.
    #[arg(long)]
    pub page: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
}

/// Prints a bucket's keys, one a line (binary ones as `base64:...`): every page, or one page
/// and the cursor of the next (on stderr).
pub async fn run_list(args: ListArgs) -> anyhow::Result<()> {
    let client = args.node.client()?;
    let bucket = os_bytes(&args.bucket);
    let mut cursor = args.cursor.clone();
    let mut out = std::io::stdout().lock();
    loop {
        let page = client
            .list_keys(
                &bucket,
                cursor.as_deref(),
                Some(args.limit),
                &Default::default(),
            )
            .await?;
        for key in &page.keys {
            writeln!(out, "{}", key_text(key))?;
        }
        out.flush()?;
        match page.cursor {
            None => return Ok(()),
            Some(next) if args.page => {
                eprintln!("cursor: {next}");
                return Ok(());
            }
            Some(next) => cursor = Some(next),
        }
    }
}

/// `ringkv mget <bucket> <key>...`.
#[derive(Clone, Debug, clap::Args)]
pub struct MgetArgs {
    /// Bucket.
    pub bucket: OsString,
    /// Keys (1 to 1,000; `base64:<...>` for a binary one).
    #[arg(required = true)]
    pub keys: Vec<OsString>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub request: RequestArgs,
}

/// Reads many keys at once and prints a line per key: `key: value`, `key: (not found)`,
/// `key: N siblings` or `key: error: ...`; keys not read are named on stderr.
pub async fn run_mget(args: MgetArgs) -> anyhow::Result<()> {
    let client = args.node.client()?;
    let keys = args
        .keys
        .iter()
        .map(key_arg)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let result = client
        .mget(&os_bytes(&args.bucket), &keys, &args.request.options())
        .await?;
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for (key, answer) in &result.keys {
        let shown = key_text(key);
        match answer {
            Ok(got) => match got.values.as_slice() {
                [] => writeln!(out, "{shown}: (not found)")?,
                [value] => writeln!(out, "{shown}: {}", preview(value))?,
                siblings => writeln!(out, "{shown}: {} siblings", siblings.len())?,
            },
            Err(error) => {
                failed += 1;
                writeln!(out, "{shown}: error: {error}")?;
            }
        }
    }
    out.flush()?;
    if !result.unprocessed.is_empty() {
        let names: Vec<String> = result.unprocessed.iter().map(|k| key_text(k)).collect();
        eprintln!(
            "not read (the answer reached its size bound; ask again): {}",
            names.join(" ")
        );
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} keys failed", result.keys.len());
    }
    Ok(())
}

/// `ringkv watch <bucket> <key>`.
#[derive(Clone, Debug, clap::Args)]
pub struct WatchArgs {
    /// Bucket.
    pub bucket: OsString,
    /// Key.
    pub key: OsString,
    /// Wait for a write this context has not seen (default: the context of a read made now,
    /// so the next write answers).
    #[arg(long)]
    pub context: Option<String>,
    /// How long to wait (`30s`, `5m`, at most `10m`).
    #[arg(long, default_value = "60s")]
    pub timeout: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
}

/// Waits for the key to change and prints it as `get` does; prints `unchanged` (stderr) when
/// the wait ends first.
pub async fn run_watch(args: WatchArgs) -> anyhow::Result<()> {
    let client = args.node.client()?;
    let wait_ms =
        api::parse_duration_ms(&args.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let (bucket, key) = (os_bytes(&args.bucket), os_bytes(&args.key));
    let context = match args.context {
        Some(context) => Some(context),
        None => {
            client
                .get(&bucket, &key, &Default::default())
                .await?
                .context
        }
    };
    match client
        .watch(
            &bucket,
            &key,
            context.as_deref(),
            wait_ms,
            &Default::default(),
        )
        .await?
    {
        WatchResult::Changed(result) => {
            let raw = !std::io::stdout().is_terminal();
            write_get(
                &result,
                raw,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )?;
            if !result.found() {
                eprintln!("the key has no value now (deleted or expired)");
            }
        }
        WatchResult::Unchanged { context } => {
            eprintln!("unchanged after {}", api::format_duration_ms(wait_ms));
            if let Some(context) = context {
                eprintln!("context: {context}");
            }
        }
    }
    Ok(())
}
