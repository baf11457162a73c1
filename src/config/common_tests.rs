//! What every file shares: secret keys kept out of messages, metrics_listen,
//! file modes, syntax errors, reading files.

use super::test_support::*;
use super::*;
use std::path::Path;

#[test]
fn private_key_errors_do_not_show_the_secret() {
    let k = keys();
    let secretish = "c2VjcmV0LXNlY3JldC1zZWNyZXQ=";
    let msg = dc_err(&k, &[("private_key", &format!("{secretish:?}"))]);
    assert_mentions(
        &msg,
        &[
            "dc.toml: key `private_key`: ",
            "28 characters, not shown because it is secret",
            "not a valid private key: decodes to 20 bytes; expected exactly 32",
            "ntmtun keygen",
        ],
    );
    assert!(!msg.contains(secretish), "{msg}");

    let msg = dc_err(&k, &[("private_key", r#""<output of ntmtun keygen>""#)]);
    assert_mentions(&msg, &["key `private_key`", "not valid base64"]);
    assert!(!msg.contains("output of ntmtun keygen>"), "{msg}");

    let msg = dc_err(&k, &[("private_key", "12345")]);
    assert_mentions(
        &msg,
        &["key `private_key`", "is an integer", "base64 of 32 bytes"],
    );
    assert!(!msg.contains("12345"), "{msg}");

    let msg = dc_err(&k, &[("private_key", "")]);
    assert_mentions(
        &msg,
        &["key `private_key`: missing; expected base64 of 32 bytes"],
    );
}

#[test]
fn metrics_listen_is_optional_and_checked() {
    let k = keys();
    assert_eq!(
        parse_dc(&dc_text(&k, &[]), "dc.toml")
            .unwrap()
            .metrics_listen,
        None
    );
    let text = format!(
        "{}\nmetrics_listen = \"127.0.0.1:9101\"\n",
        dc_text(&k, &[])
    );
    assert_eq!(
        parse_dc(&text, "dc.toml").unwrap().metrics_listen,
        Some(sa("127.0.0.1:9101"))
    );
    let text = format!("{}\nmetrics_listen = \"localhost\"\n", dc_text(&k, &[]));
    let msg = parse_dc(&text, "dc.toml").unwrap_err().to_string();
    assert_mentions(&msg, &["metrics_listen", "\"localhost\"", "127.0.0.1:9101"]);
}

#[test]
fn world_readable_config_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dc.toml");
    std::fs::write(&path, "listen = []").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let msg = load_dc(&path).unwrap_err().to_string();
    assert_mentions(&msg, &["readable by every user", "chmod 600"]);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let msg = load_dc(&path).unwrap_err().to_string();
    assert!(!msg.contains("readable by every user"), "{msg}");
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let msg = parse_dc("listen = [\"1.2.3.4:1\"]\ndomain = ntm\n", "dc.toml")
        .unwrap_err()
        .to_string();
    assert_mentions(&msg, &["dc.toml: TOML parse error at line 2, column 10"]);
    let msg = parse_node("name = \"a\"\nname = \"b\"\n", "node.toml")
        .unwrap_err()
        .to_string();
    assert_mentions(
        &msg,
        &["node.toml: TOML parse error at line 2", "duplicate key"],
    );
}

#[test]
fn load_reads_files_and_names_them() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let private = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap()
    };
    let dc_path = dir.path().join("dc.toml");
    std::fs::write(&dc_path, dc_text(&k, &[])).unwrap();
    private(&dc_path);
    assert_eq!(load_dc(&dc_path).unwrap().domain, "ntm.internal");

    let node_path = dir.path().join("node.toml");
    let with_resolvers = node_text(&k, &[("[dns]", "resolvers = [\"192.0.2.1\"]")]);
    std::fs::write(&node_path, with_resolvers).unwrap();
    private(&node_path);
    assert_eq!(
        load_node(&node_path).unwrap().dns.resolvers,
        vec![ip("192.0.2.1")]
    );

    std::fs::write(&node_path, node_text(&k, &[("name", "\"Bob\"")])).unwrap();
    let msg = load_node(&node_path).unwrap_err().to_string();
    assert_mentions(
        &msg,
        &[&format!("{}: key `name`: \"Bob\"", node_path.display())],
    );

    let missing = dir.path().join("absent.toml");
    let err = load_dc(&missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot read config file {}: No such file or directory (os error 2); \
             check the path given to --config",
            missing.display()
        )
    );
    assert!(err.key().is_none());
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn error_key_accessor() {
    let k = keys();
    let err = parse_test_node(&node_text(&k, &[("tun", "\"a/b\"")])).unwrap_err();
    assert_eq!(err.key(), Some("tun"));
}
