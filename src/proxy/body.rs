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

// The upstream variant is the common one and lives only while its request does: boxing it would
// cost an allocation per request to save a few hundred bytes per request in flight.
#[allow(clippy::large_enum_variant)]
pub enum ProxyBody {
    Full(Option<Bytes>),
    Upstream(Tracked),
    /// A route's `body_replace` applied to another body.
    Replaced(Box<crate::upstream::replace::Replaced<ProxyBody>>),
    /// Anything else, boxed: a static file, a compressed answer.
    Boxed(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
    /// Another body, its data bytes counted, and someone told when it ends (the access log,
    /// which writes its line then).
    Counted(Box<Counted>),
}

/// A client's request body: read by ferry's own HTTP/1 server, or by hyper's (HTTP/2, TLS, and
/// the connections ferry's server hands over).
pub enum ClientBody {
    Own(super::h1::Body),
    Hyper(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Own(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Own(b) => b.is_end_stream(),
            ClientBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Own(b) => b.size_hint(),
            ClientBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// An upstream's response body: read by ferry's own HTTP/1 client, or by hyper's (TLS upstreams).
pub enum UpBody {
    Own(crate::upstream::h1::Body),
    Hyper(Incoming),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Own(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Own(b) => b.is_end_stream(),
            UpBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Own(b) => b.size_hint(),
            UpBody::Hyper(b) => b.size_hint(),
        }
    }
}

pub struct Tracked {
    inner: UpBody,
    _flight: InFlight,
    started: Instant,
    duration: Histogram,
    deadline: Option<tokio::time::Instant>,
    /// The longest wait for the upstream's next bytes (`read_timeout`).
    read_timeout: Option<std::time::Duration>,
    /// A frame came since the timer was last set: it restarts from the next wait.
    progressed: bool,
    /// Created only when the body actually has to wait (most small bodies never do).
    sleep: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("read_timeout or request_timeout passed while streaming the response body")]
pub struct BodyTimeout;

/// Told once how a response body ended — at its end, on its failure, or when it is dropped
/// unfinished — with the data bytes it carried. (The access log implements it; the body does
/// not need to know the log.)
pub trait Ended: Send {
    fn ended(self: Box<Self>, body_bytes: u64);
}

/// A body whose data bytes are counted, and whose end is told to an [`Ended`].
pub struct Counted {
    inner: ProxyBody,
    bytes: u64,
    on_end: Option<Box<dyn Ended>>,
}

impl Counted {
    fn end(&mut self) {
        if let Some(e) = self.on_end.take() {
            e.ended(self.bytes);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.end();
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(data) = f.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(_) => self.end(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl ProxyBody {
    /// `inner`, counted, with `on_end` told when it ends.
    pub fn counted(inner: ProxyBody, on_end: Box<dyn Ended>) -> ProxyBody {
        ProxyBody::Counted(Box::new(Counted { inner, bytes: 0, on_end: Some(on_end) }))
    }

    pub fn full(b: Bytes) -> ProxyBody {
        ProxyBody::Full(Some(b))
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }

    pub fn boxed<B>(b: B) -> ProxyBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        ProxyBody::Boxed(b.map_err(Into::into).boxed_unsync())
    }

    pub fn upstream(
        inner: UpBody,
        flight: InFlight,
        started: Instant,
        duration: Histogram,
        deadline: Option<tokio::time::Instant>,
        read_timeout: Option<std::time::Duration>,
    ) -> ProxyBody {
        ProxyBody::Upstream(Tracked {
            inner,
            _flight: flight,
            started,
            duration,
            deadline,
            read_timeout,
            progressed: false,
            sleep: None,
        })
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
            ProxyBody::Replaced(r) => Pin::new(&mut **r).poll_frame(cx),
            ProxyBody::Boxed(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Counted(l) => Pin::new(&mut **l).poll_frame(cx),
            ProxyBody::Upstream(t) => {
                match Pin::new(&mut t.inner).poll_frame(cx) {
                    Poll::Ready(r) => {
                        t.progressed = true;
                        return Poll::Ready(r);
                    }
                    Poll::Pending => {}
                }
                if t.deadline.is_none() && t.read_timeout.is_none() {
                    return Poll::Pending;
                }
                // Waiting: the timer runs to the earlier of the request deadline and read_timeout
                // from now (restarted only after bytes came, so a steady stream is never cut).
                if t.sleep.is_none() || (t.progressed && t.read_timeout.is_some()) {
                    t.progressed = false;
                    let idle = t.read_timeout.map(|d| tokio::time::Instant::now() + d);
                    let at = match (t.deadline, idle) {
                        (Some(a), Some(b)) => a.min(b),
                        (a, b) => a.or(b).expect("one is set"),
                    };
                    match &mut t.sleep {
                        Some(s) => s.as_mut().reset(at),
                        None => t.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                }
                let sleep = t.sleep.as_mut().expect("set above");
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
            ProxyBody::Replaced(r) => r.is_end_stream(),
            ProxyBody::Boxed(b) => b.is_end_stream(),
            ProxyBody::Counted(l) => l.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(t) => t.inner.size_hint(),
            ProxyBody::Replaced(_) => SizeHint::default(),
            ProxyBody::Boxed(b) => b.size_hint(),
            ProxyBody::Counted(l) => l.size_hint(),
        }
    }
}
