//! One synchronous netlink exchange: a request and its ack, an nftables
//! batch and the ack of each of its messages, or a dump to its end. Every
//! read waits at most `ANSWER_WITHIN`, and every loop is bounded, so a
//! kernel that does not answer is an error, not a hang.

use super::{Cause, Error};
use netlink_packet_core::{
    NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};
use std::io;
use std::time::Duration;
use tracing::debug;

/// How long the kernel may take to answer one read.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Larger than any datagram the kernel sends (dumps fill at most 32 KiB).
const RECV_BUF: usize = 64 * 1024;
/// Bound on the datagrams one exchange reads (a dump of a million routes
/// takes some tens of thousands).
const MAX_DATAGRAMS: usize = 1 << 20;
/// Size of the netlink message header, the least a message can be.
const HEADER_LEN: usize = 16;

/// A netlink socket of one protocol, connected to the kernel.
pub(super) struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens a socket of `protocol` (`NETLINK_ROUTE`, `NETLINK_NETFILTER`).
    pub fn open(protocol: isize, what: &str) -> Result<Netlink, Error> {
        let fail = |e: io::Error| Error::new(what, Cause::Socket(e));
        let mut socket = Socket::new(protocol).map_err(fail)?;
        socket.bind_auto().map_err(fail)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(fail)?;
        socket2::SockRef::from(&socket)
            .set_read_timeout(Some(ANSWER_WITHIN))
            .map_err(fail)?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Asks the kernel to check dump requests strictly, so a dump can be
    /// filtered there (Linux 4.20+; older kernels dump everything and the
    /// caller filters too).
    pub fn strict_dumps(&self) {
        let _ = self.socket.set_netlink_get_strict_chk(true);
    }

    /// Sends `msg` with `flags` and waits for the kernel's ack.
    pub fn request<M>(&mut self, msg: M, flags: u16, what: &str) -> Result<(), Error>
    where
        M: NetlinkSerializable + NetlinkDeserializable + Into<NetlinkPayload<M>>,
    {
        debug!(change = what, "host network change");
        let seq = self.next_seq();
        self.send(&frame(msg, flags | NLM_F_ACK, seq), what)?;
        self.acks::<M>(vec![(seq, what.to_string())])
    }

    /// Sends `parts` (each a message, its flags and what it does) between
    /// `begin` and `end` in one datagram, a transaction the kernel applies
    /// whole or not at all, and waits for the ack of every part. The first
    /// refusal is the error, naming its part.
    pub fn batch<M>(&mut self, begin: M, parts: Vec<(M, u16, String)>, end: M) -> Result<(), Error>
    where
        M: NetlinkSerializable + NetlinkDeserializable + Into<NetlinkPayload<M>>,
    {
        let what = parts.first().map(|(_, _, w)| w.clone()).unwrap_or_default();
        let mut bytes = frame(begin, 0, self.next_seq());
        let mut pending = Vec::with_capacity(parts.len());
        for (msg, flags, part) in parts {
            debug!(change = part, "host network change");
            let seq = self.next_seq();
            bytes.extend(frame(msg, flags | NLM_F_ACK, seq));
            pending.push((seq, part));
        }
        bytes.extend(frame(end, 0, self.next_seq()));
        self.send(&bytes, &what)?;
        self.acks::<M>(pending)
    }

    /// Sends the dump request `msg` and returns every message of the dump.
    pub fn dump<M>(&mut self, msg: M, what: &str) -> Result<Vec<M>, Error>
    where
        M: NetlinkSerializable + NetlinkDeserializable + Into<NetlinkPayload<M>>,
    {
        let seq = self.next_seq();
        self.send(&frame(msg, NLM_F_DUMP, seq), what)?;
        let mut out = Vec::new();
        let mut buf = Vec::with_capacity(RECV_BUF);
        for _ in 0..MAX_DATAGRAMS {
            for m in self.recv::<M>(&mut buf, what)? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        if let Some(code) = e.code {
                            return Err(Error::new(what, Cause::Kernel(-code.get())));
                        }
                    }
                    _ => {}
                }
            }
        }
        Err(too_long(what))
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8], what: &str) -> Result<(), Error> {
        match self.socket.send(bytes, 0) {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(n) => Err(Error::new(
                what,
                Cause::Socket(io::Error::other(format!(
                    "sent {n} of {} bytes",
                    bytes.len()
                ))),
            )),
            Err(e) => Err(Error::new(what, Cause::Socket(e))),
        }
    }

    /// Reads until every `(seq, what)` in `pending` is acked; the first
    /// refusal is the error.
    fn acks<M>(&self, mut pending: Vec<(u32, String)>) -> Result<(), Error>
    where
        M: NetlinkSerializable + NetlinkDeserializable,
    {
        let mut buf = Vec::with_capacity(RECV_BUF);
        for _ in 0..MAX_DATAGRAMS {
            let Some((_, what)) = pending.first() else {
                return Ok(());
            };
            let what = what.clone();
            for m in self.recv::<M>(&mut buf, &what)? {
                let NetlinkPayload::Error(e) = m.payload else {
                    continue;
                };
                let seq = m.header.sequence_number;
                let Some(i) = pending.iter().position(|(s, _)| *s == seq) else {
                    continue;
                };
                let (_, part) = pending.swap_remove(i);
                if let Some(code) = e.code {
                    return Err(Error::new(part, Cause::Kernel(-code.get())));
                }
            }
        }
        match pending.first() {
            None => Ok(()),
            Some((_, what)) => Err(too_long(what)),
        }
    }

    /// Reads one datagram and parses the messages in it.
    fn recv<M>(&self, buf: &mut Vec<u8>, what: &str) -> Result<Vec<NetlinkMessage<M>>, Error>
    where
        M: NetlinkSerializable + NetlinkDeserializable,
    {
        buf.clear();
        let n = self.socket.recv(buf, 0).map_err(|e| {
            let e = if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from the kernel within {ANSWER_WITHIN:?}"),
                )
            } else {
                e
            };
            Error::new(what, Cause::Socket(e))
        })?;
        let data = &buf[..n.min(buf.len())];
        let mut out = Vec::new();
        let mut off = 0;
        while data.len().saturating_sub(off) >= HEADER_LEN {
            let m = NetlinkMessage::<M>::deserialize(&data[off..])
                .map_err(|e| Error::new(what, Cause::Reply(e.to_string())))?;
            let len = m.header.length as usize;
            if len < HEADER_LEN {
                return Err(Error::new(
                    what,
                    Cause::Reply(format!("a message of {len} bytes")),
                ));
            }
            out.push(m);
            // Messages are aligned to 4 bytes.
            off += len.next_multiple_of(4);
        }
        Ok(out)
    }
}

/// Frames `msg` as a request with `flags` and sequence number `seq`.
fn frame<M>(msg: M, flags: u16, seq: u32) -> Vec<u8>
where
    M: NetlinkSerializable + Into<NetlinkPayload<M>>,
{
    let mut m = NetlinkMessage::from(msg);
    m.header.flags = NLM_F_REQUEST | flags;
    m.header.sequence_number = seq;
    m.finalize();
    let mut bytes = vec![0; m.buffer_len()];
    m.serialize(&mut bytes);
    bytes
}

fn too_long(what: &str) -> Error {
    Error::new(
        what,
        Cause::Reply(format!(
            "no end after {MAX_DATAGRAMS} datagrams from the kernel"
        )),
    )
}
