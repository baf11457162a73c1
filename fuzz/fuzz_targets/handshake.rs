//! Noise IK handshakes: `Responder::read` with a fixed key on arbitrary
//! message-1 datagrams (and `reply` when one reads), and `Initiator::read_response`
//! of a started initiator on arbitrary message-2 bytes. The first input byte
//! picks the side; on the responder side, bit 1 appends a valid mac1 so the
//! bytes reach the Noise parser instead of stopping at the mac1 check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntmtun::proto::handshake::{Initiator, Mac1Key, Responder};
use ntmtun::proto::wire;
use ntmtun::proto::wire::Kind;
use ntmtun_fuzz::{key, public, with_mac1, KEY_DC, KEY_NODE_A};
use std::sync::OnceLock;

fn mac1() -> &'static Mac1Key {
    static K: OnceLock<Mac1Key> = OnceLock::new();
    K.get_or_init(|| {
        // The harness's mac1 must be the real one, or nothing gets past it.
        let (_, m1) = Initiator::start(
            Kind::DcHandshakeInit,
            &key(KEY_NODE_A),
            &public(KEY_DC),
            1,
            b"",
        )
        .expect("start");
        let body =
            &m1[..m1.len() - ntmtun::proto::handshake::MAC1_LEN - ntmtun::proto::cookie::MAC2_LEN];
        assert_eq!(
            with_mac1(&public(KEY_DC), body),
            m1,
            "harness mac1 is stale"
        );
        Mac1Key::for_responder(&public(KEY_DC))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&side, rest)) = data.split_first() else {
        return;
    };
    if side & 1 == 0 {
        let msg = if side & 2 != 0 {
            with_mac1(&public(KEY_DC), rest)
        } else {
            rest.to_vec()
        };
        if let Ok(r) = Responder::read(&key(KEY_DC), mac1(), &msg) {
            let (_, m2) = r
                .reply(Kind::DcHandshakeResp, 9, b"reply")
                .expect("reply to a message 1 that read");
            assert!(wire::decode_resp(&m2).is_ok());
        }
    } else {
        let (mut init, _) = Initiator::start(
            Kind::DcHandshakeInit,
            &key(KEY_NODE_A),
            &public(KEY_DC),
            1,
            b"hello",
        )
        .expect("start");
        // As a whole datagram (header split off as the node does) or as
        // the bare Noise message.
        if side & 2 == 0 {
            if let Ok((sender, _receiver, noise)) = wire::decode_resp(rest) {
                let _ = init.read_response(sender, noise);
            }
        } else {
            let _ = init.read_response(0, rest);
        }
    }
});
