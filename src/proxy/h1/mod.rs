//! ferry's own HTTP/1.1 server for plain-text client connections: the common request, read and
//! answered in the connection's task with no dispatcher, no body channel and no buffer held
//! while the connection is idle.
//!
//! A connection waits for readability with no buffer at all (an idle keep-alive connection costs
//! its task, its socket and a timer); a read buffer exists from the moment bytes arrive until the
//! request they carry is answered. The head is parsed with httparse into one shared `Bytes`
//! (every header value a slice of it); the body is read by the handler's side through
//! [`Body`], straight out of the same buffer; the response head is written with the body's first
//! piece in one `writev`.
//!
//! What this server does not take — a head that is malformed, oversized or needs judgment, an
//! upgrade, `Expect`, CONNECT, an HTTP/2 preface (see [`codec`]) — it hands over with the bytes
//! read so far ([`Outcome::HandOff`]), and hyper serves the rest of that connection exactly as
//! before (its 400/431 answers, h2c, upgrades). A request body the handler left unread is
//! discarded if it is already here; otherwise the connection closes after the response, with a
//! short lingering read so the client sees the answer rather than a reset.

pub mod codec;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use self::codec::{Asked, Framing, Parsed};
use crate::http1::{read_drained, Decoded, Decoder, Out};
use crate::upstream::BoxError;

/// The read buffer: a request head and the first piece of a body in one read (hyper: the same).
const READ_BUF: usize = 8 * 1024;
/// Unread request body ferry reads past to keep a connection (nginx discards bodies too).
const DISCARD_MAX: usize = 64 * 1024;
/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(1);
/// Parts gathered into one `writev` (hyper's write queue: 16): what the body has ready goes
/// out in one call, not one call per piece.
const WRITE_PARTS: usize = 16;

/// The listener's limits this server applies itself.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// How a connection left this server.
pub enum Outcome {
    Closed,
    /// hyper takes it: the socket and the bytes already read from it.
    HandOff(TcpStream, Bytes),
}

/// The connection, shared by the server loop and the request body being read.
struct Io {
    stream: TcpStream,
    rx: Mutex<Rx>,
}

struct Rx {
    buf: BytesMut,
    /// The current request's body framing and where its reading stands.
    body: Decoder,
    /// The client has shut down its sending side.
    eof: bool,
}

impl Io {
    fn rx(&self) -> MutexGuard<'_, Rx> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One read into the buffer once the socket is readable (see `read_drained` for the
    /// readiness it clears).
    fn poll_fill(&self, rx: &mut Rx, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            // Readable first: a connection waiting for its next request holds no buffer.
            ready!(self.stream.poll_read_ready(cx))?;
            if rx.buf.capacity() == 0 {
                rx.buf = buffers::take();
            } else if rx.buf.capacity() - rx.buf.len() < 1024 {
                rx.buf.reserve(READ_BUF);
            }
            match read_drained(&self.stream, &mut rx.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The readiness was stale: nothing to read after all, so nothing to hold.
                    if rx.buf.is_empty() {
                        buffers::give(std::mem::take(&mut rx.buf));
                    }
                    continue;
                }
                Ok(0) => {
                    rx.eof = true;
                    return Poll::Ready(Ok(0));
                }
                r => return Poll::Ready(r),
            }
        }
    }
}

/// Read buffers between requests: a few per worker thread, so a connection holds one only while
/// it is busy and taking one is not a fresh 8 KiB allocation per request (the allocator's
/// slow path for that size costs more than the rest of the read).
mod buffers {
    use std::cell::RefCell;

    use bytes::BytesMut;

    use super::READ_BUF;

    /// Buffers kept per thread (more are freed): enough for the requests a worker has in
    /// flight at once in the common case, 256 KiB at most.
    const KEEP: usize = 32;

    thread_local! {
        static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    pub fn take() -> BytesMut {
        let mut b = FREE.with(|f| f.borrow_mut().pop()).unwrap_or_default();
        // A buffer whose last head has been dropped gets its whole allocation back here.
        b.reserve(READ_BUF);
        b
    }

    /// Takes back an empty buffer (one still shared with a request's head is kept too: its
    /// space comes back once that head is dropped).
    pub fn give(mut b: BytesMut) {
        if b.capacity() == 0 {
            return;
        }
        b.clear();
        FREE.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < KEEP {
                f.push(b);
            }
        });
    }
}

/// A request's answer, from the handler. The server is generic in the response body (the proxy
/// answers with its own `ProxyBody`), so it depends on no other part of the proxy.
pub type Answer<B> = Pin<Box<dyn Future<Output = Response<B>> + Send>>;

/// On a response: nothing is written, the connection is closed (HTTP/1) or the stream reset
/// (HTTP/2) — nginx's `return 444`, which a `respond: { status: 444 }` does.
#[derive(Debug, Clone, Copy)]
pub struct NoAnswer;

/// What a response body must be for this server to write it.
pub trait ResponseBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Unpin
{
}
impl<B> ResponseBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Unpin
{
}

/// Serves requests on `stream` until it closes, `drain` turns true while it is idle, or a
/// request needs hyper.
pub async fn serve<B: ResponseBody>(
    stream: TcpStream,
    s: Settings,
    mut drain: watch::Receiver<bool>,
    mut handle: impl FnMut(Request<Body>) -> Answer<B>,
) -> Outcome {
    let io = Arc::new(Io { stream, rx: Mutex::new(Rx { buf: BytesMut::new(), body: Decoder::Done, eof: false }) });
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    loop {
        let head = match next_head(&io, &s, &mut drain, &mut timer).await {
            Next::Head(h) => h,
            Next::Close => return Outcome::Closed,
            Next::Unusual => return hand_off(io),
            Next::NotHttp1 => return Box::pin(close(io)).await,
        };
        let answer = handle_request(&io, head, &mut handle);
        // Boxed: the connection's task keeps only what waiting for the next request needs (its
        // size is what an idle connection costs); a request's own state lives while it does.
        match Box::pin(exchange(&io, answer, &s)).await {
            Ok(false) => {}
            Ok(true) => return Box::pin(close(io)).await,
            Err(()) => return Outcome::Closed,
        }
    }
}

/// A request answered: the handler's future, and what the response head needs of the request.
struct Pending<B> {
    answer: Answer<B>,
    head: bool,
    version: http::Version,
    keep_alive: bool,
    bodiless: bool,
}

/// Hands the request to the handler, its body reading from this connection.
fn handle_request<B>(
    io: &Arc<Io>,
    head: codec::Head,
    handle: &mut impl FnMut(Request<Body>) -> Answer<B>,
) -> Pending<B> {
    let codec::Head { request, body, keep_alive } = head;
    let asked_head = request.method() == http::Method::HEAD;
    let version = request.version();
    let req_body = if body.is_done() {
        Body::empty()
    } else {
        let size = body.remaining();
        io.rx().body = body;
        Body { io: Some(io.clone()), done: false, size }
    };
    let bodiless = req_body.done;
    Pending { answer: handle(request.map(|()| req_body)), head: asked_head, version, keep_alive, bodiless }
}

/// Runs the handler and writes its response: `Ok(true)` when the connection ends after it,
/// `Err` when it ended under it.
async fn exchange<B: ResponseBody>(io: &Arc<Io>, p: Pending<B>, s: &Settings) -> Result<bool, ()> {
    let Some(resp) = answer(p.answer, io, p.bodiless, s).await else { return Err(()) };
    // nginx's `return 444`: the connection closes with nothing written.
    if resp.extensions().get::<NoAnswer>().is_some() {
        return Err(());
    }
    // The connection carries another request only if this one's body is behind us, and the
    // client may still send one: after a half-close, only the requests already read (pipelined
    // before the end) are answered.
    let more = {
        let rx = io.rx();
        !rx.eof || !rx.buf.is_empty()
    };
    let keep_alive = p.keep_alive && more && body_finished(io);
    let asked = Asked { head: p.head, version: p.version, keep_alive };
    respond(io, resp, asked).await.map_err(|_| ())
}

#[allow(clippy::large_enum_variant)] // as `codec::Parsed`
enum Next {
    Head(codec::Head),
    Close,
    Unusual,
    /// Not an HTTP/1 request (an invalid HTTP/2 preface, another protocol): closed unanswered.
    NotHttp1,
}

/// Waits for the next request head: `header_read_timeout` from the start of the wait (as hyper
/// times it, idle keep-alive time included). The timer is set once and only moved when it fires
/// early, so a busy connection does not re-arm a timer per request.
async fn next_head(
    io: &Io,
    s: &Settings,
    drain: &mut watch::Receiver<bool>,
    timer: &mut Option<Pin<Box<Sleep>>>,
) -> Next {
    let deadline = Instant::now() + s.header_read_timeout;
    {
        let mut rx = io.rx();
        if rx.buf.is_empty() {
            // Idle: no buffer held.
            buffers::give(std::mem::take(&mut rx.buf));
        }
    }
    loop {
        {
            let mut rx = io.rx();
            if !rx.buf.is_empty() {
                match codec::parse_request(&mut rx.buf, s.max_header_bytes, s.max_headers) {
                    Parsed::Head(h) => return Next::Head(h),
                    Parsed::Unusual => return Next::Unusual,
                    Parsed::NotHttp1 => return Next::NotHttp1,
                    Parsed::Partial => {}
                }
            }
            if rx.eof {
                return if rx.buf.is_empty() { Next::Close } else { Next::Unusual };
            }
            if rx.buf.is_empty() && *drain.borrow() {
                return Next::Close;
            }
        }
        let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        tokio::select! {
            biased;
            r = poll_fn(|cx| io.poll_fill(&mut io.rx(), cx)) => {
                if r.is_err() {
                    return Next::Close;
                }
            }
            _ = sleep.as_mut() => {
                if Instant::now() >= deadline {
                    return Next::Close;
                }
                sleep.as_mut().reset(deadline);
            }
            r = drain.changed() => {
                if r.is_err() || (*drain.borrow() && io.rx().buf.is_empty()) {
                    return Next::Close;
                }
            }
        }
    }
}

/// Runs the handler. For a request without a body the socket is watched meanwhile: bytes are
/// kept for the next request, the end of the client's sending side is noted (a client may
/// half-close and wait for its answer), a reset abandons the request (`None`).
async fn answer<B>(mut fut: Answer<B>, io: &Io, bodiless: bool, s: &Settings) -> Option<Response<B>> {
    let mut watching = bodiless;
    poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        while watching {
            let mut rx = io.rx();
            if rx.eof || rx.buf.len() >= s.max_header_bytes {
                watching = false;
                break;
            }
            match io.poll_fill(&mut rx, cx) {
                Poll::Pending => break,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(None),
            }
        }
        Poll::Pending
    })
    .await
}

/// Has the request body been read to its end? If not, what of it is already here (or arrives
/// without waiting) is read past, up to [`DISCARD_MAX`] — unless the handler's side still holds
/// the body (an upload still going on beside the response): then the connection closes.
fn body_finished(io: &Arc<Io>) -> bool {
    let mut rx = io.rx();
    if rx.body.is_done() {
        return true;
    }
    if Arc::strong_count(io) > 1 {
        return false;
    }
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut discarded = 0;
    loop {
        let Rx { buf, body, .. } = &mut *rx;
        match body.decode(buf) {
            Ok(Decoded::End) => return true,
            Ok(Decoded::Data(d)) => {
                discarded += d.len();
                if discarded > DISCARD_MAX {
                    return false;
                }
            }
            Ok(Decoded::More) => match io.poll_fill(&mut rx, &mut cx) {
                Poll::Ready(Ok(n)) if n > 0 => {}
                _ => return false,
            },
            Err(_) => return false,
        }
    }
}

/// Closes after the last response: the sending side is shut down, and if the client may still
/// be sending (an unread body, requests after this one) what comes is read and dropped for a
/// moment, so the close does not reset the connection under the answer.
async fn close(io: Arc<Io>) -> Outcome {
    let Ok(io) = Arc::try_unwrap(io) else { return Outcome::Closed };
    let Io { mut stream, rx } = io;
    let rx = rx.into_inner().unwrap_or_else(|e| e.into_inner());
    let _ = stream.shutdown().await;
    if rx.eof || (rx.buf.is_empty() && rx.body.is_done()) {
        return Outcome::Closed;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = vec![0u8; 4096];
        let mut total = 0;
        while total < DISCARD_MAX * 4 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    Outcome::Closed
}

fn hand_off(io: Arc<Io>) -> Outcome {
    match Arc::try_unwrap(io) {
        Ok(Io { stream, rx }) => {
            let rx = rx.into_inner().unwrap_or_else(|e| e.into_inner());
            Outcome::HandOff(stream, rx.buf.freeze())
        }
        // The last request's body is still held somewhere: nothing sensible to hand over.
        Err(_) => Outcome::Closed,
    }
}

/// Writes the response; `Ok(true)` when the connection ends after it.
async fn respond<B: ResponseBody>(io: &Io, resp: Response<B>, asked: Asked) -> io::Result<bool> {
    let (parts, body) = resp.into_parts();
    let length = if body.is_end_stream() { None } else { Some(body.size_hint().exact()) };
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>().map(|r| r.as_bytes());
    let mut head = Vec::new();
    let enc =
        codec::date(|d| codec::encode_response(&mut head, parts.status, reason, &parts.headers, length, asked, d));
    let mut w = Writer {
        out: Out::default(),
        framing: enc.framing,
        left: match enc.framing {
            Framing::Length(n) => n,
            _ => 0,
        },
        trailers: enc.trailers,
        ended: false,
    };
    w.out.push(Bytes::from(head));
    let mut body = Some(body);
    if enc.framing == Framing::Length(0) {
        // Nothing of the body goes out (HEAD, 204, 304, an empty body): it is dropped now.
        w.ended = true;
        body = None;
    }
    poll_fn(|cx| w.poll_write(io, body.as_mut(), cx)).await?;
    Ok(enc.last)
}

struct Writer {
    /// The head, then the framed pieces of body ready now (size line, data, CRLF; the end).
    out: Out<WRITE_PARTS>,
    framing: Framing,
    /// Bytes still owed under a Content-Length.
    left: u64,
    trailers: Option<Vec<http::HeaderName>>,
    ended: bool,
}

impl Writer {
    fn poll_write<B: ResponseBody>(
        &mut self,
        io: &Io,
        mut body: Option<&mut B>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            // Take what the body has now, while there is room for a framed piece.
            // Room for one more framed piece (size line, data, CRLF and the end when chunked).
            let need = if self.framing == Framing::Chunked { 4 } else { 2 };
            while !self.ended && self.out.room() >= need {
                let Some(body) = body.as_deref_mut() else { break };
                match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => self.queue(data)?,
                        Err(frame) => {
                            if let (Ok(t), Some(allowed)) = (frame.into_trailers(), &self.trailers) {
                                if self.framing == Framing::Chunked {
                                    let mut end = Vec::new();
                                    codec::encode_trailers(&mut end, &t, allowed);
                                    self.out.push(Bytes::from(end));
                                    self.ended = true;
                                }
                            }
                        }
                    },
                    Poll::Ready(None) => self.end()?,
                    // The body failed: the client must not take what it got as whole.
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e.into()))),
                }
            }
            if self.out.is_empty() {
                return if self.ended { Poll::Ready(Ok(())) } else { Poll::Pending };
            }
            let n = {
                let slices = self.out.slices();
                match io.stream.try_write_vectored(&slices[..self.out.len()]) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready!(io.stream.poll_write_ready(cx))?;
                        continue;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            };
            self.out.advance(n);
        }
    }

    fn queue(&mut self, data: Bytes) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            Framing::Length(_) => {
                if data.len() as u64 > self.left {
                    return Err(io::Error::other("the response body is longer than its Content-Length"));
                }
                self.left -= data.len() as u64;
                self.out.push(data);
            }
            Framing::Chunked => {
                self.out.push(crate::http1::chunk_size_line(data.len()));
                self.out.push(data);
                self.out.push(Bytes::from_static(b"\r\n"));
            }
            Framing::Close => self.out.push(data),
        }
        Ok(())
    }

    fn end(&mut self) -> io::Result<()> {
        self.ended = true;
        match self.framing {
            Framing::Length(_) if self.left > 0 => {
                Err(io::Error::other("the response body ended before its Content-Length"))
            }
            Framing::Chunked => {
                self.out.push(Bytes::from_static(b"0\r\n\r\n"));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A request body, read from the client connection as the handler's side asks for it.
pub struct Body {
    io: Option<Arc<Io>>,
    done: bool,
    /// Bytes still to come, when declared.
    size: Option<u64>,
}

impl Body {
    pub fn empty() -> Body {
        Body { io: None, done: true, size: Some(0) }
    }
}

/// The client's body broke off or was malformed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Framing(#[from] crate::http1::ParseError),
    #[error("reading the request body: {0}")]
    Read(#[from] io::Error),
    #[error("the client closed the connection before the request body ended")]
    Truncated,
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let Some(io) = this.io.clone() else { return Poll::Ready(None) };
        let mut rx = io.rx();
        let fail = |this: &mut Body, e: BodyError| {
            this.done = true;
            this.io = None;
            Poll::Ready(Some(Err(Box::new(e) as BoxError)))
        };
        loop {
            let Rx { buf, body, eof } = &mut *rx;
            match body.decode(buf) {
                Err(e) => return fail(this, e.into()),
                Ok(Decoded::Data(data)) => {
                    if let Some(s) = &mut this.size {
                        *s = s.saturating_sub(data.len() as u64);
                    }
                    if body.is_done() {
                        this.done = true;
                        this.io = None;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.done = true;
                    this.io = None;
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) if *eof => return fail(this, BodyError::Truncated),
                Ok(Decoded::More) => {}
            }
            match ready!(io.poll_fill(&mut rx, cx)) {
                Ok(_) => {}
                Err(e) => return fail(this, e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.size {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// A connection hyper takes over: the bytes ferry read first, then the socket.
pub struct Rewind {
    pre: Bytes,
    stream: TcpStream,
}

impl Rewind {
    pub fn new(stream: TcpStream, pre: Bytes) -> Rewind {
        Rewind { pre, stream }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            let part = self.pre.split_to(n);
            buf.put_slice(&part);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, b)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
