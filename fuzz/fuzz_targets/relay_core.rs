//! `RelayCore::handle` under a sequence of datagrams, packets and timer ticks; see
//! `ntmtun_fuzz::relay` for the input format and the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ntmtun_fuzz::relay::run(data));
