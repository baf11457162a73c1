//! Operations in the lab (issue 6, parts 3, 4 and 6): SIGHUP reload without dropping tunnels,
//! SIGTERM cleanup and crash leftovers, stub DNS mode falling back to capture where
//! systemd-resolved does not run (lab namespaces have none), and the metrics. Needs root.

mod common;

use common::{wait_for, Lab};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// The value of the first sample of `name` whose labels contain every `labels` fragment.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| labels.iter().all(|f| l.contains(f)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn dig_short(lab: &Lab, host: &str, name: &str) -> String {
    let out = lab.exec_t(host, 20, &["dig", "+short", "+time=3", "+tries=2", name]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `ip rule` lines of the node's DNS capture (priorities 20052 and 20053).
fn capture_rules(lab: &Lab, node: &str) -> Vec<String> {
    lab.exec_ok(node, &["ip", "-4", "rule", "show"])
        .lines()
        .filter(|l| l.starts_with("20052:") || l.starts_with("20053:"))
        .map(str::to_string)
        .collect()
}

fn has_tun(lab: &Lab, node: &str) -> bool {
    lab.exec(node, &["ip", "link", "show", "dev", "ntm0"])
        .status
        .success()
}

fn log_has(lab: &Lab, file: &str, needle: &str) -> bool {
    fs::read_to_string(lab.path(file)).is_ok_and(|t| t.contains(needle))
}

/// Rewrites a config file the lab wrote, keeping its mode (0600).
fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fs::write(path, f(text)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn sighup_reloads_auth_keys_while_tunnels_keep_flowing() {
    let Some(lab) = Lab::up("lan") else { return };
    let alice_vip = lab.virtual_ip("alice");
    assert!(
        lab.ping_once("bob", "alice"),
        "no tunnel\n{}",
        lab.logs_tail()
    );

    // A steady ping through the tunnel for the whole reload.
    let ping_out = lab.path("reload-ping.out");
    let mut ping = lab.spawn(
        "bob",
        &[
            "ping",
            "-i",
            "0.2",
            "-c",
            "60",
            "-W",
            "1",
            &alice_vip.to_string(),
        ],
        &ping_out,
        &lab.path("reload-ping.err"),
    );

    // A bad file is refused and the DC keeps running with the old one.
    let dc_toml = lab.path("dc.toml");
    let good = fs::read_to_string(&dc_toml).unwrap();
    edit(&dc_toml, |t| t.replace("auth_keys = [", "auth_keys = 7 #["));
    lab.signal("dc", "HUP");
    let refused = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        log_has(&lab, "dc.log", "reload refused").then_some(())
    });
    assert!(
        refused.is_some(),
        "bad config not refused\n{}",
        lab.logs_tail()
    );

    // The new key, and a key that needs a restart (named in a warning).
    fs::write(&dc_toml, &good).unwrap();
    edit(&dc_toml, |t| {
        format!(
            "node_expiry_secs = 120\n{}",
            t.replace("auth_keys = [", "auth_keys = [\"rotated-token\", ")
        )
    });
    lab.signal("dc", "HUP");
    let applied = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        log_has(&lab, "dc.log", "auth_keys reloaded").then_some(())
    });
    assert!(
        applied.is_some(),
        "auth_keys not reloaded\n{}",
        lab.logs_tail()
    );
    assert!(
        log_has(&lab, "dc.log", "restart to apply: node_expiry_secs"),
        "no restart warning for node_expiry_secs\n{}",
        lab.logs_tail()
    );

    // A new node enrols with the new key (in the dns host's namespace, DNS hook off).
    let key = lab.exec_ok("dns", &[common::ntmtun_bin(), "keygen"]);
    let carol_toml = lab.path("carol.toml");
    let carol_sock = lab.path("carol.sock");
    fs::write(
        &carol_toml,
        format!(
            "name = \"carol\"\nprivate_key = \"{}\"\ndc = [\"198.51.100.10:7446\"]\n\
             dc_public_key = \"{}\"\nauth_key = \"rotated-token\"\ntun = \"ntm0\"\n\
             control_socket = \"{}\"\n\n[dns]\nmode = \"off\"\n",
            key.trim(),
            fs::read_to_string(lab.path("dc.pub")).unwrap().trim(),
            carol_sock.display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &carol_toml,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = lab.lab_sh(&[
        "spawn",
        &lab.prefix,
        "dns",
        "carol",
        common::ntmtun_bin(),
        "node",
        "--config",
        carol_toml.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::describe_output(&out));
    let registered = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        let out = lab.exec_t(
            "dns",
            5,
            &[
                common::ntmtun_bin(),
                "status",
                "--socket",
                carol_sock.to_str().unwrap(),
                "--json",
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["dc"]["state"] == "registered").then_some(())
    });
    assert!(
        registered.is_some(),
        "carol did not enrol with the reloaded key\n{}\n{}",
        common::file_tail(&lab.path("carol.log"), 30),
        lab.logs_tail()
    );
    assert!(!dig_short(&lab, "alice", "carol.ntm.internal").is_empty());

    // The ping never stopped: every one answered.
    let st = ping.wait_timeout(Duration::from_secs(40));
    let text = fs::read_to_string(&ping_out).unwrap_or_default();
    assert!(
        st.is_some_and(|s| s.success()) && text.contains(" 0% packet loss"),
        "the tunnel dropped packets during the reload:\n{text}\n{}",
        lab.logs_tail()
    );

    // Metrics: registrations on the DC; per-peer traffic by path and DNS on the nodes.
    let dc = lab.metrics("dc");
    assert!(
        metric(&dc, "ntmtun_dc_registrations_total", &[]).is_some_and(|v| v >= 3.0),
        "{dc}"
    );
    assert_eq!(
        dig_short(&lab, "alice", "www.example.test"),
        "198.51.100.80"
    );
    let alice = lab.metrics("alice");
    for (name, labels) in [
        (
            "ntmtun_peer_rx_packets_total",
            &["peer=\"bob\"", "path=\"direct\""][..],
        ),
        (
            "ntmtun_peer_tx_bytes_total",
            &["peer=\"bob\"", "path=\"direct\""][..],
        ),
        (
            "ntmtun_node_dns_queries_total",
            &["result=\"answered\""][..],
        ),
        (
            "ntmtun_node_dns_queries_total",
            &["result=\"forwarded\""][..],
        ),
    ] {
        assert!(
            metric(&alice, name, labels).is_some_and(|v| v >= 1.0),
            "{name} {labels:?} missing or zero:\n{alice}"
        );
    }
    assert!(metric(&alice, "ntmtun_node_rekeys_total", &[]).is_some());
    assert!(alice
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .all(|l| l.starts_with("ntmtun_")));
}

#[test]
fn sigterm_removes_everything_and_a_crash_is_cleaned_at_the_next_start() {
    let Some(lab) = Lab::up("lan") else { return };
    let state = lab.path("alice.dns-state");
    assert!(has_tun(&lab, "alice"));
    assert_eq!(
        capture_rules(&lab, "alice").len(),
        2,
        "capture rules missing"
    );
    assert!(state.exists(), "no DNS state file at {}", state.display());

    lab.stop("alice");
    assert!(!has_tun(&lab, "alice"), "the TUN survived SIGTERM");
    assert!(
        capture_rules(&lab, "alice").is_empty(),
        "rules survived SIGTERM: {:?}",
        capture_rules(&lab, "alice")
    );
    let table = lab.exec_ok("alice", &["ip", "-4", "route", "show", "table", "20053"]);
    assert!(
        table.trim().is_empty(),
        "DNS table survived SIGTERM: {table}"
    );
    assert!(!state.exists(), "the DNS state file survived SIGTERM");

    // A crash leaves the rules and the state file behind; the next start removes them
    // before installing its own (so each rule exists once).
    lab.restart_node("alice");
    lab.wait_registered(Duration::from_secs(15));
    assert_eq!(capture_rules(&lab, "alice").len(), 2);
    lab.signal("alice", "KILL");
    let gone = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        (!has_tun(&lab, "alice")).then_some(())
    });
    assert!(gone.is_some(), "alice did not die");
    assert_eq!(
        capture_rules(&lab, "alice").len(),
        2,
        "SIGKILL left no rules?"
    );
    assert!(state.exists());
    lab.restart_node("alice");
    lab.wait_registered(Duration::from_secs(15));
    assert_eq!(
        capture_rules(&lab, "alice").len(),
        2,
        "stale rules of the killed run were not removed: {:?}",
        capture_rules(&lab, "alice")
    );
    assert!(log_has(
        &lab,
        "alice.log",
        "undoing the DNS changes of a previous run"
    ));
    assert!(lab.ping_once("alice", "bob"), "{}", lab.logs_tail());
}

#[test]
fn stub_mode_without_systemd_resolved_falls_back_to_capture() {
    let Some(lab) = Lab::up("lan") else { return };
    edit(&lab.path("alice.toml"), |t| {
        t.replace("mode = \"capture\"", "mode = \"stub\"")
    });
    lab.restart_node("alice");
    lab.wait_registered(Duration::from_secs(15));
    assert!(
        log_has(
            &lab,
            "alice.log",
            "does not run here: using capture mode instead"
        ),
        "no fallback log line\n{}",
        lab.logs_tail()
    );
    let st = lab.status_json("alice");
    assert_eq!(st["dns"]["mode"], "capture", "{st}");
    // Names in the domain and outside it resolve through capture.
    let bob_vip = lab.virtual_ip("bob");
    assert_eq!(
        dig_short(&lab, "alice", "bob.ntm.internal"),
        bob_vip.to_string()
    );
    assert_eq!(
        dig_short(&lab, "alice", "www.example.test"),
        "198.51.100.80"
    );
    assert!(lab.ping_once("alice", "bob"), "{}", lab.logs_tail());
    lab.stop("alice");
    assert!(capture_rules(&lab, "alice").is_empty());
    assert!(!lab.path("alice.dns-state").exists());
}

#[test]
fn node_sighup_reinstalls_capture_for_new_resolvers_and_keeps_tunnels() {
    let Some(lab) = Lab::up("lan") else { return };
    assert!(lab.ping_once("alice", "bob"), "{}", lab.logs_tail());
    let before = lab.status_json("alice");
    // A second resolver (nothing answers there; only the rules matter), a new rekey interval,
    // and a key that needs a restart.
    edit(&lab.path("alice.toml"), |t| {
        format!(
            "rekey_secs = 60\nworkers = 1\n{}\nresolvers = [\"198.51.100.53\", \"198.51.100.54\"]\n",
            t.trim_end()
        )
    });
    lab.signal("alice", "HUP");
    let applied = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        (capture_rules(&lab, "alice").len() == 3).then_some(())
    });
    assert!(
        applied.is_some(),
        "capture rules not re-installed for the new resolvers: {:?}\n{}",
        capture_rules(&lab, "alice"),
        lab.logs_tail()
    );
    assert!(
        capture_rules(&lab, "alice")
            .iter()
            .any(|r| r.contains("198.51.100.54")),
        "{:?}",
        capture_rules(&lab, "alice")
    );
    assert!(log_has(&lab, "alice.log", "restart to apply: workers"));
    // Same process, same tunnel, names still resolve.
    let after = lab.status_json("alice");
    assert_eq!(
        before["peers"][0]["public_key"], after["peers"][0]["public_key"],
        "{after}"
    );
    assert_eq!(
        dig_short(&lab, "alice", "bob.ntm.internal"),
        lab.virtual_ip("bob").to_string()
    );
    assert!(lab.ping_once("alice", "bob"), "{}", lab.logs_tail());
}
