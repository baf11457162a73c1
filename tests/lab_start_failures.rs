//! Nothing starts half-configured (issue "Hostile networks and faults", part 6): a node whose
//! start fails after its config was accepted (TUN name taken, `listen_port` or `metrics_listen`
//! in use, another node on the control socket) exits non-zero with an error naming the key, and
//! leaves no TUN device and none of ntmtun's policy rules (fwmark 0x4e54, priorities 20052 and
//! 20053) or routes (table 20053) behind, nor takes a running node's away. A SIGTERMed node
//! removes its own. Needs root.

mod common;

use common::{describe_output, Lab};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// ntmtun's footprint on a host's network: its TUN (if present), its rules and its routes.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    tun: bool,
    rules: Vec<String>,
    routes: Vec<String>,
}

impl Footprint {
    fn is_empty(&self) -> bool {
        !self.tun && self.rules.is_empty() && self.routes.is_empty()
    }
}

fn footprint(lab: &Lab, host: &str, tun: &str) -> Footprint {
    let tun_present = lab
        .exec(host, &["ip", "link", "show", "dev", tun])
        .status
        .success();
    let mut rules = Vec::new();
    let mut routes = Vec::new();
    for family in ["-4", "-6"] {
        let out = lab.exec_ok(host, &["ip", family, "rule", "show"]);
        rules.extend(
            out.lines()
                .filter(|l| {
                    l.starts_with("20052:") || l.starts_with("20053:") || l.contains("0x4e54")
                })
                .map(|l| format!("{family} {l}")),
        );
        // An empty or absent table is not an error worth failing on: `ip` says so on stderr.
        let out = lab.exec(host, &["ip", family, "route", "show", "table", "20053"]);
        routes.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| format!("{family} {l}")),
        );
    }
    Footprint {
        tun: tun_present,
        rules,
        routes,
    }
}

/// `base` (a node config `lab.sh start` wrote) with some `key = value` lines replaced or added
/// before the `[dns]` table, written 0600 as `RUN/NAME.toml`.
fn variant(lab: &Lab, base: &str, name: &str, set: &[(&str, &str)]) -> PathBuf {
    let text = fs::read_to_string(lab.path(&format!("{base}.toml"))).expect("read node config");
    let (top, dns) = text.split_at(text.find("[dns]").expect("config has a [dns] table"));
    let mut lines: Vec<String> = top
        .lines()
        .filter(|l| !set.iter().any(|(k, _)| l.starts_with(&format!("{k} ="))))
        .map(String::from)
        .collect();
    lines.extend(set.iter().map(|(k, v)| format!("{k} = {v}")));
    let path = lab.path(&format!("{name}.toml"));
    fs::write(&path, format!("{}\n\n{dns}", lines.join("\n"))).expect("write config");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod config");
    path
}

/// Runs a node that must fail to start; checks its exit and that stderr names `wants`.
fn failing_start(lab: &Lab, host: &str, config: &Path, wants: &[&str]) {
    let out = lab.exec_t(
        host,
        30,
        &[
            common::ntmtun_bin(),
            "node",
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && out.status.code() != Some(124),
        "[{host}] a node with {} started (or hung)\n{}",
        config.display(),
        describe_output(&out)
    );
    for w in wants {
        assert!(
            err.contains(w),
            "[{host}] the error lacks {w:?}\n{}",
            describe_output(&out)
        );
    }
    assert!(
        ["expected", "set "].iter().any(|f| err.contains(f)),
        "[{host}] the error suggests no fix\n{}",
        describe_output(&out)
    );
}

/// A Python process holding `kind` (udp6 dual-stack or tcp4) `addr`:`port` in `host`.
fn hold_port(lab: &Lab, host: &str, kind: &str, addr: &str, port: u16) -> common::Bg {
    let script = match kind {
        "udp" => format!(
            "import socket,time\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
             s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\ns.bind(('{addr}',{port}))\n\
             print('bound',flush=True)\ntime.sleep(120)"
        ),
        _ => format!(
            "import socket,time\ns=socket.socket()\ns.bind(('{addr}',{port}))\ns.listen()\n\
             print('bound',flush=True)\ntime.sleep(120)"
        ),
    };
    let out = lab.path(&format!("hold-{port}.out"));
    let bg = lab.spawn(
        host,
        &["timeout", "150", "python3", "-c", &script],
        &out,
        &lab.path(&format!("hold-{port}.log")),
    );
    let ok = common::wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        fs::read_to_string(&out)
            .ok()
            .filter(|s| s.contains("bound"))
    });
    assert!(
        ok.is_some(),
        "could not hold {kind} port {port} in {host}: {}",
        common::file_tail(&lab.path(&format!("hold-{port}.log")), 10)
    );
    bg
}

#[test]
fn failed_starts_leave_nothing_and_sigterm_cleans_up() {
    let Some(lab) = Lab::up("lan") else { return };

    // A running node's footprint, so the checks below can see one.
    let alice = footprint(&lab, "alice", "ntm0");
    assert!(
        alice.tun && !alice.rules.is_empty() && !alice.routes.is_empty(),
        "a registered node has no TUN, rules or routes: {alice:?}\n{}",
        lab.logs_tail()
    );

    // SIGTERM: bob removes everything he added.
    assert!(!footprint(&lab, "bob", "ntm0").is_empty());
    lab.stop("bob");
    let bob = footprint(&lab, "bob", "ntm0");
    assert!(
        bob.is_empty(),
        "after SIGTERM bob left {bob:?}\n{}",
        lab.logs_tail()
    );

    // Late failures in bob's namespace (nothing of ntmtun there now).
    lab.exec_ok("bob", &["ip", "link", "add", "ntm0", "type", "bridge"]);
    let cfg = variant(&lab, "bob", "bad-tun", &[]);
    failing_start(&lab, "bob", &cfg, &["\"ntm0\"", "`tun`"]);
    let after = footprint(&lab, "bob", "ntm0");
    assert!(
        after.tun && after.rules.is_empty() && after.routes.is_empty(),
        "the other ntm0 must stay, and nothing else appear: {after:?}"
    );
    lab.exec_ok("bob", &["ip", "link", "del", "ntm0"]);

    let mut held = hold_port(&lab, "bob", "udp", "::", 41000);
    let cfg = variant(&lab, "bob", "bad-port", &[("listen_port", "41000")]);
    failing_start(&lab, "bob", &cfg, &["41000", "`listen_port`"]);
    let after = footprint(&lab, "bob", "ntm0");
    assert!(after.is_empty(), "listen_port in use left {after:?}");
    held.stop();

    let mut held = hold_port(&lab, "bob", "tcp", "127.0.0.1", 9100);
    failing_start(
        &lab,
        "bob",
        &variant(&lab, "bob", "bad-metrics", &[]),
        &["127.0.0.1:9100", "`metrics_listen`"],
    );
    let after = footprint(&lab, "bob", "ntm0");
    assert!(after.is_empty(), "metrics_listen in use left {after:?}");
    held.stop();

    // A second node next to a running one must fail without touching the first.
    let sock2 = format!("{:?}", lab.path("second.sock").display().to_string());
    let cfg = variant(
        &lab,
        "alice",
        "second-tun",
        &[
            ("control_socket", &sock2),
            ("metrics_listen", "\"127.0.0.1:9101\""),
        ],
    );
    failing_start(&lab, "alice", &cfg, &["\"ntm0\"", "`tun`"]);
    let cfg = variant(&lab, "alice", "second-socket", &[("tun", "\"ntm1\"")]);
    failing_start(&lab, "alice", &cfg, &["control socket", "`control_socket`"]);
    assert_eq!(
        footprint(&lab, "alice", "ntm0"),
        alice,
        "a failed second node changed the running node's rules or routes"
    );
    assert!(!footprint(&lab, "alice", "ntm1").tun);

    // The real bob starts again and gets his footprint back.
    lab.restart_node("bob");
    lab.wait_registered(Duration::from_secs(20));
    let ok = common::wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        let f = footprint(&lab, "bob", "ntm0");
        (f.tun && !f.rules.is_empty() && !f.routes.is_empty()).then_some(())
    });
    assert!(
        ok.is_some(),
        "bob restarted without his rules\n{}",
        lab.logs_tail()
    );
}
