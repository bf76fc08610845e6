//! The response body ferry sends to clients: either its own small text, or the upstream's body
//! streamed through frame by frame (never buffered whole).
//!
//! The streamed variant carries the endpoint's in-flight guard (least-request sees the request as
//! busy until its body ends), records the request duration when the body finishes or is dropped,
//! and enforces what is left of `request_timeout`: if the deadline passes mid-body the stream fails,
//! so hyper aborts the client connection instead of ending a truncated response cleanly.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::Histogram;
use tokio::time::Sleep;

use crate::balance::InFlight;
use crate::upstream::BoxError;

pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(Tracked),
}

pub struct Tracked {
    inner: Incoming,
    _flight: InFlight,
    started: Instant,
    duration: Histogram,
    deadline: Option<tokio::time::Instant>,
    /// Created only when the body actually has to wait (most small bodies never do).
    sleep: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("request_timeout passed while streaming the response body")]
pub struct BodyTimeout;

impl ProxyBody {
    pub fn full(b: Bytes) -> ProxyBody {
        ProxyBody::Full(Some(b))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    pub fn upstream(
        inner: Incoming,
        flight: InFlight,
        started: Instant,
        duration: Histogram,
        deadline: Option<tokio::time::Instant>,
    ) -> ProxyBody {
        ProxyBody::Upstream(Tracked { inner, _flight: flight, started, duration, deadline, sleep: None })
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.duration.observe(self.started.elapsed().as_secs_f64());
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(t) => {
                match Pin::new(&mut t.inner).poll_frame(cx) {
                    Poll::Ready(r) => return Poll::Ready(r.map(|r| r.map_err(Into::into))),
                    Poll::Pending => {}
                }
                let Some(deadline) = t.deadline else {
                    return Poll::Pending;
                };
                let sleep = t.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(t) => t.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(t) => t.inner.size_hint(),
        }
    }
}
