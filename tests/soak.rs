//! A short soak (issue "Hostile networks and faults", part 7): `scripts/soak.sh -d 60` with the
//! binary under test: the roam lab under iperf3 traffic while alice restarts, bob roams and both
//! rekey every 10 s. The script judges (memory growth of the daemons that ran throughout, traffic
//! that stopped); this test asserts its verdict and that its report is complete. The long run
//! (`scripts/soak.sh`, 10 minutes) is recorded in docs/security.md. Needs root.

mod common;

use common::{describe_output, lab_skipped, ntmtun_bin, repo_root};
use std::process::{Command, Stdio};

#[test]
fn one_minute_soak_keeps_traffic_and_memory_flat() {
    if lab_skipped("soak") {
        return;
    }
    let out = Command::new("timeout")
        .args(["-k", "10", "300"])
        .arg(repo_root().join("scripts").join("soak.sh"))
        .args(["-d", "60", "-c", "15"])
        .env("NTMTUN_BIN", ntmtun_bin())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/soak.sh");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "the soak failed\n{}",
        describe_output(&out)
    );
    for line in [
        "traffic: ",
        "churn: ",
        "errors: ",
        "dc ",
        "relay1 ",
        "alice ",
        "bob ",
    ] {
        assert!(
            report.lines().any(|l| l.starts_with(line)),
            "the report has no {line:?} line\n{report}"
        );
    }
    let churn = report
        .lines()
        .find(|l| l.starts_with("churn: "))
        .unwrap_or_default();
    assert!(
        !churn.starts_with("churn: 0 restarts") && !churn.contains(" 0 moves"),
        "no churn happened: {churn}"
    );
}
