//! The mesh at office scale (the `office` topology: 25 nodes, five public, two IPv6-only, six
//! behind each of two endpoint-independent NATs and one symmetric NAT, one DC, two relays).
//!
//! First contact: every node pings every other by name once (`ping -c1 -W3`, no retry), all
//! at the same time, and every ping must be answered; `NTMTUN_OFFICE_RUNS` runs in a row
//! (default 10), each with the nodes and the DC restarted so every pair meets anew. Then churn
//! with the tunnels up: nodes restarted, a node killed and started again, the DC restarted,
//! while a ping stream runs between two other nodes; after each step all pairs again at the
//! first packet. The time from the name lookup to the answered ping is reported per run.

mod common;

use common::*;
use std::collections::HashMap;
use std::thread;
use std::time::Duration;

/// One round: each of `from` pings each of `to` (but itself) once, by name, all at once.
/// Returns the pairs that got no answer and the lookup-to-reply times (ms) of those that did.
fn all_pairs(lab: &Lab, from: &[String], to: &[String]) -> (Vec<String>, Vec<u64>) {
    let handles: Vec<_> = from
        .iter()
        .map(|src| {
            let targets: Vec<&String> = to.iter().filter(|t| *t != src).collect();
            let script = targets
                .iter()
                .map(|t| {
                    format!(
                        "(s=$(date +%s%N); if ping -n -q -c 1 -W 3 {t}.ntm.internal >/dev/null 2>&1; \
                         then echo \"ok {t} $((($(date +%s%N) - s) / 1000000))\"; else echo \"lost {t}\"; fi) &"
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            let (src, prefix) = (src.clone(), lab.ns(src));
            thread::spawn(move || {
                let out = std::process::Command::new("ip")
                    .args(["netns", "exec", &prefix, "timeout", "60", "sh", "-c"])
                    .arg(format!("{script}\nwait"))
                    .output()
                    .expect("run the pings");
                (src, String::from_utf8_lossy(&out.stdout).into_owned())
            })
        })
        .collect();
    let (mut lost, mut times) = (Vec::new(), Vec::new());
    for h in handles {
        let (src, text) = h.join().expect("ping thread");
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["ok", _, ms] => times.push(ms.parse().unwrap_or(u64::MAX)),
                ["lost", t] => lost.push(format!("{src}->{t}")),
                _ => {}
            }
        }
    }
    (lost, times)
}

/// Lookup to first answered packet, one pair at a time (nothing else contending): from each of
/// `from` to every other node, in turn. Returns the times (ms) and the pairs that failed.
fn one_at_a_time(lab: &Lab, from: &[&str], to: &[String]) -> (Vec<String>, Vec<u64>) {
    let (mut lost, mut times) = (Vec::new(), Vec::new());
    for src in from {
        let script = to
            .iter()
            .filter(|t| t.as_str() != *src)
            .map(|t| {
                format!(
                    "s=$(date +%s%N); if ping -n -q -c 1 -W 3 {t}.ntm.internal >/dev/null 2>&1; \
                     then echo \"ok {t} $((($(date +%s%N) - s) / 1000000))\"; else echo \"lost {t}\"; fi"
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let out = lab.exec_t(src, 300, &["sh", "-c", &script]);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["ok", _, ms] => times.push(ms.parse().unwrap_or(u64::MAX)),
                ["lost", t] => lost.push(format!("{src}->{t}")),
                _ => {}
            }
        }
    }
    (lost, times)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// All pairs at once; panics naming the lost pairs.
fn assert_all_pairs(lab: &Lab, what: &str, from: &[String], to: &[String]) {
    let want: usize = from
        .iter()
        .map(|s| to.iter().filter(|t| *t != s).count())
        .sum();
    let (lost, mut times) = all_pairs(lab, from, to);
    times.sort_unstable();
    eprintln!(
        "office: {what}: {}/{want} first pings answered; lookup to reply median {} ms, p99 {} ms, max {} ms",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(0)
    );
    if lost.is_empty() && times.len() == want {
        return;
    }
    // The logs of the nodes of the first lost pairs.
    let mut involved: Vec<&str> = lost.iter().flat_map(|p| p.split("->")).collect::<Vec<_>>();
    involved.dedup();
    let tails: String = involved
        .iter()
        .take(4)
        .map(|n| {
            let log = lab.path(&format!("{n}.log"));
            format!("\n----- {} -----\n{}", log.display(), file_tail(&log, 80))
        })
        .collect();
    panic!(
        "{what}: {} of {want} first pings lost: {lost:?}\n{}{tails}",
        want - times.len(),
        lab.logs_tail()
    );
}

fn names(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every node's first packets, as a node restarted sees them: all daemons restarted.
fn fresh_mesh(lab: &Lab, nodes: &[String]) {
    for n in nodes {
        lab.stop(n);
    }
    lab.restart_dc();
    for n in nodes {
        lab.restart_node(n);
    }
    lab.wait_nodes_registered(&names(nodes), Duration::from_secs(60));
}

/// Packets of a ping stream from `from` to `to` (0.2 s apart, `count`), in the background;
/// returns how many were answered.
fn ping_stream(lab: &Lab, from: &str, to: &str, count: u32) -> thread::JoinHandle<u32> {
    let prefix = lab.ns(from);
    let to = format!("{to}.ntm.internal");
    thread::spawn(move || {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &prefix, "timeout", "120", "ping", "-n", "-q",
            ])
            .args(["-i", "0.2", "-W", "1", "-c", &count.to_string(), &to])
            .output()
            .expect("run ping");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(',')
            .find_map(|f| f.trim().strip_suffix(" received")?.parse().ok())
            .unwrap_or(0)
    })
}

#[test]
fn the_office_reaches_every_pair_at_the_first_packet_and_survives_churn() {
    let Some(lab) = Lab::up("office") else {
        return;
    };
    let nodes = lab.nodes();
    assert!(nodes.len() >= 24, "the office has {} nodes", nodes.len());
    let runs: u32 = std::env::var("NTMTUN_OFFICE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for run in 1..=runs {
        if run > 1 {
            fresh_mesh(&lab, &nodes);
        }
        assert_all_pairs(&lab, &format!("run {run}/{runs}"), &nodes, &nodes);
    }

    // Lookup to first answered packet without the crowd: one first contact at a time, from a
    // node of each kind (public, IPv6-only, behind each NAT) to every other node.
    fresh_mesh(&lab, &nodes);
    let (lost, mut times) = one_at_a_time(&lab, &["p01", "v01", "a01", "b01", "c01"], &nodes);
    times.sort_unstable();
    eprintln!(
        "office: one first contact at a time: {} answered, {} lost; lookup to reply median {} ms, p99 {} ms, max {} ms",
        times.len(),
        lost.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(0)
    );
    assert!(
        lost.is_empty(),
        "first contacts one at a time lost: {lost:?}"
    );

    // Churn, with the tunnels up and a ping stream between two nodes it does not touch.
    let stream = ping_stream(&lab, "p01", "a01", 150);
    for n in ["p02", "b03", "c04"] {
        lab.restart_node(n);
    }
    lab.wait_nodes_registered(&["p02", "b03", "c04"], Duration::from_secs(30));
    assert_all_pairs(&lab, "after three nodes restarted", &nodes, &nodes);

    lab.signal("a05", "KILL");
    let alive: Vec<String> = nodes.iter().filter(|n| *n != "a05").cloned().collect();
    assert_all_pairs(&lab, "with a05 killed", &alive, &alive);
    lab.restart_node("a05");
    lab.wait_nodes_registered(&["a05"], Duration::from_secs(30));
    assert_all_pairs(&lab, "after a05 came back", &nodes, &nodes);

    lab.restart_dc();
    lab.wait_nodes_registered(&names(&nodes), Duration::from_secs(60));
    assert_all_pairs(&lab, "after the DC restarted", &nodes, &nodes);

    let answered = stream.join().expect("ping stream");
    eprintln!("office: p01 -> a01 stream during the churn: {answered}/150 answered");
    assert!(
        answered >= 145,
        "the p01 -> a01 stream lost {} of 150 packets while other nodes churned\n{}",
        150 - answered,
        lab.logs_tail()
    );

    // What the first contacts cost the queues: counted, reported.
    let mut dropped: HashMap<&str, u64> = HashMap::new();
    for n in &nodes {
        let m = lab.metrics(n);
        for reason in ["peer_queue_full", "orphan_queue_full"] {
            let series = format!("ntmtun_node_control_dropped_total{{reason=\"{reason}\"}}");
            let v: u64 = m
                .lines()
                .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
                .unwrap_or(0);
            *dropped.entry(reason).or_default() += v;
        }
    }
    eprintln!("office: first packets dropped by full queues, all nodes: {dropped:?}");
}
