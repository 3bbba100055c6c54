//! Finding the default gateway, re-read every round because laptops move between
//! networks: on Linux from the routing table (`/proc/net/route`, then
//! `/proc/net/ipv6_route`), on Windows from the OS (netdev, over the IP Helper API).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The default IPv4 gateway from `/proc/net/route` text.
pub fn parse_route_v4(text: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let mut best: Option<(u32, Ipv4Addr)> = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Ok(dest), Ok(gw), Ok(flags), Ok(metric), Ok(mask)) = (
            u32::from_str_radix(f[1], 16),
            u32::from_str_radix(f[2], 16),
            u32::from_str_radix(f[3], 16),
            f[6].parse::<u32>(),
            u32::from_str_radix(f[7], 16),
        ) else {
            continue;
        };
        if dest == 0 && mask == 0 && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY {
            // The kernel prints the network-order address as a host-order integer, so
            // native byte order gives the address on little- and big-endian routers alike.
            let ip = Ipv4Addr::from(gw.to_ne_bytes());
            if best.is_none_or(|(m, _)| metric < m) {
                best = Some((metric, ip));
            }
        }
    }
    best.map(|(_, ip)| ip)
}

/// The default IPv6 gateway from `/proc/net/ipv6_route` text.
pub fn parse_route_v6(text: &str) -> Option<Ipv6Addr> {
    let mut best: Option<(u32, Ipv6Addr)> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[1] != "00" || f[0].bytes().any(|b| b != b'0') {
            continue;
        }
        let (Ok(hop), Ok(metric), Ok(flags)) = (
            u128::from_str_radix(f[4], 16),
            u32::from_str_radix(f[5], 16),
            u32::from_str_radix(f[8], 16),
        ) else {
            continue;
        };
        if hop == 0 || flags & 0x3 != 0x3 {
            continue;
        }
        let ip = Ipv6Addr::from(hop);
        if best.is_none_or(|(m, _)| metric < m) {
            best = Some((metric, ip));
        }
    }
    best.map(|(_, ip)| ip)
}

/// The default gateway of this machine, IPv4 preferred; `None` without one.
pub fn default_gateway() -> Option<IpAddr> {
    system_gateway()
}

#[cfg(not(windows))]
fn system_gateway() -> Option<IpAddr> {
    if let Some(v4) = std::fs::read_to_string("/proc/net/route")
        .ok()
        .as_deref()
        .and_then(parse_route_v4)
    {
        return Some(IpAddr::V4(v4));
    }
    std::fs::read_to_string("/proc/net/ipv6_route")
        .ok()
        .as_deref()
        .and_then(parse_route_v6)
        .map(IpAddr::V6)
}

#[cfg(windows)]
fn system_gateway() -> Option<IpAddr> {
    let gw = netdev::get_default_gateway().ok()?;
    gw.ipv4
        .first()
        .copied()
        .map(IpAddr::V4)
        .or_else(|| gw.ipv6.first().copied().map(IpAddr::V6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_default_route_with_lowest_metric() {
        let gw_hex = |ip: Ipv4Addr| format!("{:08X}", u32::from_ne_bytes(ip.octets()));
        let text = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             wlan0\t00000000\t{}\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             eth0\t00000000\t{}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n",
            gw_hex(Ipv4Addr::new(192, 168, 1, 1)),
            gw_hex(Ipv4Addr::new(10, 0, 0, 1)),
        );
        assert_eq!(parse_route_v4(&text), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(parse_route_v4("Iface\tDestination\n"), None);
    }

    #[test]
    fn ipv6_default_route() {
        let text = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
                    20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n";
        assert_eq!(parse_route_v6(text), Some("fe80::1".parse().unwrap()));
    }
}
