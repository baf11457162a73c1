//! Bad configuration and command-line input (issue "Hostile networks and faults", part 6): the
//! real binary over a table of mistakes. Each must exit non-zero with an error on stderr that
//! names the key or flag, shows the bad value (secrets excepted) and says what to do instead.
//!
//! No root and no network: every case fails while reading its config or its arguments, before a
//! socket or a device exists (the late failures are in `lab_start_failures.rs`).

use ntmtun::keys::PrivateKey;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Words that show an error says what to do: every message must contain one.
const FIX_WORDS: [&str; 7] = [
    "Usage: ",
    "expected",
    "try '--help'",
    "use ",
    "run `",
    "check ",
    "set ",
];

/// Runs the binary with `stdin`; one that is still running after 10 s accepted its input and is
/// killed (its output then says so).
fn ntmtun(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ntmtun"))
        .args(args)
        .env("RUST_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ntmtun");
    // A binary that exits without reading stdin closes the pipe: not an error here.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    let start = Instant::now();
    while child.try_wait().expect("poll ntmtun").is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let mut out = child.wait_with_output().expect("reap ntmtun");
            out.stderr
                .extend_from_slice(b"\n(still running after 10 s: the input was accepted)");
            return out;
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait for ntmtun")
}

/// Checks one run; returns a description of what fell short, if anything.
fn check(what: &str, out: &Output, wants: &[&str]) -> Option<String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let mut why = Vec::new();
    if out.status.success() {
        why.push("exit status 0".to_string());
    }
    for w in wants {
        if !err.contains(w) {
            why.push(format!("stderr lacks {w:?}"));
        }
    }
    if !FIX_WORDS.iter().any(|f| err.contains(f)) {
        why.push(format!("stderr suggests no fix (none of {FIX_WORDS:?})"));
    }
    if err.contains("panicked") {
        why.push("it panicked".into());
    }
    (!why.is_empty()).then(|| format!("{what}: {}\n  stderr: {}", why.join("; "), err.trim()))
}

/// A config file as `key = value` lines, an optional `[dns]` table (keys `dns.*`) and raw text
/// appended at the end (for `[[relays]]`).
#[derive(Clone)]
struct Conf {
    keys: Vec<(String, String)>,
}

impl Conf {
    fn new(keys: &[(&str, String)]) -> Conf {
        Conf {
            keys: keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn with(&self, key: &str, value: &str) -> Conf {
        let mut c = self.without(key);
        c.keys.push((key.into(), value.into()));
        c
    }

    fn without(&self, key: &str) -> Conf {
        let mut c = self.clone();
        c.keys.retain(|(k, _)| k != key);
        c
    }

    fn text(&self) -> String {
        let mut top = String::new();
        let mut dns = String::new();
        let mut tail = String::new();
        for (k, v) in &self.keys {
            if let Some(k) = k.strip_prefix("dns.") {
                dns.push_str(&format!("{k} = {v}\n"));
            } else if k == "raw" {
                tail.push_str(v);
            } else {
                top.push_str(&format!("{k} = {v}\n"));
            }
        }
        if !dns.is_empty() {
            top.push_str(&format!("\n[dns]\n{dns}"));
        }
        top + &tail
    }
}

fn write_conf(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).expect("write config");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod config");
}

/// A case: `key` of `base` set to `value`; stderr must name the key and show `shown`.
fn bad(
    role: &'static str,
    base: &Conf,
    key: &str,
    value: &str,
    shown: &[&str],
) -> (&'static str, Conf, Vec<String>) {
    let shown_key = match key.strip_prefix("dns.") {
        Some(k) => format!("[dns] {k}"),
        None => key.to_string(),
    };
    let mut wants = vec![format!("key `{shown_key}`")];
    wants.extend(shown.iter().map(|s| s.to_string()));
    (role, base.with(key, value), wants)
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

#[test]
fn every_bad_input_names_the_key_the_value_and_a_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dc_key = PrivateKey::generate();
    let node_key = PrivateKey::generate();
    let relay_key = PrivateKey::generate();
    let dc_pub = dc_key.public_key().to_string();
    let state = dir.path().join("state").display().to_string();
    let sock = dir.path().join("n.sock").display().to_string();

    let dc = Conf::new(&[
        ("listen", q("127.0.0.1:7446")),
        ("domain", q("ntm.internal")),
        ("private_key", q(&dc_key.to_base64())),
        ("state_dir", q(&state)),
        ("auth_keys", "[\"token\"]".into()),
    ]);
    let relay = Conf::new(&[
        ("listen", q("127.0.0.1:7447")),
        ("private_key", q(&relay_key.to_base64())),
        ("dc_public_key", q(&dc_pub)),
    ]);
    let node = Conf::new(&[
        ("name", q("alice")),
        ("private_key", q(&node_key.to_base64())),
        ("dc", q("198.51.100.10:7446")),
        ("dc_public_key", q(&dc_pub)),
        ("auth_key", q("token")),
        ("control_socket", q(&sock)),
        ("dns.mode", q("capture")),
        ("dns.resolvers", "[\"198.51.100.53\"]".into()),
    ]);

    // (role, config, what stderr must contain besides a fix)
    let mut cases: Vec<(&str, Conf, Vec<String>)> = vec![
        // dc.toml: every key with a bad value.
        bad("dc", &dc, "listen", "\"nonsense\"", &["\"nonsense\""]),
        bad("dc", &dc, "listen", "[]", &["[]"]),
        bad("dc", &dc, "listen", "7446", &["7446"]),
        bad("dc", &dc, "listen", "\"0.0.0.0:99999\"", &["99999"]),
        bad("dc", &dc, "domain", "\"ntm_internal\"", &["ntm_internal"]),
        bad("dc", &dc, "domain", "\"a..b\"", &["a..b"]),
        bad("dc", &dc, "domain", "\"\"", &["\"\""]),
        bad("dc", &dc, "private_key", "\"not-a-key\"", &[]),
        bad("dc", &dc, "private_key", "42", &[]),
        bad(
            "dc",
            &dc,
            "virtual_prefix",
            "\"198.18.0.0/31\"",
            &["198.18.0.0/31"],
        ),
        bad(
            "dc",
            &dc,
            "virtual_prefix",
            "\"198.18.0.0\"",
            &["198.18.0.0"],
        ),
        bad(
            "dc",
            &dc,
            "virtual_prefix",
            "\"2001:db8::/64\"",
            &["2001:db8::/64"],
        ),
        bad("dc", &dc, "state_dir", "\"\"", &["\"\""]),
        bad("dc", &dc, "state_dir", "[\"/tmp\"]", &["/tmp"]),
        bad("dc", &dc, "auth_keys", "[]", &["[]"]),
        bad("dc", &dc, "auth_keys", "[\"\"]", &["\"\""]),
        bad("dc", &dc, "auth_keys", "\"token\"", &[]),
        bad("dc", &dc, "node_expiry_secs", "5", &["5"]),
        bad("dc", &dc, "node_expiry_secs", "\"90\"", &["\"90\""]),
        bad("dc", &dc, "metrics_listen", "\"localhost\"", &["localhost"]),
    ];
    let relay_entry =
        |addr: &str, key: &str| format!("\n[[relays]]\naddress = {addr}\npublic_key = {key}\n");
    cases.push((
        "dc",
        dc.with("raw", &relay_entry("\"relay.example:1\"", &q(&dc_pub))),
        vec!["key `relays[0].address`".into(), "relay.example:1".into()],
    ));
    cases.push((
        "dc",
        dc.with("raw", &relay_entry("\"198.51.100.20:7447\"", "\"short\"")),
        vec!["key `relays[0].public_key`".into(), "short".into()],
    ));
    for key in ["listen", "domain", "private_key", "state_dir", "auth_keys"] {
        cases.push((
            "dc",
            dc.without(key),
            vec![format!("key `{key}`"), "missing".into()],
        ));
    }
    // relay.toml
    cases.push(bad("relay", &relay, "listen", "\"nowhere\"", &["nowhere"]));
    cases.push(bad("relay", &relay, "private_key", "\"AAAA\"", &[]));
    cases.push(bad("relay", &relay, "dc_public_key", "\"AAAA\"", &["AAAA"]));
    cases.push(bad("relay", &relay, "session_rate_mbps", "0", &["0"]));
    cases.push(bad(
        "relay",
        &relay,
        "session_rate_mbps",
        "\"fast\"",
        &["fast"],
    ));
    cases.push(bad(
        "relay",
        &relay,
        "metrics_listen",
        "\"127.0.0.1\"",
        &["127.0.0.1"],
    ));
    for key in ["listen", "private_key", "dc_public_key"] {
        cases.push((
            "relay",
            relay.without(key),
            vec![format!("key `{key}`"), "missing".into()],
        ));
    }
    // node.toml
    cases.push(bad("node", &node, "name", "\"Bob\"", &["Bob"]));
    cases.push(bad("node", &node, "name", "\"-x\"", &["-x"]));
    cases.push(bad("node", &node, "name", "\"a.b\"", &["a.b"]));
    cases.push(bad("node", &node, "name", "7", &["7"]));
    cases.push(bad("node", &node, "private_key", "\"short\"", &[]));
    cases.push(bad(
        "node",
        &node,
        "private_key",
        &q(&dc_key.to_base64()),
        &["DC's own private key"],
    ));
    cases.push(bad("node", &node, "dc", "\"dc.example\"", &["dc.example"]));
    cases.push(bad("node", &node, "dc", "[]", &["[]"]));
    cases.push(bad("node", &node, "dc", "\"0.0.0.0:7446\"", &["0.0.0.0"]));
    cases.push(bad("node", &node, "dc_public_key", "\"nope\"", &["nope"]));
    cases.push(bad("node", &node, "auth_key", "\" \"", &[]));
    cases.push(bad("node", &node, "tun", "\"a/b\"", &["a/b"]));
    cases.push(bad(
        "node",
        &node,
        "tun",
        "\"abcdefghijklmnopq\"",
        &["abcdefghijklmnopq"],
    ));
    cases.push(bad("node", &node, "listen_port", "70000", &["70000"]));
    cases.push(bad("node", &node, "listen_port", "-1", &["-1"]));
    cases.push(bad("node", &node, "listen_port", "\"auto\"", &["auto"]));
    cases.push(bad("node", &node, "control_socket", "\"\"", &["\"\""]));
    let long = format!("/{}", "s".repeat(120));
    cases.push(bad("node", &node, "control_socket", &q(&long), &[&long]));
    cases.push(bad("node", &node, "workers", "65", &["65"]));
    cases.push(bad("node", &node, "keepalive_secs", "4000", &["4000"]));
    cases.push(bad("node", &node, "rekey_secs", "5", &["5"]));
    cases.push(bad(
        "node",
        &node,
        "metrics_listen",
        "\"[::1]\"",
        &["[::1]"],
    ));
    cases.push(bad("node", &node, "dns.mode", "\"magic\"", &["magic"]));
    cases.push(bad(
        "node",
        &node,
        "dns.resolvers",
        "[\"resolver.example\"]",
        &["resolver.example"],
    ));
    cases.push(bad("node", &node, "dns.resolvers", "[]", &["[]"]));
    for key in ["name", "private_key", "dc", "dc_public_key", "auth_key"] {
        cases.push((
            "node",
            node.without(key),
            vec![format!("key `{key}`"), "missing".into()],
        ));
    }
    // Unknown keys and bad TOML, for every role.
    for (role, base) in [("dc", &dc), ("relay", &relay), ("node", &node)] {
        cases.push((
            role,
            base.with("lsiten", "1"),
            vec!["lsiten".into(), "unknown field".into()],
        ));
        cases.push((
            role,
            base.with("raw", "\nthis is not toml\n"),
            vec!["line".into()],
        ));
        cases.push((
            role,
            base.with("raw", "\n[unknown_table]\nx = 1\n"),
            vec!["unknown_table".into()],
        ));
    }
    cases.push((
        "node",
        node.with("dns.color", "\"blue\""),
        vec!["color".into(), "unknown field".into()],
    ));

    let mut failures = Vec::new();
    let mut tried = 0;
    for (i, (role, conf, wants)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        let text = conf.text();
        write_conf(&path, &text, 0o600);
        let out = ntmtun(&[role, "--config", path.to_str().expect("utf-8 path")], "");
        let wants: Vec<&str> = wants.iter().map(String::as_str).collect();
        tried += 1;
        if let Some(f) = check(&format!("{role} config:\n{text}"), &out, &wants) {
            failures.push(f);
        }
    }
    // Valid files that must still be refused: readable by every user, or missing.
    for (role, base) in [("dc", &dc), ("relay", &relay), ("node", &node)] {
        let path = dir.path().join(format!("{role}-world.toml"));
        write_conf(&path, &base.text(), 0o644);
        let p = path.to_str().expect("utf-8 path");
        tried += 1;
        if let Some(f) = check(
            &format!("{role}: world-readable"),
            &ntmtun(&[role, "--config", p], ""),
            &[p, "644", "chmod 600"],
        ) {
            failures.push(f);
        }
        let missing = dir.path().join("missing.toml");
        let m = missing.to_str().expect("utf-8 path");
        tried += 1;
        if let Some(f) = check(
            &format!("{role}: missing file"),
            &ntmtun(&[role, "--config", m], ""),
            &[m, "--config"],
        ) {
            failures.push(f);
        }
    }

    // Bad flags and arguments of every subcommand.
    let nosock = dir.path().join("none.sock").display().to_string();
    let argv: Vec<(Vec<&str>, &str, Vec<&str>)> = vec![
        (vec![], "", vec!["Usage"]),
        (vec!["frob"], "", vec!["frob"]),
        (vec!["--frob"], "", vec!["--frob"]),
        (vec!["keygen", "extra"], "", vec!["extra"]),
        (vec!["keygen", "--bits", "256"], "", vec!["--bits"]),
        (vec!["pubkey"], "", vec!["stdin", "private key"]),
        (vec!["pubkey"], "not base64!", vec!["stdin", "private key"]),
        (vec!["pubkey"], "AAAA", vec!["stdin", "32"]),
        (vec!["pubkey", "key"], "", vec!["key"]),
        (vec!["dc"], "", vec!["--config"]),
        (vec!["dc", "--config"], "", vec!["--config"]),
        (vec!["dc", "--conifg", "x"], "", vec!["--conifg"]),
        (vec!["relay"], "", vec!["--config"]),
        (vec!["relay", "-c"], "", vec!["-c"]),
        (vec!["node"], "", vec!["--config"]),
        (vec!["node", "--config", "a", "b"], "", vec!["'b'"]),
        (
            vec!["status", "--socket", &nosock],
            "",
            vec![&nosock, "--socket"],
        ),
        (vec!["status", "--socket"], "", vec!["--socket"]),
        (vec!["status", "--json=yes"], "", vec!["--json"]),
        (vec!["status", "extra"], "", vec!["extra"]),
        (vec!["ping"], "", vec!["<NAME>"]),
        (
            vec!["ping", "bob", "--count", "abc"],
            "",
            vec!["abc", "--count"],
        ),
        (vec!["ping", "bob", "--count", "-1"], "", vec!["-1"]),
        (
            vec!["ping", "bob", "--count", "0"],
            "",
            vec!["'0'", "--count"],
        ),
        (vec!["ping", "Bad Name!"], "", vec!["Bad Name!", "name"]),
        (
            vec!["ping", "bob", "--socket", &nosock],
            "",
            vec![&nosock, "--socket"],
        ),
    ];
    for (args, stdin, wants) in &argv {
        tried += 1;
        if let Some(f) = check(&format!("ntmtun {args:?}"), &ntmtun(args, stdin), wants) {
            failures.push(f);
        }
    }
    eprintln!("{tried} bad inputs tried, {} fell short", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {tried} bad inputs got a poor error:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// `keygen --out PATH` (issue 5: key files 0600, never world-readable): the file is created
/// owner-only whatever the umask, the public key goes to stdout, an existing file is never
/// overwritten, and `pubkey` refuses a key file every user can read.
#[test]
fn keygen_out_creates_an_owner_only_file_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node.key");
    let p = path.to_str().expect("utf-8 path");
    // A permissive umask: the mode must come from the open itself.
    let out = Command::new("sh")
        .args(["-c", "umask 000; exec \"$0\" keygen --out \"$1\""])
        .args([env!("CARGO_BIN_EXE_ntmtun"), p])
        .output()
        .expect("run ntmtun keygen --out");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        fs::metadata(&path).expect("key file").permissions().mode() & 0o777,
        0o600
    );
    let text = fs::read_to_string(&path).expect("read key file");
    let key = PrivateKey::from_base64(text.trim()).expect("the file holds a private key");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        key.public_key().to_string(),
        "stdout should be the file's public key"
    );

    let again = ntmtun(&["keygen", "--out", p], "");
    let failures: Vec<String> = [
        check("keygen --out EXISTING", &again, &[p, "already exists"]),
        check(
            "keygen --out in a missing directory",
            &ntmtun(&["keygen", "--out", &format!("{p}.d/x.key")], ""),
            &[&format!("{p}.d/x.key")],
        ),
        check(
            "keygen --out",
            &ntmtun(&["keygen", "--out"], ""),
            &["--out"],
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        text,
        "an existing key file was overwritten"
    );

    // Without --out: a private key on stdout, as before.
    let plain = ntmtun(&["keygen"], "");
    assert!(plain.status.success());
    PrivateKey::from_base64(String::from_utf8_lossy(&plain.stdout).trim())
        .expect("keygen prints a private key");

    // pubkey reads the file; made world-readable, it is refused with the fix.
    let pubkey_of = |mode: u32| {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        Command::new(env!("CARGO_BIN_EXE_ntmtun"))
            .arg("pubkey")
            .stdin(fs::File::open(&path).expect("open key file"))
            .output()
            .expect("run ntmtun pubkey")
    };
    let ok = pubkey_of(0o600);
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        key.public_key().to_string(),
        "{ok:?}"
    );
    if let Some(f) = check(
        "pubkey < world-readable key file",
        &pubkey_of(0o644),
        &[p, "readable by every user", "chmod 600"],
    ) {
        panic!("{f}");
    }
}
