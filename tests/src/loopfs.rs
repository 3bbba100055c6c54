//! A file system of its own for measuring what storage receives: an ext4 image on a
//! loop device, mounted `noatime` (as OpenWrt mounts its overlay), with the bytes
//! written to the device read from `/sys/block`. Root only.

use std::path::{Path, PathBuf};

/// Runs a shell command; its stdout, or the error with its stderr.
pub fn sh(cmd: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("sh")
        .arg("-ec")
        .arg(cmd)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Mounted on `mnt` while it lives; unmounted and its image removed when dropped.
#[derive(Debug)]
pub struct LoopFs {
    img: PathBuf,
    pub mnt: PathBuf,
    dev: String,
}

impl LoopFs {
    /// A fresh 64 MB ext4 on `mnt` (created if missing; the image lies beside it).
    pub fn mount(mnt: &Path) -> anyhow::Result<LoopFs> {
        let img = mnt.with_extension("img");
        std::fs::create_dir_all(mnt)?;
        sh(&format!(
            "truncate -s 64M '{0}' && mkfs.ext4 -q -F '{0}' && mount -o loop,noatime '{0}' '{1}'",
            img.display(),
            mnt.display()
        ))?;
        let src = sh(&format!("findmnt -no SOURCE '{}'", mnt.display()))?;
        Ok(LoopFs {
            img,
            mnt: mnt.to_path_buf(),
            dev: src.trim_start_matches("/dev/").to_string(),
        })
    }

    /// Bytes written to the device since it was set up (file-system journal included).
    pub fn written(&self) -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/sys/block/{}/stat", self.dev))?;
        let sectors: u64 = stat
            .split_whitespace()
            .nth(6)
            .ok_or_else(|| anyhow::anyhow!("short /sys/block/{}/stat", self.dev))?
            .parse()?;
        Ok(sectors * 512)
    }

    /// Writes back what is dirty now, as the kernel's writeback does within 30 s.
    pub fn flush(&self) {
        let _ = std::process::Command::new("sync")
            .arg("-f")
            .arg(&self.mnt)
            .status();
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = sh(&format!("umount '{}'", self.mnt.display()));
        let _ = std::fs::remove_file(&self.img);
    }
}
