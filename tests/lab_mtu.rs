//! A narrow underlay that drops ICMP (issue "Hostile networks and faults",
//! part 4): alice's NAT router has a 1280-byte uplink and sends no ICMP, so
//! full-size tunnel datagrams vanish without a word. The nodes' in-tunnel
//! path MTU probing finds the figure, TCP SYNs are clamped and bigger
//! packets are answered with ICMP from the TUN side: TCP by name still
//! works both ways, intact. Needs root.

mod common;

use common::{sha256_file, wait_for, Lab};
use std::fs;
use std::time::Duration;

/// Inner MTU a 1280-byte IPv4 link leaves: 1280 - 20 - 8 - 32 = 1220.
const NARROW_INNER_MTU: u64 = 1220;

fn path_mtu(lab: &Lab, node: &str) -> Option<u64> {
    let st = lab.try_status_json(node).ok()?;
    st["peers"].get(0)?["path_mtu"].as_u64()
}

fn transfer(lab: &Lab, from: &str, to: &str, port: u16) {
    let data = lab.path(&format!("data-{from}-{port}.bin"));
    let mut bytes = vec![0u8; 4 * 1024 * 1024];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("read /dev/urandom");
    fs::write(&data, &bytes).expect("write the random file");
    let recv = lab.nc_transfer(to, from, port, &data);
    assert_eq!(
        sha256_file(&recv),
        sha256_file(&data),
        "{from} -> {to}: nc transfer arrived corrupted\n{}",
        lab.logs_tail()
    );
}

#[test]
fn narrow_underlay_without_icmp_still_carries_tcp() {
    let Some(lab) = Lab::build("nat-nat") else {
        return;
    };
    // The router's uplink and the switch port facing it take 1280 bytes;
    // the router neither sends nor forwards "fragmentation needed".
    lab.sh_ok(
        "nata",
        "ip link set eth0 mtu 1280 && nft -f - <<'EOF'
table inet ntmtest_noicmp {
    chain local_out { type filter hook output priority 0; icmp type destination-unreachable drop; }
    chain forwarded { type filter hook forward priority 0; icmp type destination-unreachable drop; }
}
EOF",
    );
    lab.sh_ok("sw", "ip link set nata-eth0 mtu 1280");
    lab.start();

    lab.exec_ok(
        "bob",
        &[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "alice.ntm.internal",
        ],
    );
    // TCP at once, while probing may still be running: the ICMP answers
    // from the TUN side carry it.
    transfer(&lab, "bob", "alice", 5301);
    transfer(&lab, "alice", "bob", 5302);
    let found = wait_for(Duration::from_secs(10), Duration::from_millis(500), || {
        (path_mtu(&lab, "alice") == Some(NARROW_INNER_MTU)
            && path_mtu(&lab, "bob") == Some(NARROW_INNER_MTU))
        .then_some(())
    });
    assert!(
        found.is_some(),
        "path MTU not found: alice {:?}, bob {:?}\n{}",
        path_mtu(&lab, "alice"),
        path_mtu(&lab, "bob"),
        lab.logs_tail()
    );
    // The sender's kernel learned the figure from the TUN side.
    let route = lab.exec_ok(
        "bob",
        &["ip", "route", "get", &lab.virtual_ip("alice").to_string()],
    );
    eprintln!("bob: ip route get alice = {}", route.trim());
}
