//! Network-lab harness for the integration tests: a thin Rust wrapper around `scripts/lab.sh`.
//!
//! `Lab::up("lan")` builds a lab under a unique prefix (namespaces `PREFIX-sw`, `PREFIX-dc`,
//! `PREFIX-alice`, `PREFIX-bob`, `PREFIX-dns`), starts the DC and both nodes with the binary
//! under test, and tears everything down in `Drop` (also when a test panics).
//!
//! The other topologies of `scripts/lab.sh` (sketched at the top of that script) work the same
//! way: `Lab::up("nat-nat")`, `Lab::up("symmetric")`, ... `Lab::build(topology)` only builds the
//! network (no daemons), for plumbing tests or to start later with [`Lab::start`]. Addresses of
//! every host (and the public address a NATed node is seen from) are in [`Lab::host`].
//!
//! The lab needs root. Without root the tests fail loudly; `NTMTUN_SKIP_LAB=1` skips them
//! explicitly (and says so).
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub const SKIP_ENV: &str = "NTMTUN_SKIP_LAB";
pub const NEED_ROOT: &str = "lab tests need root: run scripts/test.sh as root, or set \
                             NTMTUN_SKIP_LAB=1 to skip them explicitly";
/// Where lab.sh keeps a lab's pids, logs, configs and keys.
pub const LAB_ROOT: &str = "/tmp/ntmtun-lab";
/// Default bound for one command run in a namespace.
pub const CMD_TIMEOUT_SECS: u64 = 60;
/// The nodes of every topology.
pub const NODES: [&str; 2] = ["alice", "bob"];
/// The topologies `scripts/lab.sh up` builds.
pub const TOPOLOGIES: [&str; 12] = [
    "lan",
    "nat-nat",
    "same-nat",
    "public-nat",
    "symmetric",
    "v4-v6",
    "roam",
    "relay-failover",
    "hostile",
    "gateways",
    "fed",
    "office",
];

/// Fixed addresses of the lab (see the sketches at the top of scripts/lab.sh).
pub mod addr {
    /// The DC (UDP 7446) in every topology.
    pub const DC_V4: &str = "198.51.100.10";
    pub const DC_V6: &str = "2001:db8:100::10";
    pub const DC_PORT: u16 = 7446;
    /// The relays (UDP 7447): relay1 in every topology but `lan`, relay2 in `relay-failover`.
    pub const RELAY1_V4: &str = "198.51.100.20";
    pub const RELAY1_V6: &str = "2001:db8:100::20";
    pub const RELAY2_V4: &str = "198.51.100.21";
    pub const RELAY2_V6: &str = "2001:db8:100::21";
    pub const RELAY_PORT: u16 = 7447;
    /// The DNS server (dnsmasq, zone example.test: www.example.test is 198.51.100.80).
    pub const DNS_V4: &str = "198.51.100.53";
    pub const DNS_V6: &str = "2001:db8:100::53";
    /// The NAT routers' public addresses.
    pub const NATA_V4: &str = "198.51.100.101";
    pub const NATB_V4: &str = "198.51.100.102";
    /// The attacker of the `hostile` topology (no ntmtun runs there).
    pub const HOSTILE_V4: &str = "198.51.100.66";
    pub const HOSTILE_V6: &str = "2001:db8:100::66";
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn lab_script() -> PathBuf {
    repo_root().join("scripts").join("lab.sh")
}

/// The first `cmd` on PATH, if any.
pub fn find_in_path(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|c| c.is_file())
    })
}

/// The ntmtun binary Cargo built for these tests.
pub fn ntmtun_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ntmtun")
}

/// Effective UID 0, read from /proc (std only).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// True when lab tests must be skipped (`NTMTUN_SKIP_LAB=1`); panics when they cannot run
/// because we are not root.
pub fn lab_skipped(test: &str) -> bool {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        // Written to the real stderr, past the test harness's output capture, so that the skip
        // is visible in every run.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: lab test `{test}` (NTMTUN_SKIP_LAB=1): it ran nothing"
        );
        return true;
    }
    if !is_root() {
        panic!("{NEED_ROOT}");
    }
    false
}

fn to_base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

fn namespace_exists_with_prefix(prefix: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.starts_with(&format!("{prefix}-"))),
        Err(_) => false,
    }
}

/// A prefix matching `^[a-z][a-z0-9]{0,7}$`, unused on this machine: "t" + pid + counter.
fn unique_prefix() -> String {
    let pid = to_base36(u64::from(std::process::id()) % 36u64.pow(5));
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("t{pid}{}", to_base36(u64::from(n) % (36 * 36)));
        assert!(prefix.len() <= 8, "prefix {prefix} too long");
        if !Path::new(LAB_ROOT).join(&prefix).exists() && !namespace_exists_with_prefix(&prefix) {
            return prefix;
        }
    }
    panic!("no unused lab prefix found after 100 tries");
}

/// Last `n` lines of a file, or a note that it is missing.
pub fn file_tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

pub fn describe_output(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// Poll `f` every `every` until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        thread::sleep(every);
    }
}

/// Random bytes from the kernel, as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Is `ip` inside 198.18.0.0/15 (the NTMobile virtual range)?
pub fn in_virtual_range(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 198 && (o[1] & 0xfe) == 18
}

/// sha256 of a file, via coreutils' sha256sum.
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(
        out.status.success(),
        "sha256sum {}: {}",
        path.display(),
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A background process started in a namespace (`ip netns exec` execs, so the child's PID is
/// the program's). Killed on drop if still running.
pub struct Bg {
    pub what: String,
    child: Child,
    done: Option<ExitStatus>,
}

impl Bg {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait at most `limit` for the process to exit.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.done {
            return Some(st);
        }
        let child = &mut self.child;
        let st = wait_for(limit, Duration::from_millis(50), || {
            child.try_wait().ok().flatten()
        });
        self.done = st;
        st
    }

    /// Send a signal by PID (e.g. "INT", "TERM").
    pub fn signal(&self, sig: &str) {
        if self.done.is_some() {
            return;
        }
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGTERM, bounded wait, then SIGKILL.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.done.is_none() {
            self.signal("TERM");
            if self.wait_timeout(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                self.done = self.child.wait().ok();
            }
        }
        self.done
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if self.done.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One line of the lab's host table (`RUN/hosts`, written by `lab.sh up`, updated by `move`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub name: String,
    /// dc, relay, dns, node, router, nat-eim, nat-symmetric or hostile.
    pub role: String,
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
    /// The IPv4 address the Internet segment sees this host as (its NAT router's for a NATed
    /// node; its own for a public host).
    pub public_v4: Option<IpAddr>,
}

/// A running lab. Dropping it runs `lab.sh down PREFIX`.
pub struct Lab {
    pub prefix: String,
    pub topology: String,
    pub run_dir: PathBuf,
}

impl Lab {
    /// Build the topology and start the DC, its relays (when the binary has the relay role) and
    /// the nodes. `None` when lab tests are skipped explicitly (`NTMTUN_SKIP_LAB=1`); panics
    /// when not root.
    pub fn up(topology: &str) -> Option<Lab> {
        let lab = Lab::build(topology)?;
        lab.start();
        Some(lab)
    }

    /// Build the topology only (namespaces, links, NAT, DNS server): no ntmtun daemons. `None`
    /// when lab tests are skipped explicitly; panics when not root.
    pub fn build(topology: &str) -> Option<Lab> {
        if lab_skipped(&format!("Lab::build({topology})")) {
            return None;
        }
        assert!(
            TOPOLOGIES.contains(&topology),
            "unknown lab topology {topology:?}; lab.sh knows {TOPOLOGIES:?}"
        );
        let prefix = unique_prefix();
        // Constructed first, so that Drop runs `down` even if `up` or `start` fails half-way.
        let lab = Lab {
            run_dir: Path::new(LAB_ROOT).join(&prefix),
            prefix,
            topology: topology.to_string(),
        };
        eprintln!("lab: {} up ({topology})", lab.prefix);
        let out = lab.lab_sh(&["up", topology, &lab.prefix]);
        assert!(
            out.status.success(),
            "lab.sh up {topology} {} failed\n{}",
            lab.prefix,
            describe_output(&out)
        );
        Some(lab)
    }

    /// `lab.sh start`: keys, configs, the DC, the relays and the nodes; asserts that both nodes
    /// registered.
    pub fn start(&self) {
        let out = self.lab_sh(&["start", &self.prefix]);
        assert!(
            out.status.success(),
            "lab.sh start {} failed (ntmtun DC/nodes did not come up registered)\n{}\n{}",
            self.prefix,
            describe_output(&out),
            self.logs_tail()
        );
        eprintln!(
            "lab: {} started: DC{} and nodes registered",
            self.prefix,
            match self.relays() {
                r if r.is_empty() => String::new(),
                r => format!(", relays {}", r.join(" ")),
            }
        );
    }

    /// The relays `lab.sh start` started (empty when the topology has none, or when the binary
    /// under test has no relay role: then lab.sh logs that relays were skipped).
    pub fn relays(&self) -> Vec<String> {
        fs::read_to_string(self.path("relays"))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// The lab's host table: every host namespace with its addresses.
    pub fn hosts(&self) -> Vec<HostInfo> {
        let text = fs::read_to_string(self.path("hosts"))
            .unwrap_or_else(|e| panic!("read {}: {e}", self.path("hosts").display()));
        let ip = |f: &str| -> Option<IpAddr> {
            (f != "-").then(|| {
                f.parse()
                    .unwrap_or_else(|e| panic!("bad address {f:?} in the host table: {e}"))
            })
        };
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 5).then(|| HostInfo {
                    name: f[0].to_string(),
                    role: f[1].to_string(),
                    v4: ip(f[2]),
                    v6: ip(f[3]),
                    public_v4: ip(f[4]),
                })
            })
            .collect()
    }

    /// One host of the table (panics if the topology has no such host).
    pub fn host(&self, name: &str) -> HostInfo {
        self.hosts()
            .into_iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("lab {}: no host {name} in the host table", self.prefix))
    }

    /// `lab.sh kill-relay`: SIGKILL a relay (by its recorded PID), as a crash.
    pub fn kill_relay(&self, relay: &str) {
        let out = self.lab_sh(&["kill-relay", &self.prefix, relay]);
        assert!(
            out.status.success(),
            "lab.sh kill-relay {} {relay} failed\n{}",
            self.prefix,
            describe_output(&out)
        );
    }

    /// `lab.sh move` (roam): move `host`'s uplink to the other Internet segment. Returns its new
    /// IPv4 address.
    pub fn move_host(&self, host: &str) -> Ipv4Addr {
        let out = self.lab_sh(&["move", &self.prefix, host]);
        assert!(
            out.status.success(),
            "lab.sh move {} {host} failed\n{}",
            self.prefix,
            describe_output(&out)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().parse().unwrap_or_else(|e| {
            panic!(
                "lab.sh move printed {:?}, not an IPv4 address: {e}",
                text.trim()
            )
        })
    }

    /// Run scripts/lab.sh with `args` (bounded: 180 s), NTMTUN_BIN set to the binary under test.
    pub fn lab_sh(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["-k", "10", "180"])
            .arg(lab_script())
            .args(args)
            .env("NTMTUN_BIN", ntmtun_bin())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/lab.sh (is `timeout` installed? run scripts/setup.sh)")
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.run_dir.join(name)
    }

    pub fn socket(&self, node: &str) -> PathBuf {
        self.path(&format!("{node}.sock"))
    }

    /// The tail of the ntmtun logs (and the DNS server's) for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut s = String::new();
        let relays: Vec<String> = self.relays().iter().map(|r| format!("{r}.log")).collect();
        // The gateways topology's nodes are gwa and gwb.
        let gateways: &[&str] = if self.topology == "gateways" {
            &["gwa.log", "gwb.log"]
        } else {
            &[]
        };
        let names = ["dc.log", "alice.log", "bob.log", "dnsmasq.stderr.log"]
            .into_iter()
            .chain(gateways.iter().copied())
            .chain(relays.iter().map(String::as_str));
        for name in names {
            s.push_str(&format!(
                "\n----- last lines of {} -----\n{}",
                self.path(name).display(),
                file_tail(&self.path(name), 40)
            ));
        }
        s
    }

    /// Run `args` in `PREFIX-host`, bounded by `timeout` (seconds). Does not assert.
    pub fn exec_t(&self, host: &str, secs: u64, args: &[&str]) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(host),
                "timeout",
                "-k",
                "5",
                &secs.to_string(),
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run ip netns exec {} {args:?}: {e}", self.ns(host)))
    }

    /// One ping from `from` to `to`'s name in the domain (1 s wait); true if answered.
    pub fn ping_once(&self, from: &str, to: &str) -> bool {
        self.exec_t(
            from,
            5,
            &["ping", "-c", "1", "-W", "1", &format!("{to}.ntm.internal")],
        )
        .status
        .success()
    }

    /// Run `args` in `PREFIX-host` (bounded by 60 s). Does not assert.
    pub fn exec(&self, host: &str, args: &[&str]) -> Output {
        self.exec_t(host, CMD_TIMEOUT_SECS, args)
    }

    /// Run a shell command line in `PREFIX-host` (bounded by 60 s). Does not assert.
    pub fn sh(&self, host: &str, cmd: &str) -> Output {
        self.exec(host, &["sh", "-c", cmd])
    }

    /// Panic with the command, its output and the tail of the lab's logs.
    pub fn fail(&self, host: &str, what: &str, out: &Output, why: &str) -> ! {
        panic!(
            "[{}] {what}: {why}\n{}\n{}",
            self.ns(host),
            describe_output(out),
            self.logs_tail()
        )
    }

    /// Run `args` in `PREFIX-host`, assert success, return stdout.
    pub fn exec_ok(&self, host: &str, args: &[&str]) -> String {
        let out = self.exec(host, args);
        if !out.status.success() {
            self.fail(host, &format!("{args:?}"), &out, "command failed");
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run a shell command line in `PREFIX-host`, assert success, return stdout.
    pub fn sh_ok(&self, host: &str, cmd: &str) -> String {
        let out = self.sh(host, cmd);
        if !out.status.success() {
            self.fail(host, cmd, &out, "command failed");
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ntmtun status --json` of a node, without asserting.
    pub fn try_status_json(&self, node: &str) -> Result<serde_json::Value, String> {
        let sock = self.socket(node);
        let out = self.exec_t(
            node,
            10,
            &[
                ntmtun_bin(),
                "status",
                "--socket",
                sock.to_str().unwrap(),
                "--json",
            ],
        );
        if !out.status.success() {
            return Err(describe_output(&out));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("invalid JSON ({e})\n{}", describe_output(&out)))
    }

    /// `ntmtun status --json` of a node, parsed.
    pub fn status_json(&self, node: &str) -> serde_json::Value {
        self.try_status_json(node).unwrap_or_else(|e| {
            panic!(
                "[{}] ntmtun status --json failed: {e}\n{}",
                self.ns(node),
                self.logs_tail()
            )
        })
    }

    /// A node's virtual IP from `status --json`, checked to be inside 198.18.0.0/15.
    pub fn virtual_ip(&self, node: &str) -> Ipv4Addr {
        let st = self.status_json(node);
        let vip = st["virtual_ip"]
            .as_str()
            .unwrap_or_else(|| panic!("{node}: status has no string virtual_ip: {st}"));
        let ip: Ipv4Addr = vip
            .parse()
            .unwrap_or_else(|e| panic!("{node}: virtual_ip {vip:?} is not an IPv4 address: {e}"));
        assert!(
            in_virtual_range(ip),
            "{node}: virtual_ip {ip} is outside 198.18.0.0/15"
        );
        ip
    }

    /// Wait (bounded) until every node reports `dc.state == "registered"`.
    pub fn wait_registered(&self, limit: Duration) {
        self.wait_nodes_registered(&NODES, limit);
    }

    /// Wait (bounded) until each of `nodes` reports `dc.state == "registered"`.
    pub fn wait_nodes_registered(&self, nodes: &[&str], limit: Duration) {
        let mut last = Vec::new();
        let ok = wait_for(limit, Duration::from_millis(200), || {
            last.clear();
            let mut all = true;
            for n in nodes {
                let state = match self.try_status_json(n) {
                    Ok(v) => v["dc"]["state"].as_str().unwrap_or("(none)").to_string(),
                    Err(e) => format!("(status failed: {})", e.lines().next().unwrap_or("")),
                };
                all &= state == "registered";
                last.push(format!("{n}: {state}"));
            }
            all.then_some(())
        });
        if ok.is_none() {
            panic!(
                "nodes not registered after {limit:?}: {}\n{}",
                last.join(", "),
                self.logs_tail()
            );
        }
    }

    /// The ntmtun nodes of the topology (the host table's role `node`).
    pub fn nodes(&self) -> Vec<String> {
        self.hosts()
            .into_iter()
            .filter(|h| h.role == "node")
            .map(|h| h.name)
            .collect()
    }

    /// `lab.sh restart-dc`: stop the DC by PID and start it again with the same config/state.
    pub fn restart_dc(&self) {
        let out = self.lab_sh(&["restart-dc", &self.prefix]);
        assert!(
            out.status.success(),
            "lab.sh restart-dc {} failed\n{}\n{}",
            self.prefix,
            describe_output(&out),
            self.logs_tail()
        );
    }

    /// Stop a node (by PID) and start it again with the same config.
    pub fn restart_node(&self, node: &str) {
        let out = self.lab_sh(&["restart-node", &self.prefix, node]);
        assert!(
            out.status.success(),
            "lab.sh restart-node {} {node} failed\n{}\n{}",
            self.prefix,
            describe_output(&out),
            self.logs_tail()
        );
    }

    /// Stop a process `lab.sh start` recorded under `name` (the DC, say).
    pub fn stop(&self, name: &str) {
        let out = self.lab_sh(&["stop", &self.prefix, name]);
        assert!(
            out.status.success(),
            "lab.sh stop {} {name} failed\n{}",
            self.prefix,
            describe_output(&out)
        );
    }

    /// The PID `lab.sh` last recorded for `name` (the DC, a node, a spawned process).
    pub fn pid(&self, name: &str) -> u32 {
        let text = fs::read_to_string(self.path("pids")).unwrap_or_default();
        text.lines()
            .rev()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3 && f[0] == name).then(|| f[1].parse::<u32>().ok())?
            })
            .unwrap_or_else(|| panic!("lab {}: no PID recorded for {name}", self.prefix))
    }

    /// Send `sig` ("HUP", "KILL", ...) to the process recorded under `name`, by PID.
    pub fn signal(&self, name: &str, sig: &str) {
        let pid = self.pid(name);
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(st.success(), "kill -{sig} {pid} ({name}) failed");
    }

    /// The `/metrics` text of the daemon in `host`'s namespace (lab.sh sets every daemon's
    /// `metrics_listen` to 127.0.0.1:9100).
    pub fn metrics(&self, host: &str) -> String {
        self.exec_ok(
            host,
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                "http://127.0.0.1:9100/metrics",
            ],
        )
    }

    /// Start `args` in the background in `PREFIX-host`, stdout and stderr to files.
    pub fn spawn(&self, host: &str, args: &[&str], stdout: &Path, stderr: &Path) -> Bg {
        let out =
            fs::File::create(stdout).unwrap_or_else(|e| panic!("create {}: {e}", stdout.display()));
        let err =
            fs::File::create(stderr).unwrap_or_else(|e| panic!("create {}: {e}", stderr.display()));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {}: {e}", self.ns(host)));
        Bg {
            what: format!("[{}] {args:?}", self.ns(host)),
            child,
            done: None,
        }
    }

    /// Wait (bounded) until something listens on TCP `port` in `PREFIX-host`.
    pub fn wait_tcp_listen(&self, host: &str, port: u16, limit: Duration) {
        let filter = format!("sport = :{port}");
        let ok = wait_for(limit, Duration::from_millis(100), || {
            let out = self.exec_t(host, 5, &["ss", "-Hltn", &filter]);
            (out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty())
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "[{}] nothing listens on TCP port {port} after {limit:?}",
            self.ns(host)
        );
    }

    /// Send the file `data` from `from` to `to` by name (`TO.ntm.internal`) with nc on TCP
    /// `port`; returns the path of what the receiver wrote. All waits bounded.
    pub fn nc_transfer(&self, from: &str, to: &str, port: u16, data: &Path) -> PathBuf {
        self.nc_transfer_named(from, to, &format!("{to}.ntm.internal"), port, data)
    }

    /// As [`Lab::nc_transfer`], the sender connecting to `name` (a node of
    /// another domain, say).
    pub fn nc_transfer_named(
        &self,
        from: &str,
        to: &str,
        name: &str,
        port: u16,
        data: &Path,
    ) -> PathBuf {
        let recv = self.path(&format!("nc-{port}.recv"));
        let recv_err = self.path(&format!("nc-{port}.recv.log"));
        let port_s = port.to_string();
        let mut listener = self.spawn(to, &["nc", "-l", "-p", &port_s], &recv, &recv_err);
        self.wait_tcp_listen(to, port, Duration::from_secs(10));
        let cmd = format!("nc -N {name} {port} < '{}'", data.display());
        let out = self.exec_t(from, 90, &["sh", "-c", &cmd]);
        if !out.status.success() {
            self.fail(from, &cmd, &out, "nc sender failed");
        }
        match listener.wait_timeout(Duration::from_secs(30)) {
            Some(st) if st.success() => {}
            Some(st) => panic!(
                "[{}] nc -l -p {port} exited with {st}: {}",
                self.ns(to),
                file_tail(&recv_err, 20)
            ),
            None => {
                listener.stop();
                panic!(
                    "[{}] nc -l -p {port} did not finish within 30 s after the sender; received {} bytes\n{}",
                    self.ns(to),
                    fs::metadata(&recv).map(|m| m.len()).unwrap_or(0),
                    self.logs_tail()
                );
            }
        }
        recv
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "lab {}: test failed; logs before teardown:{}",
                self.prefix,
                self.logs_tail()
            );
        }
        let out = self.lab_sh(&["down", &self.prefix]);
        if out.status.success() {
            eprintln!("lab: {} down", self.prefix);
        } else {
            eprintln!(
                "WARNING: lab.sh down {} failed; clean up by hand with `scripts/lab.sh down {}`\n{}",
                self.prefix,
                self.prefix,
                describe_output(&out)
            );
        }
    }
}

/// A data-plane table with one peer, `peer`, reached at `endpoint` over
/// `session` (both directions), for tests that drive the workers' code.
pub fn one_peer_table(
    local: Ipv4Addr,
    peer: Ipv4Addr,
    session: std::sync::Arc<ntmtun::proto::session::Session>,
    endpoint: ntmtun::dataplane::table::Endpoint,
    stats: std::sync::Arc<ntmtun::dataplane::table::PeerStats>,
) -> ntmtun::dataplane::table::PeerTable {
    use ntmtun::dataplane::table::{PeerTable, RxRoute, TxRoute};
    let index = session.local_index;
    PeerTable {
        local_ip: Some(local),
        prefix: Some("198.18.0.0/15".parse().expect("prefix")),
        by_vip: std::collections::HashMap::from([(
            peer,
            TxRoute {
                name: "peer".into(),
                virtual_ip: peer,
                session: session.clone(),
                endpoint,
                stats: stats.clone(),
                mtu: 1432,
                path: "direct",
            },
        )]),
        by_index: std::collections::HashMap::from([(
            index,
            RxRoute {
                virtual_ip: peer,
                session,
                endpoint,
                stats,
                unconfirmed: false,
            },
        )]),
        ..Default::default()
    }
}
