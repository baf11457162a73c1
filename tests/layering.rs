//! The layering rules of docs/architecture.md ("Settings and layers"),
//! checked on the source text: what the compiler would enforce if `proto`
//! and the cores were crates of their own. A rule broken here names the
//! file, the path it imports and the rule.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The crate paths a file names (`crate::a::b`, and each member of a
/// `crate::{a, b::c}` group), as "a::b".
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for member in group[..end].split(',') {
                let member = member.trim();
                if !member.is_empty() && member != "self" {
                    out.insert(path_prefix(member));
                }
            }
        } else {
            out.insert(path_prefix(rest));
        }
    }
    out
}

/// The leading `a::b::c` of `s`, up to the first character that cannot be
/// part of a path (a group's brace included: `a::{x, y}` gives "a").
fn path_prefix(s: &str) -> String {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s[..end].trim_end_matches(':').to_string()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Fails with every (file, path) in `files` for which `allowed` says no.
#[track_caller]
fn check(files: &[PathBuf], rule: &str, allowed: impl Fn(&str) -> bool) {
    assert!(!files.is_empty(), "no files for the rule: {rule}");
    let mut broken = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for p in crate_paths(&text) {
            if !allowed(&p) {
                let name = f.strip_prefix(src()).unwrap_or(f);
                broken.push(format!("src/{} uses crate::{p}", name.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{rule}:\n{}", broken.join("\n"));
}

fn under(p: &str, module: &str) -> bool {
    p == module || p.starts_with(&format!("{module}::"))
}

#[test]
fn the_parser_finds_plain_and_grouped_paths() {
    let text = "use crate::proto::wire::{self, Kind};\nuse crate::{reload, net::poll};\n\
                let x = crate::config::load_dc(p);";
    let got: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(
        got,
        ["config::load_dc", "net::poll", "proto::wire", "reload"]
    );
}

/// The protocol is a leaf: wire formats, handshakes and sessions know
/// nothing of the roles, their settings or their IO.
#[test]
fn proto_uses_only_proto_and_keys() {
    check(
        &rust_files(&src().join("proto")),
        "src/proto may use only crate::proto and crate::keys",
        |p| under(p, "proto") || under(p, "keys"),
    );
}

/// The DC's and the relay's sans-IO cores take their own settings types
/// (`dc::settings`, `relay::core::RelayChange`): they never see a config
/// file's shape, the reload planner, or the metrics HTTP server.
#[test]
fn cores_use_neither_config_nor_reload_nor_the_metrics_server() {
    let dc = src().join("dc");
    let mut cores: Vec<PathBuf> = [
        "core.rs",
        "cross_domain.rs",
        "direction.rs",
        "federation.rs",
        "routes.rs",
        "settings.rs",
    ]
    .iter()
    .map(|f| dc.join(f))
    .collect();
    cores.push(src().join("relay").join("core.rs"));
    check(
        &cores,
        "a sans-IO core may not use crate::config, crate::reload or crate::metrics::server",
        |p| !under(p, "config") && !under(p, "reload") && !under(p, "metrics::server"),
    );
}

/// What the cores report with is a leaf; so is what they are configured
/// with on the DC.
#[test]
fn samples_and_dc_settings_are_leaves() {
    check(
        &[src().join("metrics").join("sample.rs")],
        "metrics::sample uses nothing of the crate",
        |_| false,
    );
    check(
        &[src().join("dc").join("settings.rs")],
        "dc::settings uses only crate::keys",
        |p| under(p, "keys"),
    );
}

/// The config loader translates files into the cores' types; it reaches
/// into no IO (the poll helper, sockets) and into no core's workings.
#[test]
fn config_uses_only_settings_types() {
    check(
        &rust_files(&src().join("config")),
        "src/config may use only keys, proto::name, proto::signal's limits, net::resolv \
         (the default resolvers) and the cores' settings types",
        |p| {
            under(p, "config")
                || under(p, "keys")
                || under(p, "proto::name")
                || under(p, "proto::signal")
                || under(p, "net::resolv")
                || under(p, "dc::settings")
                || p == "dataplane::io::IoMode"
                || p == "node::split_dns::DnsMode"
        },
    );
}
