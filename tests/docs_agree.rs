//! The docs agree with the program (issue 17, part 7). The program is the truth; each test
//! derives its side from the program and fails on a name documented in one and not the other:
//!
//! - config keys: docs/configuration.md (each role's key table and `###` sections, the
//!   `[[table]]` key tables, the reload table) against the keys the config parser accepts,
//!   found by asking it (serde's `deny_unknown_fields` error lists a table's keys), so the
//!   check needs no list of its own and follows the parser wherever it lives;
//! - metrics: the table in docs/configuration.md against every metric name in src/;
//! - `ntmtun status --json`: the field table in docs/operations.md against a report's JSON,
//!   and the `ntmtun status` examples in README.md and docs/operations.md against the text
//!   the program prints (its line labels and table columns);
//! - the example configs in packaging/examples/ parse, with every optional key enabled.
//!
//! The man 5 pages are rendered from docs/configuration.md (examples/gendocs), so they agree
//! with it by construction.

mod common;

use common::repo_root;
use ntmtun::config::{self, ConfigError};
use ntmtun::status::{
    AdvertisedRoute, DataplaneStatus, DcStatus, DnsStatus, PeerStatus, RefusedHandshakes,
    StatusReport, SubnetRoute,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

fn read(rel: &str) -> String {
    fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// How a test reports a disagreement: both directions, named.
fn assert_same(what: &str, documented: &BTreeSet<String>, program: &BTreeSet<String>) {
    let missing: Vec<_> = program.difference(documented).collect();
    let extra: Vec<_> = documented.difference(program).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: the docs and the program disagree\n  in the program, not documented: {missing:?}\n  \
         documented, not in the program: {extra:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Markdown, just enough: sections by heading, tables by their `|` lines, code blocks.

/// The lines of the `## TITLE` section, up to the next `## ` outside a code block.
fn h2_section<'a>(doc: &'a str, title: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut fenced = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && line.starts_with("## ") {
            inside = line[3..].trim() == title;
            continue;
        }
        if inside {
            out.push(line);
        }
    }
    assert!(!out.is_empty(), "no `## {title}` section");
    out
}

/// Markdown tables in `lines`: (the heading the table is under, with its backticks removed;
/// header cells; rows of cells), cells as written.
fn tables(lines: &[&str]) -> Vec<(String, Vec<String>, Vec<Vec<String>>)> {
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut out: Vec<(String, Vec<String>, Vec<Vec<String>>)> = Vec::new();
    let mut heading = String::new();
    let mut in_table = false;
    for l in lines {
        if l.starts_with('#') {
            heading = l.trim_start_matches('#').trim().replace('`', "");
        }
        if !l.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table {
            out.push((heading.clone(), cells(l), Vec::new()));
            in_table = true;
        } else if !l.contains("---") {
            out.last_mut().unwrap().2.push(cells(l));
        }
    }
    out
}

fn unquote(cell: &str) -> String {
    cell.replace('`', "")
}

/// The code spans of `text` outside parentheses: "`a` (see `b`), `c`" -> a, c.
fn top_level_code_spans(text: &str) -> Vec<String> {
    let (mut depth, mut span, mut out) = (0, None::<String>, Vec::new());
    for c in text.chars() {
        match (c, &mut span) {
            ('`', Some(_)) => out.extend(span.take().filter(|_| depth == 0)),
            ('`', None) => span = Some(String::new()),
            (c, Some(s)) => s.push(c),
            ('(', None) => depth += 1,
            (')', None) => depth -= 1,
            _ => {}
        }
    }
    out
}

/// `### `/`#### ` headings made of one code span: "`listen`" -> "listen".
fn key_headings(lines: &[&str]) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("### ") || l.starts_with("#### "))
        .map(|l| l.trim_start_matches('#').trim())
        .filter(|h| h.starts_with('`') && h.ends_with('`') && h.matches('`').count() == 2)
        .map(|h| h.trim_matches('`').to_string())
        .collect()
}

/// The code blocks of a document, as text.
fn code_blocks(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            match block.take() {
                Some(b) => out.push(b),
                None => block = Some(String::new()),
            }
        } else if let Some(b) = &mut block {
            b.push_str(line);
            b.push('\n');
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Config keys.

type Probe = fn(&str) -> Option<String>;

const ROLES: [(&str, Probe); 3] = [
    ("dc", |t| config::parse_dc(t, "probe").err().map(msg)),
    ("relay", |t| config::parse_relay(t, "probe").err().map(msg)),
    ("node", |t| {
        config::parse_node_with(t, "probe", || Ok(vec![]))
            .err()
            .map(msg)
    }),
];

fn msg(e: ConfigError) -> String {
    e.to_string()
}

/// The keys the parser accepts where `header` (a `[table]` line, or "" for the top level)
/// puts a key it does not know, or None when that is not a table of keys.
fn accepted_keys(probe: Probe, header: &str) -> Option<Vec<String>> {
    let error = probe(&format!("{header}\n__probe__ = 1\n"))?;
    let line = error
        .lines()
        .find(|l| l.contains("unknown field `__probe__`"))?;
    let expected = line.split_once("expected")?.1;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect(),
    )
}

/// Every key a role's file takes: `listen`, `[dns]` and `[dns] mode`, `[[relays]]` and
/// `[[relays]] address`.
fn program_keys(role: &str, probe: Probe) -> BTreeSet<String> {
    let top = accepted_keys(probe, "").unwrap_or_else(|| {
        panic!(
            "{role}.toml: an unknown key is not refused with the list of valid keys \
             (deny_unknown_fields): {:?}",
            probe("__probe__ = 1\n")
        )
    });
    let mut keys = BTreeSet::new();
    for key in top {
        let (table, sub) = if let Some(sub) = accepted_keys(probe, &format!("[{key}]")) {
            (format!("[{key}]"), sub)
        } else if let Some(sub) = accepted_keys(probe, &format!("[[{key}]]")) {
            (format!("[[{key}]]"), sub)
        } else {
            keys.insert(key);
            continue;
        };
        for s in sub {
            keys.insert(format!("{table} {s}"));
        }
        keys.insert(table);
    }
    keys
}

/// The keys docs/configuration.md gives for a role: its key table, the keys of its
/// `[[table]]` tables, its `###` sections and the `## `key` (every role)` sections.
struct DocumentedKeys {
    table: BTreeSet<String>,
    headings: BTreeSet<String>,
    /// The reload table's row: every key it names, and those under "need a restart".
    reload: BTreeSet<String>,
    restart: BTreeSet<String>,
}

fn documented_keys(doc: &str, role: &str) -> DocumentedKeys {
    let section = h2_section(doc, &format!("{role}.toml"));
    let mut table = BTreeSet::new();
    for (heading, head, rows) in tables(&section) {
        if head.first().map(String::as_str) != Some("Key") {
            continue;
        }
        // The role's own table comes before any heading; a `[[table]]`'s under its heading.
        let prefix = match heading.as_str() {
            "" => String::new(),
            h if h.starts_with("[[") => format!("{h} "),
            _ => continue,
        };
        for row in rows {
            let key = format!("{prefix}{}", unquote(&row[0]));
            // `[dns] mode` documents the table `[dns]` too.
            if !key.starts_with("[[") {
                if let Some((t, _)) = key.split_once("] ") {
                    table.insert(format!("{t}]"));
                }
            }
            table.insert(key);
        }
    }
    let mut headings = key_headings(&section);
    for line in doc.lines() {
        if let Some(key) = line
            .strip_prefix("## `")
            .and_then(|l| l.strip_suffix("` (every role)"))
        {
            headings.insert(key.to_string());
        }
    }
    let (mut reload, mut restart) = (BTreeSet::new(), BTreeSet::new());
    for (_, head, rows) in tables(&h2_section(doc, "Reloading (SIGHUP)")) {
        assert_eq!(
            head[0], "role",
            "the reload table's first column names the role"
        );
        for row in rows.iter().filter(|r| r[0] == role) {
            for (i, cell) in row.iter().enumerate().skip(1) {
                for key in top_level_code_spans(cell) {
                    assert!(
                        reload.insert(key.clone()),
                        "the reload table names {key} twice for the {role}"
                    );
                    if head[i] == "need a restart" {
                        restart.insert(key);
                    }
                }
            }
        }
    }
    DocumentedKeys {
        table,
        headings,
        reload,
        restart,
    }
}

/// The keys `plan_<role>` in src/reload.rs hands to `p.fixed`: those a reload leaves to a
/// restart ("restart to apply: KEY").
fn restart_keys(role: &str) -> BTreeSet<String> {
    let text = read("src/reload.rs");
    let start = text
        .find(&format!("pub fn plan_{role}("))
        .unwrap_or_else(|| panic!("src/reload.rs has no plan_{role}"));
    let body = &text[start..];
    let end = body[1..].find("\npub fn ").map_or(body.len(), |e| e + 1);
    body[..end]
        .match_indices("p.fixed(\"")
        .filter_map(|(i, m)| body[i + m.len()..].split('"').next())
        .map(String::from)
        .collect()
}

#[test]
fn every_config_key_is_documented_and_every_documented_key_exists() {
    let doc = read("docs/configuration.md");
    for (role, probe) in ROLES {
        let program = program_keys(role, probe);
        let documented = documented_keys(&doc, role);
        assert_same(
            &format!("docs/configuration.md, `## {role}.toml` key tables"),
            &documented.table,
            &program,
        );
        // A `###` section for every key except the keys of `[[table]]` entries, which their
        // table describes.
        let sectioned: BTreeSet<String> = program
            .iter()
            .filter(|k| !(k.starts_with("[[") && k.contains("]] ")))
            .cloned()
            .collect();
        assert_same(
            &format!("docs/configuration.md, `## {role}.toml` key sections (### `key`)"),
            &documented.headings,
            &sectioned,
        );
        // The reload table names each key once per role (applied live, or restart), tables
        // by themselves: `[dns] mode` and `[dns] resolvers` stand for the table `[dns]`.
        let reloadable: BTreeSet<String> = sectioned
            .iter()
            .filter(|k| !(k.starts_with('[') && !k.starts_with("[[") && !k.contains("] ")))
            .cloned()
            .collect();
        assert_same(
            &format!("docs/configuration.md, reload table, role {role}"),
            &documented.reload,
            &reloadable,
        );
        assert_same(
            &format!(
                "docs/configuration.md, reload table, role {role}, \"need a restart\" (src/reload.rs)"
            ),
            &documented.restart,
            &restart_keys(role),
        );
    }
}

/// The example configs the package installs parse, with every commented-out key
/// (`#key = ...`, `#[[table]]`) enabled and the `<...>` placeholders filled in.
#[test]
fn example_configs_parse_with_every_optional_key() {
    let key = ntmtun::keys::PrivateKey::generate();
    let other = ntmtun::keys::PrivateKey::generate()
        .public_key()
        .to_string();
    for (role, probe) in ROLES {
        let path = format!("packaging/examples/{role}.toml");
        let text = read(&path);
        let mut filled = String::new();
        for line in text.lines() {
            let line = match line.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    rest
                }
                _ => line,
            };
            let line = match line.split_once(" = \"<") {
                Some((k, _)) if k == "private_key" => format!("{k} = \"{}\"", key.to_base64()),
                Some((k, _)) if k.ends_with("public_key") => format!("{k} = \"{other}\""),
                Some((k, _)) => format!("{k} = \"example-token\""),
                None => line.replace("[\"<enrolment token>\"]", "[\"example-token\"]"),
            };
            filled.push_str(&line);
            filled.push('\n');
        }
        assert!(
            !filled
                .lines()
                .any(|l| !l.starts_with('#') && l.contains('<')),
            "{path}: a placeholder was not filled in:\n{filled}"
        );
        if let Some(e) = probe(&filled) {
            panic!("{path}, with every optional key enabled, does not load: {e}\n{filled}");
        }
    }
}

// ------------------------------------------------------------------------------------------
// Metrics.

/// Every metric name in src/ (outside tests): each string literal `"ntmtun_..."`, all of which
/// are metric names, with its kind where it is the first argument of `Sample::counter(` or
/// `Sample::gauge(` (a name taken from a table of names has none here). Read from the source
/// because a labelled family appears at run time only with a member (a relay, a peer, a
/// federated domain).
fn program_metrics() -> BTreeMap<String, Option<&'static str>> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs")
                && !p.to_string_lossy().ends_with("_tests.rs")
            {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo_root().join("src"), &mut files);
    let mut names = BTreeMap::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (at, _) in code.match_indices("\"ntmtun_") {
            let name = code[at + 1..].split('"').next().unwrap_or_default();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}: {name:?} is not a metric name; this test takes every \"ntmtun_...\" literal \
                 in src/ for one",
                f.display()
            );
            let before = code[..at].trim_end();
            let kind = if before.ends_with("Sample::counter(") {
                Some("counter")
            } else if before.ends_with("Sample::gauge(") {
                Some("gauge")
            } else {
                None
            };
            let seen = names.entry(name.to_string()).or_insert(kind);
            if seen.is_none() {
                *seen = kind;
            }
        }
    }
    assert!(names.len() > 10, "found only {names:?} in src/");
    names
}

#[test]
fn every_metric_is_documented_once_and_every_documented_metric_exists() {
    let doc = read("docs/configuration.md");
    let section = h2_section(&doc, "`metrics_listen` (every role)");
    let metric_tables: Vec<_> = tables(&section)
        .into_iter()
        .filter(|(_, head, _)| head.first().map(String::as_str) == Some("metric"))
        .collect();
    assert_eq!(
        metric_tables.len(),
        1,
        "docs/configuration.md: expected one metrics table (first column `metric`)"
    );
    let (_, head, rows) = &metric_tables[0];
    let type_col = head
        .iter()
        .position(|h| h == "type")
        .expect("the metrics table has a `type` column");
    let program = program_metrics();
    let mut documented = BTreeSet::new();
    for row in rows {
        let name = unquote(&row[0]);
        let kind = row[type_col].as_str();
        // The exposition format names a counter `<name>_total`; the source, `<name>`.
        let base = match kind {
            "counter" => name.strip_suffix("_total").unwrap_or_else(|| {
                panic!("docs/configuration.md: the counter {name} must end in _total")
            }),
            "gauge" => name.as_str(),
            other => {
                panic!("docs/configuration.md: {name} has type {other:?}, not counter or gauge")
            }
        };
        assert!(
            documented.insert(base.to_string()),
            "docs/configuration.md lists {name} twice"
        );
        if let Some(Some(actual)) = program.get(base) {
            assert_eq!(
                kind, *actual,
                "docs/configuration.md: {name} is a {actual} in the program"
            );
        }
    }
    assert_same(
        "docs/configuration.md, metrics table (counters without their _total)",
        &documented,
        &program.keys().cloned().collect(),
    );
}

// ------------------------------------------------------------------------------------------
// `ntmtun status`.

/// A report with every field present: each Option set, each list non-empty.
fn full_report() -> StatusReport {
    StatusReport {
        name: "bob".into(),
        fqdn: Some("bob.ntm.internal".into()),
        virtual_ip: Some(Ipv4Addr::new(198, 18, 0, 2)),
        dc: DcStatus {
            state: "registered".into(),
            address: Some("198.51.100.10:7446".parse().unwrap()),
            reflexive: Some("198.51.100.102:42881".parse().unwrap()),
            last_registered_secs: Some(3),
            error: Some("example".into()),
        },
        peers: vec![PeerStatus {
            name: "alice".into(),
            fqdn: "alice.ntm.internal".into(),
            virtual_ip: Ipv4Addr::new(198, 18, 0, 1),
            public_key: "k".into(),
            path: "relay".into(),
            endpoint: Some("198.51.100.20:7447".parse().unwrap()),
            relay: Some("198.51.100.20:7447".parse().unwrap()),
            rtt_ms: Some(0.25),
            path_mtu: 1432,
            last_handshake_secs: Some(1),
            last_rx_secs: Some(0),
            rx_bytes: 2048,
            tx_bytes: 10,
            rx_packets: 2,
            tx_packets: 1,
            relay_fallbacks: 1,
        }],
        refused_handshakes: RefusedHandshakes::default(),
        dns: Some(DnsStatus {
            mode: "stub".into(),
            stub_address: Some(Ipv4Addr::new(198, 18, 0, 0)),
        }),
        advertised_routes: vec![AdvertisedRoute {
            prefix: "192.0.2.0/26".parse().unwrap(),
            state: "refused".into(),
            reason: Some("not granted".into()),
        }],
        routes: vec![SubnetRoute {
            prefix: "192.0.2.64/26".parse().unwrap(),
            gateway: Ipv4Addr::new(198, 18, 0, 1),
            installed: true,
        }],
        dataplane: DataplaneStatus {
            io: Some("uring".into()),
            workers: Some(2),
            offload: Some(true),
        },
    }
}

/// JSON field paths: `dc.state`, `peers[].rtt_ms`.
fn json_paths(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                json_paths(v, &path, out);
            }
        }
        serde_json::Value::Array(a) => {
            if let Some(first) = a.first() {
                json_paths(first, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_status_json_field_is_documented_and_every_documented_field_exists() {
    let mut program = BTreeSet::new();
    json_paths(
        &serde_json::to_value(full_report()).unwrap(),
        "",
        &mut program,
    );
    let doc = read("docs/operations.md");
    let mut documented = BTreeSet::new();
    let mut found = false;
    for (_, head, rows) in tables(&doc.lines().collect::<Vec<_>>()) {
        if head.first().map(String::as_str) != Some("field") {
            continue;
        }
        found = true;
        for row in rows {
            assert!(
                documented.insert(unquote(&row[0])),
                "docs/operations.md lists the status field {} twice",
                row[0]
            );
        }
    }
    assert!(
        found,
        "docs/operations.md has no `status --json` field table (first column `field`)"
    );
    assert_same(
        "docs/operations.md, `status --json` fields",
        &documented,
        &program,
    );
}

/// The line labels (`node:`, `dns:`) and the peer table's columns of `ntmtun status` text.
fn status_shape(text: &str) -> (BTreeSet<String>, Option<String>) {
    let labels = text
        .lines()
        .filter_map(|l| l.split_once(':').map(|(label, _)| label))
        .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_lowercase() || c == ' '))
        .map(|l| format!("{l}:"))
        .collect();
    let header = text
        .lines()
        .find(|l| l.starts_with("PEER "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    (labels, header)
}

#[test]
fn status_examples_show_what_the_program_prints() {
    let full = ntmtun::status::render(&full_report());
    let (all_labels, header) = status_shape(&full);
    // What every running node prints: no error, no routes (those are for gateways).
    let mut plain = full_report();
    plain.dc.error = None;
    plain.advertised_routes.clear();
    plain.routes.clear();
    let (always, _) = status_shape(&ntmtun::status::render(&plain));
    let mut examples = 0;
    for file in ["README.md", "docs/operations.md"] {
        for block in code_blocks(&read(file)) {
            if !block.lines().any(|l| l.starts_with("node:")) {
                continue;
            }
            examples += 1;
            let example: String = block
                .lines()
                .skip_while(|l| !l.starts_with("node:"))
                .map(|l| format!("{l}\n"))
                .collect();
            let (labels, example_header) = status_shape(&example);
            let labels: BTreeSet<String> = labels.intersection(&all_labels).cloned().collect();
            assert!(
                always.is_subset(&labels),
                "{file}: a `ntmtun status` example lacks {:?} (the program prints {always:?}):\n{block}",
                always.difference(&labels).collect::<Vec<_>>()
            );
            if let Some(h) = example_header {
                assert_eq!(
                    Some(&h),
                    header.as_ref(),
                    "{file}: the peer table's columns differ from what the program prints:\n{block}"
                );
            }
        }
    }
    assert!(
        examples >= 2,
        "found {examples} `ntmtun status` examples in README.md and docs/operations.md"
    );
}

// ------------------------------------------------------------------------------------------
// Claims in prose.

/// The sentences of a document's paragraphs and list items (code blocks, tables and headings
/// left out), each with the `## ` and `### ` headings it is under.
fn sentences(doc: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let (mut h2, mut h3, mut para, mut fenced) =
        (String::new(), String::new(), String::new(), false);
    let mut flush = |para: &mut String, h2: &str, h3: &str| {
        for s in para.split(". ") {
            out.push((h2.to_string(), h3.to_string(), s.trim().to_string()));
        }
        para.clear();
    };
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            flush(&mut para, &h2, &h3);
            continue;
        }
        if fenced {
            continue;
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('|') || t.starts_with('#') || t.starts_with("- ") {
            flush(&mut para, &h2, &h3);
        }
        if let Some(h) = line.strip_prefix("## ") {
            (h2, h3) = (h.trim().to_string(), String::new());
        } else if let Some(h) = line.strip_prefix("### ") {
            h3 = h.trim().replace('`', "");
        } else if !t.is_empty() && !t.starts_with('|') && !t.starts_with('#') {
            para.push(' ');
            para.push_str(t);
        }
    }
    flush(&mut para, &h2, &h3);
    out
}

/// What a bare IP (no port) means where configuration.md says it: the relay's port in
/// relay.toml and in the DC's `[[relays]]`, the DC's elsewhere in the role files' sections.
#[test]
fn bare_ip_ports_in_configuration_md_are_the_defaults() {
    let doc = read("docs/configuration.md");
    let mut checked = 0;
    for (h2, h3, sentence) in sentences(&doc) {
        if !sentence.contains("bare IP")
            || !["dc.toml", "relay.toml", "node.toml"].contains(&h2.as_str())
        {
            continue;
        }
        let want = if h2 == "relay.toml" || h3 == "[[relays]]" {
            config::DEFAULT_RELAY_PORT
        } else {
            config::DEFAULT_DC_PORT
        };
        let ports: Vec<&str> = sentence
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| w.len() == 4)
            .collect();
        assert!(
            !ports.is_empty() && ports.iter().all(|p| *p == want.to_string()),
            "docs/configuration.md, {h2} {h3}: a bare IP there means port {want}: {sentence:?}"
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "found {checked} `bare IP` sentences in the role sections"
    );
}

/// A key that reloads live (src/reload.rs: not handed to `p.fixed`) is never said to need a
/// restart.
#[test]
fn keys_that_reload_live_are_not_said_to_need_a_restart() {
    let mut live = BTreeSet::new();
    for (role, probe) in ROLES {
        let restart = restart_keys(role);
        for key in program_keys(role, probe) {
            let is_subkey = key.starts_with("[[") && key.contains("]] ");
            let is_bare_table =
                key.starts_with('[') && !key.starts_with("[[") && !key.contains("] ");
            if !is_subkey && !is_bare_table && !restart.contains(&key) {
                live.insert(key);
            }
        }
    }
    assert!(
        live.contains("auth_keys"),
        "auth_keys reloads live (src/reload.rs)"
    );
    for file in ["README.md", "docs/operations.md", "docs/configuration.md"] {
        for (_, _, sentence) in sentences(&read(file)) {
            let lower = sentence.to_lowercase();
            if !lower.contains("restart") || lower.contains("reload") {
                continue;
            }
            for key in &live {
                assert!(
                    !sentence.contains(&format!("`{key}`")),
                    "{file}: `{key}` reloads live (SIGHUP, systemctl reload), yet: {sentence:?}"
                );
            }
        }
    }
}
