//! Medians and percentiles of benchmark samples (nearest rank on the sorted samples).

/// The `p` (0–1) percentile; NaN when there are no samples.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn median(v: &mut [f64]) -> f64 {
    percentile(v, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_runs_is_the_middle_one() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(percentile(&mut [5.0, 1.0, 4.0, 2.0, 3.0], 1.0), 5.0);
        assert!(median(&mut []).is_nan());
    }
}
