//! The systemd units in packaging/systemd/ (issue 6, part 5), checked in three layers. Each
//! layer says what it could not check, on the real stderr, so that nothing passes silently:
//!
//! 1. Always: the unit files themselves. They must run ntmtun in the foreground, restart on
//!    failure, reload on `systemctl reload` (SIGHUP) and stop on SIGTERM. The ExecStart lines
//!    must name the installed binary, an existing subcommand and the config in /etc/ntmtun/,
//!    read in place so that a reload sees edits; each unit runs as its own system user,
//!    declared in packaging/sysusers.d/ntmtun.conf. The DC and the relay
//!    must get no privilege at all, the node exactly CAP_NET_ADMIN, and every unit the
//!    hardening baseline. These are cross-checked against the code and the docs: the default
//!    ports, the control socket's default path, and the documented `state_dir`.
//! 2. When `systemd-analyze` is installed: `systemd-analyze verify` and
//!    `systemd-analyze security --offline` (with an upper bound on the exposure score); when
//!    `systemd-sysusers` is, the users file is applied to an empty root.
//! 3. The lab (root, network namespaces; `NTMTUN_SKIP_LAB=1` skips it): the DC, a relay and a
//!    node run under the identity, capabilities and file-system view that their units give
//!    them, in the `symmetric` topology, where traffic between the nodes has to go through the
//!    relay. No systemd is needed for this. `setpriv` and a read-only mount namespace emulate
//!    what the units ask for, read from the unit files: User= (a non-root UID),
//!    CapabilityBoundingSet=, AmbientCapabilities=, NoNewPrivileges=, ProtectSystem=strict with
//!    only StateDirectory=/RuntimeDirectory= writable, ProcSubset=pid, the config owned by
//!    root with that UID's group and mode 0640, ExecStart= and ExecReload= (each role applies
//!    an edited key live). The emulation does not cover
//!    seccomp (SystemCallFilter=, RestrictAddressFamilies=), the device cgroup (DeviceAllow=),
//!    PrivateDevices=, PrivateUsers= or the ProtectKernel*= options; the test prints that
//!    list.

mod common;

use common::{describe_output, file_tail, find_in_path, ntmtun_bin, repo_root, wait_for, Bg, Lab};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const UNIT_DIR: &str = "packaging/systemd";
/// The binary path every ExecStart= names: where the Debian package (scripts/package.sh)
/// installs it, and where docs/operations.md installs it by hand.
const INSTALLED_BIN: &str = "/usr/bin/ntmtun";
/// systemd's default PATH for system services (no split /usr).
const SYSTEMD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Highest acceptable `systemd-analyze security` exposure (0.0 best, 10.0 worst). The DC and
/// the relay have no privilege (1.1 with systemd 252 when written); the node needs
/// CAP_NET_ADMIN, netlink, /dev/net/tun and a writable /proc/sys (2.0 when written).
const MAX_EXPOSURE_UNPRIVILEGED: f64 = 2.0;
const MAX_EXPOSURE_NODE: f64 = 3.0;

/// One role and its unit.
#[derive(Clone, Copy)]
struct Role {
    unit: &'static str,
    /// The ntmtun subcommand.
    sub: &'static str,
    /// The config file's name under /etc/ntmtun/.
    config: &'static str,
}

const DC: Role = Role {
    unit: "ntmtun-dc.service",
    sub: "dc",
    config: "dc.toml",
};
const RELAY: Role = Role {
    unit: "ntmtun-relay.service",
    sub: "relay",
    config: "relay.toml",
};
const NODE: Role = Role {
    unit: "ntmtun-node.service",
    sub: "node",
    config: "node.toml",
};
const ROLES: [Role; 3] = [DC, RELAY, NODE];

impl Role {
    /// The system user the unit runs as (packaging/sysusers.d/ntmtun.conf).
    fn user(&self) -> String {
        format!("ntmtun-{}", self.sub)
    }

    /// Where the operator keeps the config, and where the unit reads (and re-reads) it.
    fn etc_config(&self) -> String {
        format!("/etc/ntmtun/{}", self.config)
    }
}

const SYSUSERS: &str = "packaging/sysusers.d/ntmtun.conf";

/// Written past the test harness's output capture, so that skips show in every run.
fn notice(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

// ------------------------------------------------------------------------------------------
// A small reader for unit files: sections, `Key=value` lines, comments, line continuations.

struct Unit {
    file: String,
    /// (section, key, value) in file order.
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn load(file: &str) -> Unit {
        let path = repo_root().join(UNIT_DIR).join(file);
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read the unit {}: {e}", path.display()));
        Unit::parse(file, &text)
    }

    fn parse(file: &str, text: &str) -> Unit {
        let mut entries = Vec::new();
        let mut section = String::new();
        let mut pending = String::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.starts_with('#')
                || line.starts_with(';')
                || (line.is_empty() && pending.is_empty())
            {
                continue;
            }
            if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
                pending.push(' ');
                continue;
            }
            let full = format!("{pending}{line}");
            pending.clear();
            if let Some(name) = full.strip_prefix('[') {
                let name = name
                    .strip_suffix(']')
                    .unwrap_or_else(|| panic!("{file}:{n}: unterminated section header {raw:?}"));
                section = name.to_string();
                continue;
            }
            let (key, value) = full
                .split_once('=')
                .unwrap_or_else(|| panic!("{file}:{n}: not a `Key=value` line: {raw:?}"));
            assert!(
                !section.is_empty(),
                "{file}:{n}: `{key}=` before any [Section]"
            );
            entries.push((
                section.clone(),
                key.trim().to_string(),
                value.trim().to_string(),
            ));
        }
        assert!(
            pending.is_empty(),
            "{file}: the last line ends in a continuation `\\`"
        );
        Unit {
            file: file.to_string(),
            entries,
        }
    }

    fn sections(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.entries.iter().map(|(s, _, _)| s.as_str()).collect();
        s.dedup();
        s
    }

    /// Every value assigned to `key` in `section`, in file order.
    fn values(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The effective value of a single-valued setting: the last assignment.
    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.values(section, key).last().copied()
    }

    fn service(&self, key: &str) -> Option<&str> {
        self.get("Service", key)
    }

    /// A list setting of [Service] (capabilities, address families, ...): assignments add up,
    /// and an empty assignment resets the list.
    fn list(&self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.values("Service", key) {
            if v.is_empty() {
                out.clear();
            } else {
                out.extend(v.split_whitespace().map(String::from));
            }
        }
        out
    }

    fn is_yes(&self, key: &str) -> bool {
        matches!(self.service(key), Some("yes" | "true" | "on" | "1"))
    }

    /// Asserts `[Service] key=want` (the effective value).
    fn expect(&self, key: &str, want: &str, why: &str) {
        assert_eq!(
            self.service(key),
            Some(want),
            "{}: [Service] {key}= should be {want:?}: {why}",
            self.file
        );
    }

    fn expect_yes(&self, key: &str, why: &str) {
        assert!(
            self.is_yes(key),
            "{}: [Service] {key}= should be yes (found {:?}): {why}",
            self.file,
            self.service(key)
        );
    }

    fn expect_not_yes(&self, key: &str, why: &str) {
        assert!(
            !self.is_yes(key),
            "{}: [Service] {key}= must not be yes: {why}",
            self.file
        );
    }

    /// The system calls taken away by `SystemCallFilter=~...` lines.
    fn denied_syscalls(&self) -> Vec<&str> {
        self.values("Service", "SystemCallFilter")
            .into_iter()
            .filter_map(|v| v.strip_prefix('~'))
            .flat_map(str::split_whitespace)
            .collect()
    }

    /// ExecStart= split into words.
    fn exec_start(&self) -> Vec<String> {
        let all = self.values("Service", "ExecStart");
        assert_eq!(
            all.len(),
            1,
            "{}: expected exactly one ExecStart= (a simple/exec service), found {all:?}",
            self.file
        );
        all[0].split_whitespace().map(String::from).collect()
    }
}

/// "15s", "15", "2min" -> seconds.
fn seconds(value: &str) -> u64 {
    let v = value.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix("min") {
        (n, 60)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1)
    } else {
        (v, 1)
    };
    num.trim()
        .parse::<u64>()
        .unwrap_or_else(|e| panic!("{value:?} is not a time span this test understands: {e}"))
        * mult
}

/// Bit numbers of the capabilities the units may name (linux/capability.h).
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        other => panic!("capability {other} is not known to this test; add its bit number"),
    }
}

fn cap_mask(caps: &[String]) -> u64 {
    caps.iter().fold(0, |m, c| m | 1u64 << cap_bit(c))
}

// ------------------------------------------------------------------------------------------
// Layer 1: the unit files, always.

#[test]
fn every_unit_parses_with_the_usual_sections() {
    for role in ROLES {
        let u = Unit::load(role.unit);
        assert_eq!(
            u.sections(),
            ["Unit", "Service", "Install"],
            "{}: expected the sections [Unit], [Service], [Install] in that order",
            u.file
        );
        assert!(
            u.get("Unit", "Description").is_some_and(|d| !d.is_empty()),
            "{}: no Description=",
            u.file
        );
        // Keys that take one value must not be given twice by accident (later ones win).
        for key in [
            "Type",
            "Restart",
            "KillSignal",
            "TimeoutStopSec",
            "DynamicUser",
            "ProtectSystem",
            "ProtectHome",
            "NoNewPrivileges",
        ] {
            let n = u.values("Service", key).len();
            assert!(n <= 1, "{}: {key}= is set {n} times", u.file);
        }
    }
}

#[test]
fn units_run_ntmtun_in_the_foreground_and_restart_on_failure() {
    for role in ROLES {
        let u = Unit::load(role.unit);
        let ty = u.service("Type").unwrap_or("simple");
        assert!(
            ty == "simple" || ty == "exec",
            "{}: Type={ty}: ntmtun {} runs in the foreground and does not notify or fork; \
             expected simple or exec",
            u.file,
            role.sub
        );
        u.expect(
            "Restart",
            "on-failure",
            "restart after a crash, not after a clean stop",
        );
        u.expect(
            "KillSignal",
            "SIGTERM",
            "ntmtun stops cleanly on SIGTERM (the node removes its routes and rules)",
        );
        let stop = u
            .service("TimeoutStopSec")
            .unwrap_or_else(|| panic!("{}: no TimeoutStopSec= (the default is 90 s)", u.file));
        let stop = seconds(stop);
        assert!(
            (5..=60).contains(&stop),
            "{}: TimeoutStopSec={stop}s; a clean stop takes about 1.5 s, so 5-60 s leaves room \
             without holding up shutdown",
            u.file
        );
        assert!(
            u.values("Unit", "After")
                .iter()
                .any(|v| v.contains("network-online.target"))
                && u.values("Unit", "Wants")
                    .iter()
                    .any(|v| v.contains("network-online.target")),
            "{}: expected After= and Wants=network-online.target (listen addresses, resolv.conf)",
            u.file
        );
        assert_eq!(
            u.get("Install", "WantedBy"),
            Some("multi-user.target"),
            "{}: WantedBy=multi-user.target, so that `systemctl enable` starts it at boot",
            u.file
        );

        // ExecStart: the installed binary, the role's subcommand and the config where the
        // operator keeps it. Read in place, not through LoadCredential=, whose copy is made once
        // at start: SIGHUP must re-read the file the operator edited.
        assert_eq!(
            u.exec_start(),
            [
                INSTALLED_BIN,
                role.sub,
                "--config",
                role.etc_config().as_str()
            ],
            "{}: unexpected ExecStart=",
            u.file
        );
        assert!(
            u.values("Service", "LoadCredential").is_empty(),
            "{}: LoadCredential= copies the config once at start, so a reload would re-read a \
             stale copy; read /etc/ntmtun/{} in place",
            u.file,
            role.config
        );
        u.expect(
            "ExecReload",
            "/bin/kill -HUP $MAINPID",
            "ntmtun reloads on SIGHUP (src/reload.rs); `systemctl reload` must send it",
        );
        // The subcommand and its --config option exist in the binary under test.
        let out = Command::new(ntmtun_bin())
            .args([role.sub, "--help"])
            .output()
            .expect("run ntmtun");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--config"),
            "{}: `ntmtun {} --help` failed or has no --config\n{}",
            u.file,
            role.sub,
            describe_output(&out)
        );
        assert!(
            u.values("Service", "Environment")
                .iter()
                .any(|e| e.starts_with("RUST_LOG=")),
            "{}: set Environment=RUST_LOG=... so operators see where the log level is set",
            u.file
        );
    }
}

#[test]
fn units_share_the_hardening_baseline() {
    for role in ROLES {
        let u = Unit::load(role.unit);
        let f = &u.file;
        u.expect_not_yes(
            "DynamicUser",
            "a transient user cannot be given read access to the config, which SIGHUP re-reads",
        );
        u.expect(
            "User",
            &role.user(),
            "each role its own system user (packaging/sysusers.d/ntmtun.conf)",
        );
        u.expect(
            "Group",
            &role.user(),
            "the config is root:ntmtun-<role> 0640: the group reads it",
        );
        u.expect_yes("NoNewPrivileges", "no setuid escalation, also for `ip`");
        u.expect(
            "ProtectSystem",
            "strict",
            "only the service's own directories are writable",
        );
        u.expect("ProtectHome", "yes", "ntmtun never reads home directories");
        u.expect_yes("PrivateTmp", "no shared /tmp");
        u.expect_yes("PrivateMounts", "mounts stay inside the service");
        u.expect_yes("ProtectKernelModules", "no module loading");
        u.expect_yes("ProtectKernelLogs", "no kernel log access");
        u.expect_yes("ProtectControlGroups", "cgroups read-only");
        u.expect_yes("ProtectClock", "no clock changes");
        u.expect_yes("ProtectHostname", "no hostname changes");
        u.expect("ProtectProc", "invisible", "other processes are hidden");
        u.expect_yes("RestrictNamespaces", "ntmtun creates no namespaces");
        u.expect_yes("RestrictRealtime", "no realtime scheduling");
        u.expect_yes("RestrictSUIDSGID", "no setuid files");
        u.expect_yes("LockPersonality", "no personality changes");
        u.expect_yes("MemoryDenyWriteExecute", "no JIT in ntmtun or ip");
        u.expect_yes("RemoveIPC", "no SysV IPC left behind");
        u.expect(
            "SystemCallArchitectures",
            "native",
            "no foreign syscall ABIs",
        );
        u.expect("UMask", "0077", "files private to the service");
        u.expect(
            "LimitCORE",
            "0",
            "a core dump would contain the private key",
        );
        u.expect(
            "SystemCallErrorNumber",
            "EPERM",
            "a filtered call fails with an error ntmtun logs, instead of SIGSYS",
        );
        let filters = u.values("Service", "SystemCallFilter");
        assert!(
            filters.first() == Some(&"@system-service"),
            "{f}: SystemCallFilter=@system-service first (an allow list), found {filters:?}"
        );
        assert!(
            filters.iter().skip(1).all(|v| v.starts_with('~')),
            "{f}: later SystemCallFilter= lines should only take calls away: {filters:?}"
        );
        assert!(
            u.denied_syscalls().contains(&"@privileged"),
            "{f}: SystemCallFilter=~@privileged missing"
        );
        for key in ["PrivateNetwork", "IPAddressDeny"] {
            assert!(
                u.service(key).is_none(),
                "{f}: {key}= would cut ntmtun off from the network it serves"
            );
        }
    }
}

#[test]
fn dc_and_relay_run_without_any_privilege() {
    // The units give no CAP_NET_BIND_SERVICE: the default ports must stay unprivileged.
    for (role, port) in [
        ("DC", ntmtun::config::DEFAULT_DC_PORT),
        ("relay", ntmtun::config::DEFAULT_RELAY_PORT),
    ] {
        assert!(
            port >= 1024,
            "the {role}'s default port {port} is privileged, but its unit grants no \
             CAP_NET_BIND_SERVICE"
        );
    }
    for role in [DC, RELAY] {
        let u = Unit::load(role.unit);
        let f = &u.file;
        assert!(
            u.list("CapabilityBoundingSet").is_empty()
                && u.values("Service", "CapabilityBoundingSet") == [""],
            "{f}: CapabilityBoundingSet= must be set and empty (no capability at all)"
        );
        assert!(
            u.list("AmbientCapabilities").is_empty(),
            "{f}: AmbientCapabilities= must be empty"
        );
        u.expect_yes(
            "PrivateUsers",
            "no view of other users, no capability in the host",
        );
        u.expect_yes("PrivateDevices", "no device needed");
        u.expect_yes("ProtectKernelTunables", "no sysctl written");
        u.expect(
            "ProcSubset",
            "pid",
            "nothing read from /proc but the process's own",
        );
        assert_eq!(
            u.list("RestrictAddressFamilies"),
            ["AF_INET", "AF_INET6"],
            "{f}: UDP over IPv4 and IPv6 only"
        );
        let denied = u.denied_syscalls();
        assert!(
            denied.contains(&"@privileged") && denied.contains(&"@resources"),
            "{f}: expected SystemCallFilter=~@privileged @resources, found ~{denied:?}"
        );
        assert!(
            u.service("DeviceAllow").is_none() && u.service("ReadWritePaths").is_none(),
            "{f}: no DeviceAllow= or ReadWritePaths= expected"
        );
        assert!(
            u.service("RuntimeDirectory").is_none(),
            "{f}: RuntimeDirectory= belongs to the node (its control socket)"
        );
    }

    // The DC's one writable directory, and the state_dir the docs tell operators to use.
    let dc = Unit::load(DC.unit);
    dc.expect(
        "StateDirectory",
        "ntmtun",
        "/var/lib/ntmtun holds the DC's database",
    );
    dc.expect(
        "StateDirectoryMode",
        "0700",
        "the database maps identities to addresses",
    );
    let state = format!("/var/lib/{}", dc.service("StateDirectory").unwrap());
    for doc in ["docs/configuration.md", "docs/operations.md"] {
        let text =
            fs::read_to_string(repo_root().join(doc)).unwrap_or_else(|e| panic!("read {doc}: {e}"));
        let dirs: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("state_dir = \""))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert!(
            !dirs.is_empty(),
            "{doc}: no `state_dir = \"...\"` example found"
        );
        for d in dirs {
            assert!(
                d == state || d.starts_with(&format!("{state}/")),
                "{doc}: state_dir = {d:?} is outside {state}, the only path the DC's unit \
                 can write (StateDirectory=)"
            );
        }
    }
    let relay = Unit::load(RELAY.unit);
    assert!(
        relay.service("StateDirectory").is_none(),
        "{}: the relay keeps no state",
        relay.file
    );
}

#[test]
fn node_gets_exactly_cap_net_admin_and_what_ip_needs() {
    let u = Unit::load(NODE.unit);
    let f = &u.file;
    assert_eq!(
        u.list("CapabilityBoundingSet"),
        ["CAP_NET_ADMIN"],
        "{f}: the bounding set must be exactly CAP_NET_ADMIN (no CAP_NET_RAW)"
    );
    assert_eq!(
        u.list("AmbientCapabilities"),
        ["CAP_NET_ADMIN"],
        "{f}: a dynamic user needs CAP_NET_ADMIN as an ambient capability (it also reaches `ip`)"
    );
    // /dev/net/tun, and nothing else but the standard pseudo devices.
    u.expect_not_yes("PrivateDevices", "a private /dev has no /dev/net/tun");
    u.expect(
        "DevicePolicy",
        "closed",
        "only the listed devices and /dev/null etc.",
    );
    assert_eq!(
        u.values("Service", "DeviceAllow"),
        ["/dev/net/tun rw"],
        "{f}: DeviceAllow=/dev/net/tun rw"
    );
    // /proc/sys/net/{ipv4,ipv6}/conf/<tun>/ must stay writable.
    u.expect_not_yes(
        "ProtectKernelTunables",
        "it makes /proc/sys read-only, and the node sets rp_filter and IPv6 sysctls on its TUN",
    );
    assert!(
        u.service("ProcSubset").is_none_or(|v| v == "all"),
        "{f}: ProcSubset=pid hides /proc/sys, which the node writes"
    );
    for key in ["ReadOnlyPaths", "InaccessiblePaths"] {
        assert!(
            u.values("Service", key)
                .iter()
                .all(|v| !v.contains("/proc/sys")),
            "{f}: {key}= covers /proc/sys, which the node writes"
        );
    }
    u.expect_not_yes(
        "PrivateUsers",
        "the node needs CAP_NET_ADMIN in the host's user namespace",
    );
    assert_eq!(
        u.list("RestrictAddressFamilies"),
        ["AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"],
        "{f}: UDP, the control socket and rtnetlink (address watching, `ip`)"
    );
    // sched_setaffinity (workers pinned to cores) is in @resources.
    assert!(
        !u.denied_syscalls().contains(&"@resources"),
        "{f}: ~@resources would forbid sched_setaffinity, which the node's workers use"
    );
    // The control socket's default lies in the runtime directory.
    u.expect(
        "RuntimeDirectory",
        "ntmtun",
        "/run/ntmtun holds the control socket",
    );
    let runtime = format!("/run/{}", u.service("RuntimeDirectory").unwrap());
    assert_eq!(
        Path::new(ntmtun::config::DEFAULT_CONTROL_SOCKET).parent(),
        Some(Path::new(&runtime)),
        "{f}: the default control_socket is not in {runtime}"
    );
    assert!(
        u.service("StateDirectory").is_none(),
        "{f}: the node keeps no state on disk"
    );
    u.expect(
        "KillMode",
        "mixed",
        "SIGTERM to the node only, so an `ip` it runs while cleaning up is not killed",
    );
    // `ip` must be reachable and executable from the service.
    for key in ["NoExecPaths", "ExecPaths", "ExecSearchPath"] {
        assert!(
            u.service(key).is_none(),
            "{f}: {key}= could keep the node from running `ip`"
        );
    }
    for env in u.values("Service", "Environment") {
        if let Some(path) = env.strip_prefix("PATH=") {
            assert!(
                path.split(':').any(|d| d == "/usr/sbin" || d == "/sbin"),
                "{f}: Environment=PATH={path} has no sbin directory for `ip`"
            );
        }
    }
}

#[test]
fn sysusers_declares_each_units_user() {
    let text = fs::read_to_string(repo_root().join(SYSUSERS))
        .unwrap_or_else(|e| panic!("read {SYSUSERS}: {e}"));
    // `u NAME ID "GECOS" HOME`: a system user and its same-named group.
    let users: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.first(), Some(&"u"), "{SYSUSERS}: not a `u` line: {l:?}");
            f[1]
        })
        .collect();
    for role in ROLES {
        let u = Unit::load(role.unit);
        let user = u.service("User").unwrap_or_default();
        assert!(
            users.contains(&user),
            "{}: User={user} is not declared in {SYSUSERS} ({users:?})",
            u.file
        );
    }
    let Some(sysusers) = find_in_path("systemd-sysusers") else {
        notice(&format!(
            "SKIPPED: systemd-sysusers is not installed; {SYSUSERS} was checked by this test's \
             reader only"
        ));
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir(root.path().join("etc")).unwrap();
    let out = Command::new(sysusers)
        .arg(format!("--root={}", root.path().display()))
        .arg("-")
        .stdin(fs::File::open(repo_root().join(SYSUSERS)).unwrap())
        .output()
        .expect("run systemd-sysusers");
    assert!(out.status.success(), "{}", describe_output(&out));
    let passwd = fs::read_to_string(root.path().join("etc/passwd")).unwrap_or_default();
    let group = fs::read_to_string(root.path().join("etc/group")).unwrap_or_default();
    for role in ROLES {
        let user = role.user();
        let entry = passwd
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap_or_else(|| panic!("systemd-sysusers created no {user}:\n{passwd}"));
        assert!(
            entry.ends_with("nologin"),
            "{user} should get no shell: {entry}"
        );
        assert!(
            group.lines().any(|l| l.starts_with(&format!("{user}:"))),
            "no group {user}:\n{group}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Layer 2: systemd-analyze, when installed.

/// A copy of the unit whose ExecStart= names the binary under test, since
/// `systemd-analyze verify` requires the executable to exist.
fn unit_copy_for_analysis(role: Role, dir: &Path) -> PathBuf {
    let bin = ntmtun_bin();
    assert!(
        !bin.contains(char::is_whitespace),
        "the test binary's path {bin:?} has whitespace; systemd-analyze would need quoting"
    );
    let text = fs::read_to_string(repo_root().join(UNIT_DIR).join(role.unit)).unwrap();
    let from = format!("ExecStart={INSTALLED_BIN} ");
    assert!(text.contains(&from), "{}: no `{from}`", role.unit);
    let path = dir.join(role.unit);
    fs::write(&path, text.replace(&from, &format!("ExecStart={bin} "))).unwrap();
    path
}

#[test]
fn systemd_analyze_verify_and_security() {
    let Some(analyze) = find_in_path("systemd-analyze") else {
        notice(
            "SKIPPED: `systemd-analyze verify` and `systemd-analyze security` on packaging/systemd/*.service: \
             systemd-analyze is not installed. The unit files were checked by this test's own \
             reader only (keys, ExecStart, capabilities, hardening options).",
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for role in ROLES {
        let unit = unit_copy_for_analysis(role, dir.path());
        let out = Command::new("timeout")
            .args(["-k", "5", "60"])
            .arg(&analyze)
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .expect("run systemd-analyze verify");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains(role.unit)).collect();
        assert!(
            out.status.success() && ours.is_empty(),
            "systemd-analyze verify {}: {}\n{}",
            role.unit,
            ours.join("\n"),
            describe_output(&out)
        );
        let others: Vec<&str> = stderr.lines().filter(|l| !l.contains(role.unit)).collect();
        if !others.is_empty() {
            notice(&format!(
                "NOTE: systemd-analyze verify {} printed lines about other units (this host's, \
                 not ours):\n{}",
                role.unit,
                others.join("\n")
            ));
        }

        let out = Command::new("timeout")
            .args(["-k", "5", "60"])
            .arg(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&unit)
            .output()
            .expect("run systemd-analyze security");
        let text = String::from_utf8_lossy(&out.stdout);
        let marker = format!("Overall exposure level for {}: ", role.unit);
        let Some(score) = text.lines().find_map(|l| {
            l.split_once(&marker)
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|s| s.parse::<f64>().ok())
        }) else {
            notice(&format!(
                "SKIPPED: systemd-analyze security --offline on {} gave no exposure level (systemd \
                 older than 250?): {}",
                role.unit,
                describe_output(&out)
            ));
            continue;
        };
        let max = if role.sub == "node" {
            MAX_EXPOSURE_NODE
        } else {
            MAX_EXPOSURE_UNPRIVILEGED
        };
        assert!(
            score <= max,
            "systemd-analyze security {}: exposure {score} is above {max}\n{}",
            role.unit,
            text
        );
        notice(&format!(
            "systemd-analyze: {} verifies cleanly; exposure {score} (limit {max})",
            role.unit
        ));
    }
}

// ------------------------------------------------------------------------------------------
// Layer 3: the lab. Each role runs as its unit would run it, emulated without systemd.

/// Runs the rest of the command line in a mount namespace (entered by `unshare --mount`) that
/// looks like the unit's: everything read-only except the service's own directory ($1, or `-`
/// for none), a fresh /proc with only the process's own entries if $2 is `pid`, and
/// /dev/net/tun with mode 0666, as systemd's udev rules create it on every systemd host
/// (whatever mode this machine gave it).
const SANDBOX_SH: &str = r#"set -e
rw=$1; procsub=$2; shift 2
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev/net
mknod -m 0666 /dev/net/tun c 10 200
if [ "$rw" != - ]; then mount --bind "$rw" "$rw"; fi
for m in $(awk '{print $2}' /proc/self/mounts | sort -u); do
    case $m in /proc|/proc/*|/dev|/dev/*|"$rw") continue ;; esac
    mount -o remount,bind,ro "$m" || { echo "sandbox: cannot make $m read-only" >&2; exit 1; }
done
if [ "$procsub" = pid ]; then mount -t proc -o subset=pid,hidepid=invisible proc /proc; fi
exec "$@"
"#;

/// What the unit does not ask for but the emulation cannot check either.
const NOT_EMULATED: &str = "SystemCallFilter=, RestrictAddressFamilies=, DeviceAllow= \
    (device cgroup), PrivateDevices=, PrivateUsers=, PrivateTmp=, ProtectKernelTunables=, \
    ProtectKernelModules=, ProtectKernelLogs=, ProtectClock=, ProtectHostname=, \
    MemoryDenyWriteExecute=, RestrictNamespaces=, LockPersonality=";

/// setpriv's capability list: "-all" plus the unit's capabilities.
fn setpriv_caps(caps: &[String]) -> String {
    let mut s = String::from("-all");
    for c in caps {
        let name = c
            .strip_prefix("CAP_")
            .unwrap_or_else(|| panic!("capability {c:?} does not start with CAP_"));
        s.push_str(&format!(",+{}", name.to_ascii_lowercase()));
    }
    s
}

/// A role started the way its unit would start it.
struct Sandboxed {
    role: Role,
    unit: Unit,
    uid: u32,
    bg: Bg,
    log: PathBuf,
    /// The stand-in for /etc/ntmtun/<role>.toml: edit it, then `reload_as_systemd_would`.
    config: PathBuf,
}

impl Sandboxed {
    fn log_tail(&self) -> String {
        format!(
            "\n----- last lines of {} -----\n{}",
            self.log.display(),
            file_tail(&self.log, 40)
        )
    }

    /// The process's identity, capabilities and no_new_privs, as the unit promises them.
    fn check_credentials(&self) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.bg.pid()))
            .unwrap_or_else(|e| panic!("{}: process gone? {e}{}", self.role.unit, self.log_tail()));
        let field = |name: &str| -> String {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
        };
        let comm = field("Name:");
        assert!(
            comm.starts_with("ntmtun"),
            "{}: pid {} is {comm}, not ntmtun",
            self.role.unit,
            self.bg.pid()
        );
        let uids: Vec<u32> = field("Uid:")
            .split_whitespace()
            .map(|u| u.parse().unwrap())
            .collect();
        assert!(
            uids.iter().all(|&u| u == self.uid),
            "{}: runs with UIDs {uids:?}, expected the unit's user (uid {}) everywhere",
            self.role.unit,
            self.uid
        );
        let mask = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
        let bounding = cap_mask(&self.unit.list("CapabilityBoundingSet"));
        let ambient = cap_mask(&self.unit.list("AmbientCapabilities"));
        assert_eq!(
            mask("CapBnd:"),
            bounding,
            "{}: bounding set",
            self.role.unit
        );
        assert_eq!(
            mask("CapEff:"),
            ambient,
            "{}: effective capabilities",
            self.role.unit
        );
        assert_eq!(
            mask("CapAmb:"),
            ambient,
            "{}: ambient capabilities",
            self.role.unit
        );
        if self.unit.is_yes("NoNewPrivileges") {
            assert_eq!(
                field("NoNewPrivs:"),
                "1",
                "{}: no_new_privs not set",
                self.role.unit
            );
        }
    }

    /// `systemctl reload`: runs the unit's ExecReload= with $MAINPID set, as root.
    fn reload_as_systemd_would(&self) {
        let cmd = self
            .unit
            .service("ExecReload")
            .unwrap_or_else(|| panic!("{}: no ExecReload=", self.role.unit))
            .replace("$MAINPID", &self.bg.pid().to_string());
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let st = Command::new(words[0])
            .args(&words[1..])
            .status()
            .unwrap_or_else(|e| panic!("{}: ExecReload={cmd}: {e}", self.role.unit));
        assert!(st.success(), "{}: ExecReload={cmd}: {st}", self.role.unit);
    }

    /// SIGTERM (the unit's KillSignal=), and a clean exit within TimeoutStopSec=.
    fn stop_as_systemd_would(&mut self) -> Duration {
        assert_eq!(self.unit.service("KillSignal"), Some("SIGTERM"));
        let limit = Duration::from_secs(seconds(self.unit.service("TimeoutStopSec").unwrap()));
        let t = Instant::now();
        self.bg.signal("TERM");
        match self.bg.wait_timeout(limit) {
            Some(st) if st.success() => t.elapsed(),
            Some(st) => panic!(
                "{}: exited with {st} after SIGTERM{}",
                self.role.unit,
                self.log_tail()
            ),
            None => {
                self.bg.stop();
                panic!(
                    "{}: still running {limit:?} after SIGTERM (TimeoutStopSec); systemd would \
                     SIGKILL it{}",
                    self.role.unit,
                    self.log_tail()
                )
            }
        }
    }
}

fn chown_r(path: &Path, uid: u32) {
    let out = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(path)
        .output()
        .expect("run chown");
    assert!(
        out.status.success(),
        "chown -R {}: {}",
        path.display(),
        describe_output(&out)
    );
}

fn chown(path: &Path, owner: &str) {
    let out = Command::new("chown")
        .arg(owner)
        .arg(path)
        .output()
        .expect("run chown");
    assert!(
        out.status.success(),
        "chown {owner} {}: {}",
        path.display(),
        describe_output(&out)
    );
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Writes the config as the operator installs it (owned by root, group = the service's user,
/// mode 0640, in a 0755 directory: the stand-in for /etc/ntmtun/) and prepares the writable
/// directory, then starts the role in `host` the way its unit would.
fn start_sandboxed(
    lab: &Lab,
    host: &str,
    role: Role,
    uid: u32,
    base: &Path,
    config: &str,
    rw: Option<&Path>,
) -> Sandboxed {
    let unit = Unit::load(role.unit);
    assert_eq!(
        unit.service("User"),
        Some(role.user().as_str()),
        "{}: the emulation runs the unit's User= as uid {uid}",
        role.unit
    );
    let etc = base.join(format!("{}-etc", role.sub));
    fs::create_dir_all(&etc).unwrap();
    set_mode(&etc, 0o755);
    let config_path = etc.join(role.config);
    fs::write(&config_path, config).unwrap();
    chown(&config_path, &format!("0:{uid}"));
    set_mode(&config_path, 0o640);
    if let Some(rw) = rw {
        chown_r(rw, uid);
        set_mode(rw, 0o700);
    }

    let procsub = unit.service("ProcSubset").unwrap_or("all").to_string();
    let bounding = setpriv_caps(&unit.list("CapabilityBoundingSet"));
    let ambient = setpriv_caps(&unit.list("AmbientCapabilities"));
    let rw_arg = rw.map_or("-".to_string(), |p| p.display().to_string());
    let uid_s = uid.to_string();
    let mut args: Vec<String> = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        SANDBOX_SH,
        "sandbox",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([rw_arg, procsub]);
    args.extend(
        [
            "setpriv",
            "--reuid",
            &uid_s,
            "--regid",
            &uid_s,
            "--clear-groups",
            "--bounding-set",
            &bounding,
            "--inh-caps",
            &ambient,
            "--ambient-caps",
            &ambient,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    if unit.is_yes("NoNewPrivileges") {
        args.push("--no-new-privs".into());
    }
    // A clean environment, as systemd gives: its PATH and the unit's Environment=.
    args.extend(["env".into(), "-i".into(), format!("PATH={SYSTEMD_PATH}")]);
    args.extend(
        unit.values("Service", "Environment")
            .iter()
            .map(|e| e.to_string()),
    );
    for word in unit.exec_start() {
        args.push(if word == INSTALLED_BIN {
            ntmtun_bin().to_string()
        } else if word == role.etc_config() {
            config_path.display().to_string()
        } else {
            word
        });
    }
    let out = lab.path(&format!("unit-{}.out", role.sub));
    let log = lab.path(&format!("unit-{}.log", role.sub));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let bg = lab.spawn(host, &argv, &out, &log);
    Sandboxed {
        role,
        unit,
        uid,
        bg,
        log,
        config: config_path,
    }
}

fn wait_udp_listen(lab: &Lab, host: &str, port: u16, s: &Sandboxed) {
    let filter = format!("sport = :{port}");
    let ok = wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        let out = lab.exec_t(host, 5, &["ss", "-Hlnu", &filter]);
        (out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty())
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "{}: nothing listens on UDP {port} after 15 s{}",
        s.role.unit,
        s.log_tail()
    );
}

/// `config` with the line `key = ...` replaced by `key = "value"`.
fn set_key(config: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let out: Vec<String> = config
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(&format!("{key} "))
                || l.trim_start().starts_with(&format!("{key}="))
            {
                found = true;
                format!("{key} = \"{value}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "no `{key}` line in the lab's config:\n{config}");
    out.join("\n") + "\n"
}

fn status_via(lab: &Lab, node: &str, socket: &Path) -> Result<serde_json::Value, String> {
    let out = lab.exec_t(
        node,
        10,
        &[
            ntmtun_bin(),
            "status",
            "--socket",
            socket.to_str().unwrap(),
            "--json",
        ],
    );
    if !out.status.success() {
        return Err(describe_output(&out));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", describe_output(&out)))
}

/// The sandboxed roles' logs and the lab's, for failure messages.
fn tails(lab: &Lab, roles: &[&Sandboxed], extra: &str) -> String {
    let mut s = extra.to_string();
    for r in roles {
        s.push_str(&r.log_tail());
    }
    s + &lab.logs_tail()
}

fn ping_ok(lab: &Lab, from: &str, to: &str) -> bool {
    lab.exec_t(
        from,
        5,
        &["ping", "-c", "1", "-W", "2", &format!("{to}.ntm.internal")],
    )
    .status
    .success()
}

#[test]
fn lab_dc_relay_and_node_run_under_their_units_restrictions() {
    let Some(lab) = Lab::up("symmetric") else {
        return;
    };
    for tool in ["setpriv", "unshare", "chown", "ss"] {
        assert!(
            find_in_path(tool).is_some(),
            "`{tool}` is needed (util-linux, iproute2)"
        );
    }
    assert!(
        lab.relays().iter().any(|r| r == "relay1"),
        "the symmetric lab started no relay1 (relays: {:?})\n{}",
        lab.relays(),
        lab.logs_tail()
    );
    let alice_vip = lab.virtual_ip("alice");
    // Replace the DC, the relay and alice (started by lab.sh as root) with their units'
    // emulations; bob stays as lab.sh started him.
    for name in ["alice", "relay1", "dc"] {
        lab.stop(name);
    }

    let base = tempfile::Builder::new()
        .prefix("ntmtun-units-")
        .tempdir()
        .expect("tempdir");
    set_mode(base.path(), 0o755);
    // UIDs with no account behind them (from systemd's DynamicUser= range, 61184-65519), standing
    // in for the system users ntmtun-dc, ntmtun-relay and ntmtun-node.
    let uid0 = 61184 + (std::process::id() % 1400) * 3;

    // The DC: its database moves to the stand-in for StateDirectory= (/var/lib/ntmtun), at the
    // documented state_dir (/var/lib/ntmtun/dc), so enrolments survive as they must.
    let state = base.path().join("dc-state");
    let state_dir = state.join("dc");
    fs::create_dir_all(&state_dir).unwrap();
    for entry in fs::read_dir(lab.path("dc-state")).expect("the lab's DC state") {
        let entry = entry.unwrap();
        fs::copy(entry.path(), state_dir.join(entry.file_name())).unwrap();
    }
    let dc_toml = fs::read_to_string(lab.path("dc.toml")).unwrap();
    let dc_toml = set_key(&dc_toml, "state_dir", state_dir.to_str().unwrap());
    let mut dc = start_sandboxed(&lab, "dc", DC, uid0, base.path(), &dc_toml, Some(&state));
    wait_udp_listen(&lab, "dc", ntmtun::config::DEFAULT_DC_PORT, &dc);
    dc.check_credentials();

    // The relay: no writable directory at all.
    let relay_toml = fs::read_to_string(lab.path("relay1.toml")).unwrap();
    let mut relay = start_sandboxed(
        &lab,
        "relay1",
        RELAY,
        uid0 + 1,
        base.path(),
        &relay_toml,
        None,
    );
    wait_udp_listen(&lab, "relay1", ntmtun::config::DEFAULT_RELAY_PORT, &relay);
    relay.check_credentials();

    // The node: the stand-in for RuntimeDirectory= (/run/ntmtun) holds the control socket.
    let runtime = base.path().join("node-runtime");
    fs::create_dir_all(&runtime).unwrap();
    let socket = runtime.join("ntmtun.sock");
    let node_toml = fs::read_to_string(lab.path("alice.toml")).unwrap();
    let node_toml = set_key(&node_toml, "control_socket", socket.to_str().unwrap());
    let mut node = start_sandboxed(
        &lab,
        "alice",
        NODE,
        uid0 + 2,
        base.path(),
        &node_toml,
        Some(&runtime),
    );

    let mut last = String::new();
    let registered =
        wait_for(
            Duration::from_secs(30),
            Duration::from_millis(200),
            || match status_via(&lab, "alice", &socket) {
                Ok(st) if st["dc"]["state"] == "registered" => Some(st),
                Ok(st) => {
                    last = st.to_string();
                    None
                }
                Err(e) => {
                    last = e;
                    None
                }
            },
        );
    let Some(st) = registered else {
        panic!(
            "{}",
            tails(
                &lab,
                &[&dc, &relay, &node],
                &format!("alice (sandboxed) did not register in 30 s: {last}")
            )
        );
    };
    node.check_credentials();
    assert_eq!(
        st["virtual_ip"].as_str(),
        Some(alice_vip.to_string().as_str()),
        "alice's virtual IP changed when the DC moved into its unit's sandbox{}",
        tails(&lab, &[&dc, &relay, &node], "")
    );
    // The host changes a node makes, all done here without root: TUN address, sysctl, rules.
    let rp = lab.exec_ok("alice", &["cat", "/proc/sys/net/ipv4/conf/ntm0/rp_filter"]);
    assert_eq!(
        rp.trim(),
        "2",
        "the node could not set rp_filter on its TUN{}",
        tails(&lab, &[&dc, &relay, &node], "")
    );
    let rules = lab.exec_ok("alice", &["ip", "rule", "show"]);
    assert!(
        rules.contains("20052:") && rules.contains("20053:"),
        "the node's policy rules are missing:\n{rules}{}",
        tails(&lab, &[&dc, &relay, &node], "")
    );

    // Traffic both ways, by name: per-destination NATs, so through the sandboxed relay.
    let both = wait_for(Duration::from_secs(90), Duration::from_secs(1), || {
        (ping_ok(&lab, "alice", "bob") && ping_ok(&lab, "bob", "alice")).then_some(())
    });
    assert!(
        both.is_some(),
        "{}",
        tails(
            &lab,
            &[&dc, &relay, &node],
            "no ping between alice and bob within 90 s"
        )
    );
    let st = status_via(&lab, "alice", &socket)
        .unwrap_or_else(|e| panic!("{}", tails(&lab, &[&dc, &relay, &node], &e)));
    let peer = st["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "bob"))
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{}",
                tails(
                    &lab,
                    &[&dc, &relay, &node],
                    &format!("no peer bob in alice's status: {st}")
                )
            )
        });
    assert_eq!(
        peer["path"],
        "relay",
        "alice-bob should be relayed behind per-destination NATs: {peer}{}",
        tails(&lab, &[&dc, &relay, &node], "")
    );

    // `systemctl reload`: each role re-reads the file in place (not a copy made at start) and
    // applies a key it can change live, while still running as its unit's user.
    let prepend = |s: &Sandboxed, line: &str| {
        let text = fs::read_to_string(&s.config).unwrap();
        fs::write(&s.config, format!("{line}\n{text}")).unwrap();
    };
    let dc_text = fs::read_to_string(&dc.config).unwrap();
    let rotated = dc_text.replace("auth_keys = [", "auth_keys = [\"unit-reload-token\", ");
    assert_ne!(rotated, dc_text, "the lab's dc.toml has no auth_keys line");
    fs::write(&dc.config, rotated).unwrap();
    prepend(&relay, "session_rate_mbps = 500");
    prepend(&node, "keepalive_secs = 20");
    for (s, applied) in [
        (&dc, "auth_keys reloaded"),
        (&relay, "session_rate_mbps reloaded"),
        (&node, "reload: applying"),
    ] {
        s.reload_as_systemd_would();
        let ok = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
            fs::read_to_string(&s.log)
                .is_ok_and(|t| t.contains(applied))
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "{}: `systemctl reload` (ExecReload=) did not apply the edited {} (no {applied:?} \
             in its log){}",
            s.role.unit,
            s.config.display(),
            tails(&lab, &[&dc, &relay, &node], "")
        );
    }
    assert!(
        ping_ok(&lab, "alice", "bob"),
        "{}",
        tails(
            &lab,
            &[&dc, &relay, &node],
            "no ping alice -> bob after the reloads"
        )
    );

    // Stopping as systemd does: SIGTERM, a clean exit within TimeoutStopSec, nothing left.
    let node_took = node.stop_as_systemd_would();
    let rules = lab.exec_ok("alice", &["ip", "rule", "show"]);
    assert!(
        !rules.contains("20052:") && !rules.contains("20053:"),
        "policy rules left behind after SIGTERM:\n{rules}{}",
        tails(&lab, &[&dc, &relay, &node], "")
    );
    assert!(
        !lab.exec("alice", &["ip", "link", "show", "ntm0"])
            .status
            .success(),
        "ntm0 still exists after SIGTERM{}",
        tails(&lab, &[&dc, &relay, &node], "")
    );
    assert!(!socket.exists(), "the control socket was not removed");
    let relay_took = relay.stop_as_systemd_would();
    let dc_took = dc.stop_as_systemd_would();

    notice(&format!(
        "lab: DC (uid {}, no capabilities), relay (uid {}, no capabilities) and node (uid {}, \
         CAP_NET_ADMIN only) ran under their units' identity, capabilities, no_new_privs, \
         read-only file system and config (root:user 0640, re-read by ExecReload=); alice kept {alice_vip}; alice<->bob relayed; \
         SIGTERM stopped them in {node_took:?} (node, rules removed), {relay_took:?} (relay), \
         {dc_took:?} (DC).\nNOT EMULATED (systemd-analyze checks the syntax only): \
         {NOT_EMULATED}. /dev/net/tun was given mode 0666 as systemd's udev rules do.",
        dc.uid, relay.uid, node.uid
    ));
}
