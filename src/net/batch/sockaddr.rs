//! Socket addresses as the kernel writes and reads them (`sockaddr_in`,
//! `sockaddr_in6`), encoded and decoded as bytes: no casts between
//! pointer types, and the field offsets come from libc's own structs.

use std::mem::{offset_of, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Room for any socket address (`sockaddr_storage`).
pub const NAME_LEN: usize = size_of::<libc::sockaddr_storage>();

/// A socket address buffer a message header points `msg_name` at.
pub(super) type Name = super::Aligned<NAME_LEN>;

const FAMILY: usize = 0;
const V4_PORT: usize = offset_of!(libc::sockaddr_in, sin_port);
const V4_ADDR: usize = offset_of!(libc::sockaddr_in, sin_addr);
const V4_LEN: usize = size_of::<libc::sockaddr_in>();
const V6_PORT: usize = offset_of!(libc::sockaddr_in6, sin6_port);
const V6_FLOW: usize = offset_of!(libc::sockaddr_in6, sin6_flowinfo);
const V6_ADDR: usize = offset_of!(libc::sockaddr_in6, sin6_addr);
const V6_SCOPE: usize = offset_of!(libc::sockaddr_in6, sin6_scope_id);
const V6_LEN: usize = size_of::<libc::sockaddr_in6>();
// The family is the first field, a native-endian u16, in both.
const _: () = assert!(size_of::<libc::sa_family_t>() == 2);
const _: () = assert!(offset_of!(libc::sockaddr_in, sin_family) == FAMILY);
const _: () = assert!(offset_of!(libc::sockaddr_in6, sin6_family) == FAMILY);

fn bytes<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// The address in the first bytes of a received `msg_name` (as long as the
/// kernel said), with a v4-mapped IPv6 address turned back into IPv4: a
/// dual-stack socket then reports the address the peer really has. None
/// for another family or a short buffer.
pub fn decode(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(bytes(name, FAMILY)?));
    match family {
        libc::AF_INET if name.len() >= V4_LEN => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(bytes::<4>(name, V4_ADDR)?),
            u16::from_be_bytes(bytes(name, V4_PORT)?),
        ))),
        libc::AF_INET6 if name.len() >= V6_LEN => {
            let ip = Ipv6Addr::from(bytes::<16>(name, V6_ADDR)?);
            let port = u16::from_be_bytes(bytes(name, V6_PORT)?);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    u32::from_ne_bytes(bytes(name, V6_FLOW)?),
                    u32::from_ne_bytes(bytes(name, V6_SCOPE)?),
                )),
            })
        }
        _ => None,
    }
}

/// Writes `to` into `name` for a socket of family `v6_socket` (an IPv4
/// destination on an IPv6 socket becomes v4-mapped); returns the length to
/// give the kernel.
pub fn encode(to: SocketAddr, v6_socket: bool, name: &mut Name) -> libc::socklen_t {
    let n = &mut name.0;
    n.fill(0);
    let v6 = match (to, v6_socket) {
        (SocketAddr::V4(a), false) => {
            n[FAMILY..FAMILY + 2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            n[V4_PORT..V4_PORT + 2].copy_from_slice(&a.port().to_be_bytes());
            n[V4_ADDR..V4_ADDR + 4].copy_from_slice(&a.ip().octets());
            return V4_LEN as libc::socklen_t;
        }
        (SocketAddr::V4(a), true) => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0),
        (SocketAddr::V6(a), _) => a,
    };
    n[FAMILY..FAMILY + 2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    n[V6_PORT..V6_PORT + 2].copy_from_slice(&v6.port().to_be_bytes());
    n[V6_FLOW..V6_FLOW + 4].copy_from_slice(&v6.flowinfo().to_ne_bytes());
    n[V6_ADDR..V6_ADDR + 16].copy_from_slice(&v6.ip().octets());
    n[V6_SCOPE..V6_SCOPE + 4].copy_from_slice(&v6.scope_id().to_ne_bytes());
    V6_LEN as libc::socklen_t
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the kernel would write, built with libc's structs.
    fn kernel_v6(ip: Ipv6Addr, port: u16, flow: u32, scope: u32) -> Vec<u8> {
        let sin6 = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: port.to_be(),
            sin6_flowinfo: flow,
            sin6_addr: libc::in6_addr {
                s6_addr: ip.octets(),
            },
            sin6_scope_id: scope,
        };
        // SAFETY: sockaddr_in6 is plain old data without padding; its
        // bytes are initialised.
        unsafe { std::slice::from_raw_parts((&sin6 as *const libc::sockaddr_in6).cast(), V6_LEN) }
            .to_vec()
    }

    fn kernel_v4(a: SocketAddrV4) -> Vec<u8> {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: as above, for sockaddr_in.
        unsafe { std::slice::from_raw_parts((&sin as *const libc::sockaddr_in).cast(), V4_LEN) }
            .to_vec()
    }

    #[test]
    fn v4_mapped_reads_back_as_ipv4() {
        let a: SocketAddr = "198.51.100.1:5".parse().unwrap();
        let mut n = Name::default();
        assert_eq!(encode(a, true, &mut n) as usize, V6_LEN);
        assert_eq!(decode(&n.0), Some(a));
        assert_eq!(encode(a, false, &mut n) as usize, V4_LEN);
        assert_eq!(decode(&n.0[..V4_LEN]), Some(a));
    }

    #[test]
    fn short_or_foreign_names_are_refused() {
        let mut n = Name::default();
        encode("[2001:db8::1]:7".parse().unwrap(), true, &mut n);
        assert_eq!(decode(&n.0[..V6_LEN - 1]), None);
        assert_eq!(decode(&[]), None);
        n.0[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(decode(&n.0), None);
    }

    proptest! {
        #[test]
        fn the_kernel_layout_round_trips(
            v4 in any::<[u8; 4]>(),
            v6 in any::<[u8; 16]>(),
            port in any::<u16>(),
            flow in any::<u32>(),
            scope in any::<u32>(),
        ) {
            let a4 = SocketAddrV4::new(Ipv4Addr::from(v4), port);
            prop_assert_eq!(decode(&kernel_v4(a4)), Some(SocketAddr::V4(a4)));
            let mut n = Name::default();
            encode(SocketAddr::V4(a4), false, &mut n);
            prop_assert_eq!(&n.0[..V4_LEN], &kernel_v4(a4)[..]);

            let ip = Ipv6Addr::from(v6);
            let a6 = SocketAddrV6::new(ip, port, flow, scope);
            let want = match ip.to_ipv4_mapped() {
                Some(m) => SocketAddr::V4(SocketAddrV4::new(m, port)),
                None => SocketAddr::V6(a6),
            };
            prop_assert_eq!(decode(&kernel_v6(ip, port, flow, scope)), Some(want));
            encode(SocketAddr::V6(a6), true, &mut n);
            prop_assert_eq!(&n.0[..V6_LEN], &kernel_v6(ip, port, flow, scope)[..]);
        }
    }
}
