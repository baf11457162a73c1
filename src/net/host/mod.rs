//! Host networking through the kernel's netlink interface: links,
//! addresses, routes and policy rules over rtnetlink, and the nftables
//! table of a gateway over nfnetlink. Nothing here runs `ip` or `nft`: a
//! daemon should not depend on another program's text output, and every
//! failure comes back as an [`Error`] naming the object and the kernel's
//! errno (docs/architecture.md, "Host networking").
//!
//! Requests are synchronous (one socket per call, an ack read back with a
//! bounded wait): the node has no async runtime, and these calls happen at
//! start, on registration, on reloads and at shutdown, never per packet.
//! What to install (which rules, tables and priorities) is the node's
//! business (`node::system`, `node::subnet`); this module only knows how.

pub mod address;
pub mod link;
pub mod nat;
mod netlink;
pub mod route;
pub mod rule;

use std::fmt;
use std::io;

/// A host-networking change that did not happen.
#[derive(Debug)]
pub struct Error {
    /// What was asked, and of which object: "adding route 198.18.0.53/32
    /// dev ntm0 table 20053".
    pub what: String,
    pub cause: Cause,
}

/// Why a change did not happen.
#[derive(Debug)]
pub enum Cause {
    /// The kernel refused the request with this errno.
    Kernel(i32),
    /// The netlink socket could not be opened, written or read (no answer
    /// within the bound is `TimedOut` here).
    Socket(io::Error),
    /// The kernel's answer could not be parsed.
    Reply(String),
}

impl Error {
    pub(crate) fn new(what: impl Into<String>, cause: Cause) -> Error {
        Error {
            what: what.into(),
            cause,
        }
    }

    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self.cause {
            Cause::Kernel(e) => Some(e),
            _ => None,
        }
    }

    /// The object was not there (ENOENT; ESRCH for routes; EAFNOSUPPORT
    /// where the host has no such family): for a removal, the wanted state
    /// already holds.
    pub fn is_absent(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT | libc::ESRCH | libc::EAFNOSUPPORT)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Kernel(errno) => write!(
                f,
                "{}: the kernel refused: {}",
                self.what,
                io::Error::from_raw_os_error(*errno)
            ),
            Cause::Socket(e) => write!(f, "{}: netlink socket: {e}", self.what),
            Cause::Reply(e) => write!(f, "{}: unreadable netlink reply: {e}", self.what),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Socket(e) => Some(e),
            _ => None,
        }
    }
}

/// IPv4 or IPv6, for rules and routes that exist once per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: &std::net::IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The rtnetlink family field.
    fn netlink(self) -> netlink_packet_route::AddressFamily {
        match self {
            Family::V4 => netlink_packet_route::AddressFamily::Inet,
            Family::V6 => netlink_packet_route::AddressFamily::Inet6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}
