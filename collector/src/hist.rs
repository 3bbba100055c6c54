//! Histograms of round RTT and loss: small enough to keep one per agent, target and day
//! (see [`crate::sinks::rollup`]), mergeable, and good for percentiles to about 1 %.

use std::collections::BTreeMap;

/// RTT buckets grow by 2 % from 0.1 ms: a percentile is off by at most 1 %.
const RTT_BASE_MS: f64 = 0.1;
const RTT_GROWTH: f64 = 1.02;
/// The last bucket holds everything from about 78 s up.
const RTT_BUCKETS: u16 = 700;

/// Counts per bucket, sparse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hist(BTreeMap<u16, u32>);

impl Hist {
    pub fn add(&mut self, bucket: u16, n: u32) {
        *self.0.entry(bucket).or_default() += n;
    }

    pub fn merge(&mut self, other: &Hist) {
        for (&b, &n) in &other.0 {
            self.add(b, n);
        }
    }

    pub fn count(&self) -> u64 {
        self.0.values().map(|&n| u64::from(n)).sum()
    }

    /// The bucket holding the `q` quantile (0–1), by nearest rank.
    pub fn quantile_bucket(&self, q: f64) -> Option<u16> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0u64;
        for (&b, &c) in &self.0 {
            seen += u64::from(c);
            if seen >= rank {
                return Some(b);
            }
        }
        self.0.keys().next_back().copied()
    }

    /// Little-endian `(bucket u16, count u32)` pairs.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 6);
        for (&b, &n) in &self.0 {
            out.extend_from_slice(&b.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        out
    }

    /// Adds an encoded histogram (bytes of a short trailing pair are ignored).
    pub fn merge_encoded(&mut self, bytes: &[u8]) {
        for pair in bytes.chunks_exact(6) {
            let b = u16::from_le_bytes([pair[0], pair[1]]);
            let n = u32::from_le_bytes([pair[2], pair[3], pair[4], pair[5]]);
            self.add(b, n);
        }
    }
}

/// The RTT bucket of an average round-trip time.
pub fn rtt_bucket(ms: f64) -> u16 {
    if ms.is_nan() || ms <= RTT_BASE_MS {
        return 0;
    }
    let b = ((ms / RTT_BASE_MS).ln() / RTT_GROWTH.ln()).floor();
    (b as u16).min(RTT_BUCKETS)
}

/// The value a bucket stands for: the geometric middle of its range.
pub fn rtt_of_bucket(b: u16) -> f64 {
    RTT_BASE_MS * RTT_GROWTH.powf(f64::from(b) + 0.5)
}

/// Loss buckets are tenths of a percent (0–1000): exact for rounds of up to 1000 probes
/// that divide evenly, and within 0.05 percentage points otherwise.
pub fn loss_bucket(sent: u32, received: u32) -> u16 {
    if sent == 0 {
        return 1000;
    }
    let lost = f64::from(sent.saturating_sub(received));
    (lost * 1000.0 / f64::from(sent)).round() as u16
}

pub fn loss_pct_of_bucket(b: u16) -> f64 {
    f64::from(b) / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_buckets_keep_percentiles_within_a_percent() {
        for ms in [0.3, 1.0, 12.5, 47.0, 150.0, 600.0, 2500.0] {
            let back = rtt_of_bucket(rtt_bucket(ms));
            assert!((back - ms).abs() / ms < 0.011, "{ms} -> {back}");
        }
        assert_eq!(rtt_bucket(-1.0), 0);
        assert_eq!(rtt_bucket(1e9), RTT_BUCKETS);
    }

    #[test]
    fn quantiles_are_nearest_rank_and_survive_encoding() {
        let mut h = Hist::default();
        for v in 1..=100u16 {
            h.add(v, 1);
        }
        assert_eq!(h.quantile_bucket(0.5), Some(50));
        assert_eq!(h.quantile_bucket(0.95), Some(95));
        assert_eq!(h.quantile_bucket(1.0), Some(100));
        let mut back = Hist::default();
        back.merge_encoded(&h.encode());
        back.merge_encoded(&h.encode());
        assert_eq!(back.count(), 200);
        assert_eq!(back.quantile_bucket(0.5), Some(50));
        assert_eq!(Hist::default().quantile_bucket(0.5), None);
        assert_eq!(loss_bucket(5, 4), 200);
        assert_eq!(loss_bucket(0, 0), 1000);
    }
}
