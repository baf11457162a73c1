//! The io_uring shell. One ring per worker carries two multishot requests
//! that keep producing completions without being resubmitted: READ_MULTISHOT
//! on the TUN queue and RECVMSG multishot (with UDP GRO) on the socket, each
//! into its own provided-buffer ring. A wait returns a batch of completions;
//! each is handled by the shared `path` code, its buffer handed straight
//! back to the kernel, and the batch's records leave on a second ring as
//! one SENDMSG (UDP_SEGMENT for GSO trains) per run, all submitted in one
//! `io_uring_enter`. TUN writes go through our GRO as in the epoll shell
//! (one `write` per coalesced packet; a flush of bulk TCP is one or two
//! super-packets, so batching those writes on the ring is left for when a
//! profile shows them).
//!
//! The wait times out after `IDLE_WAKE`, so the stop flag is seen within
//! that; teardown cancels both requests and waits (bounded) for the kernel
//! to let go of the buffers before they are freed.

use super::epoll::flush_tun;
use super::path::Path;
use super::vnet::{self, VNET_HDR_LEN};
use super::worker::{Buffers, Worker, IDLE_WAKE, TX_SLOTS};
use super::Punt;
use crate::net::batch::{self, wait_writable, RecvMeta, CTRL_LEN, NAME_LEN, RX_SLOT};
use io_uring::types::{BufRingEntry, CancelBuilder, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, IoUring};
use std::alloc::Layout;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use tracing::{debug, warn};

const TUN_GROUP: u16 = 1;
const UDP_GROUP: u16 = 2;
/// Provided buffers per ring (a power of two): reads in flight before the
/// worker has handled the earlier ones.
const RING_BUFS: u16 = 32;
/// A TUN read: virtio header and the largest super-packet.
const TUN_BUF: usize = VNET_HDR_LEN + vnet::MAX_PACKET;
/// Multishot receives put `io_uring_recvmsg_out` (16 bytes), room for the
/// sender's address and the control data (`batch::multishot_template`) in
/// front of the payload.
const RECV_HEAD: usize = 16 + NAME_LEN + CTRL_LEN;
const UDP_BUF: usize = RECV_HEAD + RX_SLOT;
/// Completions handled per wake-up.
const CQ_BATCH: usize = 64;
/// Consecutive failed completions of one request before the shell gives up
/// (the worker then continues on epoll).
const MAX_FAILURES: u32 = 1000;

const TUN_READ: u64 = 1;
const UDP_RECV: u64 = 2;
const CANCEL: u64 = 3;

/// A provided-buffer ring: `entries` buffers of `buf_len` bytes the kernel
/// picks from for multishot requests of group `group`, and which we hand
/// back once their contents are used.
pub struct BufRing {
    base: *mut BufRingEntry,
    layout: Layout,
    mask: u16,
    tail: u16,
    group: u16,
    bufs: Vec<u8>,
    buf_len: usize,
}

impl BufRing {
    pub fn new(ring: &IoUring, entries: u16, buf_len: usize, group: u16) -> io::Result<BufRing> {
        debug_assert!(entries.is_power_of_two());
        let layout = Layout::from_size_align(usize::from(entries) * 16, 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if base.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut r = BufRing {
            base,
            layout,
            mask: entries - 1,
            tail: 0,
            group,
            bufs: vec![0u8; usize::from(entries) * buf_len],
            buf_len,
        };
        // SAFETY: `base` is page-aligned memory for `entries` entries that
        // lives until `drop`, after the ring has let go of it.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(base as u64, entries, group, 0)?
        };
        for bid in 0..entries {
            r.give(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Queues buffer `bid` for the kernel again (seen after `publish`).
    fn give(&mut self, bid: u16) {
        // SAFETY: `tail & mask` indexes one of our `entries` entries.
        let e = unsafe { &mut *self.base.add(usize::from(self.tail & self.mask)) };
        e.set_addr(self.bufs.as_ptr() as u64 + (usize::from(bid) * self.buf_len) as u64);
        e.set_len(self.buf_len as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives inside the ring's first entry and is
        // read by the kernel as an atomic u16.
        let tail = unsafe { &*(BufRingEntry::tail(self.base) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid` (None for an id or length the
    /// kernel cannot have given us).
    fn buf_mut(&mut self, bid: u16, len: usize) -> Option<&mut [u8]> {
        if bid > self.mask || len > self.buf_len {
            return None;
        }
        let at = usize::from(bid) * self.buf_len;
        Some(&mut self.bufs[at..at + len])
    }

    /// Takes the ring back from the kernel (before the memory is freed).
    pub fn unregister(&self, ring: &IoUring) {
        if let Err(e) = ring.submitter().unregister_buf_ring(self.group) {
            debug!(error = %e, group = self.group, "buffer ring unregister failed");
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.base.cast(), self.layout) };
    }
}

/// One completion, copied out of the queue.
#[derive(Clone, Copy, Default)]
struct Cqe {
    data: u64,
    res: i32,
    flags: u32,
}

/// One multishot request: whether it must be (re)submitted, and its run of
/// failures (logged at warn once, then at debug).
struct Multishot {
    armed: bool,
    failures: u32,
    warned: bool,
    what: &'static str,
}

impl Multishot {
    fn new(what: &'static str) -> Multishot {
        Multishot {
            armed: false,
            failures: 0,
            warned: false,
            what,
        }
    }

    /// Looks at a completion's result and flags; returns the byte count of
    /// a success. A request without `MORE` has ended and is re-armed.
    fn complete(&mut self, worker: usize, c: &Cqe) -> io::Result<Option<usize>> {
        if !cqueue::more(c.flags) {
            self.armed = false;
        }
        if c.res >= 0 {
            self.failures = 0;
            return Ok(Some(c.res as usize));
        }
        let err = io::Error::from_raw_os_error(-c.res);
        // Out of buffers: the batch in hand returns them; not a failure.
        if c.res == -libc::ENOBUFS {
            return Ok(None);
        }
        self.failures += 1;
        if self.failures >= MAX_FAILURES {
            return Err(io::Error::new(
                err.kind(),
                format!("{} failed {MAX_FAILURES} times in a row: {err}", self.what),
            ));
        }
        if self.warned {
            debug!(worker, error = %err, "{} failed", self.what);
        } else {
            warn!(worker, error = %err, "{} failed (further failures logged at debug)", self.what);
            self.warned = true;
        }
        Ok(None)
    }
}

/// The worker's rings; the io_uring is dropped (and with it every request)
/// before the buffer rings' memory.
struct Rings {
    main: IoUring,
    send: IoUring,
    tun: BufRing,
    udp: BufRing,
}

pub fn run<M: From<Punt>>(w: &Worker<M>, bufs: &mut Buffers) -> io::Result<()> {
    let main = super::io::ring(256)?;
    let send = super::io::ring(2 * TX_SLOTS as u32)?;
    let tun = BufRing::new(&main, RING_BUFS, TUN_BUF, TUN_GROUP)?;
    let udp = match BufRing::new(&main, RING_BUFS, UDP_BUF, UDP_GROUP) {
        Ok(u) => u,
        Err(e) => {
            tun.unregister(&main);
            return Err(e);
        }
    };
    let mut r = Rings {
        main,
        send,
        tun,
        udp,
    };
    // The multishot receive's header; it must outlive the request.
    let template = batch::multishot_template();
    let mut tun_read = Multishot::new("io_uring TUN read");
    let mut udp_recv = Multishot::new("io_uring UDP receive");
    let result = serve(w, bufs, &mut r, &template, &mut tun_read, &mut udp_recv);
    let live = usize::from(tun_read.armed) + usize::from(udp_recv.armed);
    teardown(w.id, &mut r, live);
    result
}

/// The wake-up loop, until the stop flag is set or a request keeps failing.
fn serve<M: From<Punt>>(
    w: &Worker<M>,
    bufs: &mut Buffers,
    r: &mut Rings,
    template: &libc::msghdr,
    tun_read: &mut Multishot,
    udp_recv: &mut Multishot,
) -> io::Result<()> {
    let (tun_fd, udp_fd) = (w.tun.as_raw_fd(), w.udp.as_raw_fd());
    let mut cqes = [Cqe::default(); CQ_BATCH];
    let mut retry: Vec<usize> = Vec::with_capacity(TX_SLOTS);
    let timeout = Timespec::from(IDLE_WAKE);
    let args = SubmitArgs::new().timespec(&timeout);
    while !w.stop.load(Ordering::Relaxed) {
        if !tun_read.armed {
            let e = opcode::ReadMulti::new(Fd(tun_fd), 0, TUN_GROUP)
                .build()
                .user_data(TUN_READ);
            push(&mut r.main, &e)?;
            tun_read.armed = true;
        }
        if !udp_recv.armed {
            let e = opcode::RecvMsgMulti::new(Fd(udp_fd), template, UDP_GROUP)
                .build()
                .user_data(UDP_RECV);
            push(&mut r.main, &e)?;
            udp_recv.armed = true;
        }
        match r.main.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        let mut n = 0;
        for c in r.main.completion().take(CQ_BATCH) {
            cqes[n] = Cqe {
                data: c.user_data(),
                res: c.result(),
                flags: c.flags(),
            };
            n += 1;
        }
        if n == 0 {
            continue;
        }
        let table = w.table.load();
        let path = w.path(&table);
        let mut used = 0;
        for c in &cqes[..n] {
            match c.data {
                TUN_READ => {
                    let got = tun_read.complete(w.id, c)?;
                    let Some(bid) = cqueue::buffer_select(c.flags) else {
                        continue;
                    };
                    if let Some(len) = got {
                        used = tun_packet(w, &path, bufs, r, &mut retry, bid, len, used);
                    }
                    r.tun.give(bid);
                }
                UDP_RECV => {
                    let got = udp_recv.complete(w.id, c)?;
                    let Some(bid) = cqueue::buffer_select(c.flags) else {
                        continue;
                    };
                    if let Some(len) = got {
                        datagram(w, &path, bufs, &mut r.udp, template, bid, len);
                    }
                    r.udp.give(bid);
                }
                _ => {}
            }
        }
        flush_tx(w, &path, bufs, &mut r.send, &mut retry, used);
        if !bufs.writer.is_empty() {
            flush_tun(w, bufs);
        }
        r.tun.publish();
        r.udp.publish();
    }
    Ok(())
}

/// One TUN read in buffer `bid`: split into slots from `used` on (sending
/// the batch first if it does not fit), each slot sealed and queued.
/// Returns the slots in use now.
#[allow(clippy::too_many_arguments)]
fn tun_packet<M: From<Punt>>(
    w: &Worker<M>,
    path: &Path<M>,
    bufs: &mut Buffers,
    r: &mut Rings,
    retry: &mut Vec<usize>,
    bid: u16,
    len: usize,
    mut used: usize,
) -> usize {
    let Some(read) = r.tun.buf_mut(bid, len) else {
        return used;
    };
    let need = bufs.reader.plan(read);
    if need == 0 {
        return used;
    }
    if used + need > bufs.reader.capacity() {
        flush_tx(w, path, bufs, &mut r.send, retry, used);
        used = 0;
    }
    used + bufs.reader.place_from(read, used)
}

/// One multishot receive in buffer `bid`: the sender, the GRO stride and
/// the datagram(s), each opened and queued for the TUN.
fn datagram<M: From<Punt>>(
    w: &Worker<M>,
    path: &Path<M>,
    bufs: &mut Buffers,
    ring: &mut BufRing,
    template: &libc::msghdr,
    bid: u16,
    len: usize,
) {
    let Some(buf) = ring.buf_mut(bid, len) else {
        return;
    };
    let meta = {
        let Ok(out) = RecvMsgOut::parse(buf, template) else {
            return;
        };
        if out.is_payload_truncated() {
            debug!(
                worker = w.id,
                "datagram larger than the receive buffer dropped"
            );
            return;
        }
        RecvMeta::decode(
            out.name_data(),
            out.control_data(),
            out.payload_data().len(),
        )
    };
    let Some(meta) = meta else { return };
    let data = &mut buf[RECV_HEAD..RECV_HEAD + meta.len];
    if bufs.writer.room() < batch::segments(meta.len, meta.stride).count() {
        flush_tun(w, bufs);
    }
    path.inbound(data, meta.stride, meta.from, &mut bufs.writer);
}

/// Seals the `used` slots and sends the records: one SENDMSG per run, all
/// submitted at once, then waits for their completions (the messages point
/// into the slots). Runs the socket had no room for are retried once after
/// it drains.
fn flush_tx<M: From<Punt>>(
    w: &Worker<M>,
    path: &Path<M>,
    bufs: &mut Buffers,
    send: &mut IoUring,
    retry: &mut Vec<usize>,
    used: usize,
) {
    path.outbound(&mut bufs.reader, &mut bufs.tx, 0..used);
    if bufs.tx.is_empty() {
        return;
    }
    let fd = w.udp.as_raw_fd();
    let total = bufs.tx.prepare(bufs.reader.slots());
    let mut stats = path.tx_counter();
    let mut sent = |s| stats.sent(s);
    let mut dropped = 0;
    retry.clear();
    retry.extend(0..total);
    for attempt in 0..2 {
        if attempt == 1 && !(retry.is_empty() || wait_writable(fd, 10)) {
            break;
        }
        // The queue has room for every message of a batch (2 x TX_SLOTS
        // entries, at most TX_SLOTS messages), so every push succeeds.
        let mut todo = 0;
        for &k in retry.iter() {
            let e = opcode::SendMsg::new(Fd(fd), bufs.tx.message(k))
                .build()
                .user_data(k as u64);
            if push(send, &e).is_err() {
                dropped += bufs.tx.finish(fd, k, Err(libc::ENOBUFS), &mut sent);
            } else {
                todo += 1;
            }
        }
        retry.clear();
        // Every pushed message must complete before its slot is reused, so
        // wait for all of them (bounded: a UDP send completes or fails at
        // once; EINTR is retried).
        let mut done = 0;
        for _ in 0..1000 {
            if done < todo {
                match send.submit_and_wait(todo - done) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => debug!(worker = w.id, error = %e, "io_uring send wait failed"),
                }
            }
            for c in send.completion() {
                let k = c.user_data() as usize;
                done += 1;
                match c.result() {
                    r if r >= 0 => dropped += bufs.tx.finish(fd, k, Ok(()), &mut sent),
                    r if r == -libc::EAGAIN => retry.push(k),
                    r => dropped += bufs.tx.finish(fd, k, Err(-r), &mut sent),
                }
            }
            if done >= todo {
                break;
            }
        }
        if retry.is_empty() {
            break;
        }
    }
    for &k in retry.iter() {
        dropped += bufs.tx.finish(fd, k, Err(libc::EAGAIN), &mut sent);
    }
    bufs.tx.clear();
    path.send_dropped(dropped);
}

fn push(ring: &mut IoUring, e: &io_uring::squeue::Entry) -> io::Result<()> {
    // SAFETY: every buffer and msghdr an entry points to outlives its
    // request: the multishot targets live in `Rings` until teardown, the
    // send messages until their completions are reaped.
    unsafe { ring.submission().push(e) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))
}

/// Cancels the multishot requests and waits (at most about a second) for
/// the last completions of the `live` ones, then takes the buffer rings
/// back.
fn teardown(worker: usize, r: &mut Rings, mut live: usize) {
    let cancel = opcode::AsyncCancel2::new(CancelBuilder::any())
        .build()
        .user_data(CANCEL);
    if push(&mut r.main, &cancel).is_ok() {
        let wait = Timespec::new().nsec(50_000_000);
        let args = SubmitArgs::new().timespec(&wait);
        for _ in 0..20 {
            if live == 0 {
                break;
            }
            let _ = r.main.submitter().submit_with_args(1, &args);
            for c in r.main.completion() {
                if matches!(c.user_data(), TUN_READ | UDP_RECV) && !cqueue::more(c.flags()) {
                    live = live.saturating_sub(1);
                }
            }
        }
        if live > 0 {
            debug!(worker, "io_uring requests still live at teardown");
        }
    }
    r.tun.unregister(&r.main);
    r.udp.unregister(&r.main);
}
