//! One call on a connection: the request's headers and its message queued from
//! the caller's task, the rest of a streaming request piped by a task of its
//! own, and the answer as a body tonic reads.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as _, Frame};
use tonic::body::Body;
use tonic::Status;

use super::driver::{Activity, StreamOpen};
use super::BoxError;

/// The connection did not take the request: nothing of it was sent.
pub(super) struct NotSent(pub(super) h2::Error);

/// A request on its way: its answer is awaited with [`Exchange::response`].
pub(super) struct Exchange {
    answer: h2::client::ResponseFuture,
    open: StreamOpen,
    /// The request's own body failed: the stream was reset, this is the answer.
    failed: Option<Status>,
}

/// Queue `head` and every frame of `body` that is ready now; a body with more
/// to come (a stream's requests) is piped by a task until it ends or the call
/// does.
pub(super) fn start(
    mut send: h2::client::SendRequest<Bytes>,
    head: Request<()>,
    mut body: Body,
    activity: &Arc<Activity>,
) -> Result<Exchange, NotSent> {
    let (answer, mut stream) = send.send_request(head, false).map_err(NotSent)?;
    let open = StreamOpen::new(activity.clone());
    // A unary request's message is ready at once: it goes with the headers,
    // with the end of the stream on it. The waker is a no-op: a body that is
    // not ready is polled again by the pipe's task, with its own.
    let mut cx = Context::from_waker(Waker::noop());
    let mut held: Option<Bytes> = None;
    let more = loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Pending => break true,
            Poll::Ready(None) => break false,
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if let Some(earlier) = held.replace(data) {
                        // A send refused here means the stream is gone already;
                        // the answer says why.
                        let _ = stream.send_data(earlier, false);
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => {
                stream.send_reset(h2::Reason::CANCEL);
                let failed = Some(status);
                return Ok(Exchange {
                    answer,
                    open,
                    failed,
                });
            }
        }
    };
    if more {
        if let Some(earlier) = held {
            let _ = stream.send_data(earlier, false);
        }
        tokio::spawn(pipe(body, stream));
    } else {
        let _ = stream.send_data(held.unwrap_or_default(), true);
    }
    Ok(Exchange {
        answer,
        open,
        failed: None,
    })
}

impl Exchange {
    /// The answer's headers, and its body to read.
    pub(super) async fn response(self) -> Result<Response<Body>, BoxError> {
        if let Some(failed) = self.failed {
            return Err(failed.into());
        }
        let response = self.answer.await.map_err(status)?;
        let open = self.open;
        Ok(response.map(|recv| {
            Body::new(Answer {
                recv,
                data_done: false,
                _open: open,
            })
        }))
    }
}

/// Send the rest of a streaming request's body, until it ends, fails, or the
/// stream is reset (the call was dropped or the member ended it).
async fn pipe(mut body: Body, mut stream: h2::SendStream<Bytes>) {
    loop {
        let next = std::future::poll_fn(|cx| {
            if stream.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            Pin::new(&mut body).poll_frame(cx).map(Some)
        })
        .await;
        match next {
            // Reset: nothing more to send.
            None => return,
            Some(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if stream.send_data(data, false).is_err() {
                        return;
                    }
                }
            }
            Some(Some(Err(_))) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
        }
    }
}

/// An answer's body: its data, then its trailers (where gRPC puts the status),
/// giving the connection back its window as data is read.
struct Answer {
    recv: h2::RecvStream,
    data_done: bool,
    /// The stream counts as open (for keep-alive pings) while this lives.
    _open: StreamOpen,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(status(e)))),
                Poll::Ready(None) => self.data_done = true,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(status(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// An HTTP/2 failure as gRPC's status, coded as tonic codes it for its own
/// channel; a broken connection (no HTTP/2 reason) is `Unavailable`.
fn status(e: h2::Error) -> Status {
    use h2::Reason;
    use tonic::Code;
    let code = match e.reason() {
        None => Code::Unavailable,
        Some(Reason::REFUSED_STREAM) => Code::Unavailable,
        Some(Reason::CANCEL) => Code::Cancelled,
        Some(Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        Some(Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
        Some(_) => Code::Internal,
    };
    Status::new(code, format!("h2 protocol error: {e}"))
}
