//! Stub DNS mode against a real systemd-resolved (issue 6, part 3). Needs root.
//!
//! The lab's namespaces run no resolved, and installing Debian's package on the host would
//! rewrite its /etc/resolv.conf, so scripts/resolved-lab.sh downloads and unpacks the package
//! under target/ and runs the daemon in alice's namespace inside a private mount namespace
//! (its own /run, /etc/systemd, /etc/resolv.conf -> 127.0.0.53 and D-Bus system bus). The node
//! and every client below join that mount namespace with `nsenter`, as processes on a host
//! with resolved would share it. The test skips, saying so, only when the package cannot be
//! downloaded.

mod common;

use common::{describe_output, wait_for, Lab};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/resolved-lab.sh");
/// `resolved-lab.sh fetch` exits with this when the packages cannot be downloaded.
const NO_PACKAGES: i32 = 3;

/// Downloads and unpacks systemd-resolved (once) under target/; `None` when no package
/// mirror answers.
fn fetch() -> Option<PathBuf> {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("resolved-cache");
    let out = Command::new("timeout")
        .args(["-k", "10", "300", SCRIPT, "fetch"])
        .arg(&cache)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/resolved-lab.sh");
    match out.status.code() {
        Some(0) => Some(cache),
        Some(NO_PACKAGES) => {
            eprintln!(
                "SKIPPED: the systemd-resolved package cannot be downloaded, so stub mode is not \
                 tested against a real resolved:\n{}",
                describe_output(&out)
            );
            None
        }
        _ => panic!("resolved-lab.sh fetch failed\n{}", describe_output(&out)),
    }
}

/// A systemd-resolved (and its D-Bus system bus) in one lab host's namespace, in a private
/// mount namespace held by the process recorded as `resolved`.
struct Resolved<'a> {
    lab: &'a Lab,
    host: &'static str,
    cache: PathBuf,
    holder: String,
}

impl<'a> Resolved<'a> {
    /// Starts it with the package's defaults plus `settings` ("DNSOverTLS=yes", ...), the lab's
    /// DNS server as upstream; waits (bounded) until it answers on the bus.
    fn start(lab: &'a Lab, host: &'static str, cache: &Path, settings: &[&str]) -> Self {
        let dir = lab.path("resolved");
        let _ = fs::remove_file(dir.join("ready"));
        let mut args = vec![
            "spawn",
            &lab.prefix,
            host,
            "resolved",
            SCRIPT,
            "host",
            cache.to_str().unwrap(),
            dir.to_str().unwrap(),
            common::addr::DNS_V4,
        ];
        args.extend_from_slice(settings);
        let out = lab.lab_sh(&args);
        assert!(out.status.success(), "{}", describe_output(&out));
        let ready = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
            dir.join("ready").exists().then_some(())
        });
        assert!(
            ready.is_some(),
            "systemd-resolved did not start\n{}\n{}\n{}",
            common::file_tail(&lab.path("resolved.log"), 20),
            common::file_tail(&dir.join("resolved.log"), 40),
            common::file_tail(&dir.join("dbus.log"), 20),
        );
        Resolved {
            lab,
            host,
            cache: cache.to_path_buf(),
            holder: lab.pid("resolved").to_string(),
        }
    }

    /// Runs `args` in the host's namespaces and resolved's mount namespace (bounded).
    fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["nsenter", "-t", &self.holder, "-m", "--"];
        full.extend_from_slice(args);
        self.lab.exec_t(self.host, 20, &full)
    }

    fn stdout(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn resolvectl(&self, args: &[&str]) -> String {
        let bin = self.cache.join("bin/resolvectl");
        let mut full = vec![bin.to_str().unwrap()];
        full.extend_from_slice(args);
        let out = self.exec(&full);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `dig +short NAME` at resolved's stub listener, as an unmodified app would ask.
    fn dig(&self, name: &str) -> String {
        self.stdout(&["dig", "+short", "+time=3", "+tries=2", "@127.0.0.53", name])
            .trim()
            .to_string()
    }

    /// Starts the node `name` (recorded as `stubnode`) in this mount namespace, resolvectl
    /// on its PATH, and waits until both nodes are registered and the node has registered its
    /// stub with resolved (which follows the DC's answer). Returns what this run logged
    /// (`lab.sh spawn` starts the log afresh).
    fn start_node(&self, node: &str) -> String {
        let path = format!(
            "PATH={}:{}",
            self.cache.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let toml = self.lab.path(&format!("{node}.toml"));
        let out = self.lab.lab_sh(&[
            "spawn",
            &self.lab.prefix,
            self.host,
            "stubnode",
            "nsenter",
            "-t",
            &self.holder,
            "-m",
            "--",
            "env",
            &path,
            "RUST_LOG=info",
            common::ntmtun_bin(),
            "node",
            "--config",
            toml.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", describe_output(&out));
        self.lab.wait_registered(Duration::from_secs(20));
        let log = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
            let log = self.node_log();
            log.contains("stub resolver registered").then_some(log)
        });
        log.unwrap_or_else(|| {
            panic!(
                "no \"stub resolver registered\" within 20 s\n{}",
                self.logs()
            )
        })
    }

    fn node_log(&self) -> String {
        fs::read_to_string(self.lab.path("stubnode.log")).unwrap_or_default()
    }

    /// The failure context: the node's log and resolved's.
    fn logs(&self) -> String {
        format!(
            "----- stubnode.log -----\n{}\n----- resolved -----\n{}",
            common::file_tail(&self.lab.path("stubnode.log"), 40),
            common::file_tail(&self.lab.path("resolved/resolved.log"), 40)
        )
    }

    fn stop(&self) {
        self.lab.stop("resolved");
    }
}

fn has_tun(lab: &Lab, node: &str) -> bool {
    lab.exec(node, &["ip", "link", "show", "dev", "ntm0"])
        .status
        .success()
}

/// The node's link in resolved: only the stub, only the domain and its reverse zones, none of
/// the host's protocols.
fn assert_link_registered(r: &Resolved) {
    let link = r.resolvectl(&["status", "ntm0"]);
    for want in [
        "DNS Servers: 198.18.0.0",
        "~ntm.internal",
        "~18.198.in-addr.arpa",
        "~19.198.in-addr.arpa",
        "-DefaultRoute",
        "-LLMNR",
        "-mDNS",
        "-DNSOverTLS",
        "DNSSEC=no",
    ] {
        assert!(
            link.contains(want),
            "`resolvectl status ntm0` lacks {want:?}:\n{link}\n{}",
            r.logs()
        );
    }
}

/// Names of the domain resolve through resolved -> the node's stub -> the DC.
fn assert_domain_resolves(r: &Resolved, lab: &Lab) {
    let bob = lab.virtual_ip("bob").to_string();
    let q = r.resolvectl(&["query", "bob.ntm.internal"]);
    assert!(
        q.contains(&bob) && q.contains("link: ntm0"),
        "resolvectl query bob.ntm.internal:\n{q}\n{}",
        r.logs()
    );
    assert_eq!(r.dig("bob.ntm.internal"), bob, "{}", r.logs());
    let rev = r.resolvectl(&["query", &bob]);
    assert!(rev.contains("bob.ntm.internal"), "{rev}\n{}", r.logs());
}

#[test]
fn stub_mode_with_a_real_systemd_resolved() {
    let Some(lab) = Lab::up("lan") else { return };
    let Some(cache) = fetch() else { return };
    // alice leaves capture mode and comes back in stub mode on a host running resolved.
    lab.stop("alice");
    let toml = lab.path("alice.toml");
    let text = fs::read_to_string(&toml).unwrap();
    fs::write(&toml, text.replace("mode = \"capture\"", "mode = \"stub\"")).unwrap();
    let state = lab.path("alice.dns-state");

    let r = Resolved::start(&lab, "alice", &cache, &[]);
    let log = r.start_node("alice");
    assert_eq!(lab.status_json("alice")["dns"]["mode"], "stub");
    assert!(log.contains("stub resolver registered"), "{}", r.logs());
    assert_link_registered(&r);
    assert_domain_resolves(&r, &lab);
    // Other names still go to the upstream, not into the tunnel.
    let www = r.resolvectl(&["query", "www.example.test"]);
    assert!(
        www.contains("198.51.100.80") && !www.contains("ntm0"),
        "{www}\n{}",
        r.logs()
    );
    assert_eq!(r.dig("www.example.test"), "198.51.100.80");
    // A query of a routed zone the stub cannot answer itself is not forwarded back to
    // resolved (alice's resolvers default to 127.0.0.53 here): SERVFAIL, not a timeout.
    let soa = r.stdout(&[
        "dig",
        "+time=5",
        "+tries=1",
        "@127.0.0.53",
        "SOA",
        "18.198.in-addr.arpa",
    ]);
    assert!(soa.contains("status: SERVFAIL"), "{soa}\n{}", r.logs());
    // An unmodified app (glibc through /etc/resolv.conf -> 127.0.0.53) reaches bob by name.
    let ping = r.exec(&["ping", "-c", "1", "-W", "2", "bob.ntm.internal"]);
    assert!(
        ping.status.success(),
        "ping bob.ntm.internal\n{}\n{}",
        describe_output(&ping),
        r.logs()
    );

    // SIGTERM: the settings are reverted while the link still exists, then the link goes.
    lab.stop("stubnode");
    assert!(
        r.node_log()
            .contains("systemd-resolved settings of the TUN reverted"),
        "no revert at SIGTERM\n{}",
        r.logs()
    );
    let status = r.resolvectl(&["status"]);
    assert!(
        !status.contains("198.18.0.0") && !status.contains("ntm.internal"),
        "resolved keeps the node's settings after SIGTERM:\n{status}"
    );
    assert_eq!(r.dig("bob.ntm.internal"), "", "bob still resolves");
    assert!(!state.exists(), "the DNS state file survived SIGTERM");

    // SIGKILL leaves the state file; the next start reverts and registers again.
    r.start_node("alice");
    lab.signal("stubnode", "KILL");
    let gone = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        (!has_tun(&lab, "alice")).then_some(())
    });
    assert!(gone.is_some(), "alice did not die");
    assert!(state.exists(), "no state file after SIGKILL");
    assert!(!r.resolvectl(&["status"]).contains("198.18.0.0"));
    let log = r.start_node("alice");
    assert!(
        log.contains("undoing the DNS changes of a previous run")
            && log.contains("systemd-resolved settings of the TUN reverted")
            && log.contains("stub resolver registered"),
        "{}",
        r.logs()
    );
    assert_link_registered(&r);
    assert_domain_resolves(&r, &lab);
    lab.stop("stubnode");
    r.stop();

    // A hardened host (DNS-over-TLS and DNSSEC required globally): the unsigned, plain-text
    // stub still answers, because the node turns both off for its link.
    let r = Resolved::start(&lab, "alice", &cache, &["DNSOverTLS=yes", "DNSSEC=yes"]);
    r.start_node("alice");
    assert_link_registered(&r);
    assert_domain_resolves(&r, &lab);
    lab.stop("stubnode");
    r.stop();
}

/// Stub mode with federation: alice (domain x) runs stub mode under a real resolved; her DC
/// federates with dc2 (domain y). The TUN link carries both domains and both reverse zones, so
/// resolved sends bob's name in y to the stub, which answers it (forward, reverse, by ping);
/// SIGTERM reverts the link.
#[test]
fn stub_mode_routes_federated_domains_to_the_stub() {
    let Some(lab) = Lab::up("fed") else { return };
    let Some(cache) = fetch() else { return };
    lab.stop("alice");
    let toml = lab.path("alice.toml");
    let text = fs::read_to_string(&toml).expect("read alice.toml");
    let stub = text.replace("mode = \"capture\"", "mode = \"stub\"");
    assert_ne!(stub, text, "alice.toml has no capture mode to switch");
    fs::write(&toml, stub).expect("write alice.toml");
    let r = Resolved::start(&lab, "alice", &cache, &[]);
    r.start_node("alice");
    let link = wait_for(Duration::from_secs(30), Duration::from_millis(500), || {
        let l = r.resolvectl(&["status", "ntm0"]);
        l.contains("~y.ntm.internal").then_some(l)
    });
    let link = link.unwrap_or_else(|| {
        panic!(
            "the federated domain never reached the link:\n{}\n{}",
            r.resolvectl(&["status", "ntm0"]),
            r.logs()
        )
    });
    for zone in [
        "~x.ntm.internal",
        "~18.198.in-addr.arpa",
        "~19.198.in-addr.arpa",
    ] {
        assert!(link.contains(zone), "{zone} missing on the link:\n{link}");
    }
    let bob = lab.virtual_ip("bob").to_string();
    let q = r.resolvectl(&["query", "bob.y.ntm.internal"]);
    assert!(
        q.contains(&bob) && q.contains("link: ntm0"),
        "{q}\n{}",
        r.logs()
    );
    assert_eq!(r.dig("bob.y.ntm.internal"), bob, "{}", r.logs());
    let rev = r.resolvectl(&["query", &bob]);
    assert!(rev.contains("bob.y.ntm.internal"), "{rev}\n{}", r.logs());
    let ping = r.exec(&["ping", "-c", "1", "-W", "2", "bob.y.ntm.internal"]);
    assert!(
        ping.status.success(),
        "{}\n{}",
        describe_output(&ping),
        r.logs()
    );
    lab.stop("stubnode");
    let status = r.resolvectl(&["status"]);
    assert!(
        !status.contains("y.ntm.internal"),
        "the link's domains outlived the node:\n{status}"
    );
    r.stop();
}
