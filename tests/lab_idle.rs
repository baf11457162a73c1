//! Idle direct paths behind a home router (issue 18, "NAT mappings held"), in the
//! `public-nat` lab: alice on the Internet segment, bob behind natb (nftables masquerade,
//! endpoint-independent mapping). natb's UDP conntrack timeouts are set to Linux's defaults,
//! 30 s and 120 s once an entry is a stream, as on a home router running Linux. Needs root.
//!
//! - An idle pair stays direct: after one ping each way the pair idles for
//!   `NTMTUN_IDLE_SECS` seconds (default 75, past two 30 s timeouts; 600 for the ten
//!   minutes). Both nodes' `ntmtun status --json` is read every second all along: the path
//!   stays `direct` and `relay_fallbacks` 0. Then one packet from alice, the direction a
//!   lapsed mapping drops, must be answered.
//! - A lost mapping is reopened: natb forgets its mapping to alice (`conntrack -D`); alice's
//!   pings reach bob directly again within seconds, and the pair never moves to the relay.

mod common;

use common::{wait_for, Lab};
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Leaves what a test measured for docs/connectivity.md (`scripts/connectivity.sh`), next to
/// the matrix's records.
fn save(name: &str, record: Value) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("connectivity");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&record).unwrap_or_default(),
    );
}

/// How long the idle test idles, from `NTMTUN_IDLE_SECS`.
fn idle_secs() -> u64 {
    match std::env::var("NTMTUN_IDLE_SECS") {
        Err(_) => 75,
        Ok(v) => v
            .parse()
            .ok()
            .filter(|s| (1..=3600).contains(s))
            .unwrap_or_else(|| panic!("NTMTUN_IDLE_SECS={v:?}: give seconds, 1-3600")),
    }
}

/// The `public-nat` lab with natb's conntrack timeouts at Linux's defaults, the daemons
/// running, and one ping each way on a direct path.
fn home_router_lab() -> Option<Lab> {
    let lab = Lab::build("public-nat")?;
    lab.exec_ok(
        "natb",
        &[
            "sysctl",
            "-q",
            "-w",
            "net.netfilter.nf_conntrack_udp_timeout=30",
            "net.netfilter.nf_conntrack_udp_timeout_stream=120",
        ],
    );
    let set = lab.exec_ok(
        "natb",
        &[
            "sysctl",
            "-n",
            "net.netfilter.nf_conntrack_udp_timeout",
            "net.netfilter.nf_conntrack_udp_timeout_stream",
        ],
    );
    assert_eq!(
        set.split_whitespace().collect::<Vec<_>>(),
        ["30", "120"],
        "natb's conntrack timeouts"
    );
    lab.start();
    for (from, to) in [("bob", "alice"), ("alice", "bob")] {
        let ok = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
            lab.ping_once(from, to).then_some(())
        });
        assert!(
            ok.is_some(),
            "{from} never reached {to}\n{}",
            lab.logs_tail()
        );
    }
    for (node, peer) in [("alice", "bob"), ("bob", "alice")] {
        let direct = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
            (peer_status(&lab, node, peer)["path"] == "direct").then_some(())
        });
        assert!(
            direct.is_some(),
            "{node}: path to {peer} never became direct: {}\n{}",
            peer_status(&lab, node, peer),
            lab.logs_tail()
        );
    }
    Some(lab)
}

/// `node`'s entry for `peer` in `ntmtun status --json` (Null if none yet).
fn peer_status(lab: &Lab, node: &str, peer: &str) -> Value {
    lab.status_json(node)["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == peer).cloned())
        .unwrap_or(Value::Null)
}

/// Panics unless both nodes show each other on a direct path with no relay fallback.
fn assert_direct(lab: &Lab, when: &str) {
    for (node, peer) in [("alice", "bob"), ("bob", "alice")] {
        let p = peer_status(lab, node, peer);
        assert!(
            p["path"] == "direct" && p["relay_fallbacks"] == 0,
            "{node} -> {peer} {when}: {p}\n{}",
            lab.logs_tail()
        );
    }
}

/// Watches the pair for `secs` seconds (a status read a second): it must stay direct.
fn stays_direct(lab: &Lab, secs: u64, what: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        assert_direct(lab, &format!("{what}, {} s in", start.elapsed().as_secs()));
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Seconds left on natb's conntrack entry from bob to alice, if it has one.
fn mapping_left(lab: &Lab, alice: &str) -> Option<u64> {
    let out = lab.exec_ok(
        "natb",
        &["conntrack", "-L", "-p", "udp", "--orig-dst", alice],
    );
    out.lines()
        .filter(|l| !l.contains("dport=53 "))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .max()
}

fn alice_v4(lab: &Lab) -> String {
    lab.host("alice")
        .v4
        .unwrap_or_else(|| panic!("alice has no IPv4 address in public-nat"))
        .to_string()
}

#[test]
fn an_idle_path_behind_a_30s_nat_stays_direct() {
    let _l = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = home_router_lab() else {
        return;
    };
    let (idle, alice) = (idle_secs(), alice_v4(&lab));
    let start = Instant::now();
    let mut least = u64::MAX;
    while start.elapsed() < Duration::from_secs(idle) {
        let at = start.elapsed().as_secs();
        assert_direct(&lab, &format!("{at} s into the idle spell"));
        let left = mapping_left(&lab, &alice);
        assert!(
            left.is_some(),
            "{at} s idle: natb has no mapping from bob to alice any more\n{}",
            lab.logs_tail()
        );
        least = least.min(left.unwrap_or(0));
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("idle {idle} s: direct throughout; least time left on bob's mapping {least} s");
    // The first packet after the idle spell, from the public side.
    assert!(
        lab.ping_once("alice", "bob"),
        "alice's first ping after {idle} s idle was lost\n{}",
        lab.logs_tail()
    );
    stays_direct(&lab, 5, "after the first packet");
    for node in ["alice", "bob"] {
        let m = lab.metrics(node);
        assert!(
            m.lines()
                .any(|l| l == "ntmtun_node_relay_fallbacks_total 0"),
            "{node}: metrics do not show 0 relay fallbacks:\n{m}"
        );
    }
    save(
        "idle",
        serde_json::json!({ "idle_secs": idle, "least_mapping_left_secs": least }),
    );
}

#[test]
fn a_lost_nat_mapping_is_reopened_without_the_relay() {
    let _l = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(lab) = home_router_lab() else {
        return;
    };
    let alice = alice_v4(&lab);
    stays_direct(&lab, 3, "before the mapping is lost");
    // Bob sends, and has sent his answers (the 1 s passive keepalive) by the time natb drops
    // the mapping: his own next keepalive is most of an interval away, so only the re-probe
    // can bring the path back within seconds.
    assert!(
        lab.ping_once("bob", "alice"),
        "bob's ping to alice was lost"
    );
    std::thread::sleep(Duration::from_secs(2));
    lab.exec_ok(
        "natb",
        &["conntrack", "-D", "-p", "udp", "--orig-dst", &alice],
    );
    let lost_at = Instant::now();
    let back = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        lab.ping_once("alice", "bob").then(|| lost_at.elapsed())
    });
    let took = back.unwrap_or_else(|| {
        panic!(
            "alice never reached bob again after the mapping was lost\n{}",
            lab.logs_tail()
        )
    });
    eprintln!("lost mapping: alice reached bob again after {took:?}");
    assert!(
        mapping_left(&lab, &alice).is_some(),
        "bob's mapping to alice was not reopened"
    );
    stays_direct(&lab, 5, "after the mapping was reopened");
    save(
        "lost-mapping",
        serde_json::json!({ "reached_again_ms": took.as_secs_f64() * 1000.0 }),
    );
}
