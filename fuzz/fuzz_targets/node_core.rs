//! `NodeCore` (`handle_udp`, `handle_tun`, `handle_upstream`, timers) under a sequence of datagrams, packets and timer ticks; see
//! `ntmtun_fuzz::node` for the input format and the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ntmtun_fuzz::node::run(data));
