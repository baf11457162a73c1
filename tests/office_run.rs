//! The office under random traffic for one minute (`scripts/office.sh -d 60`): random pairs of
//! the 25-node office ping each other by name, first contacts included; no ping may be lost and
//! no daemon's heap may grow by more than 1 MiB. The 30-minute run is the same script with its
//! defaults (docs/connectivity.md has its last result). Needs root.

mod common;

use common::{describe_output, lab_skipped, ntmtun_bin, repo_root};
use std::process::{Command, Stdio};

#[test]
fn one_minute_of_random_traffic_in_the_office_loses_nothing() {
    if lab_skipped("office run") {
        return;
    }
    let out = Command::new("timeout")
        .args(["-k", "10", "400"])
        .arg(repo_root().join("scripts").join("office.sh"))
        .args(["-d", "60", "-g", "1024"])
        .env("NTMTUN_BIN", ntmtun_bin())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/office.sh");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "the office run failed\n{}",
        describe_output(&out)
    );
    let summary = report
        .lines()
        .find(|l| l.starts_with("office "))
        .unwrap_or_else(|| panic!("no summary line in the report\n{report}"));
    assert!(summary.ends_with(", 0 lost"), "{summary}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("first packets dropped")),
        "no queue counters in the report\n{report}"
    );
}
