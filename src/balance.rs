//! Picking an endpoint: round robin, power-of-two-choices least-request, and client-IP consistent
//! hashing; plus the per-endpoint state they read.
//!
//! Per-endpoint state ([`EndpointStats`]: in-flight count, counters, failure streak, ejection) lives
//! outside the routing snapshot, in a [`StatsRegistry`] keyed by socket address, as pingora and
//! linkerd keep it. A table rebuild looks the same `Arc` up again, so a swap never resets what the
//! balancer has learned. The hot path touches only atomics.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::config::Balance;

/// Milliseconds since the process started; a cheap monotonic clock for ejection deadlines.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What one endpoint has seen. Shared by every table that contains the address.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
}

impl AsRef<EndpointStats> for EndpointStats {
    fn as_ref(&self) -> &EndpointStats {
        self
    }
}

/// Decrements the in-flight count when dropped, so every exit path is counted.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl EndpointStats {
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        until != 0 && now_ms() < until
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    pub fn record_success(&self) {
        // Only write when there is something to clear: keeps the cache line shared on the hot path.
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
            self.ejections.store(0, Relaxed);
            self.ejected_until_ms.store(0, Relaxed);
        }
    }

    /// Records a connect failure (or a reset before any response byte). After `eject_after`
    /// failures in a row the endpoint is ejected for `eject_for`, doubled for each ejection in a
    /// row (capped at 8×). When the time is up it is tried again; one more failure re-ejects it.
    /// Returns true when this failure ejected the endpoint.
    pub fn record_failure(&self, eject_after: u32, eject_for: Duration) -> bool {
        self.failures.fetch_add(1, Relaxed);
        let streak = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if streak < eject_after || self.is_ejected() {
            return false;
        }
        let n = self.ejections.fetch_add(1, Relaxed).min(3);
        let period = eject_for.saturating_mul(1 << n);
        self.ejected_until_ms.store(now_ms() + period.as_millis() as u64, Relaxed);
        true
    }
}

/// Address → stats, owned by the control plane. Entries are weak: when no table references an
/// address any more, its state goes away with the last table.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    map: Mutex<HashMap<SocketAddr, Weak<EndpointStats>>>,
}

impl StatsRegistry {
    /// The stats for `addr`, the same `Arc` every time while any table holds it.
    /// Called only while building a table, never per request.
    pub fn get(&self, addr: SocketAddr) -> Arc<EndpointStats> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&addr).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(EndpointStats::default());
        map.insert(addr, Arc::downgrade(&s));
        if map.len() > 1024 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        s
    }
}

/// A consistent-hash ring over endpoint indices (ketama-style virtual nodes). Points are derived
/// from the endpoint's address only, so every ferry replica builds the same ring and a client lands
/// on the same endpoint whichever replica the NodePort sends it to; removing one endpoint moves
/// only the clients that were on it.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

const VNODES: usize = 160;

impl Ring {
    pub fn new(addrs: &[SocketAddr]) -> Ring {
        let mut points = Vec::with_capacity(addrs.len() * VNODES);
        let mut buf = String::with_capacity(64);
        for (i, a) in addrs.iter().enumerate() {
            for v in 0..VNODES {
                use std::fmt::Write;
                buf.clear();
                let _ = write!(buf, "{a}#{v}");
                points.push((xxhash_rust::xxh3::xxh3_64(buf.as_bytes()), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// Walks the ring clockwise from `hash`, yielding endpoint indices (with repeats).
    fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|p| p.0 < hash);
        let n = self.points.len();
        (0..n).map(move |k| self.points[(start + k) % n].1 as usize)
    }
}

pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => xxhash_rust::xxh3::xxh3_64(&v4.octets()),
        IpAddr::V6(v6) => xxhash_rust::xxh3::xxh3_64(&v6.octets()),
    }
}

/// Endpoints already tried by this request (retries go elsewhere). Fixed size: retries are capped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried {
    idx: [u32; crate::config::defaults::MAX_RETRIES as usize + 1],
    len: usize,
}

impl Tried {
    pub fn contains(&self, i: usize) -> bool {
        self.idx[..self.len].contains(&(i as u32))
    }
    pub fn push(&mut self, i: usize) {
        if self.len < self.idx.len() {
            self.idx[self.len] = i as u32;
            self.len += 1;
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The balancing state of one backend inside a table.
#[derive(Debug)]
pub struct Balancer {
    pub policy: Balance,
    ring: Option<Ring>,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(policy: Balance, addrs: &[SocketAddr]) -> Balancer {
        let ring = (policy == Balance::ClientIp && !addrs.is_empty()).then(|| Ring::new(addrs));
        // Start round robin at a random place so replicas do not move in lock step.
        let next = AtomicUsize::new(if addrs.is_empty() { 0 } else { fastrand::usize(..addrs.len()) });
        Balancer { policy, ring, next }
    }

    /// Picks an endpoint index among `stats` (one per endpoint), skipping `tried`. Prefers
    /// endpoints that are not ejected; when every candidate is ejected it picks among them anyway
    /// (fail open, like Envoy's panic threshold). `None` when there is nothing left to try.
    pub fn pick<E: AsRef<EndpointStats>>(&self, eps: &[E], client: IpAddr, tried: &Tried) -> Option<usize> {
        let n = eps.len();
        if n == 0 || tried.len() >= n {
            return None;
        }
        self.pick_where(eps, client, |i| !tried.contains(i) && !eps[i].as_ref().is_ejected())
            .or_else(|| self.pick_where(eps, client, |i| !tried.contains(i)))
    }

    fn pick_where<E: AsRef<EndpointStats>>(
        &self,
        eps: &[E],
        client: IpAddr,
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = eps.len();
        let load = |i: usize| eps[i].as_ref().in_flight.load(Relaxed);
        match self.policy {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
            }
            Balance::LeastRequest => {
                if n == 1 {
                    return ok(0).then_some(0);
                }
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                match (ok(a), ok(b)) {
                    (true, true) => Some(if load(b) < load(a) { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    // Both unusable: take the least loaded of the usable ones.
                    (false, false) => (0..n).filter(|&i| ok(i)).min_by_key(|&i| load(i)),
                }
            }
            Balance::ClientIp => {
                let ring = self.ring.as_ref()?;
                ring.walk(hash_ip(client)).find(|&i| ok(i))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080))).collect()
    }

    fn stats(n: usize) -> Vec<EndpointStats> {
        (0..n).map(|_| EndpointStats::default()).collect()
    }

    #[test]
    fn round_robin_is_even_and_skips_tried() {
        let b = Balancer::new(Balance::RoundRobin, &addrs(3));
        let s = stats(3);
        let refs = &s[..];
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[b.pick(refs, [1, 1, 1, 1].into(), &Tried::default()).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        let mut t = Tried::default();
        t.push(0);
        t.push(1);
        for _ in 0..5 {
            assert_eq!(b.pick(refs, [1, 1, 1, 1].into(), &t), Some(2));
        }
        t.push(2);
        assert_eq!(b.pick(refs, [1, 1, 1, 1].into(), &t), None);
    }

    #[test]
    fn least_request_avoids_the_busy_one() {
        let b = Balancer::new(Balance::LeastRequest, &addrs(2));
        let s = stats(2);
        s[0].in_flight.store(10, Relaxed);
        let refs = &s[..];
        for _ in 0..50 {
            assert_eq!(b.pick(refs, [1, 1, 1, 1].into(), &Tried::default()), Some(1));
        }
    }

    #[test]
    fn ejected_endpoints_are_skipped_until_all_are() {
        let b = Balancer::new(Balance::RoundRobin, &addrs(2));
        let s = stats(2);
        assert!(!s[0].record_failure(2, Duration::from_secs(60)));
        assert!(s[0].record_failure(2, Duration::from_secs(60)));
        assert!(s[0].is_ejected());
        let refs = &s[..];
        for _ in 0..10 {
            assert_eq!(b.pick(refs, [1, 1, 1, 1].into(), &Tried::default()), Some(1));
        }
        s[1].record_failure(1, Duration::from_secs(60));
        // Everything ejected: fail open rather than closed.
        assert!(b.pick(refs, [1, 1, 1, 1].into(), &Tried::default()).is_some());
        s[0].record_success();
        assert!(!s[0].is_ejected());
    }

    #[test]
    fn client_ip_is_sticky_and_moves_few_on_removal() {
        let all = addrs(10);
        let b = Balancer::new(Balance::ClientIp, &all);
        let s = stats(10);
        let refs = &s[..];
        let clients: Vec<IpAddr> = (0..2000u32).map(|i| IpAddr::from((0xC0A8_0000u32 + i).to_be_bytes())).collect();
        let before: Vec<SocketAddr> =
            clients.iter().map(|&c| all[b.pick(refs, c, &Tried::default()).unwrap()]).collect();
        // Stable for the same set.
        for (c, want) in clients.iter().zip(&before) {
            assert_eq!(all[b.pick(refs, *c, &Tried::default()).unwrap()], *want);
        }
        // Remove endpoint 3: only its clients move.
        let fewer: Vec<SocketAddr> = all.iter().copied().filter(|a| *a != all[3]).collect();
        let b2 = Balancer::new(Balance::ClientIp, &fewer);
        let refs2 = &refs[..9];
        let mut moved = 0;
        for (c, was) in clients.iter().zip(&before) {
            let now = fewer[b2.pick(refs2, *c, &Tried::default()).unwrap()];
            if now != *was {
                assert_eq!(*was, all[3], "a client not on the removed endpoint moved");
                moved += 1;
            }
        }
        let on_removed = before.iter().filter(|a| **a == all[3]).count();
        assert_eq!(moved, on_removed);
        assert!(on_removed > 50 && on_removed < 400, "ring is badly skewed: {on_removed}/2000");
    }

    #[test]
    fn registry_keeps_state_while_referenced() {
        let r = StatsRegistry::default();
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let s1 = r.get(a);
        s1.requests.store(7, Relaxed);
        assert_eq!(r.get(a).requests.load(Relaxed), 7);
        drop(s1);
        assert_eq!(r.get(a).requests.load(Relaxed), 0);
    }
}
