//! The status page's live numbers: each route's request rate, 5xx rate and latency quantiles over
//! the last minute, from the same Prometheus handles the data plane already increments.
//!
//! A task samples every route's counters and duration histogram once a second into a ring of 61
//! samples; rates and quantiles are differences between the newest sample and the oldest (up to
//! a minute back), quantiles interpolated within histogram buckets as Prometheus'
//! `histogram_quantile` does. Nothing is added to the request path.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::core::Metric;
use serde_json::{json, Value};

use crate::table::{RouteEntry, Table};

const KEEP: usize = 61;

#[derive(Clone)]
struct Sample {
    at: Instant,
    requests: u64,
    errors: u64,
    /// Cumulative observations per bucket (the last bucket is +Inf).
    buckets: Vec<u64>,
}

/// (listener, route).
type Key = (Arc<str>, Arc<str>);

#[derive(Default)]
pub struct Live {
    rings: Mutex<HashMap<Key, VecDeque<Sample>>>,
    /// Bucket upper bounds, as the histograms were built (the same for every route).
    bounds: Mutex<Vec<f64>>,
}

fn sample(r: &RouteEntry, at: Instant) -> (Sample, Vec<f64>) {
    let (mut requests, mut errors) = r.metrics.totals();
    if let Some(s) = &r.split {
        for m in s.metrics.iter() {
            let (a, b) = m.totals();
            requests += a;
            errors += b;
        }
    }
    let m = r.metrics.duration.metric();
    let h = m.get_histogram();
    let mut buckets: Vec<u64> = h.get_bucket().iter().map(|b| b.cumulative_count()).collect();
    let bounds = h.get_bucket().iter().map(|b| b.upper_bound()).collect();
    buckets.push(h.get_sample_count());
    (Sample { at, requests, errors, buckets }, bounds)
}

impl Live {
    /// Takes this second's sample of every route in `table`; routes gone from it are forgotten.
    pub fn sample(&self, table: &Table) {
        let now = Instant::now();
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::HashSet::new();
        for l in table.listeners.iter() {
            for r in &l.routes {
                let key = (l.name.clone(), r.name.clone());
                let (s, bounds) = sample(r, now);
                let mut b = self.bounds.lock().unwrap_or_else(|p| p.into_inner());
                if b.is_empty() {
                    *b = bounds;
                }
                let ring = rings.entry(key.clone()).or_default();
                ring.push_back(s);
                while ring.len() > KEEP {
                    ring.pop_front();
                }
                seen.insert(key);
            }
        }
        rings.retain(|k, _| seen.contains(k));
    }

    /// A route's last minute: rate, 5xx share, p50/p99 and a per-second series for the chart.
    pub fn route(&self, listener: &Arc<str>, route: &Arc<str>) -> Value {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ring) = rings.get(&(listener.clone(), route.clone())) else {
            return Value::Null;
        };
        let (Some(first), Some(last)) = (ring.front(), ring.back()) else { return Value::Null };
        let secs = last.at.duration_since(first.at).as_secs_f64();
        let requests = last.requests.saturating_sub(first.requests);
        let errors = last.errors.saturating_sub(first.errors);
        let bounds = self.bounds.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let delta: Vec<u64> = last
            .buckets
            .iter()
            .zip(first.buckets.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| a - b.min(a))
            .collect();
        let q = |p: f64| quantile(p, &bounds, &delta).map(|s| (s * 1000.0 * 100.0).round() / 100.0);
        let series: Vec<[u64; 2]> = ring
            .iter()
            .zip(ring.iter().skip(1))
            .map(|(a, b)| [b.requests.saturating_sub(a.requests), b.errors.saturating_sub(a.errors)])
            .collect();
        json!({
            "rps": if secs > 0.0 { (requests as f64 / secs * 100.0).round() / 100.0 } else { 0.0 },
            "error_rate": if requests > 0 { errors as f64 / requests as f64 } else { 0.0 },
            "p50_ms": q(0.5),
            "p99_ms": q(0.99),
            "window_s": secs.round(),
            "requests": last.requests,
            "errors": last.errors,
            "series": series,
        })
    }
}

/// The `p` quantile of observations counted per bucket (`delta`: cumulative, the last one +Inf),
/// linearly interpolated within the bucket it falls in; None without observations.
pub fn quantile(p: f64, bounds: &[f64], delta: &[u64]) -> Option<f64> {
    let total = *delta.last()?;
    if total == 0 {
        return None;
    }
    let rank = p * total as f64;
    let mut prev_count = 0u64;
    let mut prev_bound = 0.0;
    for (i, &c) in delta.iter().enumerate() {
        if c as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                // In +Inf: the highest finite bound is the best that can be said.
                return bounds.last().copied();
            };
            let in_bucket = (c - prev_count) as f64;
            let frac = if in_bucket > 0.0 { (rank - prev_count as f64) / in_bucket } else { 1.0 };
            return Some(prev_bound + (upper - prev_bound) * frac);
        }
        prev_count = c;
        prev_bound = bounds.get(i).copied().unwrap_or(prev_bound);
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let bounds = [0.001, 0.01, 0.1];
        // 100 observations: 50 ≤ 1 ms, 40 in (1, 10] ms, 10 in (10, 100] ms, none above.
        let cumulative = [50, 90, 100, 100];
        assert_eq!(quantile(0.5, &bounds, &cumulative), Some(0.001));
        let p99 = quantile(0.99, &bounds, &cumulative).unwrap();
        assert!((p99 - 0.091).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &bounds, &[0, 0, 0, 0]), None);
        // Everything above the last bound: the last bound.
        assert_eq!(quantile(0.5, &bounds, &[0, 0, 0, 7]), Some(0.1));
    }
}
