//! The Direction Coordinator: enrolment, virtual addresses, the name
//! directory of its domain, and route direction for pairs of nodes.
//! `core` is the sans-IO logic, `store` its persistent state, `server` the
//! UDP shell around both.

pub mod core;
mod cross_domain;
pub mod direction;
pub mod federation;
pub mod routes;
pub mod server;
pub mod srv;
pub mod store;
