//! The node, the paper's TUN app. Sans-IO logic (`core`, `dc_link`, `peer`,
//! `dns`) and the shells around it: the TUN device and host network set-up
//! (`tun`, `system`), the control thread (`control`), the control socket,
//! and `run`, which wires them to the data-plane workers.

pub mod control;
pub mod control_socket;
pub mod core;
#[cfg(test)]
mod core_tests;
pub mod counters;
pub mod dc_link;
pub mod dns;
#[cfg(test)]
mod federation_tests;
pub mod inbox;
mod loop_guard;
pub mod metrics;
pub mod output;
pub mod path_choice;
pub mod peer;
pub mod pmtu;
mod resolve;
pub mod resolved;
pub mod run;
pub mod split_dns;
pub mod subnet;
pub mod system;
pub mod tun;
mod tunnel;
