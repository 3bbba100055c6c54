//! The open-file limit: every connected agent holds a socket, and a login shell's soft
//! limit (often 1,024) would stop a collector near a thousand agents. Raised to the hard
//! limit at start, as Go and nginx do; the unit in `deploy/systemd` sets the hard limit.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Agents a collector may hold beyond which a low limit is worth a warning.
const WARN_BELOW: u64 = 100_000;

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_open_files() -> Option<u64> {
    let l = getrlimit(Resource::Nofile);
    let target = l.maximum;
    if l.current != target {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: target,
                maximum: l.maximum,
            },
        );
    }
    let now = getrlimit(Resource::Nofile).current;
    match now {
        Some(n) if n < WARN_BELOW => tracing::warn!(
            open_files = n,
            "the open-file limit caps connected agents near this number; raise it (LimitNOFILE= in the systemd unit, `ulimit -Hn` as root)"
        ),
        Some(n) => tracing::info!(open_files = n, "open-file limit"),
        None => tracing::info!("open-file limit: unlimited"),
    }
    now
}

/// The open-file limit in force (`None`: unlimited).
pub fn open_files() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// Descriptors kept for the store, logs and outbound connections.
const RESERVED: u64 = 128;

/// Connection caps for (gRPC, HTTP) when the config sets none: what the open-file limit
/// leaves after a reserve, an eighth of it (at most 512) for HTTP, the rest for agents.
pub fn connection_caps(open_files: Option<u64>) -> (usize, usize) {
    let available = open_files
        .unwrap_or(1_048_576)
        .saturating_sub(RESERVED)
        .max(32);
    let http = (available / 8).clamp(4, 512);
    ((available - http) as usize, http as usize)
}

#[cfg(test)]
mod tests {
    #[test]
    fn caps_fit_under_the_open_file_limit() {
        let (g, h) = super::connection_caps(Some(300));
        assert_eq!(g + h, 300 - 128);
        assert!(h >= 4 && g > h);
        let (g, h) = super::connection_caps(Some(20_000));
        assert_eq!((g, h), (20_000 - 128 - 512, 512));
    }

    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let hard = getrlimit(Resource::Nofile).maximum;
        assert_eq!(raise_open_files(), hard);
        assert_eq!(getrlimit(Resource::Nofile).current, hard);
    }
}
