//! The L4 data plane: accept → pick an endpoint of the listener's backend → connect (the next
//! endpoint on failure) → copy both ways until both sides are done or the connection is idle.
//!
//! With `proxy_protocol` the client's address is read from a PROXY header first (it then drives
//! client_ip balancing and any PROXY header sent on). With `sni` routes the TLS ClientHello is
//! read (not answered: the TLS session stays end to end), its server name picks the backend, and
//! the bytes read are replayed to the upstream before copying starts.
//!
//! Half-close is propagated: when one side ends its stream, ferry shuts down writing toward the
//! other and keeps copying the opposite direction (a client that sends a query and shuts down
//! still gets the whole answer). The table is loaded once per connection. Stopping stops
//! accepting; open connections finish on their own (the caller bounds that with
//! `shutdown_timeout`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::debug;

use crate::balance::Tried;
use crate::table::store::Store;

/// Copy buffer per direction: large, for throughput.
const BUF: usize = 64 * 1024;

pub struct TcpProxy {
    pub name: Arc<str>,
    pub store: Arc<Store>,
    connections: IntCounter,
    active: IntGauge,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
}

impl TcpProxy {
    pub fn new(name: &str, store: Arc<Store>) -> TcpProxy {
        let m = &store.metrics;
        TcpProxy {
            name: name.into(),
            connections: m.connections.with_label_values(&[name]),
            active: m.connections_active.with_label_values(&[name]),
            bytes_in: m.tcp_bytes.with_label_values(&[name, "client_to_upstream"]),
            bytes_out: m.tcp_bytes.with_label_values(&[name, "upstream_to_client"]),
            store,
        }
    }

    fn error(&self, kind: &str) {
        self.store.metrics.proxy_errors.with_label_values(&[&self.name, kind]).inc();
    }

    /// The connection's access-log line, if the listener logs.
    fn log(&self, s: &Session) {
        let table = self.store.load();
        if let Some(log) = table.listener(&self.name).and_then(|l| l.access_log.as_ref()) {
            log.log(&Logged { listener: &self.name, s });
        }
    }
}

/// One connection, as its log line tells it.
struct Session {
    started: Instant,
    client: SocketAddr,
    server_name: Option<String>,
    backend: Option<Arc<str>>,
    upstream: Option<SocketAddr>,
    connect: Option<Duration>,
    /// From the client, to the client, to the upstream (with any PROXY header and replayed
    /// ClientHello), from the upstream.
    received: AtomicU64,
    sent: AtomicU64,
    upstream_sent: AtomicU64,
    upstream_received: AtomicU64,
    status: u16,
    /// How it ended, if not cleanly.
    error: Option<&'static str>,
}

impl Session {
    fn new(client: SocketAddr) -> Session {
        Session {
            started: Instant::now(),
            client,
            server_name: None,
            backend: None,
            upstream: None,
            connect: None,
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            upstream_sent: AtomicU64::new(0),
            upstream_received: AtomicU64::new(0),
            status: 200,
            error: None,
        }
    }

    fn end(&mut self, status: u16, error: &'static str) {
        self.status = status;
        self.error = Some(error);
    }
}

struct Logged<'a> {
    listener: &'a str,
    s: &'a Session,
}

impl crate::access_log::Fields for Logged<'_> {
    fn field(&self, v: &crate::config::log::LogVar, out: &mut Vec<u8>) -> bool {
        use crate::config::log::LogVar;
        use std::io::Write;
        let s = self.s;
        let up = s.upstream.is_some();
        match v {
            LogVar::RemoteAddr => write!(out, "{}", s.client.ip().to_canonical()).is_ok(),
            LogVar::RemotePort => write!(out, "{}", s.client.port()).is_ok(),
            LogVar::Protocol => write!(out, "TCP").is_ok(),
            LogVar::Status => write!(out, "{}", s.status).is_ok(),
            LogVar::BytesSent => write!(out, "{}", s.sent.load(Relaxed)).is_ok(),
            LogVar::BytesReceived => write!(out, "{}", s.received.load(Relaxed)).is_ok(),
            LogVar::UpstreamBytesSent => up && write!(out, "{}", s.upstream_sent.load(Relaxed)).is_ok(),
            LogVar::UpstreamBytesReceived => up && write!(out, "{}", s.upstream_received.load(Relaxed)).is_ok(),
            LogVar::SessionTime => {
                crate::access_log::seconds(s.started.elapsed(), out);
                true
            }
            LogVar::UpstreamAddr => s.upstream.is_some_and(|a| write!(out, "{a}").is_ok()),
            LogVar::UpstreamConnectTime => match s.connect {
                Some(d) => {
                    crate::access_log::seconds(d, out);
                    true
                }
                None => false,
            },
            LogVar::SslPrereadServerName => s.server_name.as_deref().is_some_and(|n| write!(out, "{n}").is_ok()),
            LogVar::Backend => s.backend.as_deref().is_some_and(|b| write!(out, "{b}").is_ok()),
            LogVar::FerryError => s.error.is_some_and(|e| write!(out, "{e}").is_ok()),
            LogVar::Listener => write!(out, "{}", self.listener).is_ok(),
            LogVar::Pid => write!(out, "{}", std::process::id()).is_ok(),
            LogVar::Hostname => write!(out, "{}", crate::access_log::hostname()).is_ok(),
            _ => false,
        }
    }
}

/// Serves `listener` until `stop` turns true, then waits for open connections to finish.
pub async fn serve(listener: TcpListener, shared: Arc<TcpProxy>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    let mut accept_errors = 0u64;
    while !*stop.borrow() {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    shared.connections.inc();
                    let Some(active) = super::Active::admit(&shared.store, &shared.name, &shared.active) else {
                        // Refused: closed at once, before any byte is read or an upstream is dialled.
                        shared.error("max_connections");
                        drop(stream);
                        let mut s = Session::new(peer);
                        s.end(503, "max_connections");
                        shared.log(&s);
                        continue;
                    };
                    let shared = shared.clone();
                    conns.spawn(async move {
                        let mut session = Session::new(peer);
                        proxy(&shared, stream, &mut session).await;
                        shared.log(&session);
                        drop(active);
                    });
                }
                Err(e) => super::accept_failed(&shared.name, &e, &mut accept_errors).await,
            },
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// ClientHellos are a few hundred bytes; post-quantum key shares make them a couple of KiB.
const MAX_CLIENT_HELLO: usize = 16 * 1024;

async fn proxy(shared: &TcpProxy, mut client: TcpStream, session: &mut Session) {
    let mut peer = session.client;
    let (proxy_protocol, passthrough) =
        shared.store.load().listener(&shared.name).map(|l| (l.proxy_protocol, !l.sni.is_empty())).unwrap_or_default();
    if proxy_protocol {
        match super::proxy_protocol::accept(&mut client, peer).await {
            Ok(real) => {
                peer = real;
                session.client = real;
            }
            Err(e) => {
                debug!(listener = %shared.name, client = %peer, error = %e, "PROXY header refused");
                session.end(400, "proxy_protocol");
                return shared.error("proxy_protocol");
            }
        }
    }
    let mut hello = (None, Vec::new());
    if passthrough {
        match tokio::time::timeout(
            super::HANDSHAKE_TIMEOUT,
            crate::tls::read_client_hello(&mut client, MAX_CLIENT_HELLO),
        )
        .await
        {
            Ok(Ok(h)) => hello = h,
            Ok(Err(e)) => {
                debug!(listener = %shared.name, client = %peer, error = %e, "no usable ClientHello");
                session.end(400, "client_hello");
                return shared.error("client_hello");
            }
            Err(_) => {
                session.end(400, "client_hello");
                return shared.error("client_hello");
            }
        }
    }
    let (server_name, replay) = hello;
    session.server_name.clone_from(&server_name);
    session.received.store(replay.len() as u64, Relaxed);
    let table = shared.store.load();
    let Some((backend, idle)) = table
        .listener(&shared.name)
        .and_then(|l| Some((l.sni_backend(server_name.as_deref())?, l.idle_timeout)))
        .map(|(i, idle)| (table.backends[i].clone(), idle))
    else {
        session.end(502, "no_route");
        shared.error("no_route");
        return;
    };
    session.backend = Some(backend.name.clone());
    let s = &backend.settings;
    let mut tried = Tried::default();
    let attempts = if backend.endpoints.len() > 1 { s.retries + 1 } else { 1 };
    let upstream = loop {
        let Some(i) = backend.balancer.pick(&backend.endpoints, peer.ip(), &tried) else {
            let kind = if tried.is_empty() { "no_endpoints" } else { "connect" };
            session.end(502, kind);
            shared.error(kind);
            return;
        };
        tried.push(i);
        let ep = &backend.endpoints[i];
        session.upstream = Some(ep.addr);
        let connecting = Instant::now();
        match tokio::time::timeout(s.connect_timeout, TcpStream::connect(ep.addr)).await {
            Ok(Ok(u)) => {
                session.connect = Some(connecting.elapsed());
                ep.stats.record_success();
                break (u, ep.stats.start());
            }
            Ok(Err(e)) => debug!(endpoint = %ep.addr, error = %e, "tcp connect failed"),
            Err(_) => debug!(endpoint = %ep.addr, "tcp connect timed out"),
        }
        backend.connect_errors.inc();
        backend.endpoint_failed(ep);
        if tried.len() as u32 >= attempts {
            session.end(502, "connect");
            shared.error("connect");
            return;
        }
        backend.retries.inc();
    };
    let (mut up, _in_flight) = upstream;
    drop(table);
    let mut preamble = match s.send_proxy_protocol {
        Some(v) => super::proxy_protocol::header(v, peer, client.local_addr().unwrap_or(peer)),
        None => Vec::new(),
    };
    preamble.extend_from_slice(&replay);
    if !preamble.is_empty() {
        if let Err(e) = up.write_all(&preamble).await {
            debug!(listener = %shared.name, error = %e, "upstream closed before the first bytes");
            session.end(502, "upstream_closed");
            return;
        }
        shared.bytes_in.inc_by(replay.len() as u64);
        session.upstream_sent.store(preamble.len() as u64, Relaxed);
    }
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = up.split();
    let activity = AtomicU64::new(0);
    let started = Instant::now();
    let both = async {
        tokio::join!(
            pump(&mut cr, &mut uw, &activity, started, &shared.bytes_in, [&session.received, &session.upstream_sent]),
            pump(&mut ur, &mut cw, &activity, started, &shared.bytes_out, [&session.upstream_received, &session.sent])
        )
    };
    let ended = tokio::select! {
        (a, b) = both => match a.and(b) {
            Ok(()) => None,
            Err(e) => {
                debug!(listener = %shared.name, error = %e, "tcp connection ended with an error");
                Some("reset")
            }
        },
        _ = idle_watch(&activity, started, idle) => {
            debug!(listener = %shared.name, "tcp connection idle; closing");
            Some("idle_timeout")
        }
    };
    session.error = ended;
}

/// Copies one direction until EOF, then shuts down writing toward the other side (half-close).
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    activity: &AtomicU64,
    started: Instant,
    bytes: &IntCounter,
    // This connection's counts of bytes read from one side and written to the other.
    counts: [&AtomicU64; 2],
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        activity.store(started.elapsed().as_millis() as u64, Relaxed);
        counts[0].fetch_add(n as u64, Relaxed);
        w.write_all(&buf[..n]).await?;
        counts[1].fetch_add(n as u64, Relaxed);
        bytes.inc_by(n as u64);
    }
}

/// Resolves when nothing has moved in either direction for `idle`.
async fn idle_watch(activity: &AtomicU64, started: Instant, idle: Duration) {
    loop {
        let last = Duration::from_millis(activity.load(Relaxed));
        let deadline = last + idle;
        let now = started.elapsed();
        if now >= deadline {
            return;
        }
        tokio::time::sleep(deadline - now).await;
    }
}
