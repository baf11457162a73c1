//! The host's own unicast addresses, advertised to the DC as local
//! endpoints so peers on the same network (or behind the same NAT) can use
//! them.

use std::net::{IpAddr, Ipv6Addr};

fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => {
            !v6.is_loopback()
                && !v6.is_unspecified()
                && !is_unicast_link_local(v6)
                && !v6.is_multicast()
        }
    }
}

fn is_unicast_link_local(v6: &Ipv6Addr) -> bool {
    v6.segments()[0] & 0xffc0 == 0xfe80
}

/// Addresses of all interfaces except `skip_iface` (our TUN), loopback and
/// link-local ones.
pub fn local_addresses(skip_iface: &str) -> std::io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated C string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        if name == skip_iface {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says its type.
        let ip = unsafe {
            match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes())
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(sin6.sin6_addr.s6_addr)
                }
                _ => continue,
            }
        };
        if usable(&ip) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_loopback_and_link_local() {
        assert!(!usable(&"127.0.0.1".parse().unwrap()));
        assert!(!usable(&"fe80::1".parse().unwrap()));
        assert!(!usable(&"169.254.1.1".parse().unwrap()));
        assert!(usable(&"198.51.100.11".parse().unwrap()));
        assert!(usable(&"2001:db8::1".parse().unwrap()));
        // Listing must work on any host, even one with only loopback.
        assert!(local_addresses("ntm-none").is_ok());
    }
}
