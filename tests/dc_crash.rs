//! Crash safety of the DC (issue "Hostile networks and faults", part 4): a real `ntmtun dc` on
//! loopback is SIGKILLed again and again while many nodes enrol at once, and restarted each time.
//! The nodes are the library's own registration client (`node::dc_link::DcLink`, sans-IO) over
//! real UDP sockets, one thread each. Afterwards the store must open, hold every registration the
//! DC acknowledged with the same virtual IP, give no address to two nodes, and every node that
//! went unanswered must have enrolled after a restart.
//!
//! Loopback only, no root needed: the DC listens on 127.0.0.1, the nodes send from 127.0.0.2 ..
//! 127.0.0.201 (so the DC's per-source registration limit sees many sources, as it would in the
//! field).

use ntmtun::dc::store::Store;
use ntmtun::keys::PrivateKey;
use ntmtun::node::dc_link::{DcEvent, DcIdentity, DcLink};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NODES: usize = 150;
const KILLS: usize = 6;
const TOKEN: &str = "crash-test-token";
/// How long a node waits for the DC's answer before it counts as unanswered (real time).
const ANSWER_WAIT: Duration = Duration::from_millis(250);
/// Bound on one node's registration attempts.
const MAX_ATTEMPTS: usize = 400;

/// What a node thread saw: the virtual IP the DC acknowledged, and how many attempts went
/// unanswered before that (answers lost to a kill).
struct Outcome {
    name: String,
    key: PrivateKey,
    vip: Ipv4Addr,
    unanswered: usize,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a loopback UDP socket to find a free port")
        .port()
}

struct Dc {
    bin: &'static str,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Dc {
    fn start(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the DC log");
        let child = Command::new(self.bin)
            .args(["dc", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ntmtun dc");
        self.child = Some(child);
    }

    /// SIGKILL by PID (std's `Child::kill`), then reap it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL the DC");
            let st = c.wait().expect("reap the DC");
            assert!(
                !st.success(),
                "the DC exited cleanly before the kill; log:\n{}",
                self.log_text()
            );
        }
    }

    /// Wait (bounded: 10 s) until the DC logged that it is ready `times` times in all.
    fn wait_ready(&self, times: usize) {
        let t = Instant::now();
        while self.log_text().matches("DC ready").count() < times {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the DC did not get ready; log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn write_dc_config(dir: &Path, port: u16, key: &PrivateKey) -> PathBuf {
    let path = dir.join("dc.toml");
    let text = format!(
        "listen = [\"127.0.0.1:{port}\"]\n\
         domain = \"ntm.internal\"\n\
         private_key = \"{}\"\n\
         virtual_prefix = \"198.18.0.0/15\"\n\
         state_dir = \"{}\"\n\
         auth_keys = [\"{TOKEN}\"]\n",
        key.to_base64(),
        dir.join("state").display()
    );
    fs::write(&path, text).expect("write dc.toml");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod dc.toml");
    path
}

/// One node: register until the DC acknowledges. Time inside the link is virtual, so that its
/// backoff (1 s doubling to 30 s) does not make the test wait: after an unanswered attempt the
/// link's clock jumps to its next attempt.
fn enrol(
    i: usize,
    dc: SocketAddr,
    dc_key: ntmtun::keys::PublicKey,
    acked: &AtomicUsize,
) -> Outcome {
    let name = format!("n{i}");
    let key = PrivateKey::generate();
    let src = Ipv4Addr::new(127, 0, 0, 2 + (i % 200) as u8);
    let sock = UdpSocket::bind((src, 0)).expect("bind a node socket on loopback");
    sock.set_read_timeout(Some(ANSWER_WAIT))
        .expect("set a read timeout");
    let id = DcIdentity {
        key: key.clone(),
        dc_key,
        addrs: vec![dc],
        name: name.clone(),
        auth_key: TOKEN.into(),
        incarnation: i as u64 + 1,
    };
    let mut offset = Duration::ZERO;
    let mut link = DcLink::new(id, Instant::now(), i as u64 * 7919 + 1);
    let mut unanswered = 0;
    let mut buf = vec![0u8; 2048];
    for _ in 0..MAX_ATTEMPTS {
        let now = Instant::now() + offset;
        if let Some((to, bytes)) = link.poll(now, unix_nanos(), &[]) {
            // The DC may be down: ECONNREFUSED on loopback is an unanswered attempt.
            let _ = sock.send_to(&bytes, to);
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => match link.handle_response(from, &buf[..n], Instant::now() + offset) {
                Some(DcEvent::Registered(reg)) => {
                    acked.fetch_add(1, Ordering::SeqCst);
                    return Outcome {
                        name,
                        key,
                        vip: reg.virtual_ip,
                        unanswered,
                    };
                }
                Some(DcEvent::Refused(why)) => panic!("{name}: the DC refused: {why}"),
                None => {}
            },
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::ConnectionRefused
                ) =>
            {
                unanswered += 1;
                let now = Instant::now() + offset;
                offset += link.next_deadline().saturating_duration_since(now);
            }
            Err(e) => panic!("{name}: receive from the DC: {e}"),
        }
    }
    panic!("{name}: not registered after {MAX_ATTEMPTS} attempts");
}

#[test]
fn sigkilled_dc_keeps_every_acknowledged_enrolment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_udp_port();
    let dc_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let dc_key = PrivateKey::generate();
    let mut dc = Dc {
        bin: env!("CARGO_BIN_EXE_ntmtun"),
        config: write_dc_config(dir.path(), port, &dc_key),
        log: dir.path().join("dc.log"),
        child: None,
    };
    dc.start();
    // Only kills may leave a registration unanswered.
    dc.wait_ready(1);

    let acked = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..NODES)
        .map(|i| {
            let (acked, outcomes, pk) = (acked.clone(), outcomes.clone(), dc_key.public_key());
            thread::spawn(move || {
                let o = enrol(i, dc_addr, pk, &acked);
                outcomes.lock().expect("outcomes lock").push(o);
            })
        })
        .collect();

    // Kill when the acknowledged count passes evenly spaced marks, so kills land while many
    // registrations are in flight; restart at once.
    let mut kills = 0;
    let mut at = Vec::new();
    let start = Instant::now();
    while kills < KILLS && start.elapsed() < Duration::from_secs(120) {
        let mark = NODES * (kills + 1) / (KILLS + 2);
        let n = acked.load(Ordering::SeqCst);
        if n >= mark {
            dc.kill();
            at.push(n);
            kills += 1;
            dc.start();
        } else {
            thread::sleep(Duration::from_millis(1));
        }
    }
    for t in threads {
        t.join()
            .expect("a node thread panicked (see its message above)");
    }
    // One more kill with everything enrolled, then read the store the way the next DC would.
    dc.kill();
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes lock"));
    let log = dc.log_text();
    assert_eq!(
        kills, KILLS,
        "only {kills} kills happened in 120 s; log:\n{log}"
    );
    assert_eq!(outcomes.len(), NODES);

    let store = Store::open(&dir.path().join("state"))
        .unwrap_or_else(|e| panic!("the store does not open after {} kills: {e}", kills + 1));
    let records = store.all().expect("read every record");
    let by_key: HashMap<_, _> = records.iter().map(|r| (r.public_key, r)).collect();
    for o in &outcomes {
        let r = by_key.get(&o.key.public_key()).unwrap_or_else(|| {
            panic!(
                "{} was acknowledged ({}) but is not in the store",
                o.name, o.vip
            )
        });
        assert_eq!(r.name, o.name);
        assert_eq!(
            r.virtual_ip, o.vip,
            "{}: the DC acknowledged {} but the store holds {}",
            o.name, o.vip, r.virtual_ip
        );
    }
    let vips: HashSet<_> = records.iter().map(|r| r.virtual_ip).collect();
    assert_eq!(
        vips.len(),
        records.len(),
        "a virtual IP is held by two nodes: {records:?}"
    );
    assert_eq!(records.len(), NODES, "records beyond the enrolled nodes");
    let retried = outcomes.iter().filter(|o| o.unanswered > 0).count();
    assert!(
        retried > 0,
        "no registration went unanswered: the kills missed every enrolment (marks {at:?})"
    );
    eprintln!(
        "DC SIGKILLed {} times (at {at:?} acknowledged enrolments, then once after all {NODES}); \
         store intact: {} records, distinct virtual IPs; {retried} nodes went unanswered by a \
         killed DC and enrolled after a restart",
        kills + 1,
        records.len()
    );
}
