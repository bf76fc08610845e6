//! Diagnostics: one problem in routes.yaml as `FILE:LINE:COL: message`, collected (every problem
//! is reported, not only the first) at positions that exist in the text. Positions come from the
//! YAML parser's markers; an unknown key is reported at the key itself, with the key probably meant.

use std::fmt;
use std::path::{Path, PathBuf};

use marked_yaml::spanned_serde::Error as SerdeError;
use marked_yaml::{LoadError as YamlError, Marker, Node, Span};

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// Every problem found in one file. Never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        lines(f, &self.0)
    }
}

/// A file that could not be used as a whole (unreadable, not PEM, a key that does not match its
/// certificate): named, with no line or column, because the problem is not at one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    pub message: String,
}

impl FileError {
    pub fn new(path: &Path, what: &str, cause: &dyn fmt::Display) -> FileError {
        FileError { path: path.to_path_buf(), message: format!("{what}: {cause}") }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for FileError {}

/// Every unusable file a config names (certificates, keys, CAs). Never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct FileErrors(pub Vec<FileError>);

impl fmt::Display for FileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        lines(f, &self.0)
    }
}

fn lines<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            f.write_str("\n")?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

/// Why a routes file could not be loaded: unreadable, or read and invalid.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Read(FileError),
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// Collects errors with the file name attached.
pub(super) struct Errs<'a> {
    pub(super) file: &'a str,
    pub(super) list: Vec<ConfigError>,
}

impl<'a> Errs<'a> {
    pub(super) fn new(file: &'a str) -> Errs<'a> {
        Errs { file, list: Vec::new() }
    }

    pub(super) fn at(&mut self, marker: Option<&Marker>, message: impl Into<String>) {
        let (line, column) = marker.map(|m| (m.line(), m.column())).unwrap_or((1, 1));
        self.list.push(ConfigError { file: self.file.to_string(), line, column, message: message.into() });
    }

    pub(super) fn span(&mut self, span: &Span, message: impl Into<String>) {
        self.at(span.start(), message)
    }

    /// Deserializes one node, recording the error (with its position) on failure. An unknown key
    /// is reported at the key itself, with the valid keys and the one probably meant.
    pub(super) fn de<T: serde::de::DeserializeOwned>(&mut self, node: &Node, what: &str) -> Option<T> {
        match marked_yaml::from_node::<T>(node) {
            Ok(v) => Some(v),
            Err(e) => {
                if let SerdeError::UnknownFieldError(field, expected, _) = &*e {
                    if let Some(key) = unknown_key(node, field, expected) {
                        self.span(key, format!("{what}: {}", unknown_key_message(field, expected)));
                        return None;
                    }
                }
                let mark = e.start_mark().or_else(|| node.span().start().copied());
                self.at(mark.as_ref(), format!("{what}: {}", lowercase_first(&e.to_string())));
                None
            }
        }
    }

    /// The result of validating `text`: the config if nothing was wrong, else every error, in file
    /// order, at positions that exist in the text.
    pub(super) fn finish<T>(mut self, text: &str, root: Option<&Marker>, value: Option<T>) -> Result<T, ConfigErrors> {
        match (value, self.list.is_empty()) {
            (Some(v), true) => Ok(v),
            _ => {
                if self.list.is_empty() {
                    self.at(root, "invalid configuration");
                }
                for e in &mut self.list {
                    (e.line, e.column) = within(text, e.line, e.column);
                }
                self.list.sort_by_key(|e| (e.line, e.column));
                self.list.dedup();
                Err(ConfigErrors(self.list))
            }
        }
    }
}

/// "unknown key `colour`; expected one of name, bind, ..." plus "did you mean `x`?" for a near miss.
pub(super) fn unknown_key_message(field: &str, expected: &[&str]) -> String {
    let mut m = format!("unknown key `{field}`");
    if let Some(near) = did_you_mean(field, expected) {
        m.push_str(&format!("; did you mean `{near}`?"));
    }
    m.push_str(&format!(" (expected one of {})", expected.join(", ")));
    m
}

/// The valid key closest to a misspelt one, if it is close enough to be a typo (Jaro-Winkler, as
/// cargo and clap suggest subcommands), or a key it differs from only in case or `-`/`_`.
fn did_you_mean<'a>(field: &str, expected: &[&'a str]) -> Option<&'a str> {
    let folded = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    if let Some(k) = expected.iter().find(|k| folded(k) == folded(field)) {
        return Some(k);
    }
    expected
        .iter()
        .map(|k| (strsim::jaro_winkler(field, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// Where the unknown key `field` is in `node`: the first mapping (in document order) that has the
/// key and whose other keys are all valid for the struct that refused it, so a valid key of the
/// same name elsewhere (a route's `backend` next to a `match` that also has one) is not blamed.
fn unknown_key<'n>(node: &'n Node, field: &str, expected: &[&str]) -> Option<&'n Span> {
    match node {
        Node::Mapping(m) => {
            let here = m.iter().find(|(k, _)| k.as_str() == field).map(|(k, _)| k.span());
            if let Some(span) = here {
                if m.keys().all(|k| k.as_str() == field || expected.contains(&k.as_str())) {
                    return Some(span);
                }
            }
            m.values().find_map(|v| unknown_key(v, field, expected))
        }
        Node::Sequence(s) => s.iter().find_map(|v| unknown_key(v, field, expected)),
        Node::Scalar(_) => None,
    }
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The YAML tree of `text`, or the one error that stopped the parser. Characters YAML does not
/// allow are refused first, at their own position.
pub(super) fn parse_yaml(file: &str, text: &str) -> Result<Node, ConfigErrors> {
    if let Some((line, column, c)) = unprintable(text) {
        let message = format!(
            "character U+{:04X} is not allowed in YAML (control characters other than tab, CR and LF)",
            c as u32
        );
        return Err(ConfigErrors(vec![ConfigError { file: file.to_string(), line, column, message }]));
    }
    super::yaml::parse(text).map_err(|e| ConfigErrors(vec![load_error(file, text, &e)]))
}

fn load_error(file: &str, text: &str, e: &YamlError) -> ConfigError {
    let (marker, message) = match e {
        YamlError::TopLevelMustBeMapping(m) => (*m, "the top level must be a mapping".to_string()),
        YamlError::TopLevelMustBeSequence(m) => (*m, "the top level must be a sequence".to_string()),
        YamlError::UnexpectedAnchor(m) => {
            (*m, "this alias cannot be used: it is inside the node its anchor names, or aliases here copy more than 100000 nodes".into())
        }
        YamlError::MappingKeyMustBeScalar(m) => (*m, "mapping keys must be plain strings".into()),
        YamlError::UnexpectedTag(m) => (*m, "YAML tags are not supported".to_string()),
        YamlError::ScanError(m, se) => {
            let (line, _) = within(text, m.line(), m.column());
            (*m, format!("YAML syntax error: {}{}", se.info(), indentation_hint(se.info(), line)))
        }
        YamlError::DuplicateKey(inner) => {
            let m = inner.key.span().start().copied().unwrap_or(Marker::new(0, 0, 1, 1));
            (m, format!("duplicate key `{}`", inner.key.as_str()))
        }
    };
    let (line, column) = within(text, marker.line(), marker.column());
    ConfigError { file: file.to_string(), line, column, message }
}

/// The structural syntax errors (a key where none may be, a block that does not line up) almost
/// always mean a line indented one step too far or too little.
fn indentation_hint(info: &str, line: usize) -> String {
    let structural = ["mapping values are not allowed", "did not find expected", "indent", "block"];
    if structural.iter().any(|s| info.contains(s)) {
        format!("; check the indentation of line {line}")
    } else {
        String::new()
    }
}

/// The parser reports the end of a text that lacks a final line break as the start of the line
/// after it; point at the end of the last line instead, so the position exists in the file.
pub(super) fn within(text: &str, line: usize, column: usize) -> (usize, usize) {
    let end = positions(text).last().map_or((1, 1), |(l, c, ch)| if is_break(ch) { (l + 1, 1) } else { (l, c + 1) });
    if line > end.0 {
        end
    } else {
        (line, column)
    }
}

fn is_break(c: char) -> bool {
    c == '\n' || c == '\r'
}

/// Each character with its line and column (1-based), lines breaking at CR LF, CR and LF as the
/// YAML parser counts them (the CR of a CR LF is reported at the LF's position).
fn positions(text: &str) -> impl Iterator<Item = (usize, usize, char)> + '_ {
    let mut chars = text.chars().peekable();
    let (mut line, mut column) = (1, 1);
    std::iter::from_fn(move || {
        let c = chars.next()?;
        let at = (line, column, c);
        match c {
            '\r' if chars.peek() == Some(&'\n') => column += 1,
            '\r' | '\n' => {
                line += 1;
                column = 1;
            }
            _ => column += 1,
        }
        Some(at)
    })
}

/// The first character YAML does not allow (outside its printable set: tab, CR, LF, 0x20–0x7E,
/// NEL and the non-control ranges above), with its line and column. The YAML parser would stop
/// at a NUL as if the text ended there and report a position that does not exist, so these are
/// caught first.
fn unprintable(text: &str) -> Option<(usize, usize, char)> {
    positions(text).find(|&(_, _, c)| {
        let printable = matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
            || c >= '\u{10000}';
        !printable
    })
}
