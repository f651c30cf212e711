//! The address a rank listens on and advertises to its peers.
//!
//! Order: `OXCCL_SOCKET_ADDR`; else the first interface `OXCCL_SOCKET_IFNAME` selects that is
//! up with an IPv4 address (an error listing every interface when none is); else the local
//! address of the connection to the root, unless that is a loopback or bridge (docker,
//! virbr) address while the root is on another host: then the first physical interface that
//! is up with an IPv4 address, since peers on other hosts cannot reach a bridge's address.

use super::{IfnameSpec, Nic, NicKind};
use crate::error::{Error, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// The first interface of `nics` that `spec` selects, is up and has an IPv4 address (a
/// loopback one only when `spec` names loopback), with that address; else a message listing
/// every interface.
pub fn select_interface(
    nics: &[Nic],
    spec: &IfnameSpec,
) -> std::result::Result<(String, IpAddr), String> {
    nics.iter()
        .filter(|n| spec.matches(&n.name) && n.is_up())
        .filter(|n| n.kind != NicKind::Loopback || spec.selects_loopback())
        .find_map(|n| Some((n.name.clone(), n.ipv4()?)))
        .ok_or_else(|| {
            format!(
                "OXCCL_SOCKET_IFNAME={spec} selects no interface that is up with an IPv4 address; \
                 this host has: {}",
                describe(nics)
            )
        })
}

/// Every interface with its kind, state and addresses, for error messages.
fn describe(nics: &[Nic]) -> String {
    if nics.is_empty() {
        return "no interfaces".into();
    }
    nics.iter()
        .map(|n| {
            let addrs: Vec<String> = n.addrs.iter().map(|a| a.to_string()).collect();
            format!(
                "{} ({}, {}: {})",
                n.name,
                n.kind.as_str(),
                n.state.as_deref().unwrap_or("state unknown"),
                if addrs.is_empty() {
                    "no address".into()
                } else {
                    addrs.join(" ")
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The address to listen on, from the settings and what is known: `route` is the local
/// address of the connection to the root at `root`, `nics` this host's interfaces.
pub(super) fn choose(
    socket_addr: Option<IpAddr>,
    ifname: Option<&IfnameSpec>,
    route: Option<IpAddr>,
    root: IpAddr,
    nics: &[Nic],
) -> Result<IpAddr> {
    if let Some(ip) = socket_addr {
        return Ok(ip);
    }
    if let Some(spec) = ifname {
        return select_interface(nics, spec)
            .map(|(_, ip)| ip)
            .map_err(|detail| Error::Config {
                knob: "OXCCL_SOCKET_IFNAME",
                detail,
            });
    }
    let Some(route) = route else {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    };
    let owner = nics.iter().find(|n| n.addrs.iter().any(|a| a.ip == route));
    let unreachable_kind =
        owner.is_some_and(|n| matches!(n.kind, NicKind::Loopback | NicKind::Bridge));
    let root_is_here =
        root.is_loopback() || nics.iter().any(|n| n.addrs.iter().any(|a| a.ip == root));
    if unreachable_kind && !root_is_here {
        let physical = nics
            .iter()
            .filter(|n| n.kind == NicKind::Physical && n.is_up())
            .find_map(Nic::ipv4);
        if let Some(ip) = physical {
            return Ok(ip);
        }
    }
    Ok(route)
}

/// The address this rank listens on and advertises (see the module doc). `route` is the
/// local address of its connection to the root at `root`. Interfaces are only read when
/// `OXCCL_SOCKET_ADDR` is unset.
pub fn listen_ip(config: &crate::Config, route: Option<IpAddr>, root: IpAddr) -> Result<IpAddr> {
    if let Some(ip) = config.socket_addr {
        return Ok(ip);
    }
    let mut nics = super::net::detect(Path::new("/"), &[]);
    super::net::attach_addresses(&mut nics, &oxccl_transports::ifaddrs::interface_addrs());
    choose(None, config.socket_ifname.as_ref(), route, root, &nics)
}

/// Where a rendezvous root listens before any peer is known (`UniqueId::new` for
/// `ncclGetUniqueId`, `Communicator::from_mpi` across hosts): `OXCCL_SOCKET_ADDR`; else
/// the interface `OXCCL_SOCKET_IFNAME` selects (an error listing every interface when none
/// is); else the first physical interface that is up with an IPv4 address; else (virtual
/// interfaces only, e.g. containers or network namespaces) the first non-loopback,
/// non-bridge one; else the loopback address.
pub fn rendezvous_ip(config: &crate::Config) -> Result<IpAddr> {
    if let Some(ip) = config.socket_addr {
        return Ok(ip);
    }
    let mut nics = super::net::detect(Path::new("/"), &[]);
    super::net::attach_addresses(&mut nics, &oxccl_transports::ifaddrs::interface_addrs());
    if let Some(spec) = config.socket_ifname.as_ref() {
        return choose(
            None,
            Some(spec),
            None,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &nics,
        );
    }
    let up = |kinds: &[NicKind]| {
        nics.iter()
            .filter(|n| kinds.contains(&n.kind) && n.is_up())
            .find_map(Nic::ipv4)
    };
    Ok(up(&[NicKind::Physical])
        .or_else(|| up(&[NicKind::Veth, NicKind::Virtual, NicKind::Tun]))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)))
}

#[cfg(test)]
mod tests {
    use super::super::Address;
    use super::*;

    fn nic(name: &str, kind: NicKind, state: &str, ips: &[&str]) -> Nic {
        Nic {
            name: name.into(),
            kind,
            state: Some(state.into()),
            speed_mbps: None,
            mtu: None,
            mac: None,
            pci: None,
            numa: None,
            addrs: ips
                .iter()
                .map(|s| Address {
                    ip: s.parse().unwrap(),
                    prefix: Some(24),
                })
                .collect(),
        }
    }

    fn host() -> Vec<Nic> {
        vec![
            nic("docker0", NicKind::Bridge, "up", &["172.17.0.1"]),
            nic("eth0", NicKind::Physical, "down", &["10.0.0.5"]),
            nic("eth1", NicKind::Physical, "up", &["fd00::1", "10.0.1.5"]),
            nic("lo", NicKind::Loopback, "unknown", &["127.0.0.1", "::1"]),
        ]
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ifname_picks_the_first_selected_interface_that_is_up_with_ipv4() {
        let nics = host();
        let pick = |s: &str| select_interface(&nics, &s.parse().unwrap());
        assert_eq!(pick("eth").unwrap(), ("eth1".into(), ip("10.0.1.5")));
        assert_eq!(pick("^docker").unwrap().0, "eth1");
        assert_eq!(pick("docker").unwrap().0, "docker0");
        assert_eq!(pick("lo").unwrap().1, ip("127.0.0.1"));
        // Loopback is never picked by an exclusion list.
        let only_lo = vec![nic("lo", NicKind::Loopback, "unknown", &["127.0.0.1"])];
        assert!(select_interface(&only_lo, &"^eth".parse().unwrap()).is_err());
    }

    #[test]
    fn no_match_lists_every_interface_and_the_spec() {
        let e = select_interface(&host(), &"=eth0".parse().unwrap()).unwrap_err();
        assert!(e.contains("OXCCL_SOCKET_IFNAME==eth0"), "{e}");
        for part in [
            "docker0 (bridge, up: 172.17.0.1/24)",
            "eth0 (physical, down: 10.0.0.5/24)",
            "eth1 (physical, up: fd00::1/24 10.0.1.5/24)",
            "lo (loopback",
        ] {
            assert!(e.contains(part), "{part} missing from: {e}");
        }
        let e = choose(
            None,
            Some(&"ib".parse().unwrap()),
            None,
            ip("10.0.0.1"),
            &host(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("OXCCL_SOCKET_IFNAME"), "{e}");
    }

    #[test]
    fn socket_addr_wins_then_ifname_then_the_route() {
        let nics = host();
        let spec: IfnameSpec = "docker".parse().unwrap();
        let root = ip("10.9.9.9");
        assert_eq!(
            choose(Some(ip("10.0.0.7")), Some(&spec), None, root, &nics).unwrap(),
            ip("10.0.0.7")
        );
        assert_eq!(
            choose(None, Some(&spec), Some(ip("10.0.1.5")), root, &nics).unwrap(),
            ip("172.17.0.1")
        );
        assert_eq!(
            choose(None, None, Some(ip("10.0.1.5")), root, &nics).unwrap(),
            ip("10.0.1.5")
        );
        assert_eq!(
            choose(None, None, None, root, &nics).unwrap(),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_bridge_route_to_a_remote_root_moves_to_a_physical_interface() {
        let nics = host();
        let bridge = Some(ip("172.17.0.1"));
        assert_eq!(
            choose(None, None, bridge, ip("10.9.9.9"), &nics).unwrap(),
            ip("10.0.1.5")
        );
        // The root on this host (its own bridge address, or loopback): keep the route.
        assert_eq!(
            choose(None, None, bridge, ip("172.17.0.1"), &nics).unwrap(),
            ip("172.17.0.1")
        );
        let lo = Some(ip("127.0.0.1"));
        assert_eq!(
            choose(None, None, lo, ip("127.0.0.1"), &nics).unwrap(),
            ip("127.0.0.1")
        );
        // No physical interface up: keep the route rather than fail.
        let bare = vec![nic("docker0", NicKind::Bridge, "up", &["172.17.0.1"])];
        assert_eq!(
            choose(None, None, bridge, ip("10.9.9.9"), &bare).unwrap(),
            ip("172.17.0.1")
        );
    }
}
