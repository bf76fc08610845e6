//! ferry's own HTTP/1.1 client for plain-text upstreams, driven from the request's own task.
//!
//! hyper-util's pooled client costs, per request, a hash of the pool key and a global pool lock
//! on checkout and return, boxed futures, and a channel hop to a separate task that owns the
//! connection (its own poll and wake-up); the request's headers had to be cloned for retries.
//! Here the request task takes a connection from its endpoint's idle stack ([`pool`]), writes the
//! head (and the body's first piece) in one `writev`, reads the response head into the
//! connection's buffer (httparse, [`codec`]) and returns a [`Body`] that reads the rest when the
//! client side polls it — in the client connection's task, no channel, no extra task — and puts
//! the connection back on the stack the moment the body's last byte is read. Headers are borrowed
//! for encoding, so a retry needs no copy.
//!
//! Upstream TLS and upgrades (101) stay on hyper's client; so does HTTP/2, which ferry does not
//! speak upstream. Pingora took the same road for the same reasons.
//!
//! An upstream that answers before it has read the whole request body (413, 401, …) is heard:
//! while the body uploads, the connection is watched for a response head, and the upload stops
//! when one arrives (the connection is then not reused). A pooled connection found dead on first
//! use — written to, but closed without a byte of answer — is retried once on a fresh connection
//! when nothing of the body was sent and the method allows (a write that failed outright always).

pub mod codec;
pub mod pool;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use self::codec::{Framing, Head};
pub use self::pool::{Pool, Pools};
use super::body::UpstreamBody;
use super::BoxError;
use crate::http1::{read_drained, Decoded, Decoder, Out, ParseError};

/// Read buffer size: a response head and a first piece of body in one read.
const READ_BUF: usize = 8 * 1024;

/// What a request needs from its backend's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// One request to send.
pub struct Request<'a> {
    pub method: &'a Method,
    /// Origin form: path and query.
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    /// Written instead of the headers' own Host, when set.
    pub host: Option<&'a HeaderValue>,
    pub body: UpstreamBody,
    /// The request may be sent again once it may have reached the upstream: its method is
    /// idempotent, or the backend opted in (`retry_on: [non_idempotent]`).
    pub replay: bool,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tcp connect error: {0}")]
    Connect(#[source] io::Error),
    #[error("tcp connect error: no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("error writing the request: {0}")]
    Write(#[source] io::Error),
    #[error("error reading the response: {0}")]
    Read(#[source] io::Error),
    #[error("connection closed before a complete response head")]
    Closed,
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("101 Switching Protocols to a request that asked for no upgrade")]
    UnexpectedUpgrade,
    #[error("CONNECT is not sent upstream on a pooled connection")]
    Tunnel,
    /// The request body failed (the client's fault, or ferry's guard refused it): the cause is
    /// kept as the source, where the attempt loop looks for it.
    #[error("error reading the request body")]
    Body(#[source] BoxError),
}

impl Error {
    /// Nothing reached the upstream.
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_) | Error::ConnectTimeout(_))
    }
}

/// Sends `req` to `addr` on a pooled connection or a new one; the response, its body still to read.
pub async fn send(pool: &Arc<Pool>, addr: SocketAddr, s: Settings, req: Request<'_>) -> Result<Response<Body>, Error> {
    let Request { method, target, headers, host, body, replay } = req;
    // RFC 9112 §9.3.2: CONNECT turns the connection into a tunnel; it never goes through this
    // client (the proxy refuses it), and a pooled connection must never carry one.
    if *method == Method::CONNECT {
        return Err(Error::Tunnel);
    }
    let has_body = !body.is_end_stream();
    let (framing, add_length) = codec::request_framing(headers, has_body, body.size_hint().exact());
    let mut head = Vec::new();
    codec::encode_head(&mut head, method, target, headers, host, framing, add_length);
    let head = Bytes::from(head);
    let head_request = *method == Method::HEAD;
    let mut body = has_body.then_some(body);
    let mut fresh_only = false;
    loop {
        let taken = if fresh_only { None } else { pool.take() };
        let reused = taken.is_some();
        let (stream, buf) = match taken {
            Some(c) => c,
            None => (connect(addr, s.connect_timeout).await?, BytesMut::with_capacity(READ_BUF)),
        };
        let mut conn = Conn { stream, buf };
        let mut up = Upload {
            head: Some(head.clone()),
            framing,
            body: &mut body,
            started: false,
            written: false,
            out: Out::default(),
        };
        match exchange(&mut conn, &mut up, head_request).await {
            Ok((h, clean)) => return Ok(response(h, conn, clean, pool.clone(), s)),
            Err(e) => {
                // A pooled connection the upstream had closed (the race every keep-alive client
                // has) gets the request once more, on a connection of ferry's own making — but
                // only when that cannot make the upstream act twice (RFC 9112 §9.3.1): no byte of
                // it went out, or it may be repeated (`replay`), and no byte of an answer came
                // back and no piece of its body was taken.
                let nothing_back = conn.buf.is_empty();
                let retry = reused
                    && nothing_back
                    && !up.started
                    && matches!(e, Error::Write(_) | Error::Closed | Error::Read(_))
                    && (!up.written || replay);
                if !retry {
                    return Err(e);
                }
                // Again, on a connection of our own making.
                fresh_only = true;
            }
        }
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Error> {
    let started = std::time::Instant::now();
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Error::Connect(e)),
        Err(_) => return Err(Error::ConnectTimeout(timeout)),
    };
    let _ = super::pool::CONNECT_TIME.try_with(|t| t.set(Some(started.elapsed())));
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    Ok(stream)
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// Reads what the socket has into the buffer: the byte count (0 at the end of the stream).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_BUF);
        }
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match read_drained(&self.stream, &mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

/// The request on its way out: the head, then the body's pieces, each written before the next is
/// asked for (so `send_timeout` sees an upstream that stops reading).
struct Upload<'b> {
    /// Not yet queued.
    head: Option<Bytes>,
    framing: Framing,
    body: &'b mut Option<UpstreamBody>,
    /// A piece of the body was taken: it cannot be sent again.
    started: bool,
    /// Some byte of the request went out: the upstream may have seen it.
    written: bool,
    /// Written next, in order (head, chunk size line, data, CRLF).
    out: Out,
}

impl Upload<'_> {
    /// Writes what is queued, then asks the body for more, until all is sent (`Ready(Ok)`), the
    /// socket or the body blocks (`Pending`), or either fails.
    fn poll_send(&mut self, stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if self.out.is_empty() {
                if let Some(h) = self.head.take() {
                    self.out.push(h);
                    // Head and the first piece of the body in one write, if the body has it now.
                    let _ = self.next_piece(cx)?;
                } else if self.next_piece(cx)?.is_pending() {
                    return Poll::Pending;
                }
                if self.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
            let n = {
                let slices = self.out.slices();
                ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..self.out.len()]))
                    .map_err(Error::Write)?
            };
            if n == 0 {
                return Poll::Ready(Err(Error::Write(io::ErrorKind::WriteZero.into())));
            }
            self.written = true;
            self.out.advance(n);
        }
    }

    /// Queues the body's next piece (framed); `Ready` when something was queued or the body ended.
    /// Frames that carry nothing to send (empty data, trailers) are passed over: a body that
    /// ends in trailers (an HTTP/2 request's closing HEADERS) still gets its last chunk.
    fn next_piece(&mut self, cx: &mut Context<'_>) -> Result<Poll<()>, Error> {
        let Some(body) = self.body.as_mut() else { return Ok(Poll::Ready(())) };
        self.started = true;
        loop {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return Ok(Poll::Pending),
                Poll::Ready(Some(Err(e))) => return Err(Error::Body(e)),
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not forwarded (nginx drops them too).
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    if self.framing == Framing::Chunked {
                        self.out.push(crate::http1::chunk_size_line(data.len()));
                        self.out.push(data);
                        self.out.push(Bytes::from_static(b"\r\n"));
                    } else {
                        self.out.push(data);
                    }
                    return Ok(Poll::Ready(()));
                }
                Poll::Ready(None) => {
                    *self.body = None;
                    if self.framing == Framing::Chunked {
                        self.out.push(Bytes::from_static(b"0\r\n\r\n"));
                    }
                    return Ok(Poll::Ready(()));
                }
            }
        }
    }
}

/// Sends the request and reads the response head (1xx skipped). `clean`: the request went out
/// whole, so the connection may be reused once the body is read.
async fn exchange(conn: &mut Conn, up: &mut Upload<'_>, head_request: bool) -> Result<(Head, bool), Error> {
    // Upload, listening for an early answer.
    let early = poll_fn(|cx| {
        match up.poll_send(&mut conn.stream, cx) {
            Poll::Ready(Ok(())) => return Poll::Ready(Ok(None)),
            Poll::Ready(Err(Error::Write(e))) => {
                // The upstream may have answered and closed: take the answer if it is there.
                return Poll::Ready(match early_head(conn, head_request, cx) {
                    Some(r) => r.map(Some),
                    None => Err(Error::Write(e)),
                });
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        match early_head(conn, head_request, cx) {
            Some(r) => Poll::Ready(r.map(Some)),
            None => Poll::Pending,
        }
    })
    .await?;
    if let Some(h) = early {
        return Ok((h, false));
    }
    let h = poll_fn(|cx| loop {
        if !conn.buf.is_empty() {
            if let Some(h) = next_head(&mut conn.buf, head_request)? {
                return Poll::Ready(Ok(h));
            }
        }
        match ready!(conn.poll_fill(cx)) {
            Ok(0) => return Poll::Ready(Err(Error::Closed)),
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(Error::Read(e))),
        }
    })
    .await?;
    Ok((h, true))
}

/// A final response head from the buffer (informational ones dropped), if one is complete.
fn next_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, Error> {
    loop {
        match codec::parse_head(buf, head_request)? {
            None => return Ok(None),
            Some(h) if h.status == http::StatusCode::SWITCHING_PROTOCOLS => return Err(Error::UnexpectedUpgrade),
            Some(h) if h.status.is_informational() => continue,
            Some(h) => return Ok(Some(h)),
        }
    }
}

/// During an upload: reads what the upstream sent, if anything; a complete final head ends the
/// upload (`Some(Ok)`), a read error or the end of the stream ends it too (`Some(Err)`).
fn early_head(conn: &mut Conn, head_request: bool, cx: &mut Context<'_>) -> Option<Result<Head, Error>> {
    loop {
        match conn.poll_fill(cx) {
            Poll::Pending => return None,
            Poll::Ready(Ok(0)) => {
                return Some(next_head(&mut conn.buf, head_request).and_then(|h| h.ok_or(Error::Closed)))
            }
            Poll::Ready(Err(e)) => return Some(Err(Error::Read(e))),
            Poll::Ready(Ok(_)) => match next_head(&mut conn.buf, head_request) {
                Ok(Some(h)) => return Some(Ok(h)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            },
        }
    }
}

fn response(h: Head, conn: Conn, clean: bool, pool: Arc<Pool>, s: Settings) -> Response<Body> {
    // The version stays HTTP/1.1 (hyper answers a 1.0 client in 1.0): an HTTP/1.0 upstream does
    // not make ferry answer its clients in 1.0, as nginx does not.
    let Head { status, version: _, reason, headers, body, keep_alive } = h;
    let mut body =
        Body { conn: Some(conn), decoder: body, reuse: keep_alive && clean, pool, settings: s, failed: None };
    if body.decoder.is_done() {
        body.release();
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    if let Some(r) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
        resp.extensions_mut().insert(r);
    }
    resp
}

/// A response body, read from the upstream connection as the client side asks for it; the
/// connection goes back to its endpoint's pool when the last byte is read (dropped unfinished,
/// it is closed).
pub struct Body {
    conn: Option<Conn>,
    decoder: Decoder,
    reuse: bool,
    pool: Arc<Pool>,
    settings: Settings,
    /// The upstream failed mid-body: reported on the next poll, after the client side has had a
    /// chance to flush what it was given (the head and the bytes that did come), as nginx sends
    /// what it got before closing.
    failed: Option<Error>,
}

impl Body {
    /// Holds `e` back for one turn of the task.
    fn fail(&mut self, e: Error, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.conn = None;
        self.failed = Some(e);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The body has ended: the connection goes back to the pool if it can carry another request.
    fn release(&mut self) {
        if let Some(c) = self.conn.take() {
            if self.reuse && c.buf.is_empty() {
                // The response is read whole. Its last read was short, so the readable flag is
                // already clear (`poll_fill`); anything after it is a new event (a FIN while
                // idle: read-closed, seen at checkout).
                self.pool.put(c.stream, c.buf, self.settings.idle_timeout, self.settings.max_idle);
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(this.failed.take().map(Err)) };
            match this.decoder.decode(&mut conn.buf) {
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Ok(Decoded::Data(data)) => {
                    if this.decoder.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => match this.decoder.eof() {
                    Ok(()) => {
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    Err(e) => return this.fail(e.into(), cx),
                },
                Ok(_) => {}
                Err(e) => return this.fail(Error::Read(e), cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done() || (self.conn.is_none() && self.failed.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
