//! What differs between the devices the agent runs on — a Linux PC, an OpenWrt router
//! or a Windows laptop — and only that: default paths and spool bound, and the exact change to make
//! when the device stops the agent (ICMP not allowed, state directory not writable, a
//! name that does not resolve). The logic asks [`Device`]; it never tests the device.

use std::path::{Path, PathBuf};

/// The kind of device, decided once from the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// Any other Linux (Debian, Ubuntu, a TPS laptop): systemd, `/var/lib`.
    Linux,
    /// An OpenWrt router: procd, `uci`, `/tmp` and `/var` in RAM, a few MB of flash.
    OpenWrt,
    /// A Windows laptop: a service, `%ProgramData%`, the system ICMP API.
    Windows,
}

/// Defaults that depend on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// Where token and spool live when the config names no `state_dir`.
    pub state_dir: PathBuf,
    /// `spool.max_mb` when the config names none.
    pub spool_max_mb: u64,
}

/// Why the spool's directory cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageProblem {
    ReadOnly,
    Full,
    PermissionDenied,
}

/// Makes `dir` readable only by SYSTEM and Administrators on Windows, where
/// `%ProgramData%` lets every user read by default (on Unix the token file itself is
/// created with mode 0600). Uses `icacls` with well-known SIDs, so it works in every
/// Windows language; when that fails the warning gives the command to run.
pub fn restrict_to_admins(dir: &Path) {
    if !cfg!(windows) {
        return;
    }
    let args = [
        "/inheritance:r",
        "/grant:r",
        "*S-1-5-18:(OI)(CI)F",
        "/grant:r",
        "*S-1-5-32-544:(OI)(CI)F",
    ];
    let ok = std::process::Command::new("icacls")
        .arg(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        tracing::warn!(
            "could not restrict {} to SYSTEM and Administrators; run as Administrator: icacls \"{}\" {}",
            dir.display(),
            dir.display(),
            args.join(" ")
        );
    }
}

/// `%ProgramData%\tps-agent` (all users' application data, not a user profile, so the
/// service and the technician's console see the same files).
fn program_data() -> PathBuf {
    std::env::var_os("ProgramData")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
        .join("tps-agent")
}

/// Every OpenWrt release has this file; nothing else does.
const OPENWRT_MARK: &str = "/etc/openwrt_release";

impl Device {
    /// This device, looked up once per process (advice and defaults ask often).
    pub fn detect() -> Device {
        static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
        *DEVICE.get_or_init(|| {
            if cfg!(windows) {
                Device::Windows
            } else if Path::new(OPENWRT_MARK).exists() {
                Device::OpenWrt
            } else {
                Device::Linux
            }
        })
    }

    pub fn defaults(self) -> Defaults {
        match self {
            Device::Linux => Defaults {
                state_dir: PathBuf::from("/var/lib/tps-agent"),
                spool_max_mb: 64,
            },
            // /var is RAM on OpenWrt (lost at every power cut), so the spool goes to
            // the flash overlay under /etc, which sysupgrade keeps (keep.d in the
            // package). The overlay often has 1–10 MB free: 4 MB holds about 5½ days
            // of rounds at the defaults (see docs/BENCHMARKS.md).
            Device::OpenWrt => Defaults {
                state_dir: PathBuf::from("/etc/tps-agent/state"),
                spool_max_mb: 4,
            },
            Device::Windows => Defaults {
                state_dir: program_data().join("state"),
                spool_max_mb: 64,
            },
        }
    }

    /// The config file when none is named.
    pub fn config_path(self) -> PathBuf {
        match self {
            Device::Linux | Device::OpenWrt => PathBuf::from("/etc/tps-agent/agent.toml"),
            Device::Windows => program_data().join("agent.toml"),
        }
    }

    /// What to do when no ICMP socket can be opened.
    pub fn icmp_advice(self, err: &std::io::Error) -> String {
        // The kind only: surge-ping's own text carries advice for desktops (sudo, setcap).
        let err = std::io::Error::from(err.kind());
        match self {
            Device::Linux => format!(
                "cannot open an ICMP socket ({err}). Give the agent CAP_NET_RAW (the systemd unit \
                 does: AmbientCapabilities=CAP_NET_RAW) or allow unprivileged ping with \
                 `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"` (it covers IPv6 too), \
                 kept in /etc/sysctl.d/. Until then only targets with a port are probed, over TCP."
            ),
            Device::Windows => format!(
                "cannot use the Windows ICMP API ({err}). A security product may block it: \
                 allow outgoing ICMP echo for tps-agent.exe (Windows Defender Firewall: \
                 \"File and Printer Sharing (Echo Request - ICMPv4-Out)\") or ask the IT \
                 desk. Until then only targets with a port are probed, over TCP."
            ),
            Device::OpenWrt => format!(
                "cannot open an ICMP socket ({err}). Run the agent as root from \
                 /etc/init.d/tps-agent (procd's default), or allow unprivileged ping (IPv4 and \
                 IPv6): `echo 'net.ipv4.ping_group_range=0 2147483647' > \
                 /etc/sysctl.d/99-tps-agent.conf; sysctl -p /etc/sysctl.d/99-tps-agent.conf`. \
                 Until then only targets with a port are probed, over TCP."
            ),
        }
    }

    /// What to do when the state directory cannot take the spool.
    pub fn storage_advice(self, problem: StorageProblem, dir: &Path) -> String {
        let d = dir.display();
        let what = match problem {
            StorageProblem::ReadOnly => format!("the state directory {d} is read-only"),
            StorageProblem::Full => format!("the file system of the state directory {d} is full"),
            StorageProblem::PermissionDenied => {
                format!("the agent may not write to the state directory {d}")
            }
        };
        match self {
            Device::Linux => format!(
                "{what}. Check `df -h {d}` and `ls -ld {d}` (the agent's user must own it), \
                 or set state_dir in the agent's config to a writable directory."
            ),
            Device::Windows => format!(
                "{what}. Check free space on the drive (Explorer, or `dir {d}`), that the \
                 folder is not read-only (`attrib {d}`), and that SYSTEM and Administrators \
                 may write it (`icacls {d}`); or set state_dir in \
                 %ProgramData%\\tps-agent\\agent.toml, then `tps-agent service stop` and \
                 `tps-agent service start`."
            ),
            Device::OpenWrt => format!(
                "{what}. Check `df -h /overlay` (free flash: remove unused packages with \
                 `opkg remove`) and `mount | grep overlay` (a read-only overlay means the \
                 flash is worn or full). Or put the spool on USB storage: \
                 state_dir = \"/mnt/sda1/tps-agent\" in /etc/tps-agent/agent.toml, then \
                 `/etc/init.d/tps-agent restart`."
            ),
        }
    }

    /// What to do when the collector's (or a target's) host name does not resolve.
    pub fn resolve_advice(self, host: &str, err: &str) -> String {
        match self {
            Device::Linux => format!(
                "cannot resolve the host name {host:?} ({err}). Check the DNS servers in \
                 /etc/resolv.conf, or add a line `<IP address> {host}` to /etc/hosts."
            ),
            Device::Windows => format!(
                "cannot resolve the host name {host:?} ({err}). Check the DNS: `nslookup \
                 {host}` and `ipconfig /all`, or add a line `<IP address> {host}` to \
                 C:\\Windows\\System32\\drivers\\etc\\hosts (as Administrator)."
            ),
            Device::OpenWrt => format!(
                "cannot resolve the host name {host:?} ({err}). Check the router's DNS: \
                 `nslookup {host}` and `cat /tmp/resolv.conf.d/resolv.conf.auto`; set a DNS \
                 server with `uci add_list network.wan.dns=<DNS server IP>; uci commit network; \
                 /etc/init.d/network reload`, or add a line `<IP address> {host}` to /etc/hosts."
            ),
        }
    }

    /// What to run after enrolling.
    pub fn start_hint(self, config: &Path) -> String {
        match self {
            Device::Linux => format!(
                "Next: tps-agent check --config {0}, then systemctl enable --now tps-agent",
                config.display()
            ),
            Device::OpenWrt => format!(
                "Next: tps-agent check --config {0}, then /etc/init.d/tps-agent start",
                config.display()
            ),
            Device::Windows => format!(
                "Next: tps-agent check --config {0}, then (as Administrator) \
                 tps-agent service install",
                config.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routers_keep_state_on_flash_with_a_small_spool() {
        let r = Device::OpenWrt.defaults();
        assert!(r.state_dir.starts_with("/etc"), "not /var: RAM on OpenWrt");
        assert!(r.spool_max_mb < Device::Linux.defaults().spool_max_mb);
    }

    #[test]
    fn advice_names_what_to_change_on_the_device() {
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(Device::OpenWrt.icmp_advice(&e).contains("/etc/sysctl.d/"));
        assert!(Device::Linux.icmp_advice(&e).contains("CAP_NET_RAW"));
        // ICMPv6 datagram sockets follow net.ipv4.ping_group_range; there is no ipv6 one.
        for d in [Device::Linux, Device::OpenWrt] {
            assert!(!d.icmp_advice(&e).contains("net.ipv6"), "{d:?}");
        }
        let dir = Path::new("/etc/tps-agent/state");
        let full = Device::OpenWrt.storage_advice(StorageProblem::Full, dir);
        assert!(
            full.contains("is full") && full.contains("df -h /overlay"),
            "{full}"
        );
        let dns = Device::OpenWrt.resolve_advice("c.example", "no such host");
        assert!(dns.contains("uci add_list network.wan.dns"), "{dns}");
    }
}
