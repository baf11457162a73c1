//! `DcCore::handle` (with `Store::in_memory()`) under a sequence of datagrams, packets and timer ticks; see
//! `ntmtun_fuzz::dc` for the input format and the checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ntmtun_fuzz::dc::run(data));
