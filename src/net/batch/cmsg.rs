//! Control messages (cmsg), the only place that knows their layout: the
//! `UDP_SEGMENT` a GSO send carries and the `UDP_GRO` stride a receive
//! returns. They are written and read as bytes, as glibc's `CMSG_*`
//! macros lay them out (checked against libc's macros in the tests), so
//! no pointer arithmetic on the kernel's buffer is needed.

use std::mem::{align_of, offset_of, size_of};

/// Control-message room per message: UDP_GRO (an int) or UDP_SEGMENT (a
/// u16), with space to spare for anything else the kernel adds.
pub const CTRL_LEN: usize = 64;

/// A control buffer a message header points `msg_control` at.
pub(super) type Ctrl = super::Aligned<CTRL_LEN>;

/// The header: `size_t cmsg_len; int cmsg_level; int cmsg_type;`, and the
/// data behind it aligned to a `size_t` (`CMSG_ALIGN`).
const WORD: usize = size_of::<usize>();
const LEVEL: usize = offset_of!(libc::cmsghdr, cmsg_level);
const TYPE: usize = offset_of!(libc::cmsghdr, cmsg_type);
const HDR: usize = size_of::<libc::cmsghdr>();
const _: () = assert!(offset_of!(libc::cmsghdr, cmsg_len) == 0 && LEVEL == WORD);
const _: () = assert!(TYPE == WORD + 4 && HDR == WORD + 8);
const _: () = assert!(align_of::<Ctrl>() >= align_of::<libc::cmsghdr>());

/// `CMSG_ALIGN`.
const fn align(n: usize) -> usize {
    (n + WORD - 1) & !(WORD - 1)
}

/// `CMSG_LEN`: header and `data` bytes.
const fn len(data: usize) -> usize {
    align(HDR) + data
}

/// `CMSG_SPACE`: what a message with `data` bytes takes in the buffer.
const fn space(data: usize) -> usize {
    align(HDR) + align(data)
}

/// Writes one control message at the start of `ctrl`; returns the
/// `msg_controllen` to give the kernel.
fn put(ctrl: &mut Ctrl, level: i32, kind: i32, data: &[u8]) -> usize {
    let c = &mut ctrl.0;
    let total = space(data.len());
    c[..total].fill(0);
    c[..WORD].copy_from_slice(&len(data.len()).to_ne_bytes());
    c[LEVEL..LEVEL + 4].copy_from_slice(&level.to_ne_bytes());
    c[TYPE..TYPE + 4].copy_from_slice(&kind.to_ne_bytes());
    c[align(HDR)..align(HDR) + data.len()].copy_from_slice(data);
    total
}

/// The control messages in `control` (what the kernel filled in, up to
/// `msg_controllen`): level, type and data of each, as `CMSG_NXTHDR`
/// walks them. A truncated or malformed message ends the walk.
fn messages(control: &[u8]) -> impl Iterator<Item = (i32, i32, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = control.get(at..)?;
        let clen = usize::from_ne_bytes(rest.get(..WORD)?.try_into().ok()?);
        if clen < HDR || clen > rest.len() {
            return None;
        }
        let level = i32::from_ne_bytes(rest[LEVEL..LEVEL + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(rest[TYPE..TYPE + 4].try_into().ok()?);
        let data = rest.get(align(HDR)..clen)?;
        at += align(clen);
        Some((level, kind, data))
    })
}

/// Sets the GSO segment size of a send (`SOL_UDP`/`UDP_SEGMENT`, a u16).
pub fn put_segment(ctrl: &mut Ctrl, seg: u16) -> usize {
    put(ctrl, libc::SOL_UDP, libc::UDP_SEGMENT, &seg.to_ne_bytes())
}

/// The GRO stride of a receive (`SOL_UDP`/`UDP_GRO`, an int): the size of
/// every datagram glued into it but the last. None without one.
pub fn gro_stride(control: &[u8]) -> Option<usize> {
    messages(control)
        .find(|&(level, kind, _)| level == libc::SOL_UDP && kind == libc::UDP_GRO)
        .and_then(|(_, _, data)| Some(i32::from_ne_bytes(data.get(..4)?.try_into().ok()?)))
        .and_then(|v| usize::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A header over `ctrl` for libc's macros.
    fn msghdr(ctrl: &mut Ctrl, controllen: usize) -> libc::msghdr {
        // SAFETY: an all-zero msghdr is valid.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_control = ctrl.0.as_mut_ptr().cast();
        m.msg_controllen = controllen as _;
        m
    }

    /// Writes messages with libc's macros, as the kernel lays them out.
    fn libc_put(ctrl: &mut Ctrl, msgs: &[(i32, i32, &[u8])]) -> usize {
        let total: usize = msgs
            .iter()
            // SAFETY: CMSG_SPACE only computes.
            .map(|m| unsafe { libc::CMSG_SPACE(m.2.len() as u32) } as usize)
            .sum();
        let m = msghdr(ctrl, total);
        // SAFETY: the buffer is aligned and `total` bytes long; the walk
        // stays within it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&m);
            for &(level, kind, data) in msgs {
                (*c).cmsg_level = level;
                (*c).cmsg_type = kind;
                (*c).cmsg_len = libc::CMSG_LEN(data.len() as u32) as _;
                std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
                c = libc::CMSG_NXTHDR(&m, c);
            }
        }
        total
    }

    #[test]
    fn sizes_match_libc() {
        for n in 0..40 {
            // SAFETY: these only compute.
            let (l, s) = unsafe { (libc::CMSG_LEN(n as u32), libc::CMSG_SPACE(n as u32)) };
            assert_eq!((len(n), space(n)), (l as usize, s as usize), "{n}");
        }
    }

    #[test]
    fn a_segment_cmsg_reads_back_with_libc() {
        let mut ctrl = Ctrl::default();
        let n = put_segment(&mut ctrl, 1452);
        let m = msghdr(&mut ctrl, n);
        // SAFETY: the buffer holds the message just written.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&m);
            assert_eq!(
                ((*c).cmsg_level, (*c).cmsg_type),
                (libc::SOL_UDP, libc::UDP_SEGMENT)
            );
            assert_eq!((*c).cmsg_len as usize, libc::CMSG_LEN(2) as usize);
            let seg = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const u16);
            assert_eq!(seg, 1452);
            assert!(libc::CMSG_NXTHDR(&m, c).is_null());
        }
    }

    #[test]
    fn the_gro_stride_is_found_among_other_messages() {
        let mut ctrl = Ctrl::default();
        let tos = [0x02u8];
        let gro = 1400i32.to_ne_bytes();
        let n = libc_put(
            &mut ctrl,
            &[
                (libc::IPPROTO_IP, libc::IP_TOS, &tos),
                (libc::SOL_UDP, libc::UDP_GRO, &gro),
            ],
        );
        assert_eq!(gro_stride(&ctrl.0[..n]), Some(1400));
        // Without it, or cut short: none.
        let n = libc_put(&mut ctrl, &[(libc::IPPROTO_IP, libc::IP_TOS, &tos)]);
        assert_eq!(gro_stride(&ctrl.0[..n]), None);
        assert_eq!(gro_stride(&[]), None);
        let n = libc_put(&mut ctrl, &[(libc::SOL_UDP, libc::UDP_GRO, &gro)]);
        assert_eq!(gro_stride(&ctrl.0[..n - 8]), None);
        // A negative stride is no stride.
        let n = libc_put(
            &mut ctrl,
            &[(libc::SOL_UDP, libc::UDP_GRO, &(-1i32).to_ne_bytes())],
        );
        assert_eq!(gro_stride(&ctrl.0[..n]), None);
    }

    proptest! {
        /// Any bytes: the walk ends, never reads past the buffer, and
        /// never panics.
        #[test]
        fn any_control_bytes_are_walked_safely(b in proptest::collection::vec(any::<u8>(), 0..CTRL_LEN)) {
            let _ = gro_stride(&b);
            prop_assert!(messages(&b).count() <= b.len() / HDR);
        }
    }
}
