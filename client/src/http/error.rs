//! Why a request failed: [`ClientError`], and how an error answer or a transport error becomes one.

use bytes::Bytes;
use http::StatusCode;

use crate::api;

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server could not gather a quorum (503). A write may have been applied on some replicas.
    #[error("{}", describe_unavailable(.message, .quorum.as_deref(), *.needed, .answered))]
    Unavailable {
        /// The server's explanation.
        message: String,
        /// The quorum that failed: `read`, `write` or `durable`.
        quorum: Option<String>,
        /// Replicas needed.
        needed: Option<u32>,
        /// Replicas that answered in time.
        answered: Vec<String>,
    },
    /// The server refused the request as malformed (400), or the client could not form it.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The value, key or bucket is larger than the server accepts (413).
    #[error("too large: {0}")]
    TooLarge(String),
    /// A non-key resource does not exist (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The coordinating node's disk is full (507): nothing was written. Another node may take
    /// the write.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// Any other error answer.
    #[error("server answered {status} ({kind}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The error class from [`api::ErrorBody::kind`] (empty when the body had none).
        kind: String,
        /// The server's explanation.
        message: String,
    },
    /// No node could be connected to: nothing was sent.
    #[error("could not connect: {0}")]
    Connect(String),
    /// A write was sent (or may have been) and no answer came: it may or may not be applied.
    #[error("outcome unknown, the write may or may not have been applied: {0}")]
    OutcomeUnknown(String),
    /// A read got no answer in time from any node tried.
    #[error("no answer in time: {0}")]
    Timeout(String),
    /// A read failed on every node tried with broken connections.
    #[error("transport failure: {0}")]
    Transport(String),
    /// The answer could not be understood.
    #[error("cannot decode the answer: {0}")]
    Decode(String),
    /// A node address is not a usable `http://host:port` or `https://host:port` URL.
    #[error("invalid node address: {0}")]
    InvalidNode(String),
    /// The TLS settings (the CA file) are unusable.
    #[error("TLS settings: {0}")]
    Tls(String),
    /// The configuration names no node.
    #[error("no nodes configured")]
    NoNodes,
    /// A conditional write's condition did not hold (412): nothing was written.
    #[error("{message}{}", .context.as_ref().map(|c| format!(" (current context: {c})")).unwrap_or_default())]
    PreconditionFailed {
        /// The server's explanation.
        message: String,
        /// The key's current context, to read with or to retry `If-Match` with (`None` when
        /// the key has no history).
        context: Option<String>,
    },
}

/// The server's message, completed with the quorum figures it does not already state.
pub(super) fn describe_unavailable(
    message: &str,
    quorum: Option<&str>,
    needed: Option<u32>,
    answered: &[String],
) -> String {
    let mut text = if message.is_empty() {
        String::from("quorum not met")
    } else {
        message.to_owned()
    };
    let mut details = Vec::new();
    if !message.contains("needed") {
        if let Some(quorum) = quorum {
            details.push(format!("{quorum} quorum"));
        }
        if let Some(needed) = needed {
            details.push(format!("needed {needed}, answered {}", answered.len()));
        }
    }
    if !answered.is_empty() {
        details.push(format!("answered by {}", answered.join(", ")));
    }
    if !details.is_empty() {
        text.push_str(&format!(" ({})", details.join(", ")));
    }
    text
}

/// An error and its sources, `: `-separated (hyper's own message alone says little).
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Characters kept of an error answer that is not ringkv's JSON error document.
const FOREIGN_BODY_EXCERPT_CHARS: usize = 160;

/// The error an error answer stands for.
pub(super) fn error_from_status(status: StatusCode, body: &Bytes) -> ClientError {
    let parsed = serde_json::from_slice::<api::ErrorBody>(body).ok();
    let message = match &parsed {
        Some(error) => error.error.clone(),
        None => {
            // Not a ringkv answer (a proxy's or another server's page): an excerpt, on one
            // line, is enough to say what answered.
            let text = String::from_utf8_lossy(body);
            let words: Vec<&str> = text.split_whitespace().collect();
            let mut text = words.join(" ");
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                if let Some((cut, _)) = text.char_indices().nth(FOREIGN_BODY_EXCERPT_CHARS) {
                    text.truncate(cut);
                    text.push_str("...");
                }
                text
            }
        }
    };
    let kind = parsed
        .as_ref()
        .map(|error| error.kind.clone())
        .unwrap_or_default();
    match status {
        StatusCode::BAD_REQUEST => ClientError::BadRequest(message),
        StatusCode::PAYLOAD_TOO_LARGE => ClientError::TooLarge(message),
        StatusCode::NOT_FOUND => ClientError::NotFound(message),
        StatusCode::INSUFFICIENT_STORAGE => ClientError::StorageFull(message),
        StatusCode::SERVICE_UNAVAILABLE if kind == "outcome_unknown" => {
            ClientError::OutcomeUnknown(message)
        }
        StatusCode::SERVICE_UNAVAILABLE
            if parsed
                .as_ref()
                .is_some_and(|error| error.kind == "unavailable" || error.needed.is_some()) =>
        {
            let error = parsed.unwrap_or_else(|| api::ErrorBody {
                error: String::new(),
                kind: String::new(),
                quorum: None,
                needed: None,
                answered: Vec::new(),
            });
            ClientError::Unavailable {
                message,
                quorum: error.quorum,
                needed: error.needed,
                answered: error.answered,
            }
        }
        status => ClientError::Server {
            status: status.as_u16(),
            kind,
            message,
        },
    }
}
