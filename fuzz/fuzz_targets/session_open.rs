//! `Session::open` on a fixed session (`Session::new(1, 2, &[1; 32], &[2; 32])`):
//! first the whole input as one record, then records: raw ones, and ones the
//! peer sealed that the harness delivers once, again, out of order, truncated
//! or bit-flipped. Checks: an authentic record opens exactly once, to the
//! sealed payload; a changed record never opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntmtun::proto::session::Session;
use ntmtun::proto::wire;
use ntmtun::proto::wire::Kind;
use ntmtun_fuzz::Reader;

/// Raw record: `[bytes]`.
const OP_RAW: u8 = 0;
/// The peer seals a payload (kept, not delivered): `[payload]`.
const OP_SEAL: u8 = 1;
/// Deliver sealed record i: `[i][mode][position u16]`; mode 0 as is,
/// 1 flip a bit at position, 2 truncate to position.
const OP_DELIVER: u8 = 2;
/// The peer seals and drops n records: `[n u16]` (moves the window).
const OP_SKIP: u8 = 3;

fuzz_target!(|data: &[u8]| {
    let rx = Session::new(1, 2, &[1; 32], &[2; 32]);
    let peer = Session::new(2, 1, &[2; 32], &[1; 32]);
    let _ = rx.open(&mut data.to_vec());
    let mut r = Reader::new(data);
    // (record, payload, opened already)
    let mut sealed: Vec<(Vec<u8>, Vec<u8>, bool)> = Vec::new();
    for _ in 0..ntmtun_fuzz::MAX_OPS {
        let Some((op, mut b)) = r.record() else { break };
        match op % 4 {
            OP_RAW => {
                // May be authentic: the seeds hold a record the peer sealed.
                let _ = rx.open(&mut b.rest().to_vec());
            }
            OP_SEAL => {
                let payload = b.rest().to_vec();
                let rec = peer.seal_to_vec(Kind::Data, &payload).expect("seal");
                assert_eq!(rec.len(), payload.len() + wire::TRANSPORT_OVERHEAD);
                sealed.push((rec, payload, false));
            }
            OP_DELIVER => {
                if sealed.is_empty() {
                    continue;
                }
                let i = b.u8() as usize % sealed.len();
                let (mode, pos) = (b.u8() % 3, b.u16() as usize);
                let (rec, payload, opened) = &mut sealed[i];
                let mut copy = rec.clone();
                let changed = match mode {
                    1 => {
                        let bit = pos % (copy.len() * 8);
                        copy[bit / 8] ^= 1 << (bit % 8);
                        true
                    }
                    2 => {
                        copy.truncate(pos % copy.len());
                        true
                    }
                    _ => false,
                };
                if let Ok(range) = rx.open(&mut copy) {
                    assert!(!changed, "a changed record opened");
                    assert!(!*opened, "a record opened twice (replay)");
                    assert_eq!(&copy[range], &payload[..]);
                    *opened = true;
                }
            }
            OP_SKIP => {
                for _ in 0..b.u16() % 4096 {
                    let _ = peer.seal_to_vec(Kind::Data, &[]);
                }
            }
            _ => unreachable!(),
        }
    }
});
