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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let hard = getrlimit(Resource::Nofile).maximum;
        assert_eq!(raise_open_files(), hard);
        assert_eq!(getrlimit(Resource::Nofile).current, hard);
    }
}
