//! The outer wire layer: `wire::parse` (and the header decoders under it)
//! on arbitrary datagrams, with round trips of what parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntmtun::proto::wire::{self, Datagram, Kind, TransportHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = Kind::of(data) {
        assert_eq!(k as u8, data[0]);
    }
    match wire::parse(data) {
        Ok(Datagram::Init { kind, bytes }) => {
            assert_eq!(bytes, data);
            let (sender, noise) = wire::decode_init(data).expect("parsed as an initiation");
            assert_eq!(noise, &data[wire::INIT_HEADER_LEN..]);
            assert_eq!(
                wire::encode_init_header(kind, sender)[..],
                data[..wire::INIT_HEADER_LEN]
            );
        }
        Ok(Datagram::Resp {
            kind,
            sender,
            receiver,
            noise,
        }) => {
            assert_eq!(noise, &data[wire::RESP_HEADER_LEN..]);
            assert_eq!(
                wire::encode_resp_header(kind, sender, receiver)[..],
                data[..wire::RESP_HEADER_LEN]
            );
        }
        Ok(Datagram::Record(h)) => {
            assert!(data.len() >= wire::TRANSPORT_OVERHEAD);
            assert_eq!(h.encode()[..], data[..wire::TRANSPORT_HEADER_LEN]);
            assert_eq!(TransportHeader::decode(data), Ok(h));
        }
        Ok(Datagram::Relayed { sid, inner }) => {
            let mut h = [0u8; wire::RELAYED_HEADER_LEN];
            wire::put_relayed_header(&mut h, sid);
            assert_eq!(h[..], data[..wire::RELAYED_HEADER_LEN]);
            assert_eq!(inner, &data[wire::RELAYED_HEADER_LEN..]);
        }
        Ok(Datagram::CookieReply { kind, bytes }) | Ok(Datagram::Relay { kind, bytes }) => {
            assert_eq!((kind as u8, bytes), (data[0], data));
        }
        Err(_) => {}
    }
    let _ = wire::decode_init(data);
    let _ = wire::decode_resp(data);
});
