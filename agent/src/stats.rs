//! Summarising one probe round: loss, RTT min/avg/max and jitter from the individual
//! probe results.

use std::time::Duration;

/// Round-trip statistics of the answered probes, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttStats {
    pub min_ms: f64,
    pub avg_ms: f64,
    pub max_ms: f64,
    /// Mean absolute difference of consecutive answered RTTs (RFC 3550's |D(i-1,i)|,
    /// averaged instead of smoothed); absent with fewer than two answers.
    pub jitter_ms: Option<f64>,
}

/// The summary of one round against one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    pub sent: u32,
    pub received: u32,
    /// Probes answered by an ICMP error (destination unreachable, time exceeded):
    /// lost, like the unanswered ones, but the operator can tell them apart.
    pub errors: u32,
    /// Absent when nothing was received.
    pub rtt: Option<RttStats>,
}

/// Summarises probe results in the order they were sent; `None` is a lost probe.
pub fn summarize(results: &[Option<Duration>]) -> Round {
    let rtts: Vec<f64> = results
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    let sent = results.len() as u32;
    let received = rtts.len() as u32;
    if rtts.is_empty() {
        return Round {
            sent,
            received,
            errors: 0,
            rtt: None,
        };
    }
    let min_ms = rtts.iter().copied().fold(f64::INFINITY, f64::min);
    let max_ms = rtts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Clamp: float summation must not put the mean outside [min, max].
    let avg_ms = (rtts.iter().sum::<f64>() / rtts.len() as f64).clamp(min_ms, max_ms);
    let jitter_ms = (rtts.len() >= 2).then(|| {
        rtts.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (rtts.len() - 1) as f64
    });
    Round {
        sent,
        received,
        errors: 0,
        rtt: Some(RttStats {
            min_ms,
            avg_ms,
            max_ms,
            jitter_ms,
        }),
    }
}

/// Summarises the echoes of one ICMP round, counting ICMP errors apart.
pub fn summarize_echoes(echoes: &[crate::icmp::Echo]) -> Round {
    let rtts: Vec<Option<Duration>> = echoes.iter().map(|e| e.rtt()).collect();
    Round {
        errors: echoes
            .iter()
            .filter(|e| **e == crate::icmp::Echo::Error)
            .count() as u32,
        ..summarize(&rtts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[Option<u64>]) -> Vec<Option<Duration>> {
        v.iter().map(|x| x.map(Duration::from_millis)).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn all_answered() {
        let r = summarize(&ms(&[Some(10), Some(20), Some(15), Some(25), Some(30)]));
        assert_eq!((r.sent, r.received), (5, 5));
        let s = r.rtt.unwrap();
        assert!(close(s.min_ms, 10.0) && close(s.max_ms, 30.0) && close(s.avg_ms, 20.0));
        // |20-10| + |15-20| + |25-15| + |30-25| = 30, over 4 differences.
        assert!(close(s.jitter_ms.unwrap(), 7.5));
    }

    #[test]
    fn losses_are_skipped_for_jitter() {
        let r = summarize(&ms(&[Some(10), None, Some(40), None, Some(40)]));
        assert_eq!((r.sent, r.received), (5, 3));
        let s = r.rtt.unwrap();
        assert!(close(s.avg_ms, 30.0));
        // Consecutive answered: |40-10| + |40-40| = 30 over 2.
        assert!(close(s.jitter_ms.unwrap(), 15.0));
    }

    #[test]
    fn total_loss_has_no_rtt() {
        let r = summarize(&ms(&[None, None, None, None, None]));
        assert_eq!(
            r,
            Round {
                sent: 5,
                received: 0,
                errors: 0,
                rtt: None
            }
        );
    }

    #[test]
    fn icmp_errors_are_lost_and_counted_apart() {
        use crate::icmp::Echo;
        let r = summarize_echoes(&[
            Echo::Reply(Duration::from_millis(10)),
            Echo::Error,
            Echo::Lost,
            Echo::Error,
        ]);
        assert_eq!((r.sent, r.received, r.errors), (4, 1, 2));
        assert!(close(r.rtt.unwrap().avg_ms, 10.0));
    }

    #[test]
    fn one_answer_has_no_jitter() {
        let r = summarize(&ms(&[None, Some(12)]));
        let s = r.rtt.unwrap();
        assert_eq!(
            (s.min_ms, s.avg_ms, s.max_ms, s.jitter_ms),
            (12.0, 12.0, 12.0, None)
        );
    }

    #[test]
    fn constant_rtt_has_zero_jitter_and_ordered_stats() {
        let r = summarize(&[Some(Duration::from_micros(333)); 7]);
        let s = r.rtt.unwrap();
        assert!(s.min_ms <= s.avg_ms && s.avg_ms <= s.max_ms);
        assert_eq!(s.jitter_ms, Some(0.0));
    }
}
