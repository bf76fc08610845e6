//! The machinery of `tests/probes.rs`: a recording upstream, a scripted (misbehaving) upstream,
//! a client that reads every answer on a connection, and what an upstream saw, parsed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How long a probe may take before it fails (a proxy that hangs fails here).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Bytes an upstream received, in arrival order, tagged with the connection they came on.
#[derive(Default)]
pub struct Log {
    pub events: Vec<(usize, Vec<u8>)>,
    conns: usize,
}

/// One request as an upstream received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Lower-cased names, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The bytes did not parse as a request (what was there, lossy).
    pub garbage: Option<String>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }

    /// The Host's name part, lower-cased.
    pub fn host(&self) -> String {
        let h = self.header("host").unwrap_or_default().to_ascii_lowercase();
        match h.rfind(':') {
            Some(i) if !h.ends_with(']') => h[..i].to_string(),
            _ => h,
        }
    }
}

/// Splits what one connection carried into requests (strictly: one Content-Length or chunked).
pub fn requests(mut b: &[u8]) -> Vec<Seen> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut slots);
        let len = match req.parse(b) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => {
                out.push(Seen {
                    method: String::new(),
                    target: String::new(),
                    headers: Vec::new(),
                    body: Vec::new(),
                    garbage: Some(String::from_utf8_lossy(b).into_owned()),
                });
                return out;
            }
        };
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        let mut seen = Seen {
            method: req.method.unwrap_or_default().to_string(),
            target: req.path.unwrap_or_default().to_string(),
            headers,
            body: Vec::new(),
            garbage: None,
        };
        b = &b[len..];
        let chunked = seen.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            match dechunk(b) {
                Some((body, used)) => {
                    seen.body = body;
                    b = &b[used..];
                }
                None => {
                    seen.garbage = Some(format!("bad chunked body: {:?}", String::from_utf8_lossy(b)));
                    out.push(seen);
                    return out;
                }
            }
        } else if let Some(n) = seen.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if n > b.len() {
                seen.garbage = Some(format!("body cut short: {} of {n} bytes", b.len()));
            }
            let n = n.min(b.len());
            seen.body = b[..n].to_vec();
            b = &b[n..];
        }
        out.push(seen);
    }
    out
}

/// A chunked body at the front of `b`: the data and the bytes it took (trailers skipped).
pub fn dechunk(mut b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let start = b.len();
    let mut body = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            // Trailers up to the empty line.
            loop {
                let eol = b.windows(2).position(|w| w == b"\r\n")?;
                b = &b[eol + 2..];
                if eol == 0 {
                    return Some((body, start - b.len()));
                }
            }
        }
        if b.len() < size + 2 || &b[size..size + 2] != b"\r\n" {
            return None;
        }
        body.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// An upstream that answers every request `200` with body `ok` (hyper's server) and records the
/// bytes of each connection.
pub async fn recorder() -> (SocketAddr, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = log.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = shared.clone();
            tokio::spawn(async move {
                let id = {
                    let mut l = log.lock().unwrap();
                    l.conns += 1;
                    l.conns
                };
                // Reads what comes and answers each complete request once (hyper would refuse
                // some of what a faulty proxy forwards; the recording is what counts here).
                let mut pending = Vec::new();
                let mut buf = [0u8; 16384];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    log.lock().unwrap().events.push((id, buf[..n].to_vec()));
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(used) = complete_request(&pending) {
                        pending.drain(..used);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, log)
}

/// The length of the complete request at the front of `b`, if it is all there.
fn complete_request(b: &[u8]) -> Option<usize> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(b) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        // Garbage: take it all, answer once.
        Err(_) => return Some(b.len()),
    };
    let get = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")) {
        return dechunk(&b[len..]).map(|(_, used)| len + used);
    }
    let n = get("content-length").and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok()).unwrap_or(0);
    (b.len() >= len + n).then_some(len + n)
}

/// What a recorder's log holds after `mark` (an index into its events), as requests.
pub fn seen_since(log: &Mutex<Log>, mark: usize) -> Vec<Seen> {
    let l = log.lock().unwrap();
    let mut by_conn: Vec<(usize, Vec<u8>)> = Vec::new();
    for (id, bytes) in &l.events[mark..] {
        match by_conn.iter_mut().find(|(c, _)| c == id) {
            Some((_, b)) => b.extend_from_slice(bytes),
            None => by_conn.push((*id, bytes.clone())),
        }
    }
    by_conn.iter().flat_map(|(_, b)| requests(b)).collect()
}

/// Every final answer a client got on one connection, in order, and whether the bytes after them
/// were unreadable.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    pub statuses: Vec<u16>,
    pub bodies: Vec<Vec<u8>>,
    /// Bytes that did not parse as a response after the last answer.
    pub junk: bool,
    /// The proxy neither answered everything nor closed within [`PATIENCE`].
    pub hung: bool,
}

/// Sends `bytes`, half-closes, and reads until the proxy closes: every answer on the connection.
pub async fn exchange(to: SocketAddr, bytes: &[u8], head_request: bool) -> Answers {
    let mut s = TcpStream::connect(to).await.unwrap();
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let hung = tokio::time::timeout(PATIENCE, s.read_to_end(&mut out)).await.is_err();
    Answers { hung, ..responses(&out, head_request) }
}

/// Splits a client's bytes into responses (1xx skipped).
pub fn responses(mut b: &[u8], head_request: bool) -> Answers {
    let mut a = Answers::default();
    while !b.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut slots);
        let len = match resp.parse(b) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => {
                a.junk = true;
                return a;
            }
        };
        let status = resp.code.unwrap_or_default();
        let get = |name: &str| resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
        let length = get("content-length").and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
        b = &b[len..];
        if (100..200).contains(&status) {
            continue;
        }
        let body = if head_request || status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            match dechunk(b) {
                Some((body, used)) => {
                    b = &b[used..];
                    body
                }
                None => {
                    let body = b.to_vec();
                    b = &[];
                    body
                }
            }
        } else if let Some(n) = length {
            let n = n.min(b.len());
            let body = b[..n].to_vec();
            b = &b[n..];
            body
        } else {
            let body = b.to_vec();
            b = &[];
            body
        };
        a.statuses.push(status);
        a.bodies.push(body);
    }
    a
}

/// What a scripted upstream does with the first request after it is armed.
#[derive(Clone, Default)]
pub struct Script {
    /// Written at once as the answer.
    pub answer: Vec<u8>,
    /// Written a moment later on the same connection (then `stray_sent` is notified).
    pub later: Option<Vec<u8>>,
    /// Close the connection after writing (without reading more).
    pub close: bool,
}

/// An upstream that answers the armed request by its script and every other one normally
/// (`200`, body `second`); it counts the requests it reads, by method.
pub struct Scripted {
    pub addr: SocketAddr,
    state: Arc<Mutex<ScriptState>>,
    pub stray_sent: Arc<Notify>,
}

#[derive(Default)]
struct ScriptState {
    armed: Option<Script>,
    /// (method, target) of every request read.
    seen: Vec<(String, String)>,
}

pub const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond";

impl Scripted {
    pub async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ScriptState::default()));
        let stray_sent = Arc::new(Notify::new());
        let (st, notify) = (state.clone(), stray_sent.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve_scripted(s, st.clone(), notify.clone()));
            }
        });
        Scripted { addr, state, stray_sent }
    }

    pub fn arm(&self, s: Script) {
        self.state.lock().unwrap().armed = Some(s);
    }

    /// Requests read so far.
    pub fn seen(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().seen.clone()
    }
}

async fn serve_scripted(mut s: TcpStream, state: Arc<Mutex<ScriptState>>, stray_sent: Arc<Notify>) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        while let Some(used) = complete_request(&pending) {
            let head: Vec<u8> = pending.drain(..used).collect();
            let first = requests(&head).into_iter().next();
            let (method, target) = first.map(|r| (r.method, r.target)).unwrap_or_default();
            let script = {
                let mut st = state.lock().unwrap();
                st.seen.push((method, target));
                st.armed.take()
            };
            match script {
                None => {
                    if s.write_all(SECOND).await.is_err() {
                        return;
                    }
                }
                Some(sc) => {
                    if s.write_all(&sc.answer).await.is_err() {
                        return;
                    }
                    if let Some(later) = sc.later {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = s.write_all(&later).await;
                        if sc.close {
                            let _ = s.shutdown().await;
                            drop(s);
                            stray_sent.notify_one();
                            return;
                        }
                        stray_sent.notify_one();
                    }
                    if sc.close {
                        return;
                    }
                }
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}
