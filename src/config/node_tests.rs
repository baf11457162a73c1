//! node.toml: defaults, forms and the errors for each key.

use super::test_support::*;
use super::*;
use crate::dataplane::io::IoMode;
use crate::node::split_dns::DnsMode;
use std::cell::Cell;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

#[test]
fn node_minimal_gets_defaults() {
    let k = keys();
    let cfg = parse_test_node(&node_text(&k, &[])).unwrap();
    assert_eq!(cfg.name, "alice");
    assert_eq!(cfg.private_key.to_base64(), k.node_private);
    assert_eq!(cfg.dc, vec![sa("198.51.100.10:7446")]);
    assert_eq!(cfg.dc_public_key.to_base64(), k.dc_public);
    assert_eq!(cfg.auth_key, "change-me-enrollment-token");
    assert_eq!(cfg.tun, "ntm0");
    assert_eq!(cfg.listen_port, 0);
    assert_eq!(cfg.control_socket, PathBuf::from("/run/ntmtun/ntmtun.sock"));
    assert_eq!(cfg.workers, 0);
    assert_eq!(cfg.keepalive_secs, 15);
    assert_eq!(cfg.rekey_secs, 120);
    assert_eq!(
        cfg.dns,
        DnsConfig {
            mode: DnsMode::Capture,
            resolvers: vec![ip("192.0.2.53")]
        }
    );
}

#[test]
fn io_key_selects_the_shell() {
    let k = keys();
    let io = |v: &str| parse_test_node(&node_text(&k, &[("io", v)])).unwrap().io;
    assert_eq!(io(""), IoMode::Auto);
    assert_eq!(io(r#""auto""#), IoMode::Auto);
    assert_eq!(io(r#""uring""#), IoMode::Uring);
    assert_eq!(io(r#""epoll""#), IoMode::Epoll);
    for m in [IoMode::Auto, IoMode::Uring, IoMode::Epoll] {
        assert_eq!(m.as_str().parse::<IoMode>(), Ok(m));
    }
}

#[test]
fn node_full_example_parses() {
    let k = keys();
    let text = format!(
        r#"# node.toml
name = "alice"
private_key = "{}"
dc = ["198.51.100.10:7446", "2001:db8:100::10"]
dc_public_key = "{}"
auth_key = "change-me-enrollment-token"
tun = "ntm0"
listen_port = 51820
control_socket = "/run/ntmtun/ntmtun.sock"
workers = 4
keepalive_secs = 0
rekey_secs = 600

[dns]
mode = "stub"     # "capture" | "stub" | "off"
resolvers = ["198.51.100.53", "2001:db8::53"]
"#,
        k.node_private, k.dc_public
    );
    let called = Cell::new(false);
    let cfg = parse_node_with(&text, "node.toml", || {
        called.set(true);
        Ok(vec![])
    })
    .unwrap();
    assert!(!called.get(), "default resolvers read although set");
    assert_eq!(
        cfg.dc,
        vec![sa("198.51.100.10:7446"), sa("[2001:db8:100::10]:7446")]
    );
    assert_eq!(cfg.listen_port, 51820);
    assert_eq!(cfg.workers, 4);
    assert_eq!(cfg.keepalive_secs, 0);
    assert_eq!(cfg.rekey_secs, 600);
    assert_eq!(cfg.dns.mode, DnsMode::Stub);
    assert_eq!(
        cfg.dns.resolvers,
        vec![ip("198.51.100.53"), ip("2001:db8::53")]
    );
}

#[test]
fn node_dc_string_list_and_bare_ip() {
    let k = keys();
    let dc = |v: &str| parse_test_node(&node_text(&k, &[("dc", v)])).unwrap().dc;
    assert_eq!(
        dc(r#""198.51.100.10:9000""#),
        vec![sa("198.51.100.10:9000")]
    );
    assert_eq!(
        dc(r#"["198.51.100.10:9000"]"#),
        vec![sa("198.51.100.10:9000")]
    );
    assert_eq!(dc(r#""198.51.100.10""#), vec![sa("198.51.100.10:7446")]);
    assert_eq!(dc(r#""2001:db8::1""#), vec![sa("[2001:db8::1]:7446")]);
    assert_eq!(dc(r#""[2001:db8::1]""#), vec![sa("[2001:db8::1]:7446")]);
    assert_eq!(dc(r#"" [2001:db8::1]:1 ""#), vec![sa("[2001:db8::1]:1")]);
    assert_eq!(
        dc(r#"["198.51.100.10", "[2001:db8::1]:7447"]"#),
        vec![sa("198.51.100.10:7446"), sa("[2001:db8::1]:7447")]
    );
}

#[test]
fn node_dc_errors() {
    let k = keys();
    let cases: &[(&str, &[&str])] = &[
        ("[]", &["[] is an empty list"]),
        (
            r#""dc.example.com""#,
            &["\"dc.example.com\"", "host names are not supported"],
        ),
        (
            r#""dc.example.com:7446""#,
            &["\"dc.example.com:7446\"", "host names are not supported"],
        ),
        (r#""198.51.100.10:0""#, &["\"198.51.100.10:0\"", "port 0"]),
        (
            r#""198.51.100.10:70000""#,
            &[
                "\"198.51.100.10:70000\"",
                "not an IP address with an optional port",
            ],
        ),
        (
            r#""0.0.0.0:7446""#,
            &["\"0.0.0.0:7446\"", "0.0.0.0 is not a reachable address"],
        ),
        (r#""fe80::1%eth0""#, &["\"fe80::1%eth0\"", "scope"]),
        (r#""""#, &["\"\" is not a valid address: it is empty"]),
        ("7446", &["7446 is an integer"]),
        ("{ host = \"x\" }", &["is a table"]),
        ("", &["missing"]),
    ];
    for (value, parts) in cases {
        let msg = node_err(&k, &[("dc", value)]);
        assert_mentions(
            &msg,
            &["node.toml: key `dc`: ", "expected the DC's address"],
        );
        assert_mentions(&msg, parts);
    }
}

#[test]
fn node_dc_public_key_error_matches_contract() {
    let k = keys();
    let msg = node_err(&k, &[("dc_public_key", r#""abc=""#)]);
    assert_eq!(
        msg,
        "node.toml: key `dc_public_key`: \"abc=\" is not a valid public key: decodes to 2 bytes; expected exactly 32 (use the output of `ntmtun pubkey`)"
    );
    let msg = node_err(&k, &[("dc_public_key", r#""abc""#)]);
    assert_mentions(&msg, &["key `dc_public_key`: \"abc\"", "not valid base64"]);
    let msg = node_err(&k, &[("dc_public_key", "")]);
    assert_mentions(&msg, &["key `dc_public_key`: missing"]);
    let msg = node_err(&k, &[("dc_public_key", "true")]);
    assert_mentions(&msg, &["key `dc_public_key`: true is a boolean"]);
}

#[test]
fn node_refuses_the_dcs_private_key() {
    let k = keys();
    let msg = node_err(&k, &[("private_key", &format!("{:?}", k.dc_private))]);
    assert_mentions(&msg, &["key `private_key`", "DC's own private key"]);
    assert!(!msg.contains(&k.dc_private));
}

#[test]
fn node_name_errors() {
    let k = keys();
    let long = format!("\"{}\"", "a".repeat(64));
    let cases: &[(&str, &[&str])] = &[
        (r#""Alice""#, &["\"Alice\"", "upper case (use \"alice\")"]),
        (r#""al_ice""#, &["\"al_ice\"", "contains '_'"]),
        (r#""alice.home""#, &["\"alice.home\"", "contains '.'"]),
        (r#""-alice""#, &["\"-alice\"", "starts or ends with '-'"]),
        (r#""alice-""#, &["\"alice-\"", "starts or ends with '-'"]),
        (r#""""#, &["\"\"", "it is empty"]),
        (&long, &["64 characters long"]),
        ("1", &["1 is an integer"]),
        ("", &["missing"]),
    ];
    for (value, parts) in cases {
        let msg = node_err(&k, &[("name", value)]);
        assert_mentions(
            &msg,
            &["node.toml: key `name`: ", "expected a single DNS label"],
        );
        assert_mentions(&msg, parts);
    }
    let ok = format!("\"{}\"", "a1-".repeat(21).trim_end_matches('-'));
    parse_test_node(&node_text(&k, &[("name", &ok)])).unwrap();
}

#[test]
fn node_auth_key_and_tun_errors() {
    let k = keys();
    let cases: &[(&str, &str, &[&str])] = &[
        ("auth_key", r#""""#, &["\"\" is empty", "enrollment token"]),
        ("auth_key", "", &["missing"]),
        ("auth_key", "[\"x\"]", &["is a list"]),
        (
            "tun",
            r#""ntm-interface-00""#,
            &["\"ntm-interface-00\"", "16 bytes long", "1-15 bytes"],
        ),
        ("tun", r#""ntm/0""#, &["\"ntm/0\"", "contains '/'"]),
        ("tun", r#""ntm:0""#, &["\"ntm:0\"", "contains ':'"]),
        ("tun", r#""ntm 0""#, &["\"ntm 0\"", "contains ' '"]),
        ("tun", r#""..""#, &["\"..\"", "reserved"]),
        ("tun", r#""""#, &["\"\"", "it is empty"]),
        ("tun", "0", &["0 is an integer"]),
    ];
    for (key, value, parts) in cases {
        let msg = node_err(&k, &[(key, value)]);
        assert_mentions(&msg, &[&format!("node.toml: key `{key}`: ")]);
        assert_mentions(&msg, parts);
    }
    assert!(!node_err(&k, &[("auth_key", "[\"x\"]")]).contains("[\"x\"]"));
    let cfg = parse_test_node(&node_text(&k, &[("tun", r#""ntm-interface0""#)])).unwrap();
    assert_eq!(cfg.tun, "ntm-interface0");
}

#[test]
fn node_number_errors() {
    let k = keys();
    let long_socket = format!("\"/{}\"", "s".repeat(107));
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "listen_port",
            "70000",
            &["70000 is out of range", "0-65535"],
        ),
        ("listen_port", "-1", &["-1 is out of range"]),
        (
            "listen_port",
            r#""0""#,
            &["\"0\" is a string", "a UDP port number"],
        ),
        ("workers", "65", &["65 is out of range", "0-64"]),
        ("workers", "true", &["true is a boolean"]),
        (
            "io",
            r#""iouring""#,
            &["`io`", "\"iouring\" is not an IO shell", "\"uring\""],
        ),
        ("io", "1", &["1 is an integer", "\"auto\""]),
        (
            "keepalive_secs",
            "3601",
            &["3601 is out of range", "1-3600, or 0"],
        ),
        ("rekey_secs", "9", &["9 is out of range", "10-86400"]),
        ("rekey_secs", "86401", &["86401 is out of range"]),
        (
            "control_socket",
            &long_socket,
            &["108 bytes long", "too long for a Unix socket"],
        ),
        ("control_socket", r#""""#, &["\"\" is empty"]),
    ];
    for (key, value, parts) in cases {
        let msg = node_err(&k, &[(key, value)]);
        assert_mentions(&msg, &[&format!("node.toml: key `{key}`: ")]);
        assert_mentions(&msg, parts);
    }
    let cfg = parse_test_node(&node_text(
        &k,
        &[
            ("listen_port", "65535"),
            ("workers", "64"),
            ("keepalive_secs", "3600"),
            ("rekey_secs", "10"),
            ("control_socket", r#""/tmp/x.sock""#),
        ],
    ))
    .unwrap();
    assert_eq!(
        (
            cfg.listen_port,
            cfg.workers,
            cfg.keepalive_secs,
            cfg.rekey_secs
        ),
        (65535, 64, 3600, 10)
    );
    assert_eq!(cfg.control_socket, PathBuf::from("/tmp/x.sock"));
}

#[test]
fn node_unknown_keys_are_errors() {
    let k = keys();
    let msg = node_err(&k, &[("dc_pubkey", r#""x""#)]);
    assert_mentions(
        &msg,
        &[
            "node.toml: ",
            "unknown field `dc_pubkey`",
            "`dc_public_key`",
            "`dns`",
        ],
    );
    let msg = node_err(&k, &[("[dns]", "mdoe = \"off\"")]);
    assert_mentions(
        &msg,
        &[
            "node.toml: ",
            "unknown field `mdoe`",
            "`mode`",
            "`resolvers`",
        ],
    );
}

#[test]
fn dns_mode_and_resolvers() {
    let k = keys();
    let node = |dns: &str| parse_test_node(&node_text(&k, &[("[dns]", dns)]));
    assert_eq!(node("mode = \"off\"").unwrap().dns.mode, DnsMode::Off);
    assert_eq!(
        node("mode = \"capture\"").unwrap().dns.mode,
        DnsMode::Capture
    );
    assert_eq!(node("").unwrap().dns.mode, DnsMode::Capture);
    assert_eq!(
        node("resolvers = \"2001:db8::53\"").unwrap().dns.resolvers,
        vec![ip("2001:db8::53")]
    );
    assert_eq!(
        node("mode = \"off\"\nresolvers = []")
            .unwrap()
            .dns
            .resolvers,
        Vec::<IpAddr>::new()
    );
    let inline = format!("{}dns = {{ mode = \"off\" }}\n", node_text(&k, &[]));
    assert_eq!(parse_test_node(&inline).unwrap().dns.mode, DnsMode::Off);

    let cases: &[(&str, &str, &[&str])] = &[
        (
            "mode = \"Capture\"",
            "[dns] mode",
            &[
                "\"Capture\" is not a DNS mode",
                "\"capture\", \"stub\" or \"off\"",
            ],
        ),
        ("mode = 1", "[dns] mode", &["1 is an integer"]),
        (
            "resolvers = [\"198.51.100.53:53\"]",
            "[dns] resolvers",
            &["\"198.51.100.53:53\"", "not a valid resolver address"],
        ),
        (
            "resolvers = [\"dns.google\"]",
            "[dns] resolvers",
            &["\"dns.google\""],
        ),
        (
            "resolvers = [\"0.0.0.0\"]",
            "[dns] resolvers",
            &["\"0.0.0.0\"", "not a reachable address"],
        ),
        (
            "resolvers = []",
            "[dns] resolvers",
            &[
                "[] is an empty list",
                "mode is \"capture\"",
                "mode = \"off\"",
            ],
        ),
        (
            "resolvers = [53]",
            "[dns] resolvers",
            &["entry 1", "53, is an integer"],
        ),
    ];
    for (dns, key, parts) in cases {
        let msg = node(dns).unwrap_err().to_string();
        assert_mentions(&msg, &[&format!("node.toml: key `{key}`: ")]);
        assert_mentions(&msg, parts);
    }

    let msg = parse_test_node(&format!("{}dns = \"capture\"\n", node_text(&k, &[])))
        .unwrap_err()
        .to_string();
    assert_mentions(
        &msg,
        &[
            "node.toml: ",
            "dns = \"capture\"",
            "invalid type: string \"capture\"",
            "a table [dns]",
        ],
    );
}

#[test]
fn dns_default_resolvers_failures() {
    let k = keys();
    let text = node_text(&k, &[]);
    let msg = parse_node_with(&text, "node.toml", || {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "No such file or directory",
        ))
    })
    .unwrap_err()
    .to_string();
    assert_mentions(
        &msg,
        &[
            "node.toml: key `[dns] resolvers`: not set",
            "/etc/resolv.conf: No such file or directory",
            "resolvers = [\"198.51.100.53\"]",
        ],
    );
    let msg = parse_node_with(&text, "node.toml", || Ok(vec![]))
        .unwrap_err()
        .to_string();
    assert_mentions(
        &msg,
        &[
            "key `[dns] resolvers`: not set",
            "lists no nameserver",
            "set it in [dns]",
        ],
    );

    // With DNS off, a missing resolv.conf does not matter.
    let off = node_text(&k, &[("[dns]", "mode = \"off\"")]);
    let cfg = parse_node_with(&off, "node.toml", || Err(io::Error::other("boom"))).unwrap();
    assert_eq!(
        cfg.dns,
        DnsConfig {
            mode: DnsMode::Off,
            resolvers: vec![]
        }
    );
}
