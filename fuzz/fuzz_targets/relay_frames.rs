//! Relay frames: `Bind::parse` (+ `verify`), `parse_bind_ack`, `parse_probe`,
//! `parse_probe_reply`, `parse_relayed`, `parse_ping` and `TicketKey::open`
//! on arbitrary bytes, and build/parse round trips of values made from them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntmtun::proto::relay as frames;
use ntmtun::proto::ticket::{Ticket, TicketKey};
use ntmtun::proto::wire::{self, Kind};
use ntmtun_fuzz::{key, public, Reader, KEY_DC, KEY_RELAY};
use std::sync::OnceLock;

fn ticket_key() -> &'static TicketKey {
    static KEY: OnceLock<TicketKey> = OnceLock::new();
    KEY.get_or_init(|| TicketKey::derive(&key(KEY_RELAY), &public(KEY_DC)))
}

fuzz_target!(|data: &[u8]| {
    let tk = ticket_key();
    if let Some(b) = frames::Bind::parse(data) {
        assert!(b.side <= 1);
        assert_eq!(b.ticket.len(), ntmtun::proto::ticket::TICKET_LEN);
        let _ = b.verify(&[0; 32]);
        let _ = tk.open(b.ticket);
    }
    let _ = frames::parse_bind_ack(data, |sid, side| Some([(sid as u8) ^ side; 32]));
    if let Some(nonce) = frames::parse_probe(data) {
        // The reserved bytes 1..4 are not checked; the rest round-trips.
        assert_eq!(frames::probe(nonce)[4..], data[4..]);
    }
    if let Some((nonce, addr)) = frames::parse_probe_reply(data) {
        let again = frames::probe_reply(nonce, addr);
        assert_eq!(frames::parse_probe_reply(&again), Some((nonce, addr)));
    }
    if let Ok((sid, inner)) = wire::decode_relayed(data) {
        assert_eq!(inner, &data[wire::RELAYED_HEADER_LEN..]);
        let mut hdr = [0u8; wire::RELAYED_HEADER_LEN];
        wire::put_relayed_header(&mut hdr, sid);
        assert_eq!(hdr[..], data[..wire::RELAYED_HEADER_LEN]);
    }
    for kind in [Kind::RelayPing, Kind::RelayPong] {
        if let Some(nonce) = frames::parse_ping(kind, data, tk) {
            assert_eq!(frames::ping(kind, nonce, tk), data);
        }
    }
    // May open: the seeds hold a ticket the DC sealed.
    let _ = tk.open(data);

    // Round trips of values built from the input.
    let mut r = Reader::new(data);
    let (side, sid, ts, nonce) = (r.u8() & 1, r.u32(), r.u64(), r.u64());
    let addr = r.addr();
    let secret = [r.u8(); 32];
    let t = Ticket {
        sid,
        expires_unix: r.u64(),
        rate_bytes: r.u64(),
        secrets: [secret, [r.u8(); 32]],
    };
    let sealed = tk.seal(&t, [r.u8(); 12]);
    assert_eq!(tk.open(&sealed).as_ref(), Some(&t));
    let bind = frames::bind(side, ts, &sealed, &secret);
    let parsed = frames::Bind::parse(&bind).expect("BIND parses");
    assert!((parsed.side, parsed.timestamp, parsed.ticket) == (side, ts, &sealed[..]));
    assert!(parsed.verify(&secret));
    let ack = frames::bind_ack(side, sid, ts, addr, &secret);
    assert_eq!(
        frames::parse_bind_ack(&ack, |s, d| (s == sid && d == side).then_some(secret)),
        Some((side, sid, ts, addr))
    );
    assert_eq!(frames::parse_probe(&frames::probe(nonce)), Some(nonce));
    assert_eq!(
        frames::parse_probe_reply(&frames::probe_reply(nonce, addr)),
        Some((nonce, addr))
    );
});
