//! The Direction Coordinator: enrolment, virtual addresses, the name
//! directory of its domain, and route direction for pairs of nodes.
//! `core` is the sans-IO logic, `settings` what it takes from the operator,
//! `store` its persistent state, `server` the UDP shell around them.

pub mod core;
mod cross_domain;
pub mod direction;
pub mod federation;
pub mod routes;
pub mod server;
pub mod settings;
pub mod srv;
pub mod store;
