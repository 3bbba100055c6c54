//! A router in a directory: a cross-built `tps-agent` (from `scripts/cross`) run under
//! qemu-user, `chroot`ed into a root that holds only what every OpenWrt has and the
//! agent needs — `/bin/tps-agent`, `/etc/hosts`, `/etc/resolv.conf`,
//! `/etc/openwrt_release`, `/dev/{null,random,urandom}` and `/proc` — no libc, no loader,
//! no NSS module. The static qemu binary sits in the root too (`/.qemu`): it is the CPU,
//! not part of the userland. Each run gets its own mount namespace (`unshare -m`), so
//! `/proc` and any test mounts vanish with the process; the network is the host's, so
//! a collector on loopback is reachable.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A cross target the agent is built for and the qemu-user binary that runs it.
#[derive(Debug, Clone, Copy)]
pub struct Arch {
    pub triple: &'static str,
    pub qemu: &'static str,
}

pub const AARCH64: Arch = Arch {
    triple: "aarch64-unknown-linux-gnu",
    qemu: "qemu-aarch64-static",
};
pub const ARMV7: Arch = Arch {
    triple: "armv7-unknown-linux-gnueabihf",
    qemu: "qemu-arm-static",
};

/// Built with a patched surge-ping (see `scripts/cross`).
pub const MIPSEL: Arch = Arch {
    triple: "mipsel-unknown-linux-gnu",
    qemu: "qemu-mipsel-static",
};

/// Where `scripts/cross` leaves a target's binary.
pub fn binary(arch: Arch) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/cross")
        .join(arch.triple)
        .join("agent/tps-agent")
}

/// The cross-built binary, or `None` (with a note) when it was not built and
/// `TPS_CROSS_REQUIRED` is unset; `scripts/test` sets it, so CI fails without them.
pub fn built(arch: Arch) -> anyhow::Result<Option<PathBuf>> {
    cross_built(&binary(arch))
}

/// `file` if `scripts/cross` made it; see [`built`].
pub fn cross_built(file: &Path) -> anyhow::Result<Option<PathBuf>> {
    if file.is_file() {
        return Ok(Some(file.to_path_buf()));
    }
    if std::env::var_os("TPS_CROSS_REQUIRED").is_some() {
        anyhow::bail!(
            "{} is missing: scripts/test builds it with scripts/cross",
            file.display()
        );
    }
    eprintln!(
        "SKIPPED: {} not built (run scripts/cross, or scripts/test)",
        file.display()
    );
    Ok(None)
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{name} not found: scripts/cross installs it"))
}

/// The router's root directory (removed when dropped).
#[derive(Debug)]
pub struct RouterRoot {
    dir: tempfile::TempDir,
}

impl RouterRoot {
    /// A fresh root with the agent for `arch` and the given `/etc/hosts`.
    pub fn new(arch: Arch, bin: &Path, hosts: &str) -> anyhow::Result<RouterRoot> {
        let dir = tempfile::tempdir()?;
        let r = dir.path();
        // Traversable by the unprivileged user some runs switch to.
        std::fs::set_permissions(r, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        for d in ["bin", "etc", "dev", "proc", "mnt"] {
            std::fs::create_dir_all(r.join(d))?;
        }
        std::fs::copy(bin, r.join("bin/tps-agent"))?;
        std::fs::copy(which(arch.qemu)?, r.join(".qemu"))?;
        std::fs::write(r.join("etc/hosts"), hosts)?;
        // No DNS server answers here: names must come from /etc/hosts.
        std::fs::write(r.join("etc/resolv.conf"), "nameserver 127.0.0.1\n")?;
        std::fs::write(
            r.join("etc/openwrt_release"),
            "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='24.10.0'\n",
        )?;
        for (name, minor) in [("null", "3"), ("random", "8"), ("urandom", "9")] {
            let st = Command::new("mknod")
                .arg(r.join("dev").join(name))
                .args(["c", "1", minor])
                .status()?;
            anyhow::ensure!(st.success(), "mknod /dev/{name} failed (root needed)");
        }
        Ok(RouterRoot { dir })
    }

    /// A path inside the root, as the host sees it (`rel` as the router sees it).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel.trim_start_matches('/'))
    }

    /// `tps-agent ARGS` inside the router. `setup` is shell run on the host inside the
    /// run's own mount namespace just before the chroot, with `$R` the root (for test
    /// mounts such as a read-only or a full state directory); `user` runs the agent as
    /// that uid:gid instead of root.
    pub fn agent(&self, args: &[&str], setup: &str, user: Option<&str>) -> Command {
        let mut c = Command::new("unshare");
        let chroot = match user {
            Some(u) => format!("chroot --userspec={u} \"$R\""),
            None => "chroot \"$R\"".to_string(),
        };
        c.arg("--mount")
            .arg("--propagation")
            .arg("private")
            .arg("sh")
            .arg("-c")
            .arg(format!(
                "set -e; R=\"$0\"; mount -t proc proc \"$R/proc\"; {setup}\nexec {chroot} /.qemu /bin/tps-agent \"$@\""
            ))
            .arg(self.dir.path())
            .args(args)
            .env_clear()
            .env("RUST_LOG", "info");
        c
    }
}
