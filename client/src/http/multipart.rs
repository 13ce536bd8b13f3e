//! Sibling values in a `multipart/mixed` body (RFC 2046).

use bytes::Bytes;

use super::ClientError;

/// The boundary parameter of a `multipart/mixed` content type.
pub fn multipart_boundary(content_type: &str) -> Result<String, ClientError> {
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("multipart/mixed") {
        return Err(ClientError::Decode(format!(
            "expected multipart/mixed, got {media_type:?}"
        )));
    }
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = value.trim();
        let boundary = match value.strip_prefix('"') {
            Some(quoted) => quoted
                .strip_suffix('"')
                .ok_or_else(|| ClientError::Decode(String::from("unterminated quoted boundary")))?
                .replace("\\\"", "\"")
                .replace("\\\\", "\\"),
            None => value.to_owned(),
        };
        // RFC 2046: 1 to 70 characters.
        if boundary.is_empty() || boundary.len() > 70 {
            return Err(ClientError::Decode(format!(
                "bad multipart boundary {boundary:?}"
            )));
        }
        return Ok(boundary);
    }
    Err(ClientError::Decode(String::from(
        "multipart/mixed without a boundary",
    )))
}

/// Where `needle` first occurs in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let offset = haystack.get(at..)?.iter().position(|&b| b == first)?;
        at += offset;
        if haystack.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// The bodies of the parts of a `multipart/mixed` body (RFC 2046): part headers are skipped,
/// bodies are returned as they are (arbitrary bytes). The preamble and epilogue are ignored.
pub fn parse_multipart(body: &Bytes, boundary: &str) -> Result<Vec<Bytes>, ClientError> {
    let malformed = |what: &str| ClientError::Decode(format!("malformed multipart body: {what}"));
    let dash_boundary = format!("--{boundary}").into_bytes();
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    let mut position = if body.starts_with(&dash_boundary) {
        dash_boundary.len()
    } else {
        find(body, &delimiter, 0).ok_or_else(|| malformed("no boundary"))? + delimiter.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = body.get(position..).unwrap_or(&[]);
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then the end of the boundary line.
        let padding = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        position += padding;
        if !body.get(position..).unwrap_or(&[]).starts_with(b"\r\n") {
            return Err(malformed("boundary line not terminated"));
        }
        position += 2;
        // Part headers end with an empty line (immediately, when there are none).
        if body.get(position..).unwrap_or(&[]).starts_with(b"\r\n") {
            position += 2;
        } else {
            position = find(body, b"\r\n\r\n", position)
                .ok_or_else(|| malformed("part headers not terminated"))?
                + 4;
        }
        let end =
            find(body, &delimiter, position).ok_or_else(|| malformed("part not terminated"))?;
        parts.push(body.slice(position..end));
        position = end + delimiter.len();
    }
}
