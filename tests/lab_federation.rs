//! DC federation in the lab (issue 6, part 2): two DCs of two domains
//! (scripts/lab.sh topology `fed`), one found by a DNS SRV record served by
//! dnsmasq, the other by its static address; alice (x.ntm.internal) and bob
//! (y.ntm.internal) reach each other by name with ping and nc. Needs root.

mod common;

use common::{file_tail, sha256_file, wait_for, Lab};
use std::fs;
use std::net::Ipv4Addr;
use std::time::Duration;

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
