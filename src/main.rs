//! `ntmtun`: the command line. Parses arguments, loads configuration and
//! calls into the library; nothing else lives here.

use anyhow::{Context, Result};
use clap::Parser;
use crossbeam_channel::Receiver;
use ntmtun::cli::{Cli, Command};
use ntmtun::keys::PrivateKey;
use ntmtun::proto::name::{self, NodeName};
use ntmtun::{config, dc, node, relay, reload, shutdown, status};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A server role's loop: its config, the stop flag, and the reloads' changes.
type Server<Cfg, Change> = fn(Cfg, Arc<AtomicBool>, Receiver<Vec<Change>>) -> Result<()>;

/// Runs a DC or a relay in the foreground: both load their file, take the
/// changes a SIGHUP reload plans on a channel, and stop on SIGINT/SIGTERM.
fn serve<Cfg, Change>(
    path: PathBuf,
    load: fn(&Path) -> Result<Cfg, config::ConfigError>,
    plan: fn(&Cfg, Cfg) -> reload::Plan<Change, Cfg>,
    server: Server<Cfg, Change>,
) -> Result<()>
where
    Cfg: Clone + Send + 'static,
    Change: std::fmt::Debug + Send + 'static,
{
    shutdown::block_signals();
    init_logging();
    let cfg = load(&path)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::unbounded();
    let on_hup = reload::on_sighup(path, cfg.clone(), load, plan, move |changes| {
        let _ = tx.send(changes);
    });
    shutdown::spawn_waiter(stop.clone(), || {}, on_hup);
    server(cfg, stop, rx)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen { out: None } => {
            println!("{}", PrivateKey::generate().to_base64());
        }
        Command::Keygen { out: Some(path) } => {
            let key = PrivateKey::generate();
            ntmtun::keyfile::create(&path, &key)?;
            println!("{}", key.public_key());
        }
        Command::Pubkey => {
            ntmtun::keyfile::refuse_world_readable_stdin()?;
            let mut text = String::new();
            std::io::stdin()
                .take(4096)
                .read_to_string(&mut text)
                .context("reading a private key from stdin")?;
            let key = PrivateKey::from_base64(&text).map_err(|e| {
                anyhow::anyhow!(
                    "stdin is not a private key: {e} (use the output of `ntmtun keygen`)"
                )
            })?;
            println!("{}", key.public_key());
        }
        Command::Dc { config } => serve(config, config::load_dc, reload::plan_dc, dc::server::run)?,
        Command::Relay { config } => serve(
            config,
            config::load_relay,
            reload::plan_relay,
            relay::server::run,
        )?,
        Command::Node { config } => {
            shutdown::block_signals();
            init_logging();
            let cfg = config::load_node(&config)?;
            node::run::run(cfg, config)?;
        }
        Command::Ping {
            name,
            count,
            socket,
        } => {
            // The whole name goes to the node, which resolves it as DNS
            // would: `alice` in its own domain, `alice.<domain>` in that one.
            let name = NodeName::parse(&name::fold(&name)).map_err(|e| {
                anyhow::anyhow!(
                    "{name:?} is not a node name: {e}; expected a name such as `alice` or \
                     `alice.<domain>` (DNS labels of a-z, 0-9 and '-')"
                )
            })?;
            let mut answered = 0;
            for i in 0..count {
                if i > 0 {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                let r = status::ping(&socket, &name.to_string())?;
                match (r.rtt_ms, r.error) {
                    (Some(rtt), _) => {
                        answered += 1;
                        println!(
                            "{}: rtt {:.3} ms via {} ({})",
                            r.name,
                            rtt,
                            r.path.unwrap_or_default(),
                            r.endpoint.unwrap_or_default()
                        );
                    }
                    (None, e) => {
                        println!("{}: {}", r.name, e.unwrap_or_else(|| "no answer".into()))
                    }
                }
            }
            if answered == 0 {
                anyhow::bail!("no answer from {name}");
            }
        }
        Command::Status { socket, json } => {
            let report = status::query(&socket)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", status::render(&report));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ntmtun: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
