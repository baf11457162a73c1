//! Signaling messages (postcard): `signal::decode` of `Register`,
//! `RegisterReply`, `ToDc`, `FromDc` and `PeerHello` on arbitrary bytes, and
//! encode/decode round trips of whatever decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntmtun::proto::signal::{self, FromDc, PeerHello, Register, RegisterReply, ToDc};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Ok(msg) = signal::decode::<T>(data) else {
        return;
    };
    assert!(data.len() <= signal::MAX_SIGNAL);
    // Postcard is canonical enough that a decoded message re-encodes no
    // larger than the input it came from, and decodes back to itself.
    let again = signal::encode(&msg).expect("a decoded message encodes");
    assert!(again.len() <= data.len());
    assert_eq!(signal::decode::<T>(&again).expect("round trip"), msg);
}

fuzz_target!(|data: &[u8]| {
    check::<Register>(data);
    check::<RegisterReply>(data);
    check::<ToDc>(data);
    check::<FromDc>(data);
    check::<PeerHello>(data);
});
