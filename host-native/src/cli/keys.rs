//! `ringkv list`, `ringkv mget` and `ringkv watch`: a bucket's keys, many keys at once, and
//! waiting for a key to change.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};

use anyhow::Context as _;
use bytes::Bytes;
use ringkv_client::api;
use ringkv_client::WatchResult;

use super::output::{print_json, write_json, OutputArgs, ReadDoc};
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
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// Prints a bucket's keys, one a line (binary ones as `base64:...`): every page, or one page
/// and the cursor of the next (on stderr). With `--output json`, an [`api::ListPage`] a line.
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
        if args.output.json() {
            let document = api::ListPage {
                keys: page
                    .keys
                    .iter()
                    .map(|key| api::KeyDoc::from_bytes(key))
                    .collect(),
                // Walking every page, the next one follows: only the last says null.
                cursor: page.cursor.clone(),
            };
            write_json(&mut out, &document)?;
            if args.page {
                return Ok(());
            }
        } else {
            for key in &page.keys {
                writeln!(out, "{}", key_text(key))?;
            }
            out.flush()?;
        }
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
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// Reads many keys at once and prints a line per key: `key: value`, `key: (not found)`,
/// `key: N siblings` or `key: error: ...`; keys not read are named on stderr. With `--output
/// json`, the server's own lines: an [`api::MgetItem`] per key, then an [`api::MgetEnd`].
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
    if args.output.json() {
        for (key, answer) in &result.keys {
            failed += usize::from(answer.is_err());
            write_json(&mut out, &mget_item(key, answer))?;
        }
        let end = api::MgetEnd {
            unprocessed: result
                .unprocessed
                .iter()
                .map(|key| api::KeyDoc::from_bytes(key))
                .collect(),
        };
        write_json(&mut out, &end)?;
        if failed > 0 {
            anyhow::bail!("{failed} of {} keys failed", result.keys.len());
        }
        return Ok(());
    }
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

/// One key's multi-get line, as the server writes it.
fn mget_item(
    key: &[u8],
    answer: &Result<ringkv_client::GetResult, ringkv_client::ClientError>,
) -> api::MgetItem {
    let key = api::KeyDoc::from_bytes(key);
    match answer {
        Ok(got) => api::MgetItem {
            key,
            status: match got.values.len() {
                0 => 404,
                1 => 200,
                _ => 300,
            },
            values: got.values.iter().map(|v| api::base64_encode(v)).collect(),
            context: got.context.clone(),
            expires_at: got.expires_at,
            error: None,
            message: None,
        },
        Err(error) => api::MgetItem {
            key,
            status: error_status(error),
            values: Vec::new(),
            context: None,
            expires_at: None,
            error: Some(error_kind(error).to_string()),
            message: Some(error.to_string()),
        },
    }
}

/// The HTTP status a client error stands for.
fn error_status(error: &ringkv_client::ClientError) -> u16 {
    use ringkv_client::ClientError as E;
    match error {
        E::BadRequest(_) => 400,
        E::NotFound(_) => 404,
        E::TooLarge(_) => 413,
        E::Server { status, .. } => *status,
        E::StorageFull(_) => 507,
        _ => 503,
    }
}

/// The API's error kind a client error stands for.
fn error_kind(error: &ringkv_client::ClientError) -> &str {
    use ringkv_client::ClientError as E;
    match error {
        E::BadRequest(_) => "bad_request",
        E::NotFound(_) => "not_found",
        E::TooLarge(_) => "too_large",
        E::Server { kind, .. } => kind,
        E::StorageFull(_) => "storage_full",
        E::OutcomeUnknown(_) => "outcome_unknown",
        E::Timeout(_) => "timeout",
        E::Connect(_) => "connect",
        _ => "unavailable",
    }
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
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
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
        WatchResult::Changed(result) if args.output.json() => {
            print_json(&ReadDoc {
                changed: Some(true),
                ..ReadDoc::new(&bucket, &key, &result)
            })?;
        }
        WatchResult::Unchanged { context } if args.output.json() => {
            print_json(&ReadDoc::unchanged(&bucket, &key, context))?;
        }
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
