//! `/ui`: the visualizer's static files.

use std::path::{Path, PathBuf};

use http::Response;
use percent_encoding::percent_decode_str;

use super::*;

pub(super) async fn serve_ui(
    config: &HttpConfig,
    file: &str,
) -> Result<Response<ResponseBody>, Problem> {
    let not_found = || Problem::not_found("no such UI file");
    let Some(root) = &config.ui_dir else {
        return Err(Problem::not_found("the web UI is not configured"));
    };
    let path = ui_path(root, file).ok_or_else(not_found)?;
    let is_file = tokio::fs::metadata(&path)
        .await
        .map(|metadata| metadata.is_file())
        .unwrap_or(false);
    if !is_file {
        return Err(not_found());
    }
    let contents = tokio::fs::read(&path).await.map_err(|_| not_found())?;
    let mut response = Response::new(full_body(contents));
    set_header(&mut response, "content-type", content_type(&path));
    Ok(response)
}

/// The file under `root` a `/ui/...` path names, or `None` when it would leave `root` (a `..`,
/// an absolute or odd segment).
fn ui_path(root: &Path, file: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    let mut segments = 0;
    for raw in file.split('/') {
        if raw.is_empty() {
            continue;
        }
        let segment = percent_decode_str(raw).decode_utf8().ok()?;
        let unsafe_segment = segment == "."
            || segment == ".."
            || segment.contains(['/', '\\', '\0', ':'])
            || segment.starts_with('.');
        if unsafe_segment {
            return None;
        }
        path.push(segment.as_ref());
        segments += 1;
    }
    if segments == 0 || file.ends_with('/') {
        path.push("index.html");
    }
    Some(path)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("html") | Some("htm") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
