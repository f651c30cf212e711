//! This host's interface addresses (`getifaddrs`), for topology detection and interface
//! selection in `oxccl`, which has no `unsafe` of its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    /// Interface name (`eth0`).
    pub name: String,
    /// The address.
    pub ip: IpAddr,
    /// Prefix length of the netmask (24 for 255.255.255.0), when the kernel reports one.
    pub prefix: Option<u8>,
    /// Whether the interface is up (`IFF_UP`).
    pub up: bool,
}

/// Every IPv4 and IPv6 address of this host's interfaces, in the kernel's order (empty if
/// `getifaddrs` fails: callers treat that like a host without addresses).
pub fn interface_addrs() -> Vec<InterfaceAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`, freed once below.
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
        // SAFETY: ifa_addr is non-null and points to a sockaddr owned by the list.
        let ip = match unsafe { sockaddr_ip(ifa.ifa_addr) } {
            Some(ip) => ip,
            None => continue,
        };
        let prefix = if ifa.ifa_netmask.is_null() {
            None
        } else {
            // SAFETY: ifa_netmask is non-null and points to a sockaddr owned by the list.
            unsafe { sockaddr_ip(ifa.ifa_netmask) }.map(|m| match m {
                IpAddr::V4(m) => u32::from(m).count_ones() as u8,
                IpAddr::V6(m) => u128::from(m).count_ones() as u8,
            })
        };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        out.push(InterfaceAddr {
            name: name.to_string_lossy().into_owned(),
            ip,
            prefix,
            up: ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0,
        });
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// The IP address in `sa` (`None` for families other than IPv4 and IPv6).
///
/// # Safety
/// `sa` must point to a valid sockaddr whose storage matches its `sa_family`.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    // SAFETY: the caller guarantees `sa` is valid.
    let family = i32::from(unsafe { (*sa).sa_family });
    if family == libc::AF_INET {
        // SAFETY: the family is AF_INET, so the storage is a sockaddr_in.
        let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
            sin.sin_addr.s_addr,
        ))))
    } else if family == libc::AF_INET6 {
        // SAFETY: the family is AF_INET6, so the storage is a sockaddr_in6.
        let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_listed_up_with_its_prefix() {
        let all = super::interface_addrs();
        let lo = all
            .iter()
            .find(|a| a.ip == std::net::IpAddr::from([127, 0, 0, 1]))
            .expect("127.0.0.1 on some interface");
        assert!(lo.up);
        assert_eq!(lo.prefix, Some(8));
    }
}
