//! DC federation in the lab (issue 6, part 2): two DCs of two domains
//! (scripts/lab.sh topology `fed`), one found by a DNS SRV record served by
//! dnsmasq, the other by its static address; alice (x.ntm.internal) and bob
//! (y.ntm.internal) reach each other by name with ping and nc. Needs root.

mod common;

use common::{describe_output, file_tail, ntmtun_bin, sha256_file, wait_for, Lab};
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// `dig +short NAME` in `host`, retried (bounded) until it gives an address.
fn resolve(lab: &Lab, host: &str, name: &str) -> Ipv4Addr {
    wait_for(Duration::from_secs(30), Duration::from_millis(500), || {
        let out = lab.exec_t(
            host,
            10,
            &["dig", "+short", "+time=3", "+tries=1", name, "A"],
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    })
    .unwrap_or_else(|| {
        panic!(
            "{host} could not resolve {name} in 30 s\n----- dc2.log -----\n{}{}",
            file_tail(&lab.path("dc2.log"), 40),
            lab.logs_tail()
        )
    })
}

fn transfer(lab: &Lab, from: &str, to: &str, name: &str, port: u16) {
    let data = lab.path(&format!("data-{port}.bin"));
    let mut bytes = vec![0u8; 1024 * 1024];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("read /dev/urandom");
    fs::write(&data, &bytes).expect("write the random file");
    let recv = lab.nc_transfer_named(from, to, name, port, &data);
    assert_eq!(
        sha256_file(&recv),
        sha256_file(&data),
        "nc {from} -> {name} arrived corrupted"
    );
}

#[test]
fn nodes_of_two_federated_domains_reach_each_other_by_name() {
    let Some(lab) = Lab::up("fed") else { return };
    let (alice_vip, bob_vip) = (lab.virtual_ip("alice"), lab.virtual_ip("bob"));
    assert!(
        alice_vip.octets()[..2] == [198, 18],
        "alice {alice_vip} not in x's prefix"
    );
    assert!(
        bob_vip.octets()[..2] == [198, 19],
        "bob {bob_vip} not in y's prefix"
    );

    // dc found dc2 through the SRV record (it has no address for it).
    assert_eq!(resolve(&lab, "alice", "bob.y.ntm.internal"), bob_vip);
    let dc_log = fs::read_to_string(lab.path("dc.log")).unwrap_or_default();
    assert!(
        dc_log.contains("federated DC address from DNS SRV"),
        "dc did not use the SRV record:\n{}",
        file_tail(&lab.path("dc.log"), 30)
    );
    lab.exec_ok(
        "alice",
        &["ping", "-n", "-c", "3", "-W", "5", "bob.y.ntm.internal"],
    );
    assert_eq!(resolve(&lab, "bob", "alice.x.ntm.internal"), alice_vip);
    lab.exec_ok(
        "bob",
        &["ping", "-n", "-c", "3", "-W", "5", "alice.x.ntm.internal"],
    );

    transfer(&lab, "alice", "bob", "bob.y.ntm.internal", 5601);
    transfer(&lab, "bob", "alice", "alice.x.ntm.internal", 5602);

    let st = lab.status_json("alice");
    let peers = st["peers"].as_array().cloned().unwrap_or_default();
    assert!(
        peers.iter().any(|p| p["name"] == "bob.y.ntm.internal"),
        "alice's peers: {peers:?}"
    );
}

/// `ntmtun ping NAME --count 1` in `host`, retried (bounded, `limit`)
/// until the answer line `ANSWERED: rtt ...` (the name lowercased) comes;
/// that line. Panics with the last try's output and the logs if it never
/// does.
fn ntmtun_ping(lab: &Lab, host: &str, name: &str, answered: &str, limit: Duration) -> String {
    let sock = lab.socket(host);
    let sock = sock.to_str().expect("the lab's socket path is UTF-8");
    let mut last = None;
    let line = wait_for(limit, Duration::from_millis(500), || {
        let out = lab.exec_t(
            host,
            15,
            &[ntmtun_bin(), "ping", name, "--count", "1", "--socket", sock],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{answered}: rtt ")))
            .map(String::from);
        last = Some(out);
        line
    });
    line.unwrap_or_else(|| {
        panic!(
            "{host}'s `ntmtun ping {name}` never got an answer in {limit:?}\n{}\n----- dc2.log -----\n{}{}",
            last.as_ref().map(describe_output).unwrap_or_default(),
            file_tail(&lab.path("dc2.log"), 30),
            lab.logs_tail()
        )
    })
}

/// Issue 11 step 1: `ntmtun ping` with the full name of a node of a
/// federated domain pings that node (the node resolves the name as a DNS
/// query would, which asks the other domain's DC), with the name in any
/// letter case; a bare label still means the node's own domain, where bob
/// (y) has no alice. Before the fix the CLI cut the name to `alice` and
/// bob's node asked its own DC: "no answer from alice within 3 s".
#[test]
fn ntmtun_ping_by_the_full_name_of_a_federated_node() {
    let Some(lab) = Lab::up("fed") else { return };
    let name = "alice.x.ntm.internal";
    // First contact by `ntmtun ping` itself (no DNS query before it), retried
    // while the DCs' federation session comes up.
    let line = ntmtun_ping(&lab, "bob", name, name, Duration::from_secs(40));
    eprintln!("bob: ntmtun ping {name}: {line}");

    // The pong came from alice of x: bob's peer is named in full and has
    // alice's virtual address.
    let alice_vip = lab.virtual_ip("alice").to_string();
    let st = lab.status_json("bob");
    let peers = st["peers"].as_array().cloned().unwrap_or_default();
    assert!(
        peers.iter().any(|p| p["name"] == name
            && p["fqdn"] == name
            && p["virtual_ip"] == alice_vip.as_str()),
        "bob's peers after `ntmtun ping {name}`: {peers:?}"
    );

    // DNS names are case-insensitive, and so is `ntmtun ping`.
    let limit = Duration::from_secs(20);
    ntmtun_ping(&lab, "bob", "Alice.X.ntm.internal", name, limit);
    // And the other way round, by full name too.
    let bob = "bob.y.ntm.internal";
    ntmtun_ping(&lab, "alice", bob, bob, limit);

    // A bare label is a name of bob's own domain y, which has no alice.
    let sock = lab.socket("bob");
    let out = lab.exec_t(
        "bob",
        15,
        &[
            ntmtun_bin(),
            "ping",
            "alice",
            "--count",
            "1",
            "--socket",
            sock.to_str().expect("the lab's socket path is UTF-8"),
        ],
    );
    assert!(
        !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("rtt"),
        "`ntmtun ping alice` in y reached a node\n{}",
        describe_output(&out)
    );
}

/// Issue 6 part 2, a pair across domains on a relay: alice (x) cannot reach
/// bob (y) directly (nftables in alice's namespace), so their pair goes
/// through one of dc's two relays. Killing that relay, dc (whose relay it
/// was) directs the pair again through dc2, and ping resumes through the
/// other relay within seconds.
#[test]
fn a_pair_across_domains_moves_to_another_relay_when_its_relay_dies() {
    let Some(lab) = Lab::up("fed") else { return };
    let bob = lab.host("bob");
    let (Some(IpAddr::V4(b4)), Some(IpAddr::V6(b6))) = (bob.v4, bob.v6) else {
        panic!("bob is not dual-stack in the fed lab: {bob:?}");
    };
    lab.sh_ok(
        "alice",
        &format!(
            "nft add table inet fedblock && \
             nft 'add chain inet fedblock out {{ type filter hook output priority 0; }}' && \
             nft 'add chain inet fedblock in {{ type filter hook input priority 0; }}' && \
             nft add rule inet fedblock out ip daddr {b4} drop && \
             nft add rule inet fedblock out ip6 daddr {b6} drop && \
             nft add rule inet fedblock in ip saddr {b4} drop && \
             nft add rule inet fedblock in ip6 saddr {b6} drop"
        ),
    );
    let name = "bob.y.ntm.internal";
    let ping = || {
        lab.exec_t("alice", 5, &["ping", "-n", "-c", "1", "-W", "1", name])
            .status
            .success()
    };
    wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
        ping().then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "alice never reached {name} through a relay\n{}",
            lab.logs_tail()
        )
    });
    let relay_of = |node: &str| -> Option<String> {
        let st = lab.status_json(node);
        let p = st["peers"].as_array()?.first()?.clone();
        (p["path"] == "relay").then(|| p["relay"].as_str().map(String::from))?
    };
    let used = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        relay_of("alice")
    })
    .unwrap_or_else(|| panic!("alice's path to bob is not the relay\n{}", lab.logs_tail()));
    let (dead, spare) = if used.contains(".20:") || used.contains("::20]") {
        ("relay1", ".21")
    } else {
        ("relay2", ".20")
    };
    eprintln!("fed failover: killing {dead} ({used})");
    let killed_at = Instant::now();
    lab.kill_relay(dead);
    let took = wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
        ping().then(|| killed_at.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "traffic never resumed after killing {dead}\n----- dc2.log -----\n{}{}",
            file_tail(&lab.path("dc2.log"), 30),
            lab.logs_tail()
        )
    });
    for node in ["alice", "bob"] {
        let now_used = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
            relay_of(node).filter(|r| !r.contains(&used))
        })
        .unwrap_or_else(|| panic!("{node} still relays through {used}\n{}", lab.logs_tail()));
        assert!(
            now_used.contains(spare) || now_used.contains(&format!(":{}]", &spare[1..])),
            "{node} relays through {now_used}, expected the other relay"
        );
    }
    let dc_log = fs::read_to_string(lab.path("dc.log")).unwrap_or_default();
    assert!(
        dc_log.contains("relay of a pair across domains died"),
        "dc did not direct the pair again:\n{}",
        file_tail(&lab.path("dc.log"), 30)
    );
    eprintln!(
        "fed failover: ping resumed {:.1} s after killing {dead}",
        took.as_secs_f64()
    );
}

/// `[[federation]]` reloads on SIGHUP: dc2 drops its (static) entry for
/// x.ntm.internal, and bob loses the route to x's prefix and the name
/// alice.x.ntm.internal at once; a bad entry is refused; the entry put
/// back, both return without a restart of dc2 (bob's registration and
/// dc2's other state stay).
#[test]
fn a_federated_domain_removed_and_added_back_by_sighup() {
    let Some(lab) = Lab::up("fed") else { return };
    let alice_vip = lab.virtual_ip("alice");
    assert_eq!(resolve(&lab, "bob", "alice.x.ntm.internal"), alice_vip);
    let x_prefix = "198.18.0.0/16";
    let routed = || {
        let out = lab.exec_ok("bob", &["ip", "-4", "route", "show", "dev", "ntm0"]);
        out.contains(x_prefix)
    };
    assert!(routed(), "bob has no route to {x_prefix} before the reload");

    let dc2_toml = lab.path("dc2.toml");
    let original = fs::read_to_string(&dc2_toml).expect("read dc2.toml");
    let cut = original
        .find("[[federation]]")
        .expect("dc2.toml has no [[federation]] table");
    fs::write(&dc2_toml, &original[..cut]).expect("write dc2.toml");
    lab.signal("dc2", "HUP");
    wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        (!routed()).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "bob still routes {x_prefix} after dc2 dropped x.ntm.internal\n----- dc2.log -----\n{}{}",
            file_tail(&lab.path("dc2.log"), 30),
            lab.logs_tail()
        )
    });
    let out = lab.exec_t(
        "bob",
        10,
        &[
            "dig",
            "+short",
            "+time=3",
            "+tries=1",
            "alice.x.ntm.internal",
            "A",
        ],
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&alice_vip.to_string()),
        "alice.x.ntm.internal still resolves to {alice_vip} after the removal"
    );

    // A bad entry (dc2's own domain) is refused as at start-up: nothing changes.
    let own = original.replace("domain = \"x.ntm.internal\"", "domain = \"y.ntm.internal\"");
    assert_ne!(own, original, "dc2.toml names no x.ntm.internal entry");
    fs::write(&dc2_toml, &own).expect("write dc2.toml");
    lab.signal("dc2", "HUP");
    let refused = || {
        fs::read_to_string(lab.path("dc2.log"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("reload refused"))
            .map(String::from)
    };
    let line = wait_for(Duration::from_secs(10), Duration::from_millis(200), refused)
        .unwrap_or_else(|| {
            panic!(
                "dc2 did not refuse its own domain in [[federation]]\n{}",
                file_tail(&lab.path("dc2.log"), 20)
            )
        });
    assert!(
        line.contains("federation[0].domain"),
        "refusal names no key: {line}"
    );
    assert!(!routed(), "the refused reload federated");

    fs::write(&dc2_toml, &original).expect("write dc2.toml");
    lab.signal("dc2", "HUP");
    wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
        routed().then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "bob has no route to {x_prefix} after x.ntm.internal was added back\n----- dc2.log -----\n{}{}",
            file_tail(&lab.path("dc2.log"), 30),
            lab.logs_tail()
        )
    });
    assert_eq!(resolve(&lab, "bob", "alice.x.ntm.internal"), alice_vip);
    lab.exec_ok(
        "bob",
        &["ping", "-n", "-c", "3", "-W", "5", "alice.x.ntm.internal"],
    );
    let log = fs::read_to_string(lab.path("dc2.log")).unwrap_or_default();
    for line in ["federation entry removed", "federation entry added"] {
        assert!(log.contains(line), "dc2.log lacks {line:?}");
    }
    assert!(
        !log.contains("restart to apply"),
        "dc2 asked for a restart:\n{}",
        file_tail(&lab.path("dc2.log"), 30)
    );
}
