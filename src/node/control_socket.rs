//! The node's control socket (a Unix stream socket, root-only): one request
//! line in, one JSON line out. `ntmtun status` is its client.

use super::inbox::Inbox;
use crate::net::poll;
use crate::status::{PING_REQUEST, STATUS_REQUEST};
use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Binds the socket, replacing a stale one left by a crash but refusing to
/// steal one a running node still answers on.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} (key `control_socket`)", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "control socket {} is in use by another running node: stop it, or set a different `control_socket`",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale control socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| {
        format!(
            "binding control socket {} (key `control_socket`)",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to root", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Removes the socket file when the node stops, on success or error.
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serves requests until `stop` is set.
pub fn serve(listener: UnixListener, to_control: Sender<Inbox>, stop: Arc<AtomicBool>) {
    let fd = listener.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        match poll::readable(&[fd], Duration::from_millis(200)) {
            Ok(r) if r.is(0) => {}
            Ok(_) => continue,
            Err(e) => {
                warn!(error = %e, "control socket poll failed");
                break;
            }
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, &to_control) {
                    debug!(error = format!("{e:#}"), "control request failed");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => debug!(error = %e, "control accept failed"),
        }
    }
}

fn answer(stream: UnixStream, to_control: &Sender<Inbox>) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(1024)).read_line(&mut line)?;
    let mut stream = stream;
    let line = line.trim();
    if line == STATUS_REQUEST {
        let (tx, rx) = crossbeam_channel::bounded(1);
        to_control
            .send(Inbox::Status(tx))
            .context("control thread gone")?;
        let report = rx
            .recv_timeout(Duration::from_secs(2))
            .context("control thread did not answer")?;
        writeln!(stream, "{}", serde_json::to_string(&report)?)?;
    } else if let Some(name) = line
        .strip_prefix(PING_REQUEST)
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let (tx, rx) = crossbeam_channel::bounded(1);
        to_control
            .send(Inbox::Ping {
                name: name.to_string(),
                reply: tx,
            })
            .context("control thread gone")?;
        let report = rx
            .recv_timeout(Duration::from_secs(5))
            .context("control thread did not answer")?;
        writeln!(stream, "{}", serde_json::to_string(&report)?)?;
    } else {
        let msg = format!(
            "unknown request {line:?}; expected {STATUS_REQUEST:?} or \"{PING_REQUEST} NAME\""
        );
        writeln!(stream, "{}", serde_json::json!({ "error": msg }))?;
    }
    Ok(())
}
