//! Picking an endpoint: round robin (nginx's smooth weighted round robin when weights differ),
//! power-of-two-choices least-request (load per unit of weight), and client-IP consistent hashing
//! (virtual nodes in proportion to weight); backup endpoints only when no primary is usable; plus
//! the per-endpoint state they read.
//!
//! Smooth weighted round robin is precomputed: its order repeats every sum-of-weights picks, so
//! the table stores that cycle once and a pick is an atomic increment and an index, with no lock
//! (nginx walks every peer under a lock on each pick). Weights 5/1/1 give nginx's `a a b a c a a`.
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
    /// A ring with `VNODES` × weight points per endpoint (weights are capped at 16 here).
    pub fn new(addrs: &[SocketAddr], weights: &[u32]) -> Ring {
        let mut points = Vec::with_capacity(addrs.len() * VNODES);
        let mut buf = String::with_capacity(64);
        for (i, a) in addrs.iter().enumerate() {
            let w = weights.get(i).copied().unwrap_or(1).clamp(1, 16) as usize;
            for v in 0..VNODES * w {
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

/// The longest smooth weighted round-robin cycle kept; larger weight sums are scaled down.
const MAX_CYCLE: u32 = 4096;

/// nginx's smooth weighted round robin, as one full cycle of endpoint indices: on each pick every
/// endpoint's current weight grows by its weight, the largest (first on ties) is chosen and loses
/// the total. Weights are divided by their greatest common divisor, and scaled down if the cycle
/// would be longer than `MAX_CYCLE`.
pub fn smooth_cycle(weights: &[u32]) -> Vec<u32> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = weights.iter().fold(0, |g, &w| gcd(g, w.max(1)));
    let mut w: Vec<u64> = weights.iter().map(|&x| u64::from(x.max(1) / g.max(1))).collect();
    let total: u64 = w.iter().sum();
    if total > u64::from(MAX_CYCLE) {
        for x in &mut w {
            *x = (*x * u64::from(MAX_CYCLE) / total).max(1);
        }
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        cycle.push(best as u32);
    }
    cycle
}

/// The endpoints of one tier (primaries, or backups): a contiguous range of the backend's list.
#[derive(Debug)]
struct Pool {
    start: usize,
    len: usize,
    /// Per endpoint of the pool; `None` when all weigh the same.
    weights: Option<Box<[u32]>>,
    /// The smooth weighted round-robin cycle (pool indices); `None` when all weigh the same.
    cycle: Option<Box<[u32]>>,
    ring: Option<Ring>,
    next: AtomicUsize,
}

impl Pool {
    fn new(policy: Balance, addrs: &[SocketAddr], weights: &[u32], start: usize) -> Pool {
        let len = addrs.len();
        let weighted = weights.iter().any(|&w| w != weights[0]);
        let ring = (policy == Balance::ClientIp && len > 0).then(|| Ring::new(addrs, weights));
        // Start round robin at a random place so replicas do not move in lock step.
        let cycle = weighted.then(|| smooth_cycle(weights).into_boxed_slice());
        let span = cycle.as_ref().map_or(len, |c| c.len());
        let next = AtomicUsize::new(if span == 0 { 0 } else { fastrand::usize(..span) });
        Pool { start, len, weights: weighted.then(|| weights.into()), cycle, ring, next }
    }

    fn weight(&self, i: usize) -> u64 {
        self.weights.as_ref().map_or(1, |w| u64::from(w[i]))
    }

    /// A pool index chosen at random in proportion to weight.
    fn random(&self) -> usize {
        match &self.cycle {
            Some(c) => c[fastrand::usize(..c.len())] as usize,
            None => fastrand::usize(..self.len),
        }
    }

    /// An endpoint index (into the backend's list) for which `ok` holds, or `None`.
    fn pick_where<E: AsRef<EndpointStats>>(
        &self,
        policy: Balance,
        eps: &[E],
        client: IpAddr,
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let (n, at) = (self.len, self.start);
        if n == 0 {
            return None;
        }
        let ok = |i: usize| ok(at + i);
        let load = |i: usize| eps[at + i].as_ref().in_flight.load(Relaxed);
        let found = match policy {
            Balance::RoundRobin => {
                let s = self.next.fetch_add(1, Relaxed);
                match &self.cycle {
                    Some(c) => (0..c.len()).map(|k| c[(s + k) % c.len()] as usize).find(|&i| ok(i)),
                    None => (0..n).map(|k| (s + k) % n).find(|&i| ok(i)),
                }
            }
            Balance::LeastRequest => {
                if n == 1 {
                    return ok(0).then_some(at);
                }
                let a = self.random();
                let mut b = self.random();
                if b == a {
                    b = (a + 1 + fastrand::usize(..n - 1)) % n;
                }
                // Fewer in flight per unit of weight wins: load(b)/w(b) < load(a)/w(a).
                let lighter = |x: usize, y: usize| load(x) * self.weight(y) < load(y) * self.weight(x);
                match (ok(a), ok(b)) {
                    (true, true) => Some(if lighter(b, a) { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    // Both unusable: take the least loaded of the usable ones.
                    (false, false) => (0..n).filter(|&i| ok(i)).reduce(|x, y| if lighter(y, x) { y } else { x }),
                }
            }
            Balance::ClientIp => self.ring.as_ref()?.walk(hash_ip(client)).find(|&i| ok(i)),
        };
        found.map(|i| at + i)
    }
}

/// The balancing state of one backend inside a table.
#[derive(Debug)]
pub struct Balancer {
    pub policy: Balance,
    primary: Pool,
    /// Used only when no primary is usable (nginx `backup`).
    backup: Pool,
}

impl Balancer {
    /// Endpoints of equal weight, no backups.
    pub fn new(policy: Balance, addrs: &[SocketAddr]) -> Balancer {
        Balancer::weighted(policy, addrs, &vec![1; addrs.len()], addrs.len())
    }

    /// `addrs[..primaries]` are the primaries, the rest backups; `weights` one per address.
    pub fn weighted(policy: Balance, addrs: &[SocketAddr], weights: &[u32], primaries: usize) -> Balancer {
        let p = primaries.min(addrs.len());
        Balancer {
            policy,
            primary: Pool::new(policy, &addrs[..p], &weights[..p], 0),
            backup: Pool::new(policy, &addrs[p..], &weights[p..], p),
        }
    }

    /// Picks an endpoint index among `eps` (one per endpoint), skipping `tried`. Prefers primaries
    /// that are not ejected, then backups that are not ejected; when every candidate is ejected it
    /// picks among them anyway (fail open, like Envoy's panic threshold). `None` when there is
    /// nothing left to try.
    pub fn pick<E: AsRef<EndpointStats>>(&self, eps: &[E], client: IpAddr, tried: &Tried) -> Option<usize> {
        let n = eps.len();
        if n == 0 || tried.len() >= n {
            return None;
        }
        let healthy = |i: usize| !tried.contains(i) && !eps[i].as_ref().is_ejected();
        let untried = |i: usize| !tried.contains(i);
        let p = self.policy;
        self.primary
            .pick_where(p, eps, client, healthy)
            .or_else(|| self.backup.pick_where(p, eps, client, healthy))
            .or_else(|| self.primary.pick_where(p, eps, client, untried))
            .or_else(|| self.backup.pick_where(p, eps, client, untried))
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
    fn smooth_weighted_round_robin_is_nginx_sequence() {
        // nginx, weights a=5 b=1 c=1: a a b a c a a.
        assert_eq!(smooth_cycle(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_cycle(&[2, 2, 2]), [0, 1, 2], "equal weights: plain round robin");
        assert_eq!(smooth_cycle(&[10, 5]), [0, 1, 0], "divided by the gcd");
        let big = smooth_cycle(&[100_000, 1]);
        assert!(big.len() <= MAX_CYCLE as usize + 1 && big.contains(&1), "scaled, the light one still picked");
        let b = Balancer::weighted(Balance::RoundRobin, &addrs(3), &[5, 1, 1], 3);
        let s = stats(3);
        let picks: Vec<usize> =
            (0..70).map(|_| b.pick(&s[..], [1, 1, 1, 1].into(), &Tried::default()).unwrap()).collect();
        // Wherever the cycle starts, every window of 7 has 5 a, 1 b, 1 c and no burst of more
        // than 2 a's in a row... except across a cycle boundary (a a | a a).
        for w in picks.chunks(7) {
            assert_eq!(w.iter().filter(|&&i| i == 0).count(), 5, "{picks:?}");
        }
        let run = picks.windows(5).any(|w| w.iter().all(|&i| i == 0));
        assert!(!run, "five in a row to the heavy endpoint: {picks:?}");
    }

    #[test]
    fn backups_only_when_no_primary_is_usable() {
        let b = Balancer::weighted(Balance::RoundRobin, &addrs(3), &[1, 1, 1], 2);
        let s = stats(3);
        for _ in 0..20 {
            assert!(b.pick(&s[..], [1, 1, 1, 1].into(), &Tried::default()).unwrap() < 2);
        }
        s[0].record_failure(1, Duration::from_secs(60));
        s[1].record_failure(1, Duration::from_secs(60));
        for _ in 0..5 {
            assert_eq!(b.pick(&s[..], [1, 1, 1, 1].into(), &Tried::default()), Some(2));
        }
        // A retry after a failed primary tries the other primary before the backup.
        s[0].record_success();
        s[1].record_success();
        let mut t = Tried::default();
        t.push(0);
        assert_eq!(b.pick(&s[..], [1, 1, 1, 1].into(), &t), Some(1));
        t.push(1);
        assert_eq!(b.pick(&s[..], [1, 1, 1, 1].into(), &t), Some(2));
    }

    #[test]
    fn least_request_weighs_load_by_weight() {
        let b = Balancer::weighted(Balance::LeastRequest, &addrs(2), &[4, 1], 2);
        let s = stats(2);
        s[0].in_flight.store(3, Relaxed); // 3 / 4 per unit
        s[1].in_flight.store(1, Relaxed); // 1 / 1 per unit
        for _ in 0..50 {
            assert_eq!(b.pick(&s[..], [1, 1, 1, 1].into(), &Tried::default()), Some(0));
        }
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
