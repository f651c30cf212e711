//! Finding an interface's IPv4 address for `NCCL_SOCKET_IFNAME`.

use std::net::{IpAddr, Ipv4Addr};

/// Whether interface `name` matches `NCCL_SOCKET_IFNAME`'s `spec`: a comma list of prefixes,
/// `^` first to exclude them, `=` first to match names exactly.
pub fn matches(spec: &str, name: &str) -> bool {
    let (exclude, rest) = match spec.trim().strip_prefix('^') {
        Some(r) => (true, r),
        None => (false, spec.trim()),
    };
    let (exact, rest) = match rest.strip_prefix('=') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let hit = rest
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| {
            if exact {
                name == p
            } else {
                name.starts_with(p)
            }
        });
    hit != exclude
}

/// The IPv4 address of the first interface (in the system's order) that `spec` selects;
/// loopback only when the spec names it.
pub fn ipv4_of(spec: &str) -> Option<IpAddr> {
    let wants_lo = spec.trim_start_matches(['^', '=']).starts_with("lo") && !spec.starts_with('^');
    interfaces()
        .into_iter()
        .find(|(name, ip)| matches(spec, name) && (wants_lo || !ip.is_loopback()))
        .map(|(_, ip)| IpAddr::V4(ip))
}

/// Every (interface name, IPv4 address) pair of this host.
fn interfaces() -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`, which we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the list.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: the family is AF_INET, so the address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        out.push((name.to_string_lossy().into_owned(), ip));
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_specs() {
        assert!(matches("eth,ib", "eth0"));
        assert!(!matches("eth,ib", "docker0"));
        assert!(matches("^docker,lo", "eth0"));
        assert!(!matches("^docker,lo", "lo"));
        assert!(matches("=eth0", "eth0"));
        assert!(!matches("=eth0", "eth01"));
        assert_eq!(ipv4_of("lo"), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
