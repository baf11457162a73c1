//! Watches the host's addresses and routes, for mobility: a netlink socket
//! subscribed to address and route changes wakes us at once; polling every
//! few seconds is the fallback where netlink is unavailable.

use super::ifaddrs;
use super::poll;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

const POLL_FALLBACK: Duration = Duration::from_secs(2);
/// Changes come in bursts (address, then routes); wait this long for the
/// burst to end before reporting once.
const SETTLE: Duration = Duration::from_millis(20);

fn netlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and wrapped at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_nl is valid; we set family and groups.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = (libc::RTMGRP_IPV4_IFADDR
        | libc::RTMGRP_IPV6_IFADDR
        | libc::RTMGRP_IPV4_ROUTE
        | libc::RTMGRP_IPV6_ROUTE) as u32;
    // SAFETY: sa is a valid sockaddr_nl of the given size.
    let r = unsafe {
        libc::bind(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 8192];
    for _ in 0..64 {
        // SAFETY: buf is valid for its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            break;
        }
    }
}

/// Calls `changed(addresses)` whenever the host's addresses or routes
/// change (the addresses exclude `skip_iface`, our TUN). Runs until `stop`.
pub fn watch(skip_iface: &str, stop: Arc<AtomicBool>, mut changed: impl FnMut(Vec<IpAddr>)) {
    let nl = match netlink_socket() {
        Ok(fd) => Some(fd),
        Err(e) => {
            warn!(error = %e, "no netlink; polling addresses every 2 s");
            None
        }
    };
    let mut last = ifaddrs::local_addresses(skip_iface).unwrap_or_default();
    let mut last_poll = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let woke = match &nl {
            Some(fd) => poll::readable(&[fd.as_raw_fd()], Duration::from_millis(200))
                .map(|r| r.is(0))
                .unwrap_or(false),
            None => {
                std::thread::sleep(Duration::from_millis(200));
                false
            }
        };
        let poll_due = nl.is_none() && last_poll.elapsed() >= POLL_FALLBACK;
        if !woke && !poll_due {
            continue;
        }
        if let Some(fd) = &nl {
            std::thread::sleep(SETTLE);
            drain(fd);
        }
        last_poll = Instant::now();
        let now = ifaddrs::local_addresses(skip_iface).unwrap_or_default();
        // Route changes matter even with the same addresses (the source of
        // our packets may change), so netlink wake-ups always report.
        if woke || now != last {
            debug!(addresses = ?now, "network change");
            last = now.clone();
            changed(now);
        }
    }
}
