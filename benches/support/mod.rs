//! What the benches share: resident memory, and percentiles of a sample.
#![allow(dead_code)]

/// This process's resident memory, KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

/// The `p`th percentile (0–100, nearest rank) of a sample.
pub fn percentile(v: &[f64], p: usize) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() * p).div_ceil(100)).saturating_sub(1).min(v.len() - 1)]
}
