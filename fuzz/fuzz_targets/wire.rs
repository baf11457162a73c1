//! Transport and handshake headers: `TransportHeader::decode`, `decode_init`,
//! `decode_resp` and `kind` on arbitrary datagrams, with round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntmtun::proto::wire::{self, TransportHeader};

fuzz_target!(|data: &[u8]| {
    let kind = wire::kind(data);
    if let Ok(k) = kind {
        assert_eq!(Some(&k), data.first());
    }
    if let Ok(h) = TransportHeader::decode(data) {
        assert!(data.len() >= wire::TRANSPORT_OVERHEAD);
        assert_eq!(h.encode()[..], data[..wire::TRANSPORT_HEADER_LEN]);
        assert_eq!(TransportHeader::decode(data), Ok(h));
    }
    if let Ok((sender, noise)) = wire::decode_init(data) {
        assert_eq!(noise, &data[wire::INIT_HEADER_LEN..]);
        assert_eq!(
            wire::encode_init_header(data[0], sender)[..],
            data[..wire::INIT_HEADER_LEN]
        );
    }
    if let Ok((sender, receiver, noise)) = wire::decode_resp(data) {
        assert_eq!(noise, &data[wire::RESP_HEADER_LEN..]);
        assert_eq!(
            wire::encode_resp_header(data[0], sender, receiver)[..],
            data[..wire::RESP_HEADER_LEN]
        );
    }
});
