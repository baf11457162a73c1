//! The connectivity matrix (issue: "Connectivity everywhere"): one lab per
//! topology of scripts/lab.sh, with real applications (dig, ping, nc,
//! iperf3) by name, and the path each pair ends up on asserted from
//! `ntmtun status --json`. Needs root.
//!
//! Labs run one at a time (a lock): the machine has 2 cores and timings
//! (first-reply time, roaming gap) are recorded for docs/connectivity.md,
//! written by scripts/connectivity.sh from the JSON each test leaves in
//! `CARGO_TARGET_TMPDIR/connectivity/`.

mod common;

use common::{random_hex, sha256_file, wait_for, Lab};
use std::fs;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a topology run measured, for docs/connectivity.md.
#[derive(Default)]
struct Record {
    topology: &'static str,
    expected: &'static str,
    path_bob: String,
    path_alice: String,
    first_reply_ms: Option<f64>,
    iperf_mbps: Option<f64>,
    gap_ms: Option<f64>,
    note: String,
}

impl Record {
    fn save(&self) {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("connectivity");
        let _ = fs::create_dir_all(&dir);
        let v = serde_json::json!({
            "topology": self.topology,
            "expected_path": self.expected,
            "path_bob_to_alice": self.path_bob,
            "path_alice_to_bob": self.path_alice,
            "first_reply_ms": self.first_reply_ms,
            "iperf3_mbps": self.iperf_mbps,
            "roaming_gap_ms": self.gap_ms,
            "note": self.note,
            "result": "pass",
        });
        let _ = fs::write(
            dir.join(format!("{}.json", self.topology)),
            serde_json::to_string_pretty(&v).unwrap_or_default(),
        );
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first contact, timed as a user sees it: from the DNS query for
/// alice's name until the first ping reply through the new tunnel.
fn first_contact(lab: &Lab, alice_vip: Ipv4Addr) -> f64 {
    let script = "s=$(date +%s%N); ip=$(dig +short +time=3 +tries=2 alice.ntm.internal); \
                  ping -c 1 -W 5 \"$ip\" >/dev/null && e=$(date +%s%N) && echo \"$ip $(( (e - s) / 1000 ))\"";
    let out = lab.sh_ok("bob", script);
    let mut it = out.split_whitespace();
    let ip: Ipv4Addr = it
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in {out:?}\n{}", lab.logs_tail()));
    assert_eq!(
        ip, alice_vip,
        "alice.ntm.internal resolved to the wrong address"
    );
    it.next()
        .and_then(|us| us.parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .unwrap_or(f64::NAN)
}

fn ping_by_name(lab: &Lab, from: &str, to: &str) {
    lab.exec_ok(
        from,
        &[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            &format!("{to}.ntm.internal"),
        ],
    );
}

fn transfer_intact(lab: &Lab, port: u16) {
    let data = lab.path(&format!("data-{port}.bin"));
    let mut bytes = vec![0u8; 2 * 1024 * 1024];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("read /dev/urandom");
    fs::write(&data, &bytes).expect("write the random file");
    let recv = lab.nc_transfer("alice", "bob", port, &data);
    assert_eq!(
        sha256_file(&recv),
        sha256_file(&data),
        "nc transfer arrived corrupted"
    );
}

/// iperf3 TCP from bob to alice by name for `secs` seconds; Mbit/s received.
fn iperf(lab: &Lab, secs: u32) -> f64 {
    lab.exec_ok("alice", &["iperf3", "-s", "-1", "-D", "-p", "5201"]);
    let ok = wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let out = lab.exec_t("alice", 5, &["ss", "-Hltn", "sport = :5201"]);
        (!String::from_utf8_lossy(&out.stdout).trim().is_empty()).then_some(())
    });
    assert!(ok.is_some(), "iperf3 server did not start");
    let out = lab.exec_t(
        "bob",
        secs as u64 + 20,
        &[
            "iperf3",
            "-c",
            "alice.ntm.internal",
            "-t",
            &secs.to_string(),
            "-J",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 -J output unreadable ({e}): {}",
            common::describe_output(&out)
        )
    });
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        bps > 0.0,
        "iperf3 moved nothing: {}",
        common::describe_output(&out)
    );
    bps / 1e6
}

/// The path `node` shows for its peer, waiting (bounded) for it to be `want`.
fn wait_path(lab: &Lab, node: &str, peer: &str, want: &str, limit: Duration) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let got = wait_for(limit, Duration::from_millis(200), || {
        let st = lab.status_json(node);
        let p = st["peers"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == peer)?
            .clone();
        last = p.clone();
        (p["path"] == want).then_some(p)
    });
    got.unwrap_or_else(|| {
        panic!(
            "{node}: path to {peer} never became {want:?}; last status {last}\n{}",
            lab.logs_tail()
        )
    })
}

/// The common matrix row: first contact, ping both ways, an intact nc
/// transfer, a few seconds of iperf3, and the path both ways.
fn matrix_row(topology: &'static str, expected: &'static str) -> Option<(Lab, Record)> {
    let lab = Lab::up(topology)?;
    let (alice_vip, bob_vip) = (lab.virtual_ip("alice"), lab.virtual_ip("bob"));
    assert_ne!(alice_vip, bob_vip);
    let mut r = Record {
        topology,
        expected,
        ..Default::default()
    };
    r.first_reply_ms = Some(first_contact(&lab, alice_vip));
    ping_by_name(&lab, "bob", "alice");
    ping_by_name(&lab, "alice", "bob");
    transfer_intact(&lab, 5001);
    r.iperf_mbps = Some(iperf(&lab, 3));
    let p = wait_path(&lab, "bob", "alice", expected, Duration::from_secs(10));
    r.path_bob = format!(
        "{} via {}",
        p["path"].as_str().unwrap_or("?"),
        p["endpoint"].as_str().unwrap_or("?")
    );
    let p = wait_path(&lab, "alice", "bob", expected, Duration::from_secs(10));
    r.path_alice = format!(
        "{} via {}",
        p["path"].as_str().unwrap_or("?"),
        p["endpoint"].as_str().unwrap_or("?")
    );
    eprintln!(
        "{topology}: path {} / {}, first reply {:.1} ms, iperf3 {:.0} Mbit/s",
        r.path_bob,
        r.path_alice,
        r.first_reply_ms.unwrap_or(f64::NAN),
        r.iperf_mbps.unwrap_or(f64::NAN)
    );
    Some((lab, r))
}

#[test]
fn lan_is_direct() {
    let _l = lock();
    if let Some((_lab, r)) = matrix_row("lan", "direct") {
        r.save();
    }
}

#[test]
fn same_nat_is_direct_on_lan_addresses() {
    let _l = lock();
    let Some((lab, mut r)) = matrix_row("same-nat", "direct") else {
        return;
    };
    let p = wait_path(&lab, "bob", "alice", "direct", Duration::from_secs(1));
    let ep = p["endpoint"].as_str().unwrap_or_default().to_string();
    assert!(
        ep.starts_with("192.0.2."),
        "same-nat pair must use LAN addresses, not {ep}"
    );
    r.note = "LAN addresses (no hairpin through the NAT)".into();
    r.save();
}

#[test]
fn nat_nat_is_punched() {
    let _l = lock();
    let Some((_lab, mut r)) = matrix_row("nat-nat", "punched") else {
        return;
    };
    r.note = "simultaneous hole punching".into();
    r.save();
}

#[test]
fn public_nat_is_direct() {
    let _l = lock();
    let Some((_lab, r)) = matrix_row("public-nat", "direct") else {
        return;
    };
    r.save();
}

#[test]
fn symmetric_nats_use_the_relay() {
    let _l = lock();
    let Some((_lab, mut r)) = matrix_row("symmetric", "relay") else {
        return;
    };
    r.note = "per-destination NATs: punching cannot work".into();
    r.save();
}

#[test]
fn ipv4_only_to_ipv6_only_uses_the_relay() {
    let _l = lock();
    let Some((lab, mut r)) = matrix_row("v4-v6", "relay") else {
        return;
    };
    let p = wait_path(&lab, "bob", "alice", "relay", Duration::from_secs(1));
    let relay = p["relay"].as_str().unwrap_or_default().to_string();
    assert!(
        relay.starts_with('['),
        "the IPv6-only node must reach the relay over IPv6, not {relay}"
    );
    r.note = "dual-stack relay bridges the families".into();
    r.save();
}

#[test]
fn roaming_keeps_a_tcp_stream_alive() {
    let _l = lock();
    let Some((lab, mut r)) = matrix_row("roam", "direct") else {
        return;
    };
    // A 10 s stream from bob to alice, reported every 0.1 s; bob moves to the
    // other segment 3 s in.
    lab.exec_ok("alice", &["iperf3", "-s", "-1", "-D", "-p", "5202"]);
    std::thread::sleep(Duration::from_millis(300));
    let json_path = lab.path("roam-iperf.json");
    let mut client = lab.spawn(
        "bob",
        &[
            "iperf3",
            "-c",
            "alice.ntm.internal",
            "-p",
            "5202",
            "-t",
            "10",
            "-i",
            "0.1",
            "-J",
        ],
        &json_path,
        &lab.path("roam-iperf.log"),
    );
    std::thread::sleep(Duration::from_secs(3));
    let moved_at = Instant::now();
    let new_ip = lab.move_host("bob");
    eprintln!("roam: bob moved to {new_ip} in {:?}", moved_at.elapsed());
    let status = client.wait_timeout(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "the TCP stream did not survive the move:\n{}",
        lab.logs_tail()
    );
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(&json_path).unwrap_or_default()).unwrap_or_default();
    let intervals: Vec<f64> = json["intervals"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["sum"]["bytes"].as_f64().unwrap_or(0.0))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        intervals.len() > 50,
        "too few iperf3 intervals: {}",
        intervals.len()
    );
    // The gap: the longest run of 0.1 s intervals that moved nothing.
    let mut longest = 0;
    let mut run = 0;
    for b in &intervals {
        run = if *b == 0.0 { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let after: f64 = intervals[intervals.len() * 2 / 3..].iter().sum();
    assert!(after > 0.0, "nothing moved after the roam");
    r.gap_ms = Some(longest as f64 * 100.0);
    eprintln!("roam: longest gap {} ms", longest * 100);
    assert!(longest <= 50, "the stream stalled for {} ms", longest * 100);
    // Alice now sends to one of bob's new addresses (IPv4 or IPv6; both
    // changed with the segment).
    let old_ep = r.path_alice.clone();
    let p = wait_path(&lab, "alice", "bob", "direct", Duration::from_secs(5));
    let ep = p["endpoint"].as_str().unwrap_or_default().to_string();
    assert!(
        !old_ep.contains(&ep),
        "alice still sends to bob's old address {ep}"
    );
    assert!(
        ep.starts_with(&new_ip.to_string()) || ep.starts_with("[2001:db8:100::"),
        "unexpected endpoint {ep}"
    );
    r.note = format!("bob moved to {new_ip} during a 10 s TCP stream");
    r.save();
}

#[test]
fn relay_failover_moves_the_pair_to_another_relay() {
    let _l = lock();
    let Some((lab, mut r)) = matrix_row("relay-failover", "relay") else {
        return;
    };
    let before = wait_path(&lab, "bob", "alice", "relay", Duration::from_secs(1));
    let used = before["relay"].as_str().unwrap_or_default().to_string();
    let (dead, spare) = if used.contains(".20:") {
        ("relay1", ".21:")
    } else {
        ("relay2", ".20:")
    };
    let marker = random_hex(4);
    eprintln!("failover {marker}: killing {dead} ({used})");
    let killed_at = Instant::now();
    lab.kill_relay(dead);
    let recovered = wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
        let out = lab.exec_t(
            "bob",
            5,
            &["ping", "-c", "1", "-W", "1", "alice.ntm.internal"],
        );
        out.status.success().then(|| killed_at.elapsed())
    });
    let took = recovered.unwrap_or_else(|| {
        panic!(
            "traffic never resumed after killing {dead}\n{}",
            lab.logs_tail()
        )
    });
    let after = wait_path(&lab, "bob", "alice", "relay", Duration::from_secs(5));
    let now_used = after["relay"].as_str().unwrap_or_default().to_string();
    assert!(
        now_used.contains(spare),
        "bob still uses {now_used}, expected the other relay"
    );
    transfer_intact(&lab, 5003);
    r.gap_ms = Some(took.as_secs_f64() * 1000.0);
    r.note = format!(
        "killed {dead}: traffic resumed on {now_used} after {:.1} s",
        took.as_secs_f64()
    );
    eprintln!("failover: {}", r.note);
    r.save();
}
