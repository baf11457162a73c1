//! Which IO shell the workers use: node.toml's `io` (`auto`, `uring`,
//! `epoll`). `auto` probes io_uring once at start (ring setup, the opcodes
//! and features the `uring` shell needs, a provided-buffer ring) and takes
//! it where all of that works.

use io_uring::{opcode, IoUring, Probe};
use std::fmt;
use std::str::FromStr;
use tracing::info;

/// The data plane's IO shell (node key `io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IoMode {
    /// io_uring where a probe at start shows it works, else epoll.
    #[default]
    Auto,
    /// io_uring, or a start error if the kernel lacks it.
    Uring,
    /// poll(2) + recvmmsg/sendmmsg: works everywhere.
    Epoll,
}

impl IoMode {
    /// The spelling used in node.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Epoll => "epoll",
        }
    }
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IoMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IoMode::Auto),
            "uring" => Ok(IoMode::Uring),
            "epoll" => Ok(IoMode::Epoll),
            _ => Err(format!(
                "{s:?} is not an IO shell; expected one of \"auto\", \"uring\" or \"epoll\""
            )),
        }
    }
}

/// The shell the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Epoll,
    Uring,
}

impl Shell {
    /// The name shown in logs and `ntmtun status` (the `io` field).
    pub fn as_str(self) -> &'static str {
        match self {
            Shell::Epoll => "epoll",
            Shell::Uring => "uring",
        }
    }
}

/// Builds an io_uring the way the `uring` shell does.
pub fn ring(entries: u32) -> std::io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(entries)
}

/// Checks that io_uring works here as the `uring` shell uses it; the error
/// says what is missing.
pub fn probe() -> Result<(), String> {
    let ring = ring(8).map_err(|e| {
        format!(
            "io_uring setup failed ({e}; kernel older than 6.0, or kernel.io_uring_disabled set)"
        )
    })?;
    if !ring.params().is_feature_ext_arg() {
        return Err("io_uring lacks EXT_ARG (needs Linux 5.11)".into());
    }
    let mut p = Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("io_uring opcode probe failed ({e})"))?;
    for (code, name) in [
        (opcode::ReadMulti::CODE, "READ_MULTISHOT (Linux 6.7)"),
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("io_uring lacks {name}"));
        }
    }
    // A one-entry provided-buffer ring (Linux 5.19), registered and
    // removed again.
    let buf = super::uring::BufRing::new(&ring, 1, 64, 0)
        .map_err(|e| format!("io_uring buffer ring refused ({e}; needs Linux 5.19)"))?;
    buf.unregister(&ring);
    Ok(())
}

/// The shell for `mode`, given what the probe found. `uring` without
/// io_uring is an error naming the key, the value and the fix.
pub fn choose_with(mode: IoMode, probe: Result<(), String>) -> anyhow::Result<Shell> {
    match (mode, probe) {
        (IoMode::Epoll, _) => Ok(Shell::Epoll),
        (_, Ok(())) => Ok(Shell::Uring),
        (IoMode::Auto, Err(why)) => {
            info!(reason = %why, "io = \"auto\": io_uring unusable here, using epoll");
            Ok(Shell::Epoll)
        }
        (IoMode::Uring, Err(why)) => anyhow::bail!(
            "node.toml sets io = \"uring\", but io_uring is not usable here: {why}; \
             set io = \"auto\" (falls back to epoll) or io = \"epoll\""
        ),
    }
}

/// The shell for `mode` on this host (probing io_uring unless `epoll`).
pub fn choose(mode: IoMode) -> anyhow::Result<Shell> {
    let probed = match mode {
        IoMode::Epoll => Ok(()),
        _ => probe(),
    };
    choose_with(mode, probed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_follows_mode_and_probe() {
        let no = || Err::<(), _>("io_uring lacks RECVMSG".to_string());
        assert_eq!(choose_with(IoMode::Epoll, no()).unwrap(), Shell::Epoll);
        assert_eq!(choose_with(IoMode::Epoll, Ok(())).unwrap(), Shell::Epoll);
        assert_eq!(choose_with(IoMode::Auto, Ok(())).unwrap(), Shell::Uring);
        assert_eq!(choose_with(IoMode::Auto, no()).unwrap(), Shell::Epoll);
        assert_eq!(choose_with(IoMode::Uring, Ok(())).unwrap(), Shell::Uring);
        let e = choose_with(IoMode::Uring, no()).unwrap_err().to_string();
        for want in [
            "io = \"uring\"",
            "lacks RECVMSG",
            "io = \"auto\"",
            "io = \"epoll\"",
        ] {
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }

    /// The probe and `auto` agree (on this kernel, 6.18, both say uring).
    #[test]
    fn auto_takes_uring_where_the_probe_passes() {
        let want = if probe().is_ok() {
            Shell::Uring
        } else {
            Shell::Epoll
        };
        assert_eq!(choose(IoMode::Auto).unwrap(), want);
    }
}
