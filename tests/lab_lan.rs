//! End-to-end test on the `lan` topology (DC, alice and bob on one segment, an ordinary DNS
//! server at 198.51.100.53), in network namespaces built by scripts/lab.sh. Needs root.
//!
//! All scenarios run in ONE test function, in sequence, on one lab: the machine has 2 cores and
//! several labs at once would only make timings drift.

mod common;

use common::{file_tail, random_hex, sha256_file, Lab};
use std::fs;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

fn step(n: u32, what: &str) {
    eprintln!("== step {n}: {what}");
}

/// `dig +short NAME` from `host`, as a list of non-empty lines.
fn dig_short(lab: &Lab, host: &str, name: &str) -> Vec<String> {
    let out = lab.exec_ok(host, &["dig", "+short", "+time=3", "+tries=3", name]);
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn assert_name_resolves_to(lab: &Lab, host: &str, name: &str, want: Ipv4Addr) {
    let got = dig_short(lab, host, name);
    assert_eq!(
        got,
        vec![want.to_string()],
        "[{}] dig +short {name}: expected exactly {want}\n{}",
        lab.ns(host),
        lab.logs_tail()
    );
}

/// 1. Names of the NTM domain resolve to the peer's virtual IP; unknown ones are NXDOMAIN.
fn names_resolve_to_virtual_ips(lab: &Lab, alice_vip: Ipv4Addr, bob_vip: Ipv4Addr) {
    step(
        1,
        "dig alice.ntm.internal from bob, bob.ntm.internal from alice, nosuch -> NXDOMAIN",
    );
    assert_name_resolves_to(lab, "bob", "alice.ntm.internal", alice_vip);
    assert_name_resolves_to(lab, "alice", "bob.ntm.internal", bob_vip);
    let out = lab.exec_ok(
        "bob",
        &["dig", "+time=3", "+tries=3", "nosuch.ntm.internal"],
    );
    assert!(
        out.contains("status: NXDOMAIN"),
        "[{}] dig nosuch.ntm.internal: expected status NXDOMAIN, got:\n{out}\n{}",
        lab.ns("bob"),
        lab.logs_tail()
    );
}

/// 2. Other names go to the real resolver (dnsmasq in PREFIX-dns).
fn ordinary_names_use_real_resolver(lab: &Lab) {
    step(
        2,
        "dig www.example.test from bob goes through the real resolver",
    );
    assert_name_resolves_to(
        lab,
        "bob",
        "www.example.test",
        Ipv4Addr::new(198, 51, 100, 80),
    );
}

/// 3. Ping by name, both ways.
fn ping_by_name_both_ways(lab: &Lab) {
    step(3, "ping by name both ways");
    for (from, to) in [("bob", "alice"), ("alice", "bob")] {
        let out = lab.exec(
            from,
            &["ping", "-c", "3", "-W", "2", &format!("{to}.ntm.internal")],
        );
        if !out.status.success() {
            lab.fail(
                from,
                &format!("ping -c 3 -W 2 {to}.ntm.internal"),
                &out,
                "no reply",
            );
        }
    }
}

/// 4. A 4 MiB random file sent by name with nc arrives intact.
fn nc_transfer_is_intact(lab: &Lab) {
    step(
        4,
        "4 MiB of random data alice -> bob.ntm.internal with nc, sha256 equal",
    );
    let data = lab.path("random-4mib.bin");
    let mut bytes = vec![0u8; 4 * 1024 * 1024];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("read /dev/urandom");
    fs::write(&data, &bytes).expect("write the random file");
    let recv = lab.nc_transfer("alice", "bob", 5001, &data);
    let got = fs::metadata(&recv).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        got,
        bytes.len() as u64,
        "received {got} of {} bytes",
        bytes.len()
    );
    assert_eq!(
        sha256_file(&recv),
        sha256_file(&data),
        "sha256 of received file differs"
    );
}

fn count_packets(pcap: &std::path::Path, filter: &str) -> usize {
    let out = Command::new("timeout")
        .args(["30", "tcpdump", "-nn", "-r"])
        .arg(pcap)
        .arg(filter)
        .output()
        .expect("run tcpdump -r");
    assert!(
        out.status.success(),
        "tcpdump -r {} {filter}: {}",
        pcap.display(),
        common::describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// 5. What crosses the wire between the nodes is encrypted: a marker sent through the tunnel
///    never appears in a capture of alice's underlay interface, which did see UDP between them.
fn no_plaintext_on_the_wire(lab: &Lab) {
    step(
        5,
        "a marker sent alice -> bob never appears on the wire (tcpdump on alice's eth0)",
    );
    let marker = format!("NTMTUN-MARKER-{}", random_hex(12));
    let data = lab.path("marker.txt");
    fs::write(&data, format!("{marker}\n").repeat(2000)).expect("write the marker file");

    let pcap = lab.path("marker.pcap");
    let tlog = lab.path("tcpdump.log");
    let pcap_s = pcap.to_str().unwrap().to_string();
    let mut tcpdump = lab.spawn(
        "alice",
        &[
            "tcpdump",
            "--immediate-mode",
            "-U",
            "-Z",
            "root",
            "-i",
            "eth0",
            "-s",
            "0",
            "-w",
            &pcap_s,
        ],
        &lab.path("tcpdump.out"),
        &tlog,
    );
    let listening = common::wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        fs::read_to_string(&tlog)
            .ok()
            .filter(|s| s.contains("listening on"))
            .map(|_| ())
    });
    if listening.is_none() {
        tcpdump.stop();
        panic!(
            "tcpdump did not start within 10 s: {}",
            file_tail(&tlog, 20)
        );
    }

    let recv = lab.nc_transfer("alice", "bob", 5002, &data);
    std::thread::sleep(Duration::from_millis(500)); // the last ACKs
    tcpdump.signal("INT");
    if tcpdump.wait_timeout(Duration::from_secs(10)).is_none() {
        eprintln!("tcpdump ignored SIGINT for 10 s; stopping it (packets were written with -U)");
        tcpdump.stop();
    }

    let received = fs::read(&recv).expect("read the received marker file");
    assert_eq!(
        received,
        fs::read(&data).unwrap(),
        "the marker file did not arrive intact"
    );

    let captured = fs::read(&pcap).expect("read the capture");
    let m = marker.as_bytes();
    assert!(
        !captured.windows(m.len()).any(|w| w == m),
        "PLAINTEXT ON THE WIRE: the marker {marker} appears in the capture {} ({} bytes)",
        pcap.display(),
        captured.len()
    );
    // Either underlay family may carry the tunnel (the pair moves to the
    // DC's preferred IPv4 within seconds, but a transfer right after start
    // can still run over IPv6).
    let between = "((host 198.51.100.11 and host 198.51.100.12) or \
                   (host 2001:db8:100::11 and host 2001:db8:100::12))";
    let udp = count_packets(&pcap, &format!("udp and {between}"));
    assert!(
        udp > 0,
        "the capture holds no UDP packets between the nodes' underlay addresses; \
         did the transfer go through the tunnel?\n{}",
        lab.logs_tail()
    );
    let plain_tcp = count_packets(&pcap, &format!("tcp port 5002 and {between}"));
    assert_eq!(
        plain_tcp, 0,
        "the TCP stream itself crossed the underlay unencapsulated"
    );
    eprintln!("   {udp} UDP packets between the nodes, marker absent");
}

/// 6. bob's status lists alice as a direct peer with traffic counters and a handshake.
fn status_lists_direct_peer(lab: &Lab, alice_vip: Ipv4Addr) {
    step(
        6,
        "status --json on bob lists alice: direct, endpoint 198.51.100.11, counters",
    );
    let st = lab.status_json("bob");
    let peers = st["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("bob: no peers array: {st}"));
    let alice = peers
        .iter()
        .find(|p| p["name"] == "alice")
        .unwrap_or_else(|| panic!("bob: no peer named alice in status: {st}"));
    assert_eq!(alice["path"], "direct", "bob: peer alice path: {alice}");
    assert_eq!(
        alice["virtual_ip"],
        alice_vip.to_string(),
        "bob: peer alice virtual_ip: {alice}"
    );
    let endpoint = alice["endpoint"].as_str().unwrap_or("");
    assert!(
        endpoint.starts_with("198.51.100.11:"),
        "bob: peer alice endpoint {endpoint:?} is not on 198.51.100.11: {alice}"
    );
    for counter in ["rx_bytes", "tx_bytes"] {
        let v = alice[counter].as_u64().unwrap_or(0);
        assert!(
            v > 0,
            "bob: peer alice {counter} = {v}, expected > 0: {alice}"
        );
    }
    assert!(
        alice["last_handshake_secs"].is_u64(),
        "bob: peer alice has no numeric last_handshake_secs: {alice}"
    );
    // The IO shell: what NTMTUN_LAB_IO asked for (scripts/lab.sh writes it as `io`), or
    // whichever `auto` chose.
    let io = st["io"].as_str().unwrap_or("");
    match std::env::var("NTMTUN_LAB_IO").ok().as_deref() {
        Some(want @ ("uring" | "epoll")) => assert_eq!(io, want, "bob: status io: {st}"),
        _ => assert!(
            io == "uring" || io == "epoll",
            "bob: status io {io:?} is neither uring nor epoll: {st}"
        ),
    }
    assert!(
        st["workers"].as_u64().is_some_and(|w| w >= 1),
        "bob: status workers: {st}"
    );
    assert!(st["offload"].is_boolean(), "bob: status offload: {st}");
}

/// 7. A restarted DC (same state dir) keeps the virtual IPs; names still resolve.
fn dc_restart_keeps_virtual_ips(lab: &Lab, alice_vip: Ipv4Addr, bob_vip: Ipv4Addr) {
    step(
        7,
        "restart the DC: nodes re-register with unchanged virtual IPs, names still resolve",
    );
    lab.restart_dc();
    lab.wait_registered(Duration::from_secs(30));
    assert_eq!(
        lab.virtual_ip("alice"),
        alice_vip,
        "alice's virtual IP changed after a DC restart"
    );
    assert_eq!(
        lab.virtual_ip("bob"),
        bob_vip,
        "bob's virtual IP changed after a DC restart"
    );
    assert_name_resolves_to(lab, "bob", "alice.ntm.internal", alice_vip);
    assert_name_resolves_to(lab, "alice", "bob.ntm.internal", bob_vip);
}

#[test]
fn lan_end_to_end() {
    let Some(lab) = Lab::up("lan") else {
        return;
    };
    let alice_vip = lab.virtual_ip("alice");
    let bob_vip = lab.virtual_ip("bob");
    assert_ne!(alice_vip, bob_vip, "alice and bob got the same virtual IP");

    names_resolve_to_virtual_ips(&lab, alice_vip, bob_vip);
    ordinary_names_use_real_resolver(&lab);
    ping_by_name_both_ways(&lab);
    nc_transfer_is_intact(&lab);
    no_plaintext_on_the_wire(&lab);
    status_lists_direct_peer(&lab, alice_vip);
    dc_restart_keeps_virtual_ips(&lab, alice_vip, bob_vip);
}
