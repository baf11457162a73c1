//! Hostile networks on the wire (issue "Hostile networks and faults", parts 2 and 5), on the
//! `hostile` topology: the DC, relay1, alice and bob public on one segment, and an attacker
//! namespace at 198.51.100.66 that sends what scripts/hostile.py builds. Needs root.
//!
//! The unit tests (`proto::session`, `node::core_tests`, `relay::core`, `config`) prove each
//! check on its own; these tests prove that the running daemons apply them to real packets.

mod common;

use common::{addr, random_hex, repo_root, wait_for, Lab};
use ntmtun::proto::aead::{Aead, Backend, Cipher};
use ntmtun::proto::wire::Kind;
use ntmtun::proto::wire::{TransportHeader, TAG_LEN};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// UDP port of the counting sink on alice's virtual IP.
const SINK_PORT: u16 = 9999;
/// Delivered records between the withheld ones and the attack: more than the 4032-record
/// replay window, so that the first withheld records fall behind it.
const DELIVERED: u64 = 4100;
/// Records withheld from alice (dropped by nftables after the capture saw them).
const WITHHELD: u64 = 64;

fn hostile_py() -> String {
    repo_root()
        .join("scripts/hostile.py")
        .to_string_lossy()
        .into_owned()
}

/// One node's metrics (`metrics_listen` on its namespace's loopback), "name{labels}" -> value.
fn metrics(lab: &Lab, host: &str) -> BTreeMap<String, u64> {
    let text = lab.exec_ok(
        host,
        &[
            "curl",
            "-sf",
            "--max-time",
            "5",
            "http://127.0.0.1:9100/metrics",
        ],
    );
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The node's data-plane drop counters, by reason.
fn drops(lab: &Lab, host: &str) -> BTreeMap<String, u64> {
    metrics(lab, host)
        .into_iter()
        .filter_map(|(k, v)| {
            let reason = k
                .strip_prefix("ntmtun_node_dropped_packets_total{reason=\"")?
                .strip_suffix("\"}")?;
            Some((reason.to_string(), v))
        })
        .collect()
}

/// Wait (bounded) until a UDP socket is bound on `port` in `host`.
fn wait_udp_bound(lab: &Lab, host: &str, port: u16) {
    let filter = format!("sport = :{port}");
    let ok = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let out = lab.exec_t(host, 5, &["ss", "-Hlun", &filter]);
        (!String::from_utf8_lossy(&out.stdout).trim().is_empty()).then_some(())
    });
    assert!(
        ok.is_some(),
        "[{}] nothing bound on UDP {port}",
        lab.ns(host)
    );
}

/// Datagrams "ntm-seq K" the sink received, as the list of K in arrival order.
fn sink_seen(path: &Path) -> Vec<u64> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A UDP datagram of a capture.
#[derive(Clone, Debug)]
struct Captured {
    to: SocketAddr,
    payload: Vec<u8>,
}

impl Captured {
    fn header(&self) -> TransportHeader {
        TransportHeader::decode(&self.payload).expect("a data record")
    }
}

/// Runs `during` while tcpdump captures UDP from `from` arriving at `host`'s eth0 (before
/// alice's nftables rules: tcpdump sees what the rules then drop); returns the data records.
fn capture(
    lab: &Lab,
    host: &str,
    from: SocketAddr,
    name: &str,
    during: impl FnOnce(),
) -> Vec<Captured> {
    let pcap = lab.path(&format!("{name}.pcap"));
    let log = lab.path(&format!("{name}.tcpdump.log"));
    let filter = format!(
        "udp and src host {} and src port {}",
        from.ip(),
        from.port()
    );
    let mut dump = lab.spawn(
        host,
        &[
            "tcpdump",
            "-B",
            "32768",
            "-i",
            "eth0",
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
            pcap.to_str().unwrap(),
            &filter,
        ],
        &lab.path(&format!("{name}.tcpdump.out")),
        &log,
    );
    let listening = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")
            .then_some(())
    });
    assert!(
        listening.is_some(),
        "tcpdump did not start: {}",
        common::file_tail(&log, 10)
    );
    during();
    // tcpdump has written everything once the file stops growing (bounded).
    let mut last = 0;
    let _ = wait_for(Duration::from_secs(5), Duration::from_millis(200), || {
        let len = fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0);
        let settled = len == last && len > 0;
        last = len;
        settled.then_some(())
    });
    dump.signal("INT");
    assert!(
        dump.wait_timeout(Duration::from_secs(10)).is_some(),
        "tcpdump did not stop"
    );
    let out = lab.exec_ok(
        host,
        &["python3", &hostile_py(), "extract", pcap.to_str().unwrap()],
    );
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ip: IpAddr = f.get(2)?.parse().ok()?;
            let port: u16 = f.get(3)?.parse().ok()?;
            let payload = hex_decode(f.get(4)?);
            (payload.len() >= 32 && payload[0] == Kind::Data as u8).then_some(Captured {
                to: SocketAddr::new(ip, port),
                payload,
            })
        })
        .collect()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex from hostile.py"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Drop UDP from `from` at `host` (nftables input) while `during` runs.
fn withheld(lab: &Lab, host: &str, from: SocketAddr, during: impl FnOnce()) {
    let fam = if from.is_ipv4() { "ip" } else { "ip6" };
    let rules = format!(
        "table inet ntmhostile {{\n chain input {{\n type filter hook input priority -10;\n \
         {fam} saddr {} udp sport {} counter drop\n }}\n}}\n",
        from.ip(),
        from.port()
    );
    lab.sh_ok(host, &format!("printf '{rules}' | nft -f -"));
    during();
    std::thread::sleep(Duration::from_millis(300));
    lab.exec_ok(host, &["nft", "delete table inet ntmhostile"]);
}

/// bob pings alice, so that he hears from her again within seconds of a withheld phase:
/// otherwise his path check (data sent, nothing heard for 3 s) rightly moves the pair to the
/// relay.
fn heard_back(lab: &Lab, alice_vip: Ipv4Addr) {
    let out = lab.exec(
        "bob",
        &[
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            &alice_vip.to_string(),
        ],
    );
    if !out.status.success() {
        lab.fail(
            "bob",
            "ping alice after a withheld phase",
            &out,
            "no answer",
        );
    }
}

/// bob sends `count` numbered datagrams to the sink, starting at `first`.
fn send_numbered(lab: &Lab, sink: Ipv4Addr, first: u64, count: u64) {
    lab.exec_ok(
        "bob",
        &[
            "python3",
            &hostile_py(),
            "numbered",
            "--dst",
            &sink.to_string(),
            "--port",
            &SINK_PORT.to_string(),
            "--count",
            &count.to_string(),
            "--first",
            &first.to_string(),
        ],
    );
}

/// Sends `datagrams` from the hostile namespace to `to`, from `src` (its own address or a
/// spoofed one). Returns how many hostile.py sent.
fn hostile_send(
    lab: &Lab,
    name: &str,
    src: SocketAddr,
    to: SocketAddr,
    datagrams: &[Vec<u8>],
) -> u64 {
    let file = lab.path(&format!("{name}.hex"));
    let text: String = datagrams.iter().map(|d| hex(d) + "\n").collect();
    fs::write(&file, text).expect("write the datagram file");
    let out = lab.exec_ok(
        "hostile",
        &[
            "python3",
            &hostile_py(),
            "send",
            "--src",
            &src.ip().to_string(),
            "--sport",
            &src.port().to_string(),
            "--dst",
            &to.ip().to_string(),
            "--dport",
            &to.port().to_string(),
            file.to_str().unwrap(),
        ],
    );
    out.trim().parse().expect("hostile.py send prints a count")
}

/// The hostile host's address in the family of `like`, with `port`.
fn hostile_addr(like: SocketAddr, port: u16) -> SocketAddr {
    let ip = if like.is_ipv4() {
        addr::HOSTILE_V4
    } else {
        addr::HOSTILE_V6
    };
    SocketAddr::new(ip.parse().expect("a lab address"), port)
}

/// bob's endpoint as alice has it, from `status --json`.
fn endpoint_of(lab: &Lab, node: &str, peer: &str) -> SocketAddr {
    let st = lab.status_json(node);
    let ep = st["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == peer))
        .and_then(|p| p["endpoint"].as_str())
        .unwrap_or_else(|| panic!("{node} has no endpoint for {peer}: {st}"));
    ep.parse()
        .unwrap_or_else(|e| panic!("endpoint {ep:?}: {e}"))
}

/// One attack: what was sent, from where, the drop reason it must raise, by how much.
struct Outcome {
    kind: &'static str,
    source: &'static str,
    tried: u64,
    reason: &'static str,
    counted: u64,
}

#[test]
fn replayed_and_forged_records_are_dropped_and_counted() {
    let Some(lab) = Lab::up("hostile") else {
        return;
    };
    let alice_vip = lab.virtual_ip("alice");
    let ping = lab.exec(
        "bob",
        &["ping", "-c", "2", "-W", "2", &alice_vip.to_string()],
    );
    if !ping.status.success() {
        lab.fail("bob", "ping alice", &ping, "no tunnel before the attack");
    }
    let bob_ep = endpoint_of(&lab, "alice", "bob");
    eprintln!("the tunnel runs between {bob_ep} (bob) and alice");
    // A veth carries bob's UDP GSO batches as one super-packet, which a capture cannot split
    // into records (it does not record the segment size). On a real wire, and with this, every
    // record is its own packet.
    lab.exec_ok(
        "bob",
        &["ethtool", "-K", "eth0", "tx-udp-segmentation", "off"],
    );
    let sink_out = lab.path("sink.out");
    let mut sink = lab.spawn(
        "alice",
        &[
            "python3",
            &hostile_py(),
            "sink",
            "--bind",
            &alice_vip.to_string(),
            "--port",
            &SINK_PORT.to_string(),
            "--seconds",
            "110",
        ],
        &sink_out,
        &lab.path("sink.log"),
    );
    wait_udp_bound(&lab, "alice", SINK_PORT);

    // A: withheld, then B: delivered (more than a window), then C: withheld again (fresh).
    let old = capture(&lab, "alice", bob_ep, "old", || {
        withheld(&lab, "alice", bob_ep, || {
            send_numbered(&lab, alice_vip, 0, WITHHELD)
        })
    });
    heard_back(&lab, alice_vip);
    let delivered = capture(&lab, "alice", bob_ep, "delivered", || {
        send_numbered(&lab, alice_vip, WITHHELD, DELIVERED)
    });
    let fresh = capture(&lab, "alice", bob_ep, "fresh", || {
        withheld(&lab, "alice", bob_ep, || {
            send_numbered(&lab, alice_vip, WITHHELD + DELIVERED, WITHHELD)
        })
    });
    heard_back(&lab, alice_vip);
    let all_in = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        (sink_seen(&sink_out).len() as u64 >= DELIVERED).then_some(())
    });
    assert!(
        all_in.is_some(),
        "the sink got {} of {DELIVERED}",
        sink_seen(&sink_out).len()
    );
    let want: BTreeSet<u64> = (WITHHELD..WITHHELD + DELIVERED).collect();
    assert_eq!(
        sink_seen(&sink_out).into_iter().collect::<BTreeSet<_>>(),
        want,
        "the sink must hold exactly the delivered phase"
    );
    assert!(
        old.len() as u64 >= WITHHELD,
        "captured {} withheld records",
        old.len()
    );
    assert!(
        fresh.len() as u64 >= WITHHELD,
        "captured {} fresh records",
        fresh.len()
    );
    assert!(
        delivered.len() as u64 >= DELIVERED,
        "captured {} records",
        delivered.len()
    );
    let alice_ep = delivered[0].to;
    let newest = delivered
        .iter()
        .chain(&fresh)
        .map(|r| r.header().counter)
        .max()
        .unwrap();
    assert!(
        old.iter().all(|r| r.header().counter + 4032 < newest),
        "the withheld records must be older than the window"
    );

    // The attacks, each from the hostile host's own address and spoofing bob's.
    let own = hostile_addr(bob_ep, 40000);
    let receiver = delivered[0].header().receiver;
    let mut forged_counter = newest + 10_000;
    let mut forge = |body: &[u8], key: &[u8; 32]| -> Vec<u8> {
        forged_counter += 1;
        let header = TransportHeader {
            kind: Kind::Data,
            receiver,
            counter: forged_counter,
        }
        .encode();
        let mut b = body.to_vec();
        let tag = Cipher::new(Backend::default(), key).seal(forged_counter, &header, &mut b);
        [&header[..], &b, &tag[..]].concat()
    };
    let payloads = |rs: &[Captured]| rs.iter().map(|r| r.payload.clone()).collect::<Vec<_>>();
    let truncated: Vec<Vec<u8>> = fresh
        .iter()
        .map(|r| r.payload[..(r.payload.len() - 1).max(32)].to_vec())
        .collect();
    let stub: Vec<Vec<u8>> = fresh.iter().map(|r| r.payload[..20].to_vec()).collect();
    let flipped: Vec<Vec<u8>> = fresh
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut p = r.payload.clone();
            let at = 16 + i % (p.len() - 16);
            p[at] ^= 1 << (i % 8);
            p
        })
        .collect();
    let mut wrong_key = Vec::new();
    let mut random_body = Vec::new();
    for _ in 0..WITHHELD {
        let key: [u8; 32] = hex_decode(&random_hex(32)).try_into().unwrap();
        // An IPv4 packet as bob would send it, sealed with a key that is not the session's.
        let body = delivered[0].payload[16..delivered[0].payload.len() - TAG_LEN].to_vec();
        wrong_key.push(forge(&body, &key));
        let mut r = forge(&hex_decode(&random_hex(80)), &key);
        let n = r.len();
        r[16..n].copy_from_slice(&hex_decode(&random_hex(n - 16)));
        random_body.push(r);
    }
    let attacks: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        (
            "replayed (delivered before)",
            payloads(&delivered),
            "replayed",
        ),
        ("reordered beyond the window", payloads(&old), "replayed"),
        ("truncated (tag cut)", truncated, "auth_failed"),
        ("truncated below header + tag", stub, "malformed"),
        ("bit-flipped", flipped, "auth_failed"),
        ("sealed with a wrong key", wrong_key, "auth_failed"),
        (
            "random bytes under a valid header",
            random_body,
            "auth_failed",
        ),
    ];
    let mut outcomes = Vec::new();
    for (kind, datagrams, reason) in &attacks {
        for (source, src) in [("hostile", own), ("spoofing bob", bob_ep)] {
            let before = drops(&lab, "alice");
            let tried = hostile_send(&lab, "attack", src, alice_ep, datagrams);
            assert_eq!(tried, datagrams.len() as u64);
            let target = before[*reason] + tried;
            let _ = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
                (drops(&lab, "alice")[*reason] >= target).then_some(())
            });
            let after = drops(&lab, "alice");
            for (r, v) in &after {
                let want = before[r] + if r == reason { tried } else { 0 };
                assert_eq!(*v, want, "{kind} from {source}: drop reason {r}");
            }
            outcomes.push(Outcome {
                kind,
                source,
                tried,
                reason,
                counted: after[*reason] - before[*reason],
            });
        }
    }

    // Nothing of it was delivered, and the replays from a new address did not move bob.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sink_seen(&sink_out).len() as u64,
        DELIVERED,
        "the sink count moved"
    );
    assert_eq!(
        endpoint_of(&lab, "alice", "bob"),
        bob_ep,
        "a replay moved bob's endpoint"
    );
    // The tunnel still works.
    send_numbered(&lab, alice_vip, 1_000_000, 50);
    let more = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        (sink_seen(&sink_out).len() as u64 >= DELIVERED + 50).then_some(())
    });
    assert!(
        more.is_some(),
        "the tunnel stopped working after the attack\n{}",
        lab.logs_tail()
    );
    assert_eq!(sink_seen(&sink_out).len() as u64, DELIVERED + 50);
    sink.stop();

    eprintln!("| kind | from | sent | drop reason | counted |");
    eprintln!("|---|---|--:|---|--:|");
    for o in &outcomes {
        eprintln!(
            "| {} | {} | {} | `{}` | {} |",
            o.kind, o.source, o.tried, o.reason, o.counted
        );
    }
    let total: u64 = outcomes.iter().map(|o| o.tried).sum();
    eprintln!(
        "sent {total} hostile datagrams; delivered by the tunnel: {DELIVERED} + 50 (all genuine), \
         none of the hostile ones"
    );
}

/// A counter's value, with or without the `_total` suffix the exposition adds.
fn counter(m: &BTreeMap<String, u64>, name: &str) -> u64 {
    m.get(name)
        .or_else(|| m.get(&format!("{name}_total")))
        .copied()
        .unwrap_or_else(|| panic!("no metric {name} in {:?}", m.keys().collect::<Vec<_>>()))
}

/// A node config for the hostile host (a third node), written 0600 into the run dir.
fn write_node_config(lab: &Lab, file: &str, name: &str, auth_key: Option<&str>) -> PathBuf {
    let key = lab.exec_ok("hostile", &[common::ntmtun_bin(), "keygen"]);
    let dc_pub = fs::read_to_string(lab.path("dc.pub")).expect("dc.pub");
    let auth = auth_key.map_or(String::new(), |k| format!("auth_key = \"{k}\"\n"));
    let text = format!(
        "name = \"{name}\"\nprivate_key = \"{}\"\ndc = [\"{}:{}\"]\ndc_public_key = \"{}\"\n{auth}\
         tun = \"ntm0\"\nlisten_port = 0\ncontrol_socket = \"{}\"\n\n[dns]\nmode = \"off\"\n",
        key.trim(),
        addr::DC_V4,
        addr::DC_PORT,
        dc_pub.trim(),
        lab.path("mallory.sock").display()
    );
    let path = lab.path(file);
    fs::write(&path, text).expect("write the config");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Runs a third node in the hostile namespace until its DC state is no longer "connecting"
/// (bounded); returns its status and stops it.
fn third_node(lab: &Lab, config: &Path) -> serde_json::Value {
    let sock = lab.path("mallory.sock");
    let _ = fs::remove_file(&sock);
    let mut node = lab.spawn(
        "hostile",
        &[
            common::ntmtun_bin(),
            "node",
            "--config",
            config.to_str().unwrap(),
        ],
        &lab.path("mallory.out"),
        &lab.path("mallory.log"),
    );
    let status = wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
        let out = lab.exec_t(
            "hostile",
            5,
            &[
                common::ntmtun_bin(),
                "status",
                "--socket",
                sock.to_str().unwrap(),
                "--json",
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["dc"]["state"] != "connecting").then_some(v)
    });
    node.stop();
    status.unwrap_or_else(|| {
        panic!(
            "the third node never left \"connecting\"\n{}",
            common::file_tail(&lab.path("mallory.log"), 30)
        )
    })
}

#[test]
fn access_is_refused_on_the_wire() {
    let Some(lab) = Lab::up("hostile") else {
        return;
    };
    let alice_vip = lab.virtual_ip("alice");
    let bob_vip = lab.virtual_ip("bob");
    let refused = |lab: &Lab| counter(&metrics(lab, "dc"), "ntmtun_dc_registrations_refused");

    // 1. Enrolment: no auth key is a config error that names the key; a wrong one is refused
    //    by the DC, which counts and logs it, and the node's status says why.
    let cfg = write_node_config(&lab, "noauth.toml", "mallory", None);
    let out = lab.exec_t(
        "hostile",
        20,
        &[
            common::ntmtun_bin(),
            "node",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("auth_key"),
        "no auth key:\n{err}"
    );
    let before = refused(&lab);
    let cfg = write_node_config(&lab, "wrongauth.toml", "mallory", Some("not-the-token"));
    let st = third_node(&lab, &cfg);
    assert_eq!(st["dc"]["state"], "refused", "wrong auth key: {st}");
    let why = st["dc"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("auth key not accepted"), "status error: {why}");
    assert!(
        refused(&lab) > before,
        "ntmtun_dc_registrations_refused did not grow"
    );
    let dc_log = fs::read_to_string(lab.path("dc.log")).unwrap_or_default();
    assert!(
        dc_log.contains("registration refused") && dc_log.contains("name=mallory"),
        "the DC did not log the refusal"
    );

    // 2. Another key cannot take alice's name (nor, so, her virtual IP: the DC assigns those,
    //    a node never names one); a new name gets an address of its own.
    let before = refused(&lab);
    let cfg = write_node_config(&lab, "taken.toml", "alice", Some("lab-enrollment-token"));
    let st = third_node(&lab, &cfg);
    assert_eq!(st["dc"]["state"], "refused", "name taken: {st}");
    let why = st["dc"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("already held"), "status error: {why}");
    assert!(refused(&lab) > before);
    let cfg = write_node_config(&lab, "carol.toml", "carol", Some("lab-enrollment-token"));
    let st = third_node(&lab, &cfg);
    assert_eq!(st["dc"]["state"], "registered", "{st}");
    let carol_vip: Ipv4Addr = st["virtual_ip"].as_str().unwrap().parse().unwrap();
    assert!(
        carol_vip != alice_vip && carol_vip != bob_vip,
        "carol got {carol_vip}"
    );
    assert_eq!(lab.virtual_ip("alice"), alice_vip);
    let dig = lab.exec_ok("bob", &["dig", "+short", "+time=3", "alice.ntm.internal"]);
    assert_eq!(dig.trim(), alice_vip.to_string(), "alice's name moved");

    // 3. The relay forwards nothing without a valid ticket and binding.
    let relay = SocketAddr::new(addr::RELAY1_V4.parse().unwrap(), addr::RELAY_PORT);
    let own = hostile_addr(relay, 40001);
    let mut frames = Vec::new();
    for kind in [0x25u8, 0x21, 0x26, 0x00] {
        // Kind::Relayed with an unknown session, Kind::RelayBind with a forged ticket, Kind::RelayPing with a bad MAC,
        // garbage.
        for _ in 0..16 {
            let mut f = hex_decode(&random_hex(120));
            f[0] = kind;
            frames.push(f);
        }
    }
    let m0 = metrics(&lab, "relay1");
    let sent = hostile_send(&lab, "relay", own, relay, &frames);
    let target = counter(&m0, "ntmtun_relay_dropped") + sent;
    let _ = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        (counter(&metrics(&lab, "relay1"), "ntmtun_relay_dropped") >= target).then_some(())
    });
    let m1 = metrics(&lab, "relay1");
    assert_eq!(counter(&m1, "ntmtun_relay_dropped"), target, "relay drops");
    for c in ["ntmtun_relay_forwarded_packets", "ntmtun_relay_binds"] {
        assert_eq!(counter(&m1, c), counter(&m0, c), "{c} moved");
    }
    eprintln!("relay: {sent} forged frames sent, {sent} dropped, 0 forwarded, 0 bound");

    // 4. A valid Noise initiation from a key the DC never directed to alice: no session.
    let alice_pub = ntmtun::keys::PublicKey::from_base64(
        &fs::read_to_string(lab.path("alice.pub")).expect("alice.pub"),
    )
    .expect("alice's public key");
    let alice_ep: SocketAddr = lab.status_json("alice")["dc"]["reflexive"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("alice's address as the DC sees it");
    let mallory = ntmtun::keys::PrivateKey::generate();
    let inits: Vec<Vec<u8>> = (1..=5u32)
        .map(|i| {
            let hello = ntmtun::proto::signal::encode(&ntmtun::proto::signal::PeerHello {
                timestamp: u64::from(i),
                incarnation: 1,
            })
            .unwrap();
            ntmtun::proto::handshake::Initiator::start(
                Kind::HandshakeInit,
                &mallory,
                &alice_pub,
                1000 + i,
                &hello,
            )
            .expect("an initiation")
            .1
        })
        .collect();
    let undirected =
        |lab: &Lab| lab.status_json("alice")["refused_handshakes"]["undirected"].as_u64();
    let before = undirected(&lab).expect("status has refused_handshakes.undirected");
    let sent = hostile_send(&lab, "handshake", own, alice_ep, &inits);
    let _ = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        (undirected(&lab) >= Some(before + sent)).then_some(())
    });
    assert_eq!(
        undirected(&lab),
        Some(before + sent),
        "undirected handshakes counted"
    );
    eprintln!("alice: {sent} valid initiations from an undirected key, {sent} dropped and counted");
    let st = lab.status_json("alice");
    let peers: Vec<&str> = st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        !peers.contains(&"carol") && peers.len() <= 1,
        "alice's peers: {peers:?}"
    );

    // 5. Files: a config holding a private key is refused when world-readable; the DC's
    //    store is 0600 in a 0700 directory.
    let loose = lab.path("loose.toml");
    fs::copy(lab.path("alice.toml"), &loose).unwrap();
    fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
    let out = lab.exec_t(
        "hostile",
        20,
        &[
            common::ntmtun_bin(),
            "node",
            "--config",
            loose.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("readable by every user")
            && err.contains("chmod 600"),
        "a 644 config was not refused:\n{err}"
    );
    let mode = |p: PathBuf| fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(lab.path("dc-state/dc.redb")), 0o600);

    // 6. The control socket is root's: mode 600, and `ntmtun status` as nobody is refused even
    //    where nobody may reach the socket's directory.
    let sock = lab.socket("alice");
    assert_eq!(mode(sock.clone()), 0o600, "control socket mode");
    let run_mode = mode(lab.run_dir.clone());
    fs::set_permissions(&lab.run_dir, fs::Permissions::from_mode(0o711)).unwrap();
    let out = lab.exec_t(
        "alice",
        10,
        &[
            "runuser",
            "-u",
            "nobody",
            "--",
            common::ntmtun_bin(),
            "status",
            "--socket",
            sock.to_str().unwrap(),
        ],
    );
    fs::set_permissions(&lab.run_dir, fs::Permissions::from_mode(run_mode)).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("ermission denied"),
        "nobody reached the control socket:\n{}",
        common::describe_output(&out)
    );
    lab.status_json("alice"); // root still can
}
