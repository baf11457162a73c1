//! dc.toml: defaults, forms and the errors for each key.

use super::test_support::*;
use super::*;
use crate::keys::PrivateKey;
use ipnet::Ipv4Net;
use std::path::PathBuf;

#[test]
fn dc_federation_entries_parse_and_are_checked() {
    let k = keys();
    let other = PrivateKey::generate().public_key().to_base64();
    let with = |fed: &str| format!("{}{fed}", dc_text(&k, &[]));
    let cfg = parse_dc(
        &with(&format!(
            "[[federation]]\ndomain = \"Y.ntm.internal.\"\npublic_key = \"{other}\"\n\n\
             [[federation]]\ndomain = \"z.ntm.internal\"\naddress = \"198.51.100.14\"\npublic_key = \"{other}\"\n"
        )),
        "dc.toml",
    )
    .unwrap();
    assert_eq!(cfg.federation.len(), 2);
    assert_eq!(cfg.federation[0].domain, "y.ntm.internal");
    assert_eq!(cfg.federation[0].address, None, "no address: DNS SRV");
    assert_eq!(cfg.federation[1].address, Some(sa("198.51.100.14:7446")));
    assert!(parse_dc(&dc_text(&k, &[]), "dc.toml")
        .unwrap()
        .federation
        .is_empty());

    let err = |fed: String| match parse_dc(&with(&fed), "dc.toml") {
        Ok(c) => panic!("accepted {fed}: {c:?}"),
        Err(e) => e.to_string(),
    };
    let own = err(format!(
        "[[federation]]\ndomain = \"ntm.internal\"\npublic_key = \"{other}\"\n"
    ));
    assert_mentions(&own, &["federation[0].domain", "own `domain`"]);
    let own_key = err(format!(
        "[[federation]]\ndomain = \"y.ntm.internal\"\npublic_key = \"{}\"\n",
        k.dc_public
    ));
    assert_mentions(&own_key, &["federation[0].public_key", "own public key"]);
    let twice = err(format!(
        "[[federation]]\ndomain = \"y.ntm.internal\"\npublic_key = \"{other}\"\n[[federation]]\ndomain = \"y.ntm.internal\"\npublic_key = \"{other}\"\n"
    ));
    assert_mentions(&twice, &["federation[1].domain", "listed twice"]);
    let addr = err(format!("[[federation]]\ndomain = \"y.ntm.internal\"\naddress = \"nowhere\"\npublic_key = \"{other}\"\n"));
    assert_mentions(&addr, &["federation[0].address", "\"nowhere\"", "DNS SRV"]);
    let no_key = err("[[federation]]\ndomain = \"y.ntm.internal\"\n".to_string());
    assert_mentions(&no_key, &["federation[0].public_key"]);
}

#[test]
fn dc_minimal_gets_defaults() {
    let k = keys();
    let cfg = parse_dc(&dc_text(&k, &[]), "dc.toml").unwrap();
    assert_eq!(
        cfg.listen,
        vec![sa("198.51.100.10:7446"), sa("[2001:db8:100::10]:7446")]
    );
    assert_eq!(cfg.domain, "ntm.internal");
    assert_eq!(cfg.private_key.to_base64(), k.dc_private);
    assert_eq!(
        cfg.virtual_prefix,
        "198.18.0.0/15".parse::<Ipv4Net>().unwrap()
    );
    assert_eq!(cfg.virtual_prefix, DEFAULT_VIRTUAL_PREFIX);
    assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/ntmtun/dc"));
    assert_eq!(
        cfg.auth_keys,
        vec!["change-me-enrollment-token".to_string()]
    );
    assert_eq!(cfg.node_expiry_secs, 90);
}

#[test]
fn dc_full_example_parses() {
    let k = keys();
    let text = format!(
        r#"# dc.toml
listen = ["198.51.100.10:7446", "[2001:db8:100::10]:7446"]
domain = "NTM.Internal."
private_key = "{}"
virtual_prefix = "10.99.7.1/16"   # host bits are dropped
state_dir = "/var/lib/ntmtun/dc"
auth_keys = ["change-me-enrollment-token", "second-token"]
node_expiry_secs = 300
"#,
        k.dc_private
    );
    let cfg = parse_dc(&text, "dc.toml").unwrap();
    assert_eq!(cfg.domain, "ntm.internal");
    assert_eq!(
        cfg.virtual_prefix,
        "10.99.0.0/16".parse::<Ipv4Net>().unwrap()
    );
    assert_eq!(cfg.auth_keys.len(), 2);
    assert_eq!(cfg.node_expiry_secs, 300);
}

#[test]
fn dc_listen_forms() {
    let k = keys();
    let one = |v: &str| {
        parse_dc(&dc_text(&k, &[("listen", v)]), "dc.toml")
            .unwrap()
            .listen
    };
    assert_eq!(one(r#""0.0.0.0:7446""#), vec![sa("0.0.0.0:7446")]);
    assert_eq!(one(r#"["[::]:9000"]"#), vec![sa("[::]:9000")]);
    assert_eq!(one(r#""198.51.100.10""#), vec![sa("198.51.100.10:7446")]);
    assert_eq!(one(r#"["2001:db8::1"]"#), vec![sa("[2001:db8::1]:7446")]);
}

#[test]
fn dc_listen_errors() {
    let k = keys();
    let cases: &[(&str, &[&str])] = &[
        (
            "[]",
            &["`listen`", "[]", "empty list", "expected a list of"],
        ),
        (
            r#"["198.51.100.300:7446"]"#,
            &["`listen`", "\"198.51.100.300:7446\"", "not a valid address"],
        ),
        (
            r#"["dc.example:7446"]"#,
            &[
                "`listen`",
                "\"dc.example:7446\"",
                "host names are not supported",
            ],
        ),
        (
            r#"["198.51.100.10:0"]"#,
            &["`listen`", "\"198.51.100.10:0\"", "port 0"],
        ),
        (
            r#"["198.51.100.10:7446", "198.51.100.10"]"#,
            &["`listen`", "\"198.51.100.10\"", "more than once"],
        ),
        (
            "7446",
            &["`listen`", "7446 is an integer", "expected a list of"],
        ),
        (
            r#"["198.51.100.10:7446", 5]"#,
            &["`listen`", "entry 2", "5, is an integer"],
        ),
        ("", &["`listen`", "missing", "expected a list of"]),
    ];
    for (value, parts) in cases {
        let msg = dc_err(&k, &[("listen", value)]);
        assert_mentions(&msg, &["dc.toml: key `listen`: "]);
        assert_mentions(&msg, parts);
    }
}

#[test]
fn dc_domain_errors() {
    let k = keys();
    let long_label = format!("\"{}.internal\"", "a".repeat(64));
    let long_total = format!("\"{}\"", ["abcdefghij"; 19].join("."));
    let cases: &[(&str, &[&str])] = &[
        (
            r#""ntm_internal""#,
            &["\"ntm_internal\"", "not a valid DNS name", "contains '_'"],
        ),
        (
            r#""-ntm.internal""#,
            &[
                "\"-ntm.internal\"",
                "label \"-ntm\" starts or ends with '-'",
            ],
        ),
        (
            r#""ntm..internal""#,
            &["\"ntm..internal\"", "label \"\" is empty"],
        ),
        (r#""""#, &["\"\"", "it is empty"]),
        (r#"".""#, &["\".\"", "it is empty"]),
        (&long_label, &["is 64 characters long, more than 63"]),
        (&long_total, &["208 characters long, more than 200"]),
        (
            "42",
            &[
                "42 is an integer",
                "expected a DNS name such as \"ntm.internal\"",
            ],
        ),
        ("", &["missing", "expected a DNS name"]),
    ];
    for (value, parts) in cases {
        let msg = dc_err(&k, &[("domain", value)]);
        assert_mentions(&msg, &["dc.toml: key `domain`: "]);
        assert_mentions(&msg, parts);
    }
    // Exactly 200 characters is allowed.
    let max = format!("\"{}.ab\"", ["abcdefghij"; 18].join("."));
    assert_eq!(max.len() - 2, 200);
    parse_dc(&dc_text(&k, &[("domain", &max)]), "dc.toml").unwrap();
}

#[test]
fn dc_virtual_prefix_errors() {
    let k = keys();
    let cases: &[(&str, &[&str])] = &[
        (
            r#""198.18.0.0/31""#,
            &["\"198.18.0.0/31\"", "/31 is too small"],
        ),
        (r#""fd00::/64""#, &["\"fd00::/64\"", "IPv6 prefix"]),
        (
            r#""198.18.0.0""#,
            &["\"198.18.0.0\"", "prefix length is missing"],
        ),
        (
            r#""198.18.0.0/33""#,
            &["\"198.18.0.0/33\"", "not an address/length prefix"],
        ),
        ("15", &["15 is an integer", "expected an IPv4 prefix"]),
    ];
    for (value, parts) in cases {
        let msg = dc_err(&k, &[("virtual_prefix", value)]);
        assert_mentions(&msg, &["dc.toml: key `virtual_prefix`: "]);
        assert_mentions(&msg, parts);
    }
    let cfg = parse_dc(
        &dc_text(&k, &[("virtual_prefix", r#""100.64.0.0/30""#)]),
        "dc.toml",
    )
    .unwrap();
    assert_eq!(cfg.virtual_prefix.prefix_len(), 30);
}

#[test]
fn dc_state_dir_auth_keys_and_expiry_errors() {
    let k = keys();
    let cases: &[(&str, &str, &[&str])] = &[
        ("state_dir", "", &["missing", "expected a directory path"]),
        ("state_dir", r#""""#, &["\"\" is empty"]),
        (
            "state_dir",
            "[]",
            &["[] is a list", "expected a directory path"],
        ),
        ("auth_keys", "", &["missing", "expected a non-empty list"]),
        (
            "auth_keys",
            "[]",
            &["[] is an empty list", "expected a non-empty list"],
        ),
        ("auth_keys", r#"["good", ""]"#, &["entry 2, \"\", is empty"]),
        (
            "auth_keys",
            r#"["good", "  "]"#,
            &["entry 2, \"  \", is empty"],
        ),
        (
            "auth_keys",
            r#""solo-token""#,
            &["is a string", "expected a non-empty list"],
        ),
        ("auth_keys", "[7]", &["entry 1", "is an integer"]),
        (
            "node_expiry_secs",
            "0",
            &["0 is out of range", "at least 30"],
        ),
        ("node_expiry_secs", "-5", &["-5 is out of range"]),
        (
            "node_expiry_secs",
            r#""90""#,
            &["\"90\" is a string", "a whole number of seconds"],
        ),
        ("node_expiry_secs", "1.5", &["1.5 is a float"]),
    ];
    for (key, value, parts) in cases {
        let msg = dc_err(&k, &[(key, value)]);
        assert_mentions(&msg, &[&format!("dc.toml: key `{key}`: ")]);
        assert_mentions(&msg, parts);
    }
    // Auth tokens are secrets too.
    let msg = dc_err(&k, &[("auth_keys", r#""solo-token""#)]);
    assert!(!msg.contains("solo-token"), "{msg}");
}

#[test]
fn dc_unknown_key_lists_valid_keys() {
    let k = keys();
    let msg = dc_err(&k, &[("listen_addr", r#""1.2.3.4:7446""#)]);
    assert_mentions(
        &msg,
        &[
            "dc.toml: ",
            "line 6",
            "unknown field `listen_addr`",
            "`listen`",
            "`domain`",
            "`node_expiry_secs`",
        ],
    );
}
