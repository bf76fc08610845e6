//! Rate limits per key (nginx `limit_req ... nodelay`): each key has a bucket that lets `burst`
//! extra requests through at once and refills at `rate`; past it, requests are refused.
//!
//! nginx's accounting, kept exactly: a key's "excess" (in thousandths of a request) drains at the
//! rate, each admitted request adds one, and a request that would take the excess over `burst` is
//! refused (so `burst + 1` requests pass at one instant, then one per `1/rate`).
//!
//! Memory is bounded by construction: buckets live in a fixed table of atomic slots (the key's
//! hash picks the slot), so a flood of distinct keys cannot grow it, and the hot path takes no
//! lock — a compare-and-swap on one word. Two keys that share a slot share a bucket (they are
//! limited together; with 65,536 slots that is rare, and never lets anyone through who should not
//! pass alone... except that they may be refused earlier). The hash is seeded per process, so a
//! client cannot aim its keys at another client's slot.
//!
//! Limiters are kept across table swaps (by listener, route and settings), so a config reload or
//! an endpoint change does not refill every bucket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::config::defaults::MAX_BURST;

/// Slots per limiter: 512 KiB.
const SLOTS: usize = 1 << 16;
/// Excess is kept in the low 24 bits, in thousandths (so a burst of at most 16,777; `MAX_BURST`).
const EXCESS_BITS: u32 = 24;
const EXCESS_MASK: u64 = (1 << EXCESS_BITS) - 1;

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| fastrand::u64(..))
}

/// One route's limiter.
pub struct Limiter {
    /// Thousandths of a request per second.
    rate: u64,
    /// In thousandths.
    burst: u64,
    /// Each: last update in ms since start (high 40 bits) and excess in thousandths (low 24).
    slots: Box<[AtomicU64]>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Limiter({}/s, burst {})", self.rate as f64 / 1000.0, self.burst / 1000)
    }
}

impl Limiter {
    /// `rate` in thousandths of a request per second.
    pub fn new(rate: u64, burst: u32) -> Limiter {
        Limiter {
            rate: rate.max(1),
            burst: u64::from(burst.min(MAX_BURST)) * 1000,
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Admits (true) or refuses (false) one request for `key` at `now` ms.
    fn admit_at(&self, key: &[u8], now: u64) -> bool {
        let slot = &self.slots[(xxhash_rust::xxh3::xxh3_64_with_seed(key, seed()) as usize) % SLOTS];
        let mut cur = slot.load(Relaxed);
        loop {
            let (last, excess) = (cur >> EXCESS_BITS, cur & EXCESS_MASK);
            let drained = if last == 0 { 0 } else { now.saturating_sub(last).saturating_mul(self.rate) / 1000 };
            // nginx: a new key starts at 0; otherwise excess - drained + 1, never below 0.
            let next =
                if last == 0 { 0 } else { (excess as i64 - drained.min(i64::MAX as u64) as i64 + 1000).max(0) as u64 };
            if next > self.burst {
                return false;
            }
            let new = (now << EXCESS_BITS) | next.min(EXCESS_MASK);
            match slot.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }

    pub fn admit(&self, key: &[u8]) -> bool {
        self.admit_at(key, now_ms())
    }
}

/// (listener, route, rate, burst).
type LimiterKey = (String, String, u64, u32);

/// Limiters by (listener, route, rate, burst), kept across table builds.
#[derive(Debug, Default)]
pub struct Limiters {
    map: Mutex<HashMap<LimiterKey, std::sync::Weak<Limiter>>>,
}

impl Limiters {
    /// Called while building a table, never per request.
    pub fn get(&self, listener: &str, route: &str, rate: u64, burst: u32) -> Arc<Limiter> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = (listener.to_string(), route.to_string(), rate, burst);
        if let Some(l) = map.get(&key).and_then(std::sync::Weak::upgrade) {
            return l;
        }
        let l = Arc::new(Limiter::new(rate, burst));
        map.insert(key, Arc::downgrade(&l));
        map.retain(|_, w| w.strong_count() > 0);
        l
    }
}

/// Requests in progress per client address on one route (nginx `limit_conn` keyed by the client
/// address; ingress-nginx's `limit-connections`), in the same kind of fixed table of atomic slots:
/// a request holds its slot until its answer's body has ended.
#[derive(Debug)]
pub struct Concurrency {
    max: u32,
    slots: Box<[std::sync::atomic::AtomicU32]>,
}

/// One admitted request's place; released when dropped.
#[derive(Debug)]
pub struct Held {
    of: Arc<Concurrency>,
    slot: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.of.slots[self.slot].fetch_sub(1, Relaxed);
    }
}

impl Concurrency {
    pub fn new(max: u32) -> Concurrency {
        Concurrency { max, slots: (0..SLOTS).map(|_| std::sync::atomic::AtomicU32::new(0)).collect() }
    }

    /// A place for one more request of `key`, if it has fewer than `max` in progress.
    pub fn acquire(self: &Arc<Self>, key: &[u8]) -> Option<Held> {
        let slot = (xxhash_rust::xxh3::xxh3_64_with_seed(key, seed()) as usize) % SLOTS;
        let before = self.slots[slot].fetch_add(1, Relaxed);
        let held = Held { of: self.clone(), slot };
        (before < self.max).then_some(held)
    }
}

/// Concurrency tables by (listener, route, max), kept across table builds.
#[derive(Debug, Default)]
pub struct Concurrencies {
    map: Mutex<HashMap<(String, String, u32), std::sync::Weak<Concurrency>>>,
}

impl Concurrencies {
    /// Called while building a table, never per request.
    pub fn get(&self, listener: &str, route: &str, max: u32) -> Arc<Concurrency> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = (listener.to_string(), route.to_string(), max);
        if let Some(c) = map.get(&key).and_then(std::sync::Weak::upgrade) {
            return c;
        }
        let c = Arc::new(Concurrency::new(max));
        map.insert(key, Arc::downgrade(&c));
        map.retain(|_, w| w.strong_count() > 0);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_admits_max_per_key_and_releases_on_drop() {
        let c = Arc::new(Concurrency::new(2));
        let a = c.acquire(b"10.0.0.1").expect("first");
        let b = c.acquire(b"10.0.0.1").expect("second");
        assert!(c.acquire(b"10.0.0.1").is_none(), "a third in progress is refused");
        assert!(c.acquire(b"10.0.0.2").is_some(), "another client is not");
        drop(a);
        let again = c.acquire(b"10.0.0.1");
        assert!(again.is_some(), "a finished request frees its place");
        drop((b, again));
    }

    #[test]
    fn burst_then_the_rate_as_nginx_counts() {
        let l = Limiter::new(10_000, 3); // 10/s, burst 3
        let t = 1_000;
        let passed = (0..10).filter(|_| l.admit_at(b"a", t)).count();
        assert_eq!(passed, 4, "burst + 1 at one instant");
        assert!(!l.admit_at(b"a", t + 50), "half a token is not a token");
        assert!(l.admit_at(b"a", t + 100), "one more after 1/rate");
        assert!(!l.admit_at(b"a", t + 100));
        assert!(l.admit_at(b"b", t + 100), "another key has its own bucket");
        // Idle long enough, the bucket is full again.
        assert_eq!((0..10).filter(|_| l.admit_at(b"a", t + 10_000)).count(), 4);
    }

    #[test]
    fn memory_is_bounded_whatever_the_keys() {
        let l = Limiter::new(1_000, 0);
        for i in 0..200_000u32 {
            l.admit_at(&i.to_le_bytes(), 5);
        }
        assert_eq!(l.slots.len(), SLOTS);
        assert_eq!(std::mem::size_of_val(&*l.slots), SLOTS * 8);
    }
}
