//! UDP socket set-up with socket2: the options a tunnel socket needs.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Firewall mark on every socket ntmtun opens. Policy rules send marked
/// packets through the main table, so tunnel and forwarded-DNS traffic can
/// never loop back into the TUN (the same trick as wg-quick).
pub const FWMARK: u32 = 0x4e54;

/// Options for a data or signaling socket.
#[derive(Debug, Clone, Copy)]
pub struct UdpOptions {
    pub reuse_port: bool,
    pub mark: bool,
    pub buffer_bytes: usize,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            reuse_port: false,
            mark: true,
            buffer_bytes: 4 << 20,
        }
    }
}

/// Sets an integer socket option.
pub(crate) fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: value outlives the call; the length matches its type.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Binds a UDP socket on `addr`. IPv6 wildcard sockets are dual-stack so one
/// port serves both families. Setting the mark needs CAP_NET_ADMIN; without
/// it we go on unmarked (fine for the DC, and logged by the caller).
pub fn bind(addr: SocketAddr, opts: UdpOptions) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(!addr.ip().is_unspecified())?;
    }
    if opts.reuse_port {
        sock.set_reuse_port(true)?;
    }
    if opts.mark {
        let _ = sock.set_mark(FWMARK);
    }
    // Bursts from a fast sender must not overflow the default 208 KiB
    // buffer. The *FORCE options (CAP_NET_ADMIN, which a node has) ignore
    // rmem_max/wmem_max; without the capability, the capped request stands.
    let _ = sock.set_recv_buffer_size(opts.buffer_bytes);
    let _ = sock.set_send_buffer_size(opts.buffer_bytes);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // Best effort: failure leaves the capped size.
    let _ = setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        opts.buffer_bytes as i32,
    );
    let _ = setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        opts.buffer_bytes as i32,
    );
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP {addr}: {e}")))?;
    Ok(sock.into())
}

/// The destination to pass to a socket of the given family: a dual-stack
/// IPv6 socket reaches IPv4 peers through v4-mapped addresses.
pub fn for_socket(to: SocketAddr, v6_socket: bool) -> SocketAddr {
    match (to, v6_socket) {
        (SocketAddr::V4(v4), true) => {
            SocketAddr::new(std::net::IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => to,
    }
}

/// The address a dual-stack socket reported, with v4-mapped addresses
/// turned back into IPv4 (what peers and the DC know us and each other by).
pub fn canonical(from: SocketAddr) -> SocketAddr {
    SocketAddr::new(from.ip().to_canonical(), from.port())
}
