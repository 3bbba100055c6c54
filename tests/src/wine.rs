//! A Windows laptop in a directory: the cross-built `tps-agent.exe` (from
//! `scripts/cross windows`) run by Wine in a prefix of its own, so `%ProgramData%` is
//! `<prefix>/drive_c/ProgramData` and the service manager is the prefix's. The prefix's
//! system directory gets the test-only `bcryptprimitives.dll` (Wine 8.0 lacks it; see
//! `tests/wine/`). The prefix's wineserver is ended when the prefix is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::router::cross_built;

const WINE: &str = "/usr/lib/wine/wine64";
const WINESERVER: &str = "/usr/lib/wine/wineserver";

fn cross_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cross")
}

/// The `.exe` and the stand-in DLL, or `None` as [`cross_built`] says.
pub fn built() -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    let exe = cross_dir().join("x86_64-pc-windows-gnu/agent/tps-agent.exe");
    let dll = cross_dir().join("wine/bcryptprimitives.dll");
    Ok(match (cross_built(&exe)?, cross_built(&dll)?) {
        (Some(e), Some(d)) => Some((e, d)),
        _ => None,
    })
}

/// A Wine prefix with the agent installed at `C:\tps\tps-agent.exe`.
#[derive(Debug)]
pub struct Laptop {
    dir: tempfile::TempDir,
}

impl Laptop {
    pub fn new(exe: &Path, dll: &Path) -> anyhow::Result<Laptop> {
        let dir = tempfile::tempdir()?;
        let laptop = Laptop { dir };
        let st = laptop.wine(&["wineboot", "--init"]).status()?;
        anyhow::ensure!(st.success(), "wineboot --init failed");
        let tps = laptop.path(r"C:\tps");
        std::fs::create_dir_all(&tps)?;
        std::fs::copy(exe, tps.join("tps-agent.exe"))?;
        // In the system directory, so an installed copy of the .exe finds it too.
        std::fs::copy(
            dll,
            laptop.path(r"C:\windows\system32\bcryptprimitives.dll"),
        )?;
        Ok(laptop)
    }

    /// The host path of a Windows path on `C:` (e.g. `C:\ProgramData\tps-agent`).
    pub fn path(&self, windows: &str) -> PathBuf {
        let rel = windows
            .trim_start_matches("C:")
            .trim_start_matches("c:")
            .trim_start_matches('\\')
            .replace('\\', "/");
        self.dir.path().join("drive_c").join(rel)
    }

    fn wine(&self, args: &[&str]) -> Command {
        let mut c = Command::new(WINE);
        c.args(args)
            .env("WINEPREFIX", self.dir.path())
            .env("WINEDEBUG", "-all")
            .env("RUST_LOG", "info");
        c
    }

    /// `tps-agent.exe ARGS`.
    pub fn agent(&self, args: &[&str]) -> Command {
        let mut all = vec![r"C:\tps\tps-agent.exe"];
        all.extend_from_slice(args);
        self.wine(&all)
    }

    /// The Windows kit `scripts/windows-package` made, or `None` as [`cross_built`] says.
    pub fn kit() -> anyhow::Result<Option<PathBuf>> {
        let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dist");
        let name = format!("tps-agent-{}-windows-x86_64.zip", env!("CARGO_PKG_VERSION"));
        cross_built(&dist.join(name))
    }

    /// The service's registry key as `reg query` prints it ("" once removed).
    pub fn service_key(&self) -> anyhow::Result<String> {
        let out = self
            .program(&[
                "reg",
                "query",
                r"HKLM\System\CurrentControlSet\Services\tps-agent",
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Any program of the prefix (`reg`, `sc`, `cmd`, …).
    pub fn program(&self, args: &[&str]) -> Command {
        self.wine(args)
    }
}

impl Laptop {
    /// Ends the prefix's wineserver and every Wine process in it, then boots the
    /// prefix again from its saved registry, as a laptop's reboot would.
    pub fn reboot(&self) -> anyhow::Result<()> {
        let st = Command::new(WINESERVER)
            .args(["-k"])
            .env("WINEPREFIX", self.dir.path())
            .status()?;
        // Exit status 1 only means no server was running.
        anyhow::ensure!(st.code().is_some(), "wineserver -k was killed");
        let st = Command::new(WINESERVER)
            .args(["-w"])
            .env("WINEPREFIX", self.dir.path())
            .status()?;
        anyhow::ensure!(st.code().is_some(), "wineserver -w was killed");
        // Boot: the service manager starts the automatic services.
        let st = self.wine(&["wineboot"]).status()?;
        anyhow::ensure!(st.success(), "wineboot failed");
        Ok(())
    }
}

impl Drop for Laptop {
    fn drop(&mut self) {
        let _ = Command::new(WINESERVER)
            .arg("-k")
            .env("WINEPREFIX", self.dir.path())
            .status();
    }
}
