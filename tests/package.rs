//! The Debian package (issue 17, part 1): `scripts/package.sh` builds it, and it is installed,
//! upgraded, removed and purged in a throwaway root with `dpkg --root` (an empty dpkg database,
//! maintainer scripts run chrootless with DPKG_ROOT set, as for a bootstrap), never touching
//! the host. Checked: the package's exact file list (the man pages derived from the clap
//! definition), a stripped binary that runs, the units as in packaging/systemd/, what postinst
//! did (users, config groups and modes), that an edited config survives a reinstall and an
//! upgrade (a conffile: the new one lands beside it as .dpkg-dist), that `man` finds the
//! pages, and that remove and purge leave the root as it was. The units themselves are
//! verified by tests/systemd_units.rs.
//!
//! Skipped only where dpkg is missing. As root dpkg runs directly; otherwise under fakeroot.

mod common;

use clap::CommandFactory;
use common::{describe_output, find_in_path, is_root, repo_root};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PACKAGE: &str = "ntmtun";
const ROLES: [&str; 3] = ["dc", "relay", "node"];
const USERS: [&str; 3] = ["ntmtun-dc", "ntmtun-relay", "ntmtun-node"];

/// Runs dpkg and friends as root, or under fakeroot with a saved state (so the owners
/// postinst set survive from one command to the next).
struct Runner {
    fakeroot_state: Option<PathBuf>,
}

impl Runner {
    fn command(&self, prog: &str) -> Command {
        match &self.fakeroot_state {
            None => Command::new(prog),
            Some(state) => {
                let mut c = Command::new("fakeroot");
                c.arg("-i").arg(state).arg("-s").arg(state).arg(prog);
                c
            }
        }
    }

    fn run(&self, prog: &str, args: &[&str]) -> Output {
        let out = self
            .command(prog)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
        assert!(
            out.status.success(),
            "{prog} {}\n{}",
            args.join(" "),
            describe_output(&out)
        );
        out
    }

    fn stdout(&self, prog: &str, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(prog, args).stdout).into_owned()
    }
}

/// A root with an empty dpkg database and the account files of a real system.
struct Root {
    dir: tempfile::TempDir,
    path: PathBuf,
    log: PathBuf,
}

/// Where `systemctl enable` links a unit with WantedBy=multi-user.target.
const WANTS: &str = "etc/systemd/system/multi-user.target.wants";

const ACCOUNT_FILES: [(&str, &str); 4] = [
    ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
    ("etc/group", "root:x:0:\n"),
    ("etc/shadow", "root:*:19000:0:99999:7:::\n"),
    ("etc/gshadow", "root:*::\n"),
];

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("root");
        for d in [
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
            "etc",
            WANTS,
        ] {
            fs::create_dir_all(path.join(d)).unwrap();
        }
        for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
            fs::write(path.join(f), "").unwrap();
        }
        // As on a real system: the files and the backups and lock the shadow tools keep.
        for (f, text) in ACCOUNT_FILES {
            fs::write(path.join(f), text).unwrap();
            fs::write(path.join(format!("{f}-")), text).unwrap();
        }
        fs::write(path.join("etc/.pwd.lock"), "").unwrap();
        let log = dir.path().join("dpkg.log");
        Root { dir, path, log }
    }

    fn join(&self, p: &str) -> PathBuf {
        self.path.join(p.trim_start_matches('/'))
    }

    /// Every path under the root except dpkg's own database.
    fn snapshot(&self) -> BTreeSet<String> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
            for e in fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                if rel == "var/lib/dpkg" || rel.ends_with('-') {
                    continue; // dpkg's database; the shadow tools' backups
                }
                out.insert(rel);
                if e.file_type().unwrap().is_dir() {
                    walk(&p, root, out);
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.path, &self.path, &mut out);
        out
    }

    /// `dpkg --root` with the maintainer scripts run chrootless (DPKG_ROOT set), its log kept
    /// out of the host's /var/log, and no host path-exclude applied.
    fn dpkg(&self, runner: &Runner, args: &[&str]) -> String {
        let root = format!("--root={}", self.path.display());
        let log = format!("--log={}", self.log.display());
        let mut all = vec![
            root.as_str(),
            log.as_str(),
            "--force-script-chrootless",
            "--path-include=*",
        ];
        if runner.fakeroot_state.is_some() {
            all.push("--force-not-root");
        }
        all.extend_from_slice(args);
        runner.stdout("dpkg", &all)
    }

    fn passwd_entry(&self, user: &str) -> Option<String> {
        fs::read_to_string(self.join("etc/passwd"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .map(String::from)
    }

    fn gid(&self, group: &str) -> Option<String> {
        fs::read_to_string(self.join("etc/group"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(&format!("{group}:")))
            .and_then(|l| l.split(':').nth(2).map(String::from))
    }
}

/// The files the package must hold, from the sources that define them.
fn expected_files() -> BTreeSet<String> {
    let names = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(repo_root().join(dir))
            .unwrap_or_else(|e| panic!("read {dir}: {e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mut want = BTreeSet::new();
    let mut add = |p: String| {
        want.insert(p);
    };
    add("/usr/bin/ntmtun".into());
    for unit in names("packaging/systemd") {
        add(format!("/usr/lib/systemd/system/{unit}"));
    }
    add("/usr/lib/sysusers.d/ntmtun.conf".into());
    for config in names("packaging/examples") {
        add(format!("/etc/ntmtun/{config}"));
        add(format!("/usr/share/doc/ntmtun/examples/{config}"));
    }
    for doc in [
        "README.md",
        "configuration.md",
        "operations.md",
        "copyright",
    ] {
        add(format!("/usr/share/doc/ntmtun/{doc}"));
    }
    add("/usr/share/man/man1/ntmtun.1.gz".into());
    for sub in ntmtun::cli::Cli::command().get_subcommands() {
        if !sub.is_hide_set() {
            add(format!(
                "/usr/share/man/man1/ntmtun-{}.1.gz",
                sub.get_name()
            ));
        }
    }
    for role in ROLES {
        add(format!("/usr/share/man/man5/ntmtun-{role}.toml.5.gz"));
    }
    add("/usr/share/bash-completion/completions/ntmtun".into());
    add("/usr/share/zsh/vendor-completions/_ntmtun".into());
    add("/usr/share/fish/vendor_completions.d/ntmtun.fish".into());
    want
}

/// True when the ELF file has no symbol table (SHT_SYMTAB): stripped.
fn elf_is_stripped(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    assert!(
        bytes.len() > 64 && &bytes[..4] == b"\x7fELF" && bytes[4] == 2 && bytes[5] == 1,
        "not a little-endian 64-bit ELF file"
    );
    let (shoff, shentsize, shnum) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c));
    (0..shnum).all(|i| u32_at(shoff + i * shentsize + 4) != 2)
}

/// `man`'s plain text (overstrike bold and underline removed).
fn plain(text: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

#[test]
fn package_installs_upgrades_removes_and_purges_in_a_throwaway_root() {
    if find_in_path("dpkg").is_none() {
        eprintln!(
            "SKIPPED: dpkg is not installed, so the Debian package (scripts/package.sh) was \
             neither built nor installed"
        );
        return;
    }
    let state_dir = tempfile::tempdir().expect("tempdir");
    let runner = if is_root() {
        Runner {
            fakeroot_state: None,
        }
    } else {
        assert!(
            find_in_path("fakeroot").is_some(),
            "not root and no fakeroot: run as root, or install fakeroot (scripts/setup.sh)"
        );
        let state = state_dir.path().join("fakeroot.state");
        fs::write(&state, "").unwrap();
        Runner {
            fakeroot_state: Some(state),
        }
    };
    let host_passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();

    // Build it as an operator would.
    let mut build = Command::new(repo_root().join("scripts/package.sh"));
    build.arg("--fast");
    // Without what cargo sets for a test process: build scripts that watch one of these
    // (ring's watches CARGO_MANIFEST_DIR) would take the release build for stale and
    // rebuild it, here and again at the next plain `cargo build --release`.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "LD_LIBRARY_PATH",
            ]
            .contains(&k.as_ref())
        {
            build.env_remove(&key);
        }
    }
    let out = build.output().expect("run scripts/package.sh");
    assert!(
        out.status.success(),
        "scripts/package.sh failed\n{}",
        describe_output(&out)
    );
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).is_file(),
        "scripts/package.sh printed no .deb path: {deb:?}"
    );

    // What is in it.
    let listing = runner.stdout("dpkg-deb", &["--contents", &deb]);
    let files: BTreeSet<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| !p.ends_with('/'))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    let want = expected_files();
    assert_eq!(
        files,
        want,
        "the package's files differ from what packaging/ and the CLI define:\n  \
         missing: {:?}\n  unexpected: {:?}",
        want.difference(&files).collect::<Vec<_>>(),
        files.difference(&want).collect::<Vec<_>>()
    );
    let conffiles = runner.stdout("dpkg-deb", &["--info", &deb, "conffiles"]);
    let conffiles: BTreeSet<&str> = conffiles.lines().map(str::trim).collect();
    let want_conf: BTreeSet<String> = want
        .iter()
        .filter(|f| f.starts_with("/etc/"))
        .cloned()
        .collect();
    assert_eq!(
        conffiles,
        want_conf
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<&str>>(),
        "every file under /etc must be a conffile"
    );
    let size = fs::metadata(&deb).unwrap().len();

    let root = Root::new();
    let before = root.snapshot();

    // Install.
    root.dpkg(&runner, &["--force-depends", "--install", &deb]);
    let status = runner.stdout(
        "dpkg-query",
        &[
            &format!("--root={}", root.path.display()),
            "--show",
            "--showformat=${Status}",
            PACKAGE,
        ],
    );
    assert_eq!(status, "install ok installed");
    for f in &want {
        assert!(root.join(f).is_file(), "{f} was not installed");
    }
    let bin = fs::read(root.join("/usr/bin/ntmtun")).unwrap();
    assert!(
        elf_is_stripped(&bin),
        "/usr/bin/ntmtun has a symbol table: not stripped"
    );
    let version = Command::new(root.join("/usr/bin/ntmtun"))
        .arg("--version")
        .output()
        .expect("run the installed ntmtun");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("ntmtun {}", env!("CARGO_PKG_VERSION")),
        "{}",
        describe_output(&version)
    );
    for unit in fs::read_dir(repo_root().join("packaging/systemd"))
        .unwrap()
        .flatten()
    {
        let name = unit.file_name().to_string_lossy().into_owned();
        assert_eq!(
            fs::read(root.join(&format!("/usr/lib/systemd/system/{name}"))).unwrap(),
            fs::read(unit.path()).unwrap(),
            "the installed {name} differs from packaging/systemd/{name}"
        );
    }

    // What postinst did: the users, and each config given to its role's group, mode 0640.
    for role in ROLES {
        let user = format!("ntmtun-{role}");
        let entry = root
            .passwd_entry(&user)
            .unwrap_or_else(|| panic!("postinst created no user {user} in the root's /etc/passwd"));
        assert!(
            entry.ends_with(":/usr/sbin/nologin"),
            "{user} must get no shell: {entry}"
        );
        let gid = root
            .gid(&user)
            .unwrap_or_else(|| panic!("postinst created no group {user}"));
        let config = root.join(&format!("/etc/ntmtun/{role}.toml"));
        let stat = runner.stdout("stat", &["-c", "%g %a", config.to_str().unwrap()]);
        assert_eq!(
            stat.trim(),
            format!("{gid} 640"),
            "/etc/ntmtun/{role}.toml: expected group {user} ({gid}), mode 0640"
        );
    }
    assert_eq!(
        fs::read_to_string("/etc/passwd").unwrap_or_default(),
        host_passwd,
        "the host's /etc/passwd changed: the maintainer scripts left the throwaway root"
    );

    // `man` finds the pages by name.
    if find_in_path("man").is_some() {
        let man = Command::new("man")
            .args(["-M", root.join("/usr/share/man").to_str().unwrap()])
            .args(["-P", "cat", "5", "ntmtun-node.toml"])
            .env("MANWIDTH", "100")
            .output()
            .expect("run man");
        let text = plain(&String::from_utf8_lossy(&man.stdout));
        assert!(
            man.status.success()
                && text.contains("ntmtun-node.toml")
                && text.contains("advertise_routes"),
            "man 5 ntmtun-node.toml did not open from the installed pages\n{}",
            describe_output(&man)
        );
    } else {
        eprintln!("NOTICE: man is not installed; the man pages were checked by file name only");
    }

    // An edited config survives a reinstall, and an upgrade whose config changed.
    let node_toml = root.join("/etc/ntmtun/node.toml");
    let edited = format!(
        "{}name = \"edited-by-operator\"\n",
        fs::read_to_string(&node_toml).unwrap()
    );
    fs::write(&node_toml, &edited).unwrap();
    root.dpkg(&runner, &["--force-depends", "--install", &deb]);
    assert_eq!(
        fs::read_to_string(&node_toml).unwrap(),
        edited,
        "a reinstall overwrote the edited node.toml"
    );
    let upgrade = upgraded_package(&runner, &deb, state_dir.path());
    root.dpkg(
        &runner,
        &[
            "--force-depends",
            "--force-confold",
            "--install",
            upgrade.to_str().unwrap(),
        ],
    );
    assert_eq!(
        fs::read_to_string(&node_toml).unwrap(),
        edited,
        "an upgrade overwrote the edited node.toml"
    );
    let dist = root.join("/etc/ntmtun/node.toml.dpkg-dist");
    assert!(
        fs::read_to_string(&dist).is_ok_and(|t| t.contains("# changed upstream")),
        "the upgrade's node.toml should wait beside the edited one as node.toml.dpkg-dist"
    );

    // Remove: the program goes, the configs and users stay.
    root.dpkg(&runner, &["--remove", PACKAGE]);
    assert!(
        !root.join("/usr/bin/ntmtun").exists(),
        "remove left /usr/bin/ntmtun"
    );
    assert!(
        node_toml.is_file(),
        "remove must keep the configs (purge removes them)"
    );
    assert!(
        root.passwd_entry("ntmtun-node").is_some(),
        "remove must keep the users"
    );

    // What the services and systemctl create, which purge must take away too.
    fs::create_dir_all(root.join("/var/lib/ntmtun/dc")).unwrap();
    fs::write(root.join("/var/lib/ntmtun/dc/dc.redb"), "state").unwrap();
    let wants = root.join(WANTS);
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/ntmtun-node.service",
        wants.join("ntmtun-node.service"),
    )
    .unwrap();

    // Purge: the root is as it was.
    root.dpkg(&runner, &["--purge", PACKAGE]);
    for user in USERS {
        assert!(
            root.passwd_entry(user).is_none(),
            "purge left the user {user}"
        );
        assert!(root.gid(user).is_none(), "purge left the group {user}");
    }
    for (f, text) in ACCOUNT_FILES {
        assert_eq!(
            fs::read_to_string(root.join(f)).unwrap(),
            text,
            "purge left {f} changed"
        );
    }
    assert!(
        !wants.join("ntmtun-node.service").exists(),
        "purge left the `systemctl enable` link"
    );
    let after = root.snapshot();
    assert_eq!(
        after,
        before,
        "purge left files behind: {:?}; removed: {:?}",
        after.difference(&before).collect::<Vec<_>>(),
        before.difference(&after).collect::<Vec<_>>()
    );
    let query = runner
        .command("dpkg-query")
        .args([
            &format!("--root={}", root.path.display()),
            "--show",
            PACKAGE,
        ])
        .output()
        .unwrap();
    assert!(
        !query.status.success(),
        "dpkg still knows {PACKAGE} after purge"
    );

    eprintln!(
        "package: {} ({} bytes, {} files) installed, reinstalled, upgraded (edited conffile \
         kept), removed and purged in {}{}",
        Path::new(&deb).file_name().unwrap().to_string_lossy(),
        size,
        files.len(),
        root.dir.path().display(),
        if runner.fakeroot_state.is_some() {
            " (under fakeroot)"
        } else {
            ""
        }
    );
}

/// The same package as version -2, whose node.toml changed upstream.
fn upgraded_package(runner: &Runner, deb: &str, work: &Path) -> PathBuf {
    let tree = work.join("upgrade");
    runner.run("dpkg-deb", &["--raw-extract", deb, tree.to_str().unwrap()]);
    let control = tree.join("DEBIAN/control");
    let text = fs::read_to_string(&control).unwrap();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .expect("a Version field")
        .to_string();
    let bumped = match version.rsplit_once('-') {
        Some((upstream, rev)) => format!("{upstream}-{}", rev.parse::<u32>().unwrap_or(1) + 1),
        None => format!("{version}-2"),
    };
    fs::write(
        &control,
        text.replace(
            &format!("Version: {version}"),
            &format!("Version: {bumped}"),
        ),
    )
    .unwrap();
    let node_toml = tree.join("etc/ntmtun/node.toml");
    let mut t = fs::read_to_string(&node_toml).unwrap();
    t.push_str("# changed upstream\n");
    fs::write(&node_toml, t).unwrap();
    let out = work.join("upgrade.deb");
    runner.run(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-Zgzip",
            "--build",
            tree.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    out
}
