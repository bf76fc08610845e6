//! Idle upstream connections, one stack per endpoint address.
//!
//! The table's endpoint holds its [`Pool`] (looked up by address in [`Pools`] when a table is
//! built, so a swap keeps every warm connection, as the endpoint stats are kept). A request takes
//! the most recently used connection (its socket is the likeliest to be warm and alive) and the
//! response body gives it back when it ends: one uncontended lock on the endpoint's own stack each
//! way — no global lock, no hashing, no task per connection. Expiry counts coarse seconds kept by
//! one reaper task, which also closes connections that outlive their idle timeout; a connection
//! the upstream closed while idle shows as read-closed in the reactor's readiness and is dropped
//! at checkout without a system call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Whole seconds since the first reaper started, as the reapers last saw the clock (a coarse
/// clock that costs a load to read; every reaper writes the same value).
static TICK: AtomicU64 = AtomicU64::new(0);

fn seconds() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs()
}

/// A pooled connection and the read buffer it keeps (empty between responses).
pub struct Idle {
    pub stream: TcpStream,
    pub buf: BytesMut,
    expires: u64,
}

/// One endpoint's idle connections, most recent last.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} idle)", self.len())
    }
}

impl Pool {
    /// The most recent live idle connection, if any (expired and closed ones are dropped).
    pub fn take(&self) -> Option<(TcpStream, BytesMut)> {
        let now = TICK.load(Relaxed);
        loop {
            let c = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            if c.expires <= now {
                // Everything under it is older still.
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| c.expires > now);
                return None;
            }
            if usable(&c.stream) {
                return Some((c.stream, c.buf));
            }
        }
    }

    /// Keeps `stream` for `timeout`, unless `max` are already kept.
    pub fn put(&self, stream: TcpStream, buf: BytesMut, timeout: Duration, max: usize) {
        // Whole seconds, rounded up, plus the tick in progress.
        let expires = TICK.load(Relaxed) + timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0) + 1;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < max {
            idle.push(Idle { stream, buf, expires });
        }
    }

    pub fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the connections that have expired, and those that turned readable or closed while
    /// idle (nginx closes them the moment they do; here within a second, and at checkout).
    fn reap(&self, now: u64) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| c.expires > now && usable(&c.stream));
    }
}

/// Whether an idle connection may carry another request.
///
/// The rule (RFC 9112 §9.3, and what nginx's `ngx_http_upstream_keepalive_close_handler` and
/// HAProxy enforce): an idle HTTP/1 connection has nothing to say. Any byte that arrives on it
/// between exchanges — a late second response, a body after a HEAD, 204 or 304 answer, garbage —
/// would be read as the answer to the next, unrelated request (response desync), and a FIN or RST
/// means the upstream is gone; either way the connection is discarded, never handed out.
///
/// The reactor's cached readiness answers without a system call in the common case: the last
/// read of a response was short, which cleared the readable flag (`read_drained`), so anything
/// flagged since is new. A flag that may be left over (a read that filled the buffer exactly) is
/// settled by one non-blocking read: `WouldBlock` clears it, a byte or an end-of-stream condemns
/// the connection.
pub(crate) fn usable(stream: &TcpStream) -> bool {
    match stream.ready(Interest::READABLE).now_or_never() {
        None => true,
        Some(Err(_)) => false,
        Some(Ok(r)) if r.is_read_closed() || r.is_error() => false,
        Some(Ok(_)) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

/// Address → pool, for table builds. A pool lives while a table's endpoint (or a response body
/// on its way back) holds it; its idle connections close with it.
#[derive(Default)]
pub struct Pools {
    map: Arc<Mutex<HashMap<SocketAddr, Weak<Pool>>>>,
    reaper: OnceLock<()>,
}

impl Pools {
    /// The pool for `addr`, the same `Arc` while any table holds it. Called while building a
    /// table; starts the reaper the first time it runs inside a runtime.
    pub fn get(&self, addr: SocketAddr) -> Arc<Pool> {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.reaper.get_or_init(|| {
                rt.spawn(reap(Arc::downgrade(&self.map)));
            });
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get(&addr).and_then(Weak::upgrade) {
            return p;
        }
        let p = Arc::new(Pool::default());
        map.insert(addr, Arc::downgrade(&p));
        if map.len() > 1024 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        p
    }
}

/// Once a second: advance the coarse clock and close the connections that have been idle too long.
async fn reap(map: Weak<Mutex<HashMap<SocketAddr, Weak<Pool>>>>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = seconds();
        TICK.fetch_max(now, Relaxed);
        let Some(map) = map.upgrade() else { return };
        let pools: Vec<Arc<Pool>> =
            map.lock().unwrap_or_else(|p| p.into_inner()).values().filter_map(Weak::upgrade).collect();
        for p in pools {
            p.reap(now);
        }
    }
}
