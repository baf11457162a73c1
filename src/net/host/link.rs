//! Network interfaces: finding one by name and bringing it up.

use super::netlink::Netlink;
use super::{Cause, Error};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use std::ffi::CString;

/// The index of interface `name` in our network namespace.
pub fn index(name: &str) -> Result<u32, Error> {
    let what = || format!("finding interface {name:?}");
    let c = CString::new(name).map_err(|_| Error::new(what(), Cause::Kernel(libc::EINVAL)))?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(Error::new(
            what(),
            Cause::Kernel(
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::ENODEV),
            ),
        )),
        i => Ok(i),
    }
}

/// Does interface `name` exist in our network namespace?
pub fn exists(name: &str) -> bool {
    index(name).is_ok()
}

/// Sets interface `name` up (`ip link set dev NAME up`).
pub fn set_up(name: &str) -> Result<(), Error> {
    let what = format!("setting interface {name} up");
    let mut msg = LinkMessage::default();
    msg.header.index = index(name)?;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    Netlink::open(NETLINK_ROUTE, &what)?.request(RouteNetlinkMessage::SetLink(msg), 0, &what)
}
