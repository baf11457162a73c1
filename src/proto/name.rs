//! Names: what a node name (one DNS label) and a domain are, and the one
//! split of `label.domain`.
//!
//! A node is named by a [`Label`] within its DC's [`Domain`]; a
//! [`NodeName`] is the label alone (bare, in the reader's own domain) or
//! qualified with a domain (`alice.x.ntm.internal`). The DC's registration
//! check, config validation, DNS answering, the CLI and the lookups across
//! domains all parse with the types here, so one rule holds everywhere.
//!
//! Case: DNS compares names without regard to ASCII case, and ntmtun keeps
//! them lowercase. The parsers here accept lowercase only (so a name in a
//! config file is the name in DNS); text that is case-insensitive (a DNS
//! question, a name typed on the command line, a domain) goes through
//! [`fold`] first.

use std::fmt;
use std::str::FromStr;

/// Longest label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;
/// Longest domain, in characters without the trailing dot.
pub const MAX_DOMAIN_LEN: usize = 200;

/// The case-insensitive form of a name: ASCII letters lowercased.
pub fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// What is wrong with a label; reads after it ("\"al_ice\" contains '_'").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("is empty")]
    Empty,
    #[error("is {0} characters long, more than {MAX_LABEL_LEN}")]
    TooLong(usize),
    /// The label lowercased, which would be valid as far as case goes.
    #[error("contains upper case (use {0:?})")]
    UpperCase(String),
    #[error("contains {0:?}")]
    Char(char),
    #[error("starts or ends with '-'")]
    Hyphen,
}

/// What is wrong with a domain or a qualified name; a whole clause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("it is empty")]
    Empty,
    #[error("it is {0} characters long, more than {MAX_DOMAIN_LEN}")]
    TooLong(usize),
    #[error("label {label:?} {error}")]
    Label { label: String, error: LabelError },
}

/// One DNS label as ntmtun names nodes: 1-63 of `a-z`, `0-9` and `-`, not
/// starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(String);

impl Label {
    /// Checks one label (lowercase only; see [`fold`]).
    pub fn parse(text: &str) -> Result<Label, LabelError> {
        if text.is_empty() {
            return Err(LabelError::Empty);
        }
        if text.len() > MAX_LABEL_LEN {
            return Err(LabelError::TooLong(text.len()));
        }
        if let Some(c) = text
            .chars()
            .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(if c.is_ascii_uppercase() {
                LabelError::UpperCase(fold(text))
            } else {
                LabelError::Char(c)
            });
        }
        if text.starts_with('-') || text.ends_with('-') {
            return Err(LabelError::Hyphen);
        }
        Ok(Label(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A domain: one or more [`Label`]s joined by dots, at most
/// [`MAX_DOMAIN_LEN`] characters, kept without the trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// Checks a domain (lowercase only; see [`fold`]); one trailing dot
    /// (the root) is allowed and dropped.
    pub fn parse(text: &str) -> Result<Domain, NameError> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if text.len() > MAX_DOMAIN_LEN {
            return Err(NameError::TooLong(text.len()));
        }
        for label in text.split('.') {
            label_in(label)?;
        }
        Ok(Domain(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A label that is part of a longer name, its error naming it.
fn label_in(text: &str) -> Result<Label, NameError> {
    Label::parse(text).map_err(|error| NameError::Label {
        label: text.to_string(),
        error,
    })
}

/// A node's name: its label, qualified with its domain
/// (`alice.x.ntm.internal`) or bare (`alice`, in the domain of whoever reads
/// it: a DC's own, a node's DC's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName {
    label: Label,
    domain: Option<Domain>,
}

impl NodeName {
    /// Splits `label.domain` at its first dot (a name without one is bare)
    /// and checks both parts (lowercase only; see [`fold`]).
    pub fn parse(text: &str) -> Result<NodeName, NameError> {
        match text.split_once('.') {
            None => Ok(NodeName::bare(label_in(text)?)),
            Some((label, domain)) => Ok(NodeName::qualified(
                label_in(label)?,
                Domain::parse(domain)?,
            )),
        }
    }

    pub fn bare(label: Label) -> NodeName {
        NodeName {
            label,
            domain: None,
        }
    }

    pub fn qualified(label: Label, domain: Domain) -> NodeName {
        NodeName {
            label,
            domain: Some(domain),
        }
    }

    pub fn label(&self) -> &Label {
        &self.label
    }

    /// The domain, when the name is qualified.
    pub fn domain(&self) -> Option<&Domain> {
        self.domain.as_ref()
    }

    /// Whether the name is of domain `own` (as a config or a DC gives it:
    /// lowercase, no trailing dot): bare, or qualified with `own`.
    pub fn is_in(&self, own: &str) -> bool {
        self.domain.as_ref().is_none_or(|d| d.as_str() == own)
    }

    /// The name as `own`'s DC and nodes say it: bare within `own`,
    /// qualified otherwise.
    pub fn relative_to(self, own: &str) -> NodeName {
        if self.is_in(own) {
            NodeName::bare(self.label)
        } else {
            self
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(d) => write!(f, "{}.{d}", self.label),
            None => write!(f, "{}", self.label),
        }
    }
}

impl FromStr for Label {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Label::parse(s)
    }
}

impl FromStr for Domain {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::parse(s)
    }
}

impl FromStr for NodeName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn label(s: &str) -> Label {
        Label::parse(s).unwrap()
    }

    fn domain(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[test]
    fn labels_follow_the_one_rule() {
        for ok in ["a", "alice", "a-b", "0", "9lives", &"a".repeat(63)] {
            assert_eq!(label(ok).as_str(), ok);
        }
        let cases = [
            ("", LabelError::Empty),
            (&"a".repeat(64)[..], LabelError::TooLong(64)),
            ("Alice", LabelError::UpperCase("alice".into())),
            ("al_ice", LabelError::Char('_')),
            ("alice.home", LabelError::Char('.')),
            ("sp ace", LabelError::Char(' ')),
            ("\u{e9}t\u{e9}", LabelError::Char('\u{e9}')),
            ("-alice", LabelError::Hyphen),
            ("alice-", LabelError::Hyphen),
            ("-", LabelError::Hyphen),
        ];
        for (text, want) in cases {
            assert_eq!(Label::parse(text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let says = |r: Result<Label, LabelError>| r.unwrap_err().to_string();
        assert_eq!(says(Label::parse("")), "is empty");
        assert_eq!(
            says(Label::parse(&"a".repeat(64))),
            "is 64 characters long, more than 63"
        );
        assert_eq!(
            says(Label::parse("Alice")),
            "contains upper case (use \"alice\")"
        );
        assert_eq!(says(Label::parse("al_ice")), "contains '_'");
        assert_eq!(says(Label::parse("alice-")), "starts or ends with '-'");
        let says = |r: Result<NodeName, NameError>| r.unwrap_err().to_string();
        assert_eq!(says(NodeName::parse("alice.")), "it is empty");
        assert_eq!(
            says(NodeName::parse("alice.ntm..internal")),
            "label \"\" is empty"
        );
        assert_eq!(
            says(NodeName::parse("bad name!")),
            "label \"bad name!\" contains ' '"
        );
        assert_eq!(
            says(NodeName::parse("alice.-x.internal")),
            "label \"-x\" starts or ends with '-'"
        );
    }

    #[test]
    fn domains() {
        assert_eq!(domain("ntm.internal").as_str(), "ntm.internal");
        assert_eq!(domain("ntm.internal."), domain("ntm.internal"));
        assert_eq!(domain("internal").as_str(), "internal");
        assert_eq!(Domain::parse(""), Err(NameError::Empty));
        assert_eq!(Domain::parse("."), Err(NameError::Empty));
        let long = ["abcdefghij"; 19].join(".");
        assert_eq!(Domain::parse(&long), Err(NameError::TooLong(208)));
        assert_eq!(
            Domain::parse("NTM.internal"),
            Err(NameError::Label {
                label: "NTM".into(),
                error: LabelError::UpperCase("ntm".into())
            })
        );
        assert_eq!(domain(&fold("NTM.Internal.")).as_str(), "ntm.internal");
        for bad in ["a..b", ".a", "a.b..", "bad_domain.internal", "sp ace"] {
            assert!(Domain::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_split_at_the_first_dot() {
        let n = NodeName::parse("alice").unwrap();
        assert_eq!((n.label().as_str(), n.domain()), ("alice", None));
        let n = NodeName::parse("alice.x.ntm.internal").unwrap();
        assert_eq!(n.label().as_str(), "alice");
        assert_eq!(n.domain(), Some(&domain("x.ntm.internal")));
        assert_eq!(n.to_string(), "alice.x.ntm.internal");
        // A trailing dot is the root: the same name.
        assert_eq!(NodeName::parse("alice.x.ntm.internal.").unwrap(), n);
        assert!(NodeName::parse("").is_err());
        assert!(NodeName::parse(".x").is_err());
        assert!(NodeName::parse("Alice.x").is_err());
        assert_eq!(NodeName::parse(&fold("Alice.X.ntm.internal")).unwrap(), n);
    }

    #[test]
    fn relative_to_a_domain() {
        let x = domain("x.ntm.internal");
        let bare = NodeName::bare(label("alice"));
        let in_x = NodeName::qualified(label("alice"), x);
        assert!(bare.is_in("y.ntm.internal") && in_x.is_in("x.ntm.internal"));
        assert!(!in_x.is_in("y.ntm.internal") && !in_x.is_in("ntm.internal"));
        assert_eq!(in_x.clone().relative_to("x.ntm.internal"), bare);
        assert_eq!(in_x.clone().relative_to("y.ntm.internal"), in_x);
        assert_eq!(bare.clone().relative_to("x.ntm.internal"), bare);
    }

    /// Labels the rule accepts, drawn from its own alphabet.
    fn any_label() -> impl Strategy<Value = Label> {
        "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?".prop_map(|s| Label::parse(&s).unwrap())
    }

    fn any_domain() -> impl Strategy<Value = Domain> {
        proptest::collection::vec(any_label(), 1..4)
            .prop_map(|ls| ls.iter().map(Label::as_str).collect::<Vec<_>>().join("."))
            .prop_filter("within the length limit", |d| d.len() <= MAX_DOMAIN_LEN)
            .prop_map(|d| Domain::parse(&d).unwrap())
    }

    fn any_name() -> impl Strategy<Value = NodeName> {
        (any_label(), proptest::option::of(any_domain())).prop_map(|(l, d)| match d {
            Some(d) => NodeName::qualified(l, d),
            None => NodeName::bare(l),
        })
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in ".{0,300}") {
            let _ = Label::parse(&text);
            let _ = Domain::parse(&text);
            let _ = NodeName::parse(&text);
            let _ = NodeName::parse(&fold(&text));
        }

        #[test]
        fn parsing_never_panics_near_valid_names(
            text in "[a-zA-Z0-9._ -]{0,80}",
        ) {
            if let Ok(n) = NodeName::parse(&text) {
                prop_assert_eq!(n.to_string(), text.trim_end_matches('.'));
            }
        }

        #[test]
        fn parse_display_roundtrips(n in any_name(), l in any_label(), d in any_domain()) {
            prop_assert_eq!(NodeName::parse(&n.to_string()), Ok(n.clone()));
            prop_assert_eq!(Label::parse(&l.to_string()), Ok(l));
            prop_assert_eq!(Domain::parse(&d.to_string()), Ok(d));
        }
    }
}
