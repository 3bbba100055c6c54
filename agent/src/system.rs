//! Facts about the device (uptime, boot time, host name, OS, interface counters) read
//! with sysinfo, for every push's status.

use std::time::Instant;

use sysinfo::{Networks, System};

/// Device facts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub system_uptime_secs: u64,
    pub boot_time_ms: i64,
    pub agent_uptime_secs: u64,
    pub hostname: String,
    pub os: String,
    pub interfaces: Vec<(String, u64, u64)>,
}

/// Reads facts; keeps the interface list between calls so refreshing is cheap.
#[derive(Debug)]
pub struct SystemInfo {
    started: Instant,
    networks: Networks,
    hostname: String,
    os: String,
}

impl Default for SystemInfo {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemInfo {
    pub fn new() -> Self {
        SystemInfo {
            started: Instant::now(),
            networks: Networks::new_with_refreshed_list(),
            hostname: System::host_name().unwrap_or_default(),
            os: System::long_os_version()
                .or_else(System::name)
                .unwrap_or_else(|| std::env::consts::OS.to_string()),
        }
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn os(&self) -> &str {
        &self.os
    }

    pub fn facts(&mut self) -> Facts {
        self.networks.refresh(true);
        let mut interfaces: Vec<(String, u64, u64)> = self
            .networks
            .iter()
            .map(|(name, d)| (name.clone(), d.total_received(), d.total_transmitted()))
            .collect();
        interfaces.sort();
        Facts {
            system_uptime_secs: System::uptime(),
            boot_time_ms: System::boot_time() as i64 * 1000,
            agent_uptime_secs: self.started.elapsed().as_secs(),
            hostname: self.hostname.clone(),
            os: self.os.clone(),
            interfaces,
        }
    }
}
