//! Running as an operating-system service, behind one small interface: on Windows the
//! Service Control Manager (the `windows-service` crate: install, uninstall, start,
//! stop, and the service entry point that runs the same loop as `tps-agent run`). On
//! Linux and OpenWrt the init system's own unit is the service (`deploy/systemd/`,
//! `deploy/openwrt/`), so these calls say where to look instead.

use std::path::Path;

#[cfg(windows)]
mod windows;

/// What `tps-agent service …` asks for (its values are the command line's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    Install,
    Uninstall,
    Start,
    Stop,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Failed(String),
    #[error(
        "services are managed by the init system here: systemd (`systemctl enable --now tps-agent`, \
         unit in deploy/systemd/) or, on OpenWrt, `/etc/init.d/tps-agent enable` and `start`"
    )]
    NotHere,
}

/// Carries out `action` for the service that runs `tps-agent run --config <config>`.
pub fn manage(action: Action, config: &Path) -> Result<String, ServiceError> {
    #[cfg(windows)]
    return windows::manage(action, config);
    #[cfg(not(windows))]
    {
        let _ = (action, config);
        Err(ServiceError::NotHere)
    }
}

/// The service's log, `agent.log` beside its config (a service has no console);
/// the previous one is kept as `agent.log.1` once it passes 4 MB. `None`: no file
/// could be opened (the log then goes nowhere, as a service's stderr does).
pub fn open_log(config: &Path) -> Option<std::fs::File> {
    const MAX: u64 = 4 << 20;
    let path = config.with_file_name("agent.log");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > MAX) {
        let _ = std::fs::rename(&path, config.with_file_name("agent.log.1"));
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok()
}

/// Hands this process to the service manager, which runs the agent until it is told
/// to stop. Only returns when the service has stopped.
pub fn run_as_service(config: &Path) -> Result<(), ServiceError> {
    #[cfg(windows)]
    return windows::run(config);
    #[cfg(not(windows))]
    {
        let _ = config;
        Err(ServiceError::NotHere)
    }
}
