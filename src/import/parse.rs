//! nginx.conf as nginx itself reads it (`ngx_conf_read_token` in `src/core/ngx_conf_file.c`):
//! tokens separated by spaces, tabs and line ends; `;` ends a directive and `{` opens its block;
//! `"…"` and `'…'` quote a token (only where a token starts, and a space, `;` or `{` must follow);
//! `\` makes the next character part of the token (`\"`, `\'`, `\\` lose the backslash; `\t`, `\r`,
//! `\n` become the control characters; any other keeps it); `#` starts a comment only where a token
//! would start (`a#b` is one token); `${name}` does not open a block. CR LF line ends read as LF.
//!
//! `include` is followed as it is read, with globs: a relative pattern is tried from the including
//! file's directory, then from the main file's (nginx's prefix, `/etc/nginx/` for
//! `/etc/nginx/nginx.conf`). A pattern that matches nothing is a warning, as is an include loop;
//! the included directives take the place of the `include`, each keeping its own file and line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where something is: a file (after includes), a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<Path>,
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Note,
    Warning,
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Note => "note",
            Level::Warning => "warning",
            Level::Error => "error",
        })
    }
}

/// One diagnostic: `FILE:LINE:COL: level: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub at: Pos,
    pub level: Level,
    pub message: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.level, self.message)
    }
}

/// One directive: its name, its arguments (unquoted, escapes applied) and its block, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    pub at: Pos,
}

impl Directive {
    /// The directives of the block named `name` inside this one, in order.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Directive> + 'a {
        self.block.iter().flatten().filter(move |d| d.name == name)
    }
}

/// nginx.conf text that reads back (with [`parse_str`]) as these directives: every argument in
/// double quotes (`"` and `\\` escaped), blocks indented. Includes already followed stay followed,
/// so a config spread over files prints as one. For tests that run nginx on a rewritten config.
pub fn print(list: &[Directive]) -> String {
    fn level(list: &[Directive], depth: usize, out: &mut String) {
        for d in list {
            out.push_str(&"    ".repeat(depth));
            if !d.name.is_empty() && d.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                out.push_str(&d.name);
            } else {
                quote(&d.name, out);
            }
            for a in &d.args {
                out.push(' ');
                quote(a, out);
            }
            match &d.block {
                None => out.push_str(";\n"),
                Some(inner) => {
                    out.push_str(" {\n");
                    level(inner, depth + 1, out);
                    out.push_str(&"    ".repeat(depth));
                    out.push_str("}\n");
                }
            }
        }
    }
    fn quote(word: &str, out: &mut String) {
        out.push('"');
        for c in word.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    let mut out = String::new();
    level(list, 0, &mut out);
    out
}

/// `/etc/nginx/proxy_params` as Debian's nginx packages ship it today (`Host $host`; releases
/// before their 2025 security update sent `$http_host`).
const DEBIAN_PROXY_PARAMS: &str = "proxy_set_header Host $host;
proxy_set_header X-Real-IP $remote_addr;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Proto $scheme;
";

/// How deep includes may nest (a loop is cut here with a warning).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Reads `path` and every file it includes. `Err` only when the main file cannot be read or a file
/// cannot be parsed (the error says where); warnings (missing includes) come with the directives.
pub fn parse_file(path: &Path) -> Result<(Vec<Directive>, Vec<Diag>), Diag> {
    let text = std::fs::read(path).map_err(|e| Diag {
        at: Pos { file: path.into(), line: 1, col: 1 },
        level: Level::Error,
        message: format!("cannot read: {e}"),
    })?;
    let prefix = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut r = Reader { prefix, warnings: Vec::new(), stack: vec![path.to_path_buf()] };
    let list = r.file(path, &text)?;
    Ok((list, r.warnings))
}

/// Parses one text (no includes followed: `include` stays a directive). For tests and fuzzing.
pub fn parse_str(name: &str, text: &str) -> Result<Vec<Directive>, Diag> {
    let file: Arc<Path> = Path::new(name).into();
    let mut lx = Lexer { file, text: text.as_bytes(), i: 0, line: 1, col: 1 };
    let (list, end) = block(&mut lx, &mut |d| Ok(vec![d]))?;
    match end {
        End::Eof => Ok(list),
        End::Close(at) => Err(Diag { at, level: Level::Error, message: "unexpected \"}\"".into() }),
    }
}

struct Reader {
    prefix: PathBuf,
    warnings: Vec<Diag>,
    /// The files being read, outermost first (for loops).
    stack: Vec<PathBuf>,
}

impl Reader {
    fn file(&mut self, path: &Path, text: &[u8]) -> Result<Vec<Directive>, Diag> {
        let mut lx = Lexer { file: path.into(), text, i: 0, line: 1, col: 1 };
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let (list, end) = block(&mut lx, &mut |d| self.expand(&dir, d))?;
        match end {
            End::Eof => Ok(list),
            End::Close(at) => Err(Diag { at, level: Level::Error, message: "unexpected \"}\"".into() }),
        }
    }

    /// A directive as read: an `include` becomes what it includes.
    fn expand(&mut self, dir: &Path, d: Directive) -> Result<Vec<Directive>, Diag> {
        if d.name != "include" || d.block.is_some() {
            return Ok(vec![d]);
        }
        let Some(pattern) = d.args.first().filter(|_| d.args.len() == 1) else {
            return Err(Diag { at: d.at, level: Level::Error, message: "include takes one file or pattern".into() });
        };
        let candidates: Vec<PathBuf> = match Path::new(pattern).is_absolute() {
            true => vec![PathBuf::from(pattern)],
            false => vec![dir.join(pattern), self.prefix.join(pattern)],
        };
        let mut files = Vec::new();
        for c in &candidates {
            let Some(text) = c.to_str() else { continue };
            if let Ok(paths) = glob::glob(text) {
                files.extend(paths.flatten().filter(|p| p.is_file()));
            }
            if !files.is_empty() {
                break;
            }
        }
        if files.is_empty() {
            let looked = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            // Debian's `proxy_params` is part of its nginx package: read in its place.
            if Path::new(pattern).file_name().is_some_and(|n| n == "proxy_params") {
                self.warnings.push(Diag {
                    at: d.at,
                    level: Level::Note,
                    message: format!(
                        "include `{pattern}` matches no file (looked in {}); Debian's standard proxy_params read in its place",
                        looked.display()
                    ),
                });
                return parse_str("proxy_params (Debian's)", DEBIAN_PROXY_PARAMS);
            }
            // MIME types change nothing ferry does (it has its own table); FastCGI/uWSGI/SCGI
            // parameters go with handlers ferry does not run (their `*_pass` is warned).
            let quiet =
                ["mime.types", "fastcgi_params", "fastcgi.conf", "fastcgi-php.conf", "uwsgi_params", "scgi_params"];
            let level = match quiet.iter().any(|q| pattern.ends_with(q)) {
                true => Level::Note,
                false => Level::Warning,
            };
            self.warnings.push(Diag {
                at: d.at,
                level,
                message: format!("include `{pattern}` matches no file (looked in {}); skipped", looked.display()),
            });
            return Ok(Vec::new());
        }
        files.sort();
        let mut out = Vec::new();
        for f in files {
            if self.stack.contains(&f) || self.stack.len() >= MAX_INCLUDE_DEPTH {
                self.warnings.push(Diag {
                    at: d.at.clone(),
                    level: Level::Warning,
                    message: format!("include of {} would loop; skipped", f.display()),
                });
                continue;
            }
            let text = match std::fs::read(&f) {
                Ok(t) => t,
                Err(e) => {
                    self.warnings.push(Diag {
                        at: d.at.clone(),
                        level: Level::Warning,
                        message: format!("cannot read included {}: {e}; skipped", f.display()),
                    });
                    continue;
                }
            };
            self.stack.push(f.clone());
            let list = self.file(&f, &text);
            self.stack.pop();
            out.extend(list?);
        }
        Ok(out)
    }
}

/// What takes a directive's place once read (an `include`: the included directives).
type Expand<'a> = dyn FnMut(Directive) -> Result<Vec<Directive>, Diag> + 'a;

enum End {
    Eof,
    /// A `}` at this position.
    Close(Pos),
}

/// Reads directives until the end of the text or a `}`; `each` turns a directive read into what
/// takes its place (includes).
fn block(lx: &mut Lexer<'_>, each: &mut Expand<'_>) -> Result<(Vec<Directive>, End), Diag> {
    let mut out = Vec::new();
    loop {
        let (words, stop) = lx.statement()?;
        match stop {
            Stop::Eof => return Ok((out, End::Eof)),
            Stop::Close(at) => return Ok((out, End::Close(at))),
            Stop::Semicolon => {
                let d = directive(words, None);
                out.extend(each(d)?);
            }
            Stop::Open(open) => {
                let (inner, end) = block(lx, each)?;
                if let End::Eof = end {
                    return Err(Diag {
                        at: open,
                        level: Level::Error,
                        message: "unexpected end of file: this block is never closed with \"}\"".into(),
                    });
                }
                out.push(directive(words, Some(inner)));
            }
        }
    }
}

fn directive(mut words: Vec<(String, Pos)>, block: Option<Vec<Directive>>) -> Directive {
    let (name, at) = words.remove(0);
    Directive { name, args: words.into_iter().map(|(w, _)| w).collect(), block, at }
}

enum Stop {
    Semicolon,
    Open(Pos),
    Close(Pos),
    Eof,
}

struct Lexer<'a> {
    file: Arc<Path>,
    text: &'a [u8],
    i: usize,
    line: u32,
    col: u32,
}

impl Lexer<'_> {
    fn pos(&self) -> Pos {
        Pos { file: self.file.clone(), line: self.line, col: self.col }
    }

    fn err(&self, at: Pos, message: impl Into<String>) -> Diag {
        Diag { at, level: Level::Error, message: message.into() }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// The words of one statement and what ended it (at most one `}` or end of file, with no
    /// words before it).
    fn statement(&mut self) -> Result<(Vec<(String, Pos)>, Stop), Diag> {
        let mut words: Vec<(String, Pos)> = Vec::new();
        loop {
            // Between tokens: spaces, comments.
            let Some(c) = self.peek() else {
                if let Some((_, at)) = words.first() {
                    return Err(self.err(at.clone(), "unexpected end of file, expecting \";\" or \"}\""));
                }
                return Ok((words, Stop::Eof));
            };
            let at = self.pos();
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => {
                    self.bump();
                }
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.bump();
                    }
                }
                b';' | b'{' => {
                    self.bump();
                    if words.is_empty() {
                        return Err(self.err(at, format!("unexpected \"{}\"", c as char)));
                    }
                    return Ok((words, if c == b';' { Stop::Semicolon } else { Stop::Open(at) }));
                }
                b'}' => {
                    self.bump();
                    if !words.is_empty() {
                        return Err(self.err(at, "unexpected \"}\": the directive before it needs a \";\""));
                    }
                    return Ok((words, Stop::Close(at)));
                }
                b'"' | b'\'' => {
                    self.bump();
                    let w = self.quoted(c, &at)?;
                    // nginx: after a quoted token, a space, `;` or `{` must follow — or the `)` that
                    // closes an `if` condition (`if ($request_method = 'OPTIONS')`), which then
                    // starts a token of its own.
                    match self.peek() {
                        None | Some(b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' | b')') => {}
                        Some(other) => {
                            return Err(
                                self.err(self.pos(), format!("unexpected \"{}\" after a quoted string", other as char))
                            )
                        }
                    }
                    words.push((w, at));
                }
                _ => {
                    let w = self.bare();
                    words.push((w, at));
                }
            }
        }
    }

    fn quoted(&mut self, q: u8, start: &Pos) -> Result<String, Diag> {
        let mut raw = Vec::new();
        loop {
            match self.bump() {
                None => return Err(self.err(start.clone(), "unexpected end of file inside a quoted string")),
                Some(b'\\') => {
                    raw.push(b'\\');
                    if let Some(n) = self.bump() {
                        raw.push(n);
                    }
                }
                Some(c) if c == q => return Ok(unescape(&raw)),
                Some(c) => raw.push(c),
            }
        }
    }

    fn bare(&mut self) -> String {
        let mut raw = Vec::new();
        let mut variable = false;
        while let Some(c) = self.peek() {
            match c {
                b'\\' => {
                    self.bump();
                    raw.push(b'\\');
                    if let Some(n) = self.bump() {
                        raw.push(n);
                    }
                    variable = false;
                    continue;
                }
                b'{' if variable => {}
                b' ' | b'\t' | b'\r' | b'\n' | b';' | b'{' => break,
                _ => {}
            }
            variable = c == b'$';
            self.bump();
            raw.push(c);
            // `${name}`: the `}` closing a variable's name is part of the token.
            if c == b'{' {
                while let Some(n) = self.peek() {
                    self.bump();
                    raw.push(n);
                    if n == b'}' {
                        break;
                    }
                }
            }
        }
        unescape(&raw)
    }
}

/// nginx's copy of a token: `\"`, `\'`, `\\` lose the backslash; `\t`, `\r`, `\n` become control
/// characters; any other backslash stays.
fn unescape(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            match raw.get(i + 1) {
                Some(&c @ (b'"' | b'\'' | b'\\')) => {
                    out.push(c);
                    i += 2;
                    continue;
                }
                Some(b't') => {
                    out.push(b'\t');
                    i += 2;
                    continue;
                }
                Some(b'r') => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                Some(b'n') => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[Directive]) -> Vec<String> {
        list.iter().map(|d| format!("{} {}", d.name, d.args.join("|"))).collect()
    }

    #[test]
    fn tokens_quotes_escapes_and_comments_as_nginx_reads_them() {
        let text = "user  nginx; # the worker user\r\n\
                    http {\r\n\
                      log_format main '$remote_addr - \"$request\"' \"a\\\"b\" c\\ d;\n\
                      add_header X-A a#b;\n\
                      return 200 \"line\\nnext\\t\\x\";\n\
                      set $u ${host}x;\n\
                      location ~ \"^/api/v[0-9]{1,2}/\" { return 204; }\n\
                    }\n";
        let list = parse_str("t.conf", text).unwrap();
        assert_eq!(names(&list), ["user nginx", "http "]);
        let http = list[1].block.as_ref().unwrap();
        assert_eq!(
            names(&http[..4]),
            [
                "log_format main|$remote_addr - \"$request\"|a\"b|c\\ d",
                "add_header X-A|a#b",
                "return 200|line\nnext\t\\x",
                "set $u|${host}x",
            ]
        );
        // A regex with `{` is quoted, in nginx too: unquoted, the brace would open the block.
        assert_eq!(http[4].args, ["~", "^/api/v[0-9]{1,2}/"]);
        assert_eq!(names(http[4].block.as_ref().unwrap()), ["return 204"]);
        assert_eq!((http[1].at.line, http[1].at.col), (4, 1));
    }

    #[test]
    fn a_quoted_value_may_close_an_if_condition() {
        let list = parse_str("c.conf", "if ($request_method = 'OPTIONS') { return 204; }\n").unwrap();
        assert_eq!(list[0].args, ["($request_method", "=", "OPTIONS", ")"]);
        assert_eq!(list[0].block.as_ref().unwrap()[0].args, ["204"]);
    }

    #[test]
    fn a_missing_proxy_params_is_debian_s() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("site.conf"), "server { location / { include proxy_params; } }\n").unwrap();
        let (list, notes) = parse_file(&d.path().join("site.conf")).unwrap();
        let loc = &list[0].block.as_ref().unwrap()[0];
        assert_eq!(
            names(loc.block.as_ref().unwrap()),
            [
                "proxy_set_header Host|$host",
                "proxy_set_header X-Real-IP|$remote_addr",
                "proxy_set_header X-Forwarded-For|$proxy_add_x_forwarded_for",
                "proxy_set_header X-Forwarded-Proto|$scheme"
            ]
        );
        assert!(
            notes[0].level == Level::Note && notes[0].message.contains("Debian's standard proxy_params"),
            "{notes:?}"
        );
    }

    #[test]
    fn errors_name_the_place() {
        let cases = [
            ("http {\n  server {\n", 2, "never closed"),
            ("http { }\n}\n", 2, "unexpected \"}\""),
            ("user nginx\n", 1, "unexpected end of file"),
            ("; user x;", 1, "unexpected \";\""),
            ("return 200 \"abc", 1, "inside a quoted string"),
            ("return 200 \"abc\"x;", 1, "after a quoted string"),
            ("location / { return 204 }", 1, "needs a \";\""),
        ];
        for (text, line, words) in cases {
            let e = parse_str("e.conf", text).unwrap_err();
            assert_eq!(e.at.line, line, "{text:?}: {e}");
            assert!(e.message.contains(words), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("e.conf:{line}:")), "{e}");
        }
    }

    #[test]
    fn includes_follow_globs_relative_to_the_file_then_the_prefix() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("conf.d")).unwrap();
        std::fs::create_dir_all(root.join("sites")).unwrap();
        std::fs::write(
            root.join("nginx.conf"),
            "http {\n  include conf.d/*.conf;\n  include missing/*.conf;\n  include loop.conf;\n}\n",
        )
        .unwrap();
        std::fs::write(root.join("conf.d/b.conf"), "server { listen 81; }\n").unwrap();
        std::fs::write(root.join("conf.d/a.conf"), "server { listen 80; include snippets.conf; }\n").unwrap();
        // Not next to conf.d/a.conf: found from the prefix (the main file's directory).
        std::fs::write(root.join("snippets.conf"), "proxy_set_header Host $host;\n").unwrap();
        std::fs::write(root.join("loop.conf"), "include loop.conf;\n").unwrap();
        let (list, warnings) = parse_file(&root.join("nginx.conf")).unwrap();
        let http = list[0].block.as_ref().unwrap();
        assert_eq!(names(http), ["server ", "server "]);
        let a = http[0].block.as_ref().unwrap();
        assert_eq!(names(a), ["listen 80", "proxy_set_header Host|$host"]);
        assert!(a[1].at.file.ends_with("snippets.conf") && a[1].at.line == 1);
        assert_eq!(names(http[1].block.as_ref().unwrap()), ["listen 81"], "files in name order");
        let w: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            w.iter().any(|w| w.contains("nginx.conf:3:3: warning: include `missing/*.conf` matches no file")),
            "{w:?}"
        );
        assert!(w.iter().any(|w| w.contains("would loop")), "{w:?}");
    }

    #[test]
    fn printed_text_reads_back_as_the_same_directives() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet = b"ab {};#\"'\\$\n\r\t";
        let strip = |list: &[Directive]| -> String {
            fn walk(list: &[Directive], out: &mut String) {
                for d in list {
                    out.push_str(&format!("{:?}{:?}", d.name, d.args));
                    if let Some(b) = &d.block {
                        out.push('{');
                        walk(b, out);
                        out.push('}');
                    }
                }
            }
            let mut s = String::new();
            walk(list, &mut s);
            s
        };
        let (mut checked, mut n) = (0, 0);
        while checked < 2_000 && n < 200_000 {
            n += 1;
            let len = rng.usize(0..40);
            let text: Vec<u8> = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            let Ok(list) = parse_str("f.conf", &String::from_utf8_lossy(&text)) else { continue };
            let back = parse_str("p.conf", &print(&list)).unwrap_or_else(|e| panic!("{e}\n{}", print(&list)));
            assert_eq!(strip(&back), strip(&list), "{:?}", String::from_utf8_lossy(&text));
            checked += 1;
        }
        assert_eq!(checked, 2_000);
    }

    #[test]
    fn any_bytes_give_directives_or_an_error_never_a_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"ab {};#\"'\\$\n\r\t";
        for _ in 0..20_000 {
            let n = rng.usize(0..40);
            let text: Vec<u8> = (0..n).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            let _ = parse_str("f.conf", &String::from_utf8_lossy(&text));
        }
    }
}
