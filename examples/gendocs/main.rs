//! Generates the man pages and shell completions that the Debian package
//! ships (scripts/package.sh runs it; docs/operations.md, "Packaging"):
//!
//!   cargo run --release --locked --example gendocs -- OUT_DIR
//!
//! writes OUT_DIR/man/ (ntmtun.1 and one page per subcommand, from the clap
//! definition in src/cli.rs; ntmtun-{dc,relay,node}.toml.5, from
//! docs/configuration.md) and OUT_DIR/completions/ (bash, zsh, fish, from
//! the same clap definition).
//!
//! An example rather than a subcommand of `ntmtun` or a build script: the
//! generators (clap_mangen, clap_complete, pulldown-cmark) stay
//! dev-dependencies, out of the shipped binary and out of every build, and
//! it links the release library that `cargo build --release` already made.

mod config_pages;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use clap_mangen::Man;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the package installs the docs these pages point to.
const DOC_DIR: &str = "/usr/share/doc/ntmtun";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: gendocs OUT_DIR (writes OUT_DIR/man and OUT_DIR/completions)");
        return ExitCode::from(2);
    };
    match generate(Path::new(out)) {
        Ok(n) => {
            println!("gendocs: wrote {n} files under {out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gendocs: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path) -> Result<usize, String> {
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let mut written = command_pages(&man)?;
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let markdown =
        std::fs::read_to_string(&doc).map_err(|e| format!("reading {}: {e}", doc.display()))?;
    for role in config_pages::ROLES {
        let page = config_pages::render(&markdown, role, env!("CARGO_PKG_VERSION"), &see_also())?;
        written.push(write(&man, &format!("ntmtun-{}.toml.5", role.name), &page)?);
    }
    let mut cmd = ntmtun::cli::Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, "ntmtun", &completions)
            .map_err(|e| format!("writing the {shell} completion: {e}"))?;
        written.push(path);
    }
    Ok(written.len())
}

/// `ntmtun.1` and `ntmtun-SUB.1` for every subcommand, as
/// `clap_mangen::generate_to` would write them, each with a SEE ALSO section.
fn command_pages(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut cmd = ntmtun::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = vec![cmd.clone()];
    pages.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut written = Vec::new();
    for page in pages {
        let man = Man::new(page)
            .source(format!("ntmtun {}", env!("CARGO_PKG_VERSION")))
            .manual("ntmtun manual");
        let mut text = Vec::new();
        man.render(&mut text)
            .map_err(|e| format!("rendering {}: {e}", man.get_filename()))?;
        let text = String::from_utf8(text).map_err(|e| e.to_string())? + &see_also();
        written.push(write(dir, &man.get_filename(), &text)?);
    }
    Ok(written)
}

/// The SEE ALSO section every page ends with.
fn see_also() -> String {
    let mut r = Roff::new();
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("ntmtun"),
        roman("(1), "),
        bold("ntmtun-dc.toml"),
        roman("(5), "),
        bold("ntmtun-relay.toml"),
        roman("(5), "),
        bold("ntmtun-node.toml"),
        roman("(5), "),
        bold("systemd.service"),
        roman("(5)."),
    ]);
    r.text([roman(format!(
        "The units ntmtun-dc.service, ntmtun-relay.service and ntmtun-node.service. \
         {DOC_DIR}/README.md, {DOC_DIR}/operations.md (deployment, troubleshooting) and \
         {DOC_DIR}/configuration.md (every key), with example configs in {DOC_DIR}/examples/."
    ))]);
    r.render()
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}
