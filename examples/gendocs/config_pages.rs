//! The man 5 pages of the three config files, rendered from
//! docs/configuration.md, so the page and the doc cannot say different
//! things (tests/docs_agree.rs checks the doc against the program's keys).
//!
//! A role's page holds the doc's introduction, every `##` section that is
//! not another role's file (how files are checked, keys, addresses,
//! metrics, reloading, environment), and its own file's section as KEYS.
//! Tables become `.TP` lists (a terminal has no room for wide tables); in a
//! table with a `role` column only this role's rows (and "every role")
//! stay.

use clap_mangen::roff::{bold, italic, line_break, roman, Inline, Roff};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

#[derive(Clone, Copy)]
pub struct Role {
    /// `dc`, `relay` or `node`: the file is `<name>.toml`.
    pub name: &'static str,
    /// What the file configures, for the NAME line.
    pub what: &'static str,
}

pub const ROLES: [Role; 3] = [
    Role {
        name: "dc",
        what: "the ntmtun Direction Coordinator (ntmtun dc)",
    },
    Role {
        name: "relay",
        what: "an ntmtun Relay Server (ntmtun relay)",
    },
    Role {
        name: "node",
        what: "an ntmtun node, the TUN app (ntmtun node)",
    },
];

/// The page for `role`, ending with `see_also` (roff).
pub fn render(markdown: &str, role: Role, version: &str, see_also: &str) -> Result<String, String> {
    let sections = split_h2(markdown);
    let own = format!("{}.toml", role.name);
    if !sections.iter().any(|(title, _)| *title == own) {
        return Err(format!(
            "docs/configuration.md has no `## {own}` section: the man page of {own} is made from it"
        ));
    }
    let title = format!("ntmtun-{own}");
    let mut page = Page::new(role.name);
    page.roff.control(
        "TH",
        [
            title.to_uppercase().as_str(),
            "5",
            "",
            &format!("ntmtun {version}"),
            "ntmtun manual",
        ],
    );
    page.roff.control("SH", ["NAME"]);
    page.roff.text([roman(format!(
        "{title} - configuration file of {}",
        role.what
    ))]);
    page.roff.control("SH", ["SYNOPSIS"]);
    page.roff.text([
        bold(format!("/etc/ntmtun/{own}")),
        roman(" (read by "),
        bold(format!("ntmtun {} --config /etc/ntmtun/{own}", role.name)),
        roman(format!(" and the unit ntmtun-{}.service)", role.name)),
    ]);
    for (heading, body) in &sections {
        let is_role_file = ROLES.iter().any(|r| *heading == format!("{}.toml", r.name));
        let name = match *heading {
            "" => "DESCRIPTION".to_string(),
            h if h == own => "KEYS".to_string(),
            _ if is_role_file => continue,
            h => plain(h).to_uppercase(),
        };
        page.roff.control("SH", [name.as_str()]);
        page.markdown(body);
    }
    Ok(page.roff.render() + see_also)
}

/// The document cut at its `## ` headings, outside code fences: the text
/// before the first (the title line dropped) under "", then each heading's
/// text and body.
fn split_h2(markdown: &str) -> Vec<(&str, String)> {
    let mut out = vec![("", String::new())];
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        match line.strip_prefix("## ") {
            Some(h) if !fenced => out.push((h.trim(), String::new())),
            _ if !fenced && out.len() == 1 && line.starts_with("# ") => {}
            _ => {
                let body = &mut out.last_mut().expect("never empty").1;
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

/// Heading text without markdown marks: "`metrics_listen` (every role)".
fn plain(text: &str) -> String {
    text.replace('`', "")
}

/// A table being collected: header cells, then rows of cells.
#[derive(Default)]
struct Table {
    head: Vec<Vec<Inline>>,
    rows: Vec<Vec<Vec<Inline>>>,
    in_head: bool,
}

/// The roff being written and where inline text goes.
struct Page {
    roff: Roff,
    role: &'static str,
    line: Vec<Inline>,
    bold: u32,
    italic: u32,
    lists: usize,
    /// Inside a list item whose first paragraph has not been written.
    item_fresh: bool,
    code: Option<String>,
    table: Option<Table>,
    cell: Option<Vec<Inline>>,
}

impl Page {
    fn new(role: &'static str) -> Page {
        Page {
            roff: Roff::new(),
            role,
            line: Vec::new(),
            bold: 0,
            italic: 0,
            lists: 0,
            item_fresh: false,
            code: None,
            table: None,
            cell: None,
        }
    }

    fn push(&mut self, text: &str, force_bold: bool) {
        let inline = if force_bold || self.bold > 0 {
            bold(text)
        } else if self.italic > 0 {
            italic(text)
        } else {
            roman(text)
        };
        match &mut self.cell {
            Some(cell) => cell.push(inline),
            None => self.line.push(inline),
        }
    }

    fn flush(&mut self) {
        if !self.line.is_empty() {
            self.roff.text(std::mem::take(&mut self.line));
        }
    }

    fn markdown(&mut self, body: &str) {
        for event in Parser::new_ext(body, Options::ENABLE_TABLES) {
            self.event(event);
        }
        self.flush();
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Start(Tag::Heading { .. }) => self.flush(),
            Event::End(TagEnd::Heading(level)) => {
                let text = inline_text(&std::mem::take(&mut self.line));
                let macro_name = if level == HeadingLevel::H2 {
                    "SH"
                } else {
                    "SS"
                };
                self.roff.control(macro_name, [text.as_str()]);
            }
            Event::Start(Tag::Paragraph) => {
                self.flush();
                if self.lists == 0 {
                    self.roff.control("PP", []);
                } else if !self.item_fresh {
                    self.roff.control("sp", []);
                }
            }
            Event::End(TagEnd::Paragraph) => {
                self.flush();
                self.item_fresh = false;
            }
            Event::Start(Tag::List(_)) => {
                self.flush();
                if self.lists > 0 {
                    self.roff.control("RS", []);
                }
                self.lists += 1;
            }
            Event::End(TagEnd::List(_)) => {
                self.flush();
                self.lists -= 1;
                if self.lists > 0 {
                    self.roff.control("RE", []);
                }
            }
            Event::Start(Tag::Item) => {
                self.flush();
                self.roff.control("IP", [r"\(bu", "2"]);
                self.item_fresh = true;
            }
            Event::End(TagEnd::Item) => self.flush(),
            Event::Start(Tag::CodeBlock(_)) => {
                self.flush();
                self.code = Some(String::new());
            }
            Event::End(TagEnd::CodeBlock) => {
                let code = self.code.take().unwrap_or_default();
                self.roff
                    .control("sp", [])
                    .control("RS", ["4"])
                    .control("nf", []);
                for l in code.lines() {
                    self.roff.text([roman(l)]);
                }
                self.roff.control("fi", []).control("RE", []);
            }
            Event::Start(Tag::Strong) => self.bold += 1,
            Event::End(TagEnd::Strong) => self.bold -= 1,
            Event::Start(Tag::Emphasis) => self.italic += 1,
            Event::End(TagEnd::Emphasis) => self.italic -= 1,
            Event::Text(t) => match &mut self.code {
                Some(code) => code.push_str(&t),
                None => self.push(&t, false),
            },
            Event::Code(t) => self.push(&t, true),
            Event::SoftBreak => self.push(" ", false),
            Event::HardBreak => self.line.push(line_break()),
            Event::Start(Tag::Table(_)) => {
                self.flush();
                self.table = Some(Table::default());
            }
            Event::Start(Tag::TableHead) => {
                if let Some(t) = &mut self.table {
                    t.in_head = true;
                }
            }
            Event::End(TagEnd::TableHead) => {
                if let Some(t) = &mut self.table {
                    t.in_head = false;
                }
            }
            Event::Start(Tag::TableRow) => {
                if let Some(t) = &mut self.table {
                    t.rows.push(Vec::new());
                }
            }
            Event::Start(Tag::TableCell) => self.cell = Some(Vec::new()),
            Event::End(TagEnd::TableCell) => {
                let cell = self.cell.take().unwrap_or_default();
                if let Some(t) = &mut self.table {
                    if t.in_head {
                        t.head.push(cell);
                    } else if let Some(row) = t.rows.last_mut() {
                        row.push(cell);
                    }
                }
            }
            Event::End(TagEnd::Table) => {
                if let Some(t) = self.table.take() {
                    self.table(t);
                }
            }
            // Links keep their text; HTML, rules and the rest have no man form.
            _ => {}
        }
    }

    /// A table as a `.TP` list: the first cell is the tag, the others
    /// follow as "Header: cell." (just the cell for a two-column table).
    fn table(&mut self, t: Table) {
        let head: Vec<String> = t.head.iter().map(|c| inline_text(c)).collect();
        let role_col = head.iter().position(|h| h.eq_ignore_ascii_case("role"));
        for row in t.rows.into_iter().filter(|r| !r.is_empty()) {
            if let Some(i) = role_col {
                let role = row.get(i).map(|c| inline_text(c)).unwrap_or_default();
                if role != self.role && role != "every role" {
                    continue;
                }
            }
            let mut cells = row.into_iter().enumerate();
            let Some((_, tag)) = cells.next() else {
                continue;
            };
            self.roff.control("TP", []).text(tag);
            let mut body = Vec::new();
            for (i, cell) in cells {
                if Some(i) == role_col || cell.is_empty() {
                    continue;
                }
                if head.len() > 2 {
                    body.push(roman(format!(
                        "{}: ",
                        head.get(i).map_or("", String::as_str)
                    )));
                }
                body.extend(cell);
                body.push(roman(if head.len() > 2 { ". " } else { "" }));
            }
            self.roff.text(body);
        }
    }
}

/// The text of inline elements, fonts dropped.
fn inline_text(inlines: &[Inline]) -> String {
    inlines
        .iter()
        .map(|i| match i {
            Inline::Roman(s) | Inline::Bold(s) | Inline::Italic(s) => s.as_str(),
            Inline::LineBreak => " ",
        })
        .collect::<String>()
        .trim()
        .to_string()
}
