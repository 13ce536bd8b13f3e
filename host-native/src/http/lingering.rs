//! The lingering close of an HTTP/1 connection answered before its request body was read.
//!
//! A 413 decided from the `Content-Length`, or a 400 for a bad query, is answered without reading
//! the body. hyper, when the handler drops a body it has not read, reads what is already buffered
//! and otherwise closes the connection once the answer is written. The client is then still
//! sending, and the kernel answers its next bytes with a reset: a client that sends its whole
//! request before it reads (Python's http.client, among many) gets EPIPE or ECONNRESET instead of
//! the answer, and may lose the answer even if it had arrived. So, as nginx does, such an answer
//! says `Connection: close`, and a task of its own reads and discards the rest of the body for at
//! most [`HttpConfig::lingering_time`] and [`HttpConfig::lingering_bytes`]. hyper writes the
//! answer meanwhile, and closes the connection once the body has ended or the task has given up
//! on it (dropping it). The connection keeps its slot of the connection limit until then.
//!
//! Not done over HTTP/2, where hyper resets the one stream and the connection goes on; nor when
//! the client asked to be told to send its body (`Expect: 100-continue`) and never was: it is not
//! sending one.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, EXPECT};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::{HttpConfig, ResponseBody};

/// A request's body as the router reads it, remembering whether it was read at all and to its
/// end.
pub(super) struct RequestBody {
    body: Incoming,
    started: bool,
    finished: bool,
}

impl RequestBody {
    pub(super) fn new(body: Incoming) -> RequestBody {
        RequestBody {
            body,
            started: false,
            finished: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.started = true;
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // After an error there is nothing left to read either.
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.finished = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // hyper's chunked body does not know it has ended until polled once more.
        self.finished || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What decides, once a request is answered, whether its connection lingers.
pub(super) struct Lingering {
    http1: bool,
    expects_continue: bool,
    peer: SocketAddr,
}

impl Lingering {
    /// Noted before the request goes to the router, which consumes it.
    pub(super) fn of<B>(request: &Request<B>, peer: SocketAddr) -> Lingering {
        Lingering {
            http1: matches!(request.version(), Version::HTTP_10 | Version::HTTP_11),
            expects_continue: request
                .headers()
                .get(EXPECT)
                .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue")),
            peer,
        }
    }

    /// When `response` answers a request whose `body` was not read to its end: marks it
    /// `Connection: close` and, unless the client is waiting for a `100 Continue` that never
    /// came, spawns the task that discards the rest of the body.
    pub(super) fn close_after(
        self,
        body: RequestBody,
        response: &mut Response<ResponseBody>,
        config: &HttpConfig,
    ) {
        if !self.http1 || body.is_end_stream() {
            return;
        }
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        if self.expects_continue && !body.started {
            // hyper sends no 100 Continue once the answer is on its way: the client, told the
            // final answer instead, does not send the body, and hyper closes.
            return;
        }
        let (time, bytes, peer) = (config.lingering_time, config.lingering_bytes, self.peer);
        tokio::spawn(discard(body.body, time, bytes, peer));
    }
}

/// Reads and drops `body` until it ends, `time` passes or more than `bytes` came; dropping it
/// then tells hyper to close the connection (when it has not ended).
async fn discard(mut body: Incoming, time: Duration, bytes: u64, peer: SocketAddr) {
    let mut discarded = 0u64;
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return "the body failed";
            };
            if let Some(data) = frame.data_ref() {
                discarded += data.len() as u64;
                if discarded > bytes {
                    return "over the byte limit";
                }
            }
        }
        "the body ended"
    };
    let outcome = tokio::time::timeout(time, read)
        .await
        .unwrap_or("out of time");
    tracing::debug!(%peer, discarded, outcome, "lingering close: unread request body discarded");
}
