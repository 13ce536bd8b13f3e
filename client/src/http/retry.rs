//! The retry policy: what a failed attempt allows next.

use http::StatusCode;

use super::response::Answer;
use super::ClientError;
use crate::api;

/// How a failed attempt failed, as far as the client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be established: the request certainly was not sent.
    Connect,
    /// No answer within the attempt's deadline: the request may have been sent.
    Timeout,
    /// The connection broke (reset, closed before the answer): the request may have been sent.
    Broken,
}

/// Whether a request may safely be sent twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotence {
    /// Reads and idempotent metadata writes: any failed attempt may be retried elsewhere.
    Idempotent,
    /// Key writes: a second copy could create a sibling, so only unsent requests are retried.
    AtMostOnce,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Send the request to the next node.
    TryNextNode,
    /// Stop: the request may have been applied ([`ClientError::OutcomeUnknown`]).
    OutcomeUnknown,
}

/// The retry policy of the module doc, as a pure function.
pub fn retry_decision(idempotence: Idempotence, failure: FailureKind) -> RetryDecision {
    match (idempotence, failure) {
        (_, FailureKind::Connect) => RetryDecision::TryNextNode,
        (Idempotence::Idempotent, FailureKind::Timeout | FailureKind::Broken) => {
            RetryDecision::TryNextNode
        }
        (Idempotence::AtMostOnce, FailureKind::Timeout | FailureKind::Broken) => {
            RetryDecision::OutcomeUnknown
        }
    }
}

/// A failed attempt.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    pub(super) kind: FailureKind,
    pub(super) detail: String,
}

/// A 503 from a node that could not coordinate at all (no ring yet, shutting down): another node
/// may serve the same read.
pub(super) fn node_cannot_serve(answer: &Answer) -> bool {
    if answer.status != StatusCode::SERVICE_UNAVAILABLE {
        return false;
    }
    serde_json::from_slice::<api::ErrorBody>(&answer.body)
        .is_ok_and(|body| matches!(body.kind.as_str(), "no_ring" | "shutting_down"))
}

/// The error after every attempt failed and each allowed another.
pub(super) fn exhausted(failures: &[(String, Failure)]) -> ClientError {
    let detail = failures
        .iter()
        .map(|(endpoint, failure)| format!("{endpoint}: {}", failure.detail))
        .collect::<Vec<_>>()
        .join("; ");
    let kinds = || failures.iter().map(|(_, failure)| failure.kind);
    if kinds().all(|kind| kind == FailureKind::Connect) {
        ClientError::Connect(detail)
    } else if kinds().any(|kind| kind == FailureKind::Timeout) {
        ClientError::Timeout(detail)
    } else {
        ClientError::Transport(detail)
    }
}
