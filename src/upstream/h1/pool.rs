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
            // Readiness the reactor already has: read-closed (FIN or RST while idle) or an error
            // means the upstream is gone. Readable alone is usually left over from the last
            // response (it is cleared only by a read that would block); bytes the upstream sent
            // unasked would fail the next response's parse, which a retry covers.
            match c.stream.ready(Interest::READABLE).now_or_never() {
                Some(Ok(r)) if r.is_read_closed() || r.is_error() => continue,
                Some(Err(_)) => continue,
                _ => return Some((c.stream, c.buf)),
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

    fn reap(&self, now: u64) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| c.expires > now);
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
