//! Cookie replies and mac2 (`proto::cookie`): the initiator's parser
//! (`reply_receiver`, `open_reply`) on arbitrary reply bytes against a fixed
//! initiation, and the responder's `check_mac2` / `reply` on arbitrary
//! initiations. The first input byte picks the side.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntmtun::proto::cookie::{self, CookieMaker, COOKIE_REPLY_LEN};
use ntmtun::proto::handshake::Initiator;
use ntmtun::proto::wire::Kind;
use ntmtun_fuzz::{key, public, KEY_DC, KEY_NODE_A};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One real initiation from node A to the DC (its mac1 is the reply's AAD).
fn sent() -> &'static Vec<u8> {
    static M: OnceLock<Vec<u8>> = OnceLock::new();
    M.get_or_init(|| {
        Initiator::start(
            Kind::DcHandshakeInit,
            &key(KEY_NODE_A),
            &public(KEY_DC),
            7,
            b"",
        )
        .expect("start")
        .1
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dc = public(KEY_DC);
    let src: SocketAddr = "198.51.100.7:4000".parse().expect("addr");
    if mode & 1 == 0 {
        // Initiator: arbitrary bytes as a reply to our initiation. Nobody
        // but the DC's cookie maker seals for this mac1, so nothing opens.
        let _ = cookie::reply_receiver(rest);
        for kind in [Kind::CookieReply, Kind::DcCookieReply] {
            assert!(
                cookie::open_reply(kind, &dc, sent(), rest).is_none(),
                "a reply nobody sealed opened"
            );
        }
        let _ = cookie::split_macs(rest);
    } else {
        // Responder: arbitrary bytes as an initiation. A reply, when one is
        // made, has the documented size and echoes the sender index; its
        // cookie makes a mac2 that checks, from that source only.
        let t = Instant::now();
        let mut maker = CookieMaker::new(&dc, t);
        assert!(
            !maker.check_mac2(rest, src, t) || rest.len() >= 32,
            "mac2 accepted on a datagram too short to carry one"
        );
        let Some(reply) = maker.reply(Kind::DcCookieReply, rest, src, t) else {
            return;
        };
        assert_eq!(reply.len(), COOKIE_REPLY_LEN);
        assert_eq!(&reply[4..8], &rest[4..8]);
        let c =
            cookie::open_reply(Kind::DcCookieReply, &dc, rest, &reply).expect("own reply opens");
        let mut m = rest.to_vec();
        cookie::set_mac2(&mut m, &c);
        assert!(maker.check_mac2(&m, src, t + Duration::from_secs(1)));
        let other: SocketAddr = "198.51.100.8:4000".parse().expect("addr");
        assert!(!maker.check_mac2(&m, other, t));
    }
});
