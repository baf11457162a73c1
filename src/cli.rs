//! The command line's definition (clap): what `ntmtun` accepts. It lives in
//! the library, not in main.rs, so that the man pages and shell completions
//! are generated from this one definition (examples/gendocs.rs) and cannot
//! drift from it; main.rs parses with it and dispatches.

use crate::config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// NTMobile as a TUN app: every host gets a virtual IP that never changes,
/// and unmodified applications reach each other by name through NATs,
/// encrypted end to end.
///
/// One binary, three roles: `ntmtun dc` (the Direction Coordinator: enrols
/// nodes, gives each a virtual IP, directs pairs), `ntmtun relay` (forwards
/// encrypted traffic for pairs that cannot meet directly) and `ntmtun node`
/// (the TUN app on every host). Each reads one TOML file, described in
/// ntmtun-dc.toml(5), ntmtun-relay.toml(5) and ntmtun-node.toml(5).
/// `keygen` and `pubkey` make and show keys; `status` and `ping` ask a
/// running node.
#[derive(Parser)]
#[command(name = "ntmtun", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; each has its own man page, ntmtun-SUBCOMMAND(1).
#[derive(Subcommand)]
pub enum Command {
    /// Print a new private key (base64 of 32 bytes) to stdout, or with
    /// --out write it to a new file and print its public key.
    Keygen {
        /// Write the private key to this new file (mode 0600; an existing file
        /// is never overwritten) and print the public key instead.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Read a private key on stdin and print its public key.
    Pubkey,
    /// Run a Direction Coordinator in the foreground (logs to stderr; RUST_LOG sets the level).
    Dc {
        /// DC configuration file: ntmtun-dc.toml(5), docs/configuration.md.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a Relay Server in the foreground: forwards encrypted traffic for
    /// pairs the DC ticketed (logs to stderr; RUST_LOG sets the level).
    Relay {
        /// Relay configuration file: ntmtun-relay.toml(5), docs/configuration.md.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a node (the TUN app) in the foreground; needs root or CAP_NET_ADMIN.
    Node {
        /// Node configuration file: ntmtun-node.toml(5), docs/configuration.md.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Ping a peer through the tunnel: shows the path (direct, punched or
    /// relay), the endpoint and the round-trip time. Builds the tunnel first
    /// if there is none.
    Ping {
        /// The peer's name: `alice` in this node's domain, or
        /// `alice.<domain>` (a node of that domain, federated or our own).
        name: String,
        /// How many pings, one a second.
        #[arg(long, short, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// The node's control socket (its `control_socket` setting).
        #[arg(long, default_value = config::DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
    },
    /// Show a running node's virtual IP, DC connection and peers.
    Status {
        /// The node's control socket (its `control_socket` setting).
        #[arg(long, default_value = config::DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}
