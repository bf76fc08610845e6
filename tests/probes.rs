//! The edge's HTTP/1 probe suite, organised by RFC 9112 / 9110 section, run through ferry and
//! through real nginx side by side.
//!
//! **Requests** (`request_probes`): each probe's bytes go to the proxy on a fresh connection,
//! which the client then half-closes; every answer on it is read, and an upstream records the
//! exact bytes it receives. Each probe states what a safe proxy must do — refuse it (no byte
//! forwarded), forward exactly one request with a stated property (its Host, its body, a header
//! gone), or either — and ferry is held to it. Behind every probe: nothing smuggled ever reaches
//! the upstream, and nothing reaches it for a host whose route denies everyone (`admin.test`,
//! and `/private` on `h1.test`).
//!
//! **Responses** (`response_probes`): an upstream that misbehaves as a script says — a stray
//! response a moment after a good one, a body after a HEAD or 204, framing it must not send, a
//! connection closed without an answer — then an unrelated client's request must get its own
//! answer, never the stray bytes (response desync), and a request that is not idempotent must
//! never be sent twice (RFC 9112 §9.3.1).
//!
//! nginx (Debian's, run from a scratch prefix) gets the same probes; its outcome is printed
//! beside ferry's for the reader, and only ferry is held to the expectations.

mod support;
mod wire;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use wire::*;

/// What a probe must lead to, checked on the answers and what the upstream saw.
type Expect = Box<dyn Fn(&Answers, &[Seen]) -> Result<(), String>>;

struct Probe {
    section: &'static str,
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
}

fn probe(section: &'static str, name: &str, bytes: impl AsRef<[u8]>, expect: Expect) -> Probe {
    Probe { section, name: name.to_string(), bytes: bytes.as_ref().to_vec(), expect }
}

/// Refused: no answer, or a first answer of 400 or more, and nothing forwarded.
fn refuse() -> Expect {
    Box::new(|a, seen| {
        if a.statuses.first().is_some_and(|s| *s < 400) {
            return Err(format!("answered {:?}", a.statuses));
        }
        if !seen.is_empty() {
            return Err(format!("{} request(s) forwarded", seen.len()));
        }
        Ok(())
    })
}

/// Refused, where a streaming proxy may already have sent the head and part of the body: then
/// the upstream must have been left with an incomplete request (never a complete one).
fn cut() -> Expect {
    Box::new(|a, seen| {
        if a.statuses.first().is_some_and(|s| *s < 400) {
            return Err(format!("answered {:?}", a.statuses));
        }
        match seen.iter().find(|s| s.garbage.is_none()) {
            Some(s) => Err(format!("a complete request forwarded: {} {} body {:?}", s.method, s.target, s.body)),
            None => Ok(()),
        }
    })
}

/// One request forwarded, answered 200, and `check` holds for it.
fn pass(check: impl Fn(&Seen) -> Result<(), String> + 'static) -> Expect {
    Box::new(move |a, seen| {
        if a.statuses.first() != Some(&200) {
            return Err(format!("answered {:?}", a.statuses));
        }
        match seen {
            [one] if one.garbage.is_none() => check(one),
            _ => Err(format!("forwarded {seen:?}")),
        }
    })
}

/// Refused, or passed with `check`.
fn either(check: impl Fn(&Seen) -> Result<(), String> + 'static) -> Expect {
    let (r, p) = (refuse(), pass(check));
    Box::new(move |a, seen| r(a, seen).or_else(|e1| p(a, seen).map_err(|e2| format!("{e1}; or {e2}"))))
}

/// Exactly these answers, and `n` requests forwarded.
fn answers(statuses: &'static [u16], n: usize) -> Expect {
    Box::new(move |a, seen| {
        if a.statuses != statuses || seen.len() != n || seen.iter().any(|s| s.garbage.is_some()) {
            return Err(format!("answered {:?}, forwarded {}", a.statuses, seen.len()));
        }
        Ok(())
    })
}

fn any() -> impl Fn(&Seen) -> Result<(), String> {
    |_| Ok(())
}

fn host(want: &'static str) -> impl Fn(&Seen) -> Result<(), String> {
    move |s| if s.host() == want { Ok(()) } else { Err(format!("forwarded with Host {:?}", s.header("host"))) }
}

fn body(want: &'static [u8]) -> impl Fn(&Seen) -> Result<(), String> {
    move |s| {
        if s.body == want {
            Ok(())
        } else {
            Err(format!("forwarded body {:?}", String::from_utf8_lossy(&s.body)))
        }
    }
}

fn without(name: &'static str) -> impl Fn(&Seen) -> Result<(), String> {
    move |s| match s.header(name) {
        None => Ok(()),
        Some(v) => Err(format!("forwarded {name}: {v}")),
    }
}

fn with(name: &'static str) -> impl Fn(&Seen) -> Result<(), String> {
    move |s| if s.header(name).is_some() { Ok(()) } else { Err(format!("{name} missing")) }
}

fn target(want: &'static str) -> impl Fn(&Seen) -> Result<(), String> {
    move |s| if s.target == want { Ok(()) } else { Err(format!("forwarded target {:?}", s.target)) }
}

/// `GET {target}` with these extra header lines (each ending in CRLF) and Host h1.test.
fn get(target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: h1.test\r\n{extra}\r\n")
}

/// `POST /` with these header lines (Host h1.test first) and then `rest` verbatim.
fn post(headers: &str, rest: &str) -> String {
    format!("POST / HTTP/1.1\r\nHost: h1.test\r\n{headers}\r\n{rest}")
}

const SMUGGLE: &str = "GET /smuggled HTTP/1.1\r\nHost: admin.test\r\n\r\n";

fn request_probes() -> Vec<Probe> {
    let mut v = Vec::new();

    // RFC 9112 §3: the request line.
    let s = "9112 §3 request line";
    v.push(probe(s, "baseline GET", get("/", ""), pass(target("/"))));
    v.push(probe(s, "invalid method byte", "G@T / HTTP/1.1\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "method with NUL", "GE\0T / HTTP/1.1\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "two spaces after method", "GET  / HTTP/1.1\r\nHost: h1.test\r\n\r\n", either(target("/"))));
    v.push(probe(s, "tab as separator", "GET\t/\tHTTP/1.1\r\nHost: h1.test\r\n\r\n", either(target("/"))));
    v.push(probe(s, "trailing space after version", "GET / HTTP/1.1 \r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "HTTP/1.2", "GET / HTTP/1.2\r\nHost: h1.test\r\n\r\n", either(any())));
    v.push(probe(s, "HTTP/1.10", "GET / HTTP/1.10\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "HTTP/3", "GET / HTTP/3\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "lower-case version", "GET / http/1.1\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "HTTP/0.9 simple request", "GET /\r\n\r\n", refuse()));
    v.push(probe(s, "no version", "GET / \r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "leading empty line", format!("\r\n{}", get("/", "")), either(target("/"))));
    v.push(probe(s, "bare CR ends the line", "GET / HTTP/1.1\rHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "bare LF line ends", "GET / HTTP/1.1\nHost: h1.test\n\n", either(host("h1.test"))));
    v.push(probe(s, "custom method token", "PURGE / HTTP/1.1\r\nHost: h1.test\r\n\r\n", pass(any())));
    v.push(probe(s, "lower-case method", "get / HTTP/1.1\r\nHost: h1.test\r\n\r\n", either(any())));
    v.push(probe(
        s,
        "very long method",
        format!("{} / HTTP/1.1\r\nHost: h1.test\r\n\r\n", "A".repeat(300)),
        either(any()),
    ));
    v.push(probe(s, "request line of garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", refuse()));

    // RFC 9112 §3.2: the request target's four forms.
    let s = "9112 §3.2 target forms";
    v.push(probe(s, "origin-form with query", get("/a?b=c", ""), pass(target("/a?b=c"))));
    v.push(probe(s, "no leading slash", "GET abc HTTP/1.1\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "authority-form without CONNECT", "GET h1.test:80 HTTP/1.1\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "asterisk-form with GET", "GET * HTTP/1.1\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(
        s,
        "asterisk-form with POST",
        "POST * HTTP/1.1\r\nHost: h1.test\r\nContent-Length: 0\r\n\r\n",
        refuse(),
    ));
    v.push(probe(s, "absolute-form", "GET http://h1.test/abs HTTP/1.1\r\nHost: h1.test\r\n\r\n", pass(target("/abs"))));
    v.push(probe(
        s,
        "absolute-form authority beats Host",
        "GET http://h1.test/abs HTTP/1.1\r\nHost: admin.test\r\n\r\n",
        pass(host("h1.test")),
    ));
    v.push(probe(
        s,
        "absolute-form to a denied host",
        "GET http://admin.test/ HTTP/1.1\r\nHost: h1.test\r\n\r\n",
        refuse(),
    ));
    v.push(probe(
        s,
        "absolute-form upper case",
        "GET HTTP://H1.TEST/abs HTTP/1.1\r\nHost: admin.test\r\n\r\n",
        either(host("h1.test")),
    ));
    v.push(probe(
        s,
        "absolute-form with port",
        "GET http://h1.test:80/abs HTTP/1.1\r\nHost: admin.test\r\n\r\n",
        pass(host("h1.test")),
    ));
    v.push(probe(
        s,
        "absolute-form https",
        "GET https://h1.test/abs HTTP/1.1\r\nHost: h1.test\r\n\r\n",
        either(host("h1.test")),
    ));
    v.push(probe(
        s,
        "absolute-form without path",
        "GET http://h1.test HTTP/1.1\r\nHost: admin.test\r\n\r\n",
        either(host("h1.test")),
    ));
    v.push(probe(s, "absolute-form userinfo", "GET http://admin.test@h1.test/ HTTP/1.1\r\n\r\n", refuse()));
    v.push(probe(
        s,
        "absolute-form userinfo with Host",
        "GET http://x:y@h1.test/ HTTP/1.1\r\nHost: h1.test\r\n\r\n",
        either(host("h1.test")),
    ));
    v.push(probe(s, "absolute-form scheme ftp", "GET ftp://h1.test/ HTTP/1.1\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "absolute-form empty host", "GET http:///x HTTP/1.1\r\nHost: admin.test\r\n\r\n", refuse()));
    v.push(probe(
        s,
        "absolute-form host with comma",
        "GET http://h1.test,admin.test/ HTTP/1.1\r\nHost: h1.test\r\n\r\n",
        refuse(),
    ));
    v.push(probe(
        s,
        "absolute-form without Host (1.1)",
        "GET http://h1.test/abs HTTP/1.1\r\n\r\n",
        either(host("h1.test")),
    ));
    v.push(probe(s, "OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: h1.test\r\n\r\n", either(target("*"))));
    v.push(probe(s, "fragment in target", get("/a#frag", ""), either(any())));
    v.push(probe(s, "NUL in target", "GET /a\0b HTTP/1.1\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "space in target", "GET /a b HTTP/1.1\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "DEL in target", "GET /a\x7fb HTTP/1.1\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "backslash target", get("\\private", ""), either(any())));

    // RFC 9112 §9.3.6 / 9110 §9.3.6: CONNECT (no tunnels through this edge).
    let s = "9110 §9.3.6 CONNECT";
    v.push(probe(s, "CONNECT authority-form", "CONNECT h1.test:443 HTTP/1.1\r\nHost: h1.test:443\r\n\r\n", refuse()));
    v.push(probe(
        s,
        "CONNECT then tunnel bytes",
        format!("CONNECT h1.test:80 HTTP/1.1\r\nHost: h1.test:80\r\n\r\n{SMUGGLE}"),
        refuse(),
    ));
    v.push(probe(s, "CONNECT origin-form", "CONNECT / HTTP/1.1\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(
        s,
        "CONNECT to a denied host",
        "CONNECT admin.test:443 HTTP/1.1\r\nHost: admin.test\r\n\r\n",
        refuse(),
    ));
    v.push(probe(s, "connect lower-case", "connect h1.test:443 HTTP/1.1\r\nHost: h1.test\r\n\r\n", refuse()));

    // RFC 9112 §3.2 and RFC 3986: Host.
    let s = "9112 §3.2 Host";
    let h = |value: &str| format!("GET / HTTP/1.1\r\nHost: {value}\r\n\r\n");
    v.push(probe(s, "HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", refuse()));
    v.push(probe(s, "HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", pass(any())));
    v.push(probe(s, "two Host, same", "GET / HTTP/1.1\r\nHost: h1.test\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "two Host, different", "GET / HTTP/1.1\r\nHost: h1.test\r\nHost: admin.test\r\n\r\n", refuse()));
    v.push(probe(s, "Host then host", "GET / HTTP/1.1\r\nHost: h1.test\r\nhost: admin.test\r\n\r\n", refuse()));
    v.push(probe(s, "empty Host", h(""), refuse()));
    v.push(probe(s, "Host list", h("h1.test, admin.test"), refuse()));
    v.push(probe(s, "Host list without space", h("h1.test,admin.test"), refuse()));
    v.push(probe(s, "Host with space", h("h1.test admin.test"), refuse()));
    v.push(probe(s, "Host with path", h("h1.test/../x"), refuse()));
    v.push(probe(s, "Host with userinfo", h("admin.test@h1.test"), refuse()));
    v.push(probe(s, "Host with backslash", h("h1.test\\admin.test"), refuse()));
    v.push(probe(s, "Host percent-escaped", h("admin%2etest"), refuse()));
    v.push(probe(s, "Host port not digits", h("h1.test:abc"), refuse()));
    v.push(probe(s, "Host port too large", h("h1.test:99999"), refuse()));
    v.push(probe(s, "Host two ports", h("h1.test:80:80"), refuse()));
    v.push(probe(s, "Host empty label", h("h1..test"), refuse()));
    v.push(probe(s, "Host leading dot", h(".h1.test"), refuse()));
    v.push(probe(s, "Host NUL", h("h1.test\0admin.test"), refuse()));
    v.push(probe(s, "Host non-ASCII", h("h1.t\u{e9}st"), refuse()));
    v.push(probe(s, "Host IPv6 literal", h("[::1]"), pass(any())));
    v.push(probe(s, "Host IPv6 with port", h("[::1]:8080"), pass(any())));
    v.push(probe(s, "Host bad IPv6", h("[::zz]"), refuse()));
    v.push(probe(s, "Host unclosed bracket", h("[::1"), refuse()));
    v.push(probe(s, "Host IPv4 with port", h("127.0.0.1:80"), pass(any())));
    v.push(probe(s, "Host with port", h("h1.test:8080"), pass(host("h1.test"))));
    v.push(probe(s, "Host trailing dot", h("h1.test."), pass(any())));
    v.push(probe(s, "denied host", h("admin.test"), refuse()));
    v.push(probe(s, "denied host, trailing dot", h("admin.test."), refuse()));
    v.push(probe(s, "denied host, upper case", h("ADMIN.TEST"), refuse()));
    v.push(probe(s, "denied host, with port", h("admin.test:80"), refuse()));
    v.push(probe(s, "denied host, trailing tab", "GET / HTTP/1.1\r\nHost: admin.test\t\r\n\r\n", refuse()));
    v.push(probe(s, "denied host, obs-fold", "GET / HTTP/1.1\r\nHost:\r\n admin.test\r\n\r\n", refuse()));
    v.push(probe(s, "Host with underscore", h("h1_test"), pass(any())));
    v.push(probe(s, "unknown host", h("other.test"), pass(host("other.test"))));

    // Paths that a normalising proxy and its upstream must read alike (the deny on /private).
    let s = "9110 §4.2.3 paths";
    v.push(probe(s, "denied path", get("/private", ""), refuse()));
    v.push(probe(s, "denied path, dot segment", get("/./private", ""), refuse()));
    v.push(probe(s, "denied path, dot-dot", get("/x/../private", ""), refuse()));
    v.push(probe(s, "denied path, escaped", get("/%70rivate", ""), refuse()));
    v.push(probe(s, "denied path, escaped dots", get("/x/%2e%2e/private", ""), refuse()));
    v.push(probe(s, "denied path, double slash", get("//private", ""), refuse()));
    v.push(probe(s, "denied path, below", get("/private/x", ""), refuse()));
    v.push(probe(s, "dot-dot above the root", get("/../private", ""), refuse()));
    v.push(probe(s, "escaped slash", get("/x%2f..%2fprivate", ""), either(any())));
    v.push(probe(s, "escaped NUL", get("/a%00b", ""), either(any())));

    // RFC 9112 §5 / 9110 §5: header fields.
    let s = "9112 §5 fields";
    v.push(probe(s, "space before colon", get("/", "X-A : b\r\n"), refuse()));
    v.push(probe(s, "tab before colon", get("/", "X-A\t: b\r\n"), refuse()));
    v.push(probe(
        s,
        "obs-fold",
        get("/", "X-A: b\r\n c\r\n"),
        either(|s| {
            if s.header("x-a").is_some_and(|v| v.contains('\n') || v.contains('\r')) {
                Err("a folded line forwarded".into())
            } else {
                Ok(())
            }
        }),
    ));
    v.push(probe(s, "obs-fold as first line", "GET / HTTP/1.1\r\n X-A: b\r\nHost: h1.test\r\n\r\n", refuse()));
    v.push(probe(s, "space in name", get("/", "X A: b\r\n"), either(without("x a"))));
    v.push(probe(s, "invalid name byte", get("/", "X@A: b\r\n"), either(without("x@a"))));
    v.push(probe(s, "empty name", get("/", ": b\r\n"), refuse()));
    v.push(probe(s, "no colon", get("/", "nonsense\r\n"), refuse()));
    v.push(probe(s, "NUL in value", get("/", "X-A: a\0b\r\n"), refuse()));
    v.push(probe(s, "CR in value", get("/", "X-A: a\rb\r\n"), refuse()));
    v.push(probe(s, "obs-text in value", get("/", "X-A: caf\u{e9}\r\n"), pass(with("x-a"))));
    v.push(probe(s, "empty value", get("/", "X-A:\r\n"), pass(any())));
    v.push(probe(s, "header block too large", get("/", &format!("X-Big: {}\r\n", "a".repeat(70_000))), refuse()));
    v.push(probe(
        s,
        "too many headers",
        get("/", &(0..300).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()),
        refuse(),
    ));

    // RFC 9112 §6.3 / §8.6: Content-Length.
    let s = "9112 §6.3 Content-Length";
    let cl = |value: &str, rest: &str| post(&format!("Content-Length: {value}\r\n"), rest);
    v.push(probe(s, "CL 5", cl("5", "hello"), pass(body(b"hello"))));
    v.push(probe(s, "CL 0", cl("0", ""), pass(body(b""))));
    v.push(probe(s, "CL leading zeros", cl("005", "hello"), pass(body(b"hello"))));
    v.push(probe(s, "CL with OWS", cl(" 5 ", "hello"), pass(body(b"hello"))));
    v.push(probe(s, "CL plus sign", cl("+5", "hello"), refuse()));
    v.push(probe(s, "CL minus", cl("-5", "hello"), refuse()));
    v.push(probe(s, "CL hex", cl("0x5", "hello"), refuse()));
    v.push(probe(s, "CL decimal point", cl("5.0", "hello"), refuse()));
    v.push(probe(s, "CL exponent", cl("5e0", "hello"), refuse()));
    v.push(probe(s, "CL empty", cl("", "hello"), refuse()));
    v.push(probe(s, "CL two numbers", cl("5 5", "hello"), refuse()));
    v.push(probe(s, "CL list, same", cl("5, 5", "hello"), either(body(b"hello"))));
    v.push(probe(s, "CL list, different", cl("5, 6", "hello!"), refuse()));
    v.push(probe(s, "CL overflow", cl("99999999999999999999999", "hello"), refuse()));
    v.push(probe(s, "CL vertical tab", cl("\x0b5", "hello"), refuse()));
    v.push(probe(
        s,
        "two CL, same",
        post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        either(body(b"hello")),
    ));
    v.push(probe(
        s,
        "two CL, different",
        post("Content-Length: 5\r\nContent-Length: 50\r\n", &format!("hello{SMUGGLE}")),
        refuse(),
    ));
    v.push(probe(s, "CL shorter than body", cl("3", &format!("hel{SMUGGLE}")), answers(&[200, 403], 1)));
    v.push(probe(
        s,
        "CL on GET",
        "GET / HTTP/1.1\r\nHost: h1.test\r\nContent-Length: 5\r\n\r\nhello",
        pass(body(b"hello")),
    ));
    v.push(probe(s, "CL body cut short", cl("10", "hello"), cut()));
    v.push(probe(
        s,
        "Content_Length underscore",
        post("Content_Length: 5\r\n", "hello"),
        either(without("content-length")),
    ));

    // RFC 9112 §6.1 / §7: Transfer-Encoding and the chunked coding.
    let s = "9112 §6.1 Transfer-Encoding";
    let te = |value: &str, rest: &str| post(&format!("Transfer-Encoding: {value}\r\n"), rest);
    let chunked_hi = "2\r\nhi\r\n0\r\n\r\n";
    v.push(probe(s, "TE chunked", te("chunked", chunked_hi), pass(body(b"hi"))));
    v.push(probe(s, "TE CHUNKED", te("CHUNKED", chunked_hi), pass(body(b"hi"))));
    v.push(probe(s, "TE chunked OWS", te(" chunked ", chunked_hi), pass(body(b"hi"))));
    v.push(probe(s, "TE chunked, chunked", te("chunked, chunked", chunked_hi), refuse()));
    v.push(probe(s, "TE chunked, identity", te("chunked, identity", &format!("0\r\n\r\n{SMUGGLE}")), refuse()));
    v.push(probe(s, "TE identity", te("identity", "hello"), refuse()));
    v.push(probe(s, "TE gzip, chunked", te("gzip, chunked", chunked_hi), refuse()));
    v.push(probe(s, "TE xchunked", te("xchunked", &format!("0\r\n\r\n{SMUGGLE}")), refuse()));
    v.push(probe(s, "TE chunked;x", te("chunked;q=1", chunked_hi), refuse()));
    v.push(probe(s, "TE vertical tab", te("\x0bchunked", chunked_hi), refuse()));
    v.push(probe(s, "TE empty", te("", "hello"), refuse()));
    v.push(probe(
        s,
        "TE obs-fold",
        post("Transfer-Encoding:\r\n chunked\r\n", &format!("0\r\n\r\n{SMUGGLE}")),
        refuse(),
    ));
    v.push(probe(
        s,
        "TE space before colon",
        post("Transfer-Encoding : chunked\r\n", &format!("0\r\n\r\n{SMUGGLE}")),
        refuse(),
    ));
    v.push(probe(
        s,
        "two TE headers",
        post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", chunked_hi),
        refuse(),
    ));
    v.push(probe(
        s,
        "TE and CL (TE.CL)",
        post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", &format!("0\r\n\r\n{SMUGGLE}")),
        either(body(b"")),
    ));
    v.push(probe(
        s,
        "CL and TE (CL.TE)",
        post("Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", &format!("0\r\n\r\n{SMUGGLE}")),
        either(body(b"")),
    ));
    v.push(probe(
        s,
        "TE on HTTP/1.0",
        format!("POST / HTTP/1.0\r\nHost: h1.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLE}"),
        either(body(b"")),
    ));
    v.push(probe(
        s,
        "Transfer_Encoding underscore",
        post("Transfer_Encoding: chunked\r\nContent-Length: 5\r\n", "hello"),
        either(body(b"hello")),
    ));

    let s = "9112 §7.1 chunked";
    let ch = |rest: &str| post("Transfer-Encoding: chunked\r\n", rest);
    v.push(probe(s, "two chunks", ch("2\r\nhi\r\n3\r\nyou\r\n0\r\n\r\n"), pass(body(b"hiyou"))));
    v.push(probe(s, "chunk extension", ch("2;name=value\r\nhi\r\n0\r\n\r\n"), pass(body(b"hi"))));
    v.push(probe(s, "quoted extension", ch("2;n=\"a;b\"\r\nhi\r\n0\r\n\r\n"), either(body(b"hi"))));
    v.push(probe(s, "upper-case hex", ch("A\r\n0123456789\r\n0\r\n\r\n"), pass(body(b"0123456789"))));
    v.push(probe(s, "leading zeros", ch("0002\r\nhi\r\n0\r\n\r\n"), pass(body(b"hi"))));
    v.push(probe(s, "size 0x2", ch("0x2\r\nhi\r\n0\r\n\r\n"), refuse()));
    v.push(probe(s, "size +2", ch("+2\r\nhi\r\n0\r\n\r\n"), refuse()));
    v.push(probe(s, "size -2", ch("-2\r\nhi\r\n0\r\n\r\n"), refuse()));
    v.push(probe(s, "size with leading space", ch(" 2\r\nhi\r\n0\r\n\r\n"), refuse()));
    v.push(probe(s, "size with trailing space", ch("2 \r\nhi\r\n0\r\n\r\n"), either(body(b"hi"))));
    v.push(probe(s, "size not hex", ch("zz\r\nhi\r\n0\r\n\r\n"), refuse()));
    v.push(probe(s, "size overflow", ch("FFFFFFFFFFFFFFFFFF\r\nhi\r\n0\r\n\r\n"), refuse()));
    v.push(probe(s, "size 2^64", ch("10000000000000000\r\nhi\r\n0\r\n\r\n"), refuse()));
    v.push(probe(s, "bare LF after size", ch("2\nhi\r\n0\r\n\r\n"), either(body(b"hi"))));
    v.push(probe(s, "data longer than size", ch(&format!("2\r\nhiX\r\n0\r\n\r\n{SMUGGLE}")), cut()));
    v.push(probe(s, "no CRLF after data", ch("2\r\nhi0\r\n\r\n"), cut()));
    v.push(probe(s, "no last chunk", ch("2\r\nhi\r\n"), cut()));
    v.push(probe(s, "last chunk with extension", ch("2\r\nhi\r\n0;x=y\r\n\r\n"), pass(body(b"hi"))));
    v.push(probe(
        s,
        "trailer smuggling a header",
        ch("2\r\nhi\r\n0\r\nX-Trailer: t\r\nContent-Length: 99\r\n\r\n"),
        either(|s| {
            if s.count("content-length") > 0 && s.header("transfer-encoding").is_some() {
                Err("a trailer became a framing header".into())
            } else {
                body(b"hi")(s)
            }
        }),
    ));
    v.push(probe(s, "trailer with NUL", ch("2\r\nhi\r\n0\r\nX-T: a\0b\r\n\r\n"), {
        let (c, p) = (cut(), pass(body(b"hi")));
        Box::new(move |a, seen| c(a, seen).or_else(|_| p(a, seen)))
    }));
    v.push(probe(
        s,
        "chunked then pipelined request",
        ch(&format!("2\r\nhi\r\n0\r\n\r\n{SMUGGLE}")),
        answers(&[200, 403], 1),
    ));
    v.push(probe(
        s,
        "many one-byte chunks",
        ch(&format!("{}0\r\n\r\n", "1\r\nx\r\n".repeat(100))),
        pass(body(&[b'x'; 100])),
    ));

    // RFC 9112 §9.3: persistence and pipelining.
    let s = "9112 §9.3 pipelining";
    v.push(probe(s, "two GETs in one write", format!("{}{}", get("/1", ""), get("/2", "")), answers(&[200, 200], 2)));
    v.push(probe(
        s,
        "GET then a denied host",
        format!("{}GET / HTTP/1.1\r\nHost: admin.test\r\n\r\n", get("/1", "")),
        answers(&[200, 403], 1),
    ));
    v.push(probe(s, "GET then garbage", format!("{}NOT HTTP AT ALL\r\n\r\n", get("/1", "")), either(any())));
    v.push(probe(
        s,
        "Connection: close then more",
        format!("{}{}", get("/1", "Connection: close\r\n"), get("/smuggled", "")),
        answers(&[200], 1),
    ));
    v.push(probe(
        s,
        "HTTP/1.0 then more",
        format!("GET /1 HTTP/1.0\r\nHost: h1.test\r\n\r\n{}", get("/smuggled", "")),
        answers(&[200], 1),
    ));
    v.push(probe(
        s,
        "POST body then GET",
        format!("{}{}", post("Content-Length: 5\r\n", "hello"), get("/2", "")),
        answers(&[200, 200], 2),
    ));

    // RFC 9110 §7.6.1: Connection and hop-by-hop fields.
    let s = "9110 §7.6.1 Connection";
    v.push(probe(s, "Connection names Host", get("/", "Connection: Host\r\n"), pass(host("h1.test"))));
    v.push(probe(
        s,
        "Connection names Content-Length",
        post("Connection: Content-Length\r\nContent-Length: 5\r\n", "hello"),
        either(body(b"hello")),
    ));
    v.push(probe(
        s,
        "Connection names Transfer-Encoding",
        post("Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n", "2\r\nhi\r\n0\r\n\r\n"),
        either(body(b"hi")),
    ));
    v.push(probe(
        s,
        "Connection names a field",
        get("/", "Connection: X-Drop\r\nX-Drop: 1\r\n"),
        pass(without("x-drop")),
    ));
    v.push(probe(s, "Keep-Alive not forwarded", get("/", "Keep-Alive: timeout=5\r\n"), pass(without("keep-alive"))));
    v.push(probe(s, "TE not forwarded", get("/", "TE: trailers\r\n"), pass(without("te"))));
    v.push(probe(
        s,
        "Proxy-Connection not forwarded",
        get("/", "Proxy-Connection: keep-alive\r\n"),
        pass(without("proxy-connection")),
    ));
    v.push(probe(
        s,
        "h2c upgrade",
        get("/", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
        either(|s| if s.header("upgrade").is_some() { Err("Upgrade: h2c forwarded".into()) } else { Ok(()) }),
    ));
    v.push(probe(s, "Upgrade without Connection", get("/", "Upgrade: websocket\r\n"), either(without("upgrade"))));
    v.push(probe(s, "Connection: close", get("/", "Connection: close\r\n"), pass(any())));

    // RFC 9110 §10.1.1: Expect.
    let s = "9110 §10.1.1 Expect";
    v.push(probe(
        s,
        "100-continue with a body",
        post("Expect: 100-continue\r\nContent-Length: 5\r\n", "hello"),
        pass(|s| if s.header("expect").is_some() { Err("Expect forwarded".into()) } else { body(b"hello")(s) }),
    ));
    v.push(probe(s, "100-continue without a body", get("/", "Expect: 100-continue\r\n"), pass(any())));
    v.push(probe(s, "unknown expectation", get("/", "Expect: teapot\r\n"), either(any())));

    v
}

/// How the client sends a request on a warm proxy, and what the proxy must then do.
struct ResponseProbe {
    section: &'static str,
    name: &'static str,
    /// The request the misbehaving answer is for.
    request: &'static str,
    script: Script,
    /// Acceptable first answers to that request (0: no answer at all).
    first: &'static [u16],
    /// At most this many requests of the first's method may reach the upstream.
    max_sent: usize,
}

fn rp(
    section: &'static str,
    name: &'static str,
    request: &'static str,
    answer: &str,
    first: &'static [u16],
) -> ResponseProbe {
    ResponseProbe {
        section,
        name,
        request,
        script: Script { answer: answer.as_bytes().to_vec(), later: None, close: false },
        first,
        max_sent: 1,
    }
}

fn late(mut p: ResponseProbe, later: &str) -> ResponseProbe {
    p.script.later = Some(later.as_bytes().to_vec());
    p
}

fn closing(mut p: ResponseProbe) -> ResponseProbe {
    p.script.close = true;
    p
}

const GET_A: &str = "GET /a HTTP/1.1\r\nHost: h1.test\r\nConnection: close\r\n\r\n";
const HEAD_A: &str = "HEAD /a HTTP/1.1\r\nHost: h1.test\r\nConnection: close\r\n\r\n";
const POST_A: &str = "POST /a HTTP/1.1\r\nHost: h1.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const POISON: &str = "HTTP/1.1 200 POISON\r\ncontent-length: 6\r\n\r\npoison";
const OK5: &str = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst";

fn response_probes() -> Vec<ResponseProbe> {
    let s6 = "9112 §6.3 response framing";
    let s9 = "9112 §9.3 idle connections";
    let s4 = "9112 §4 status line";
    let s5 = "9112 §5 response fields";
    let r = "9112 §9.3.1 retries";
    vec![
        late(rp(s9, "a late second response", GET_A, OK5, &[200]), POISON),
        late(rp(s9, "garbage while idle", GET_A, OK5, &[200]), "garbage\r\n\r\n"),
        late(rp(s9, "one byte while idle", GET_A, OK5, &[200]), "x"),
        late(rp(s9, "a 100 Continue while idle", GET_A, OK5, &[200]), "HTTP/1.1 100 Continue\r\n\r\n"),
        late(
            rp(s9, "a body after a HEAD answer", HEAD_A, "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n", &[200]),
            "poison",
        ),
        rp(s9, "a HEAD answer with its body", HEAD_A, "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\npoison", &[200]),
        rp(
            s9,
            "204 with Content-Length and body",
            GET_A,
            "HTTP/1.1 204 No Content\r\ncontent-length: 6\r\n\r\npoison",
            &[204, 502],
        ),
        late(rp(s9, "204, then a body", GET_A, "HTTP/1.1 204 No Content\r\n\r\n", &[204]), "poison"),
        late(
            rp(s9, "304, then a body", GET_A, "HTTP/1.1 304 Not Modified\r\ncontent-length: 6\r\n\r\n", &[304]),
            "poison",
        ),
        rp(
            s9,
            "more body than Content-Length",
            GET_A,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirstpoison",
            &[200],
        ),
        rp(s9, "a response and a second at once", GET_A, &format!("{OK5}{POISON}"), &[200]),
        closing(late(rp(s9, "FIN while idle", GET_A, OK5, &[200]), "")),
        rp(
            s9,
            "Connection: close answer",
            GET_A,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nfirst",
            &[200],
        ),
        rp(
            s9,
            "HTTP/1.0 answer without keep-alive",
            GET_A,
            "HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nfirst",
            &[200],
        ),
        closing(rp(s9, "close-delimited body", GET_A, "HTTP/1.1 200 OK\r\n\r\nfirst", &[200])),
        rp(
            s6,
            "Content-Length and Transfer-Encoding",
            GET_A,
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n",
            &[200, 502],
        ),
        rp(
            s6,
            "two different Content-Length",
            GET_A,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 11\r\n\r\nfirstpoison",
            &[502],
        ),
        rp(s6, "Content-Length +5", GET_A, "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nfirst", &[502]),
        rp(s6, "Content-Length -1", GET_A, "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nfirst", &[502]),
        rp(s6, "Content-Length list", GET_A, "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nfirst", &[502]),
        // Read until the upstream closes (RFC 9112 §6.3 rule 4): it does, after "first".
        closing(rp(
            s6,
            "chunked not last",
            GET_A,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\nfirst",
            &[200, 502],
        )),
        rp(
            s6,
            "bad chunk size",
            GET_A,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nfirst\r\n0\r\n\r\n",
            &[200, 502, 0],
        ),
        closing(rp(s6, "body cut short", GET_A, "HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nfirst", &[200, 502, 0])),
        rp(
            s6,
            "101 to a plain request",
            GET_A,
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\npoison",
            &[502],
        ),
        rp(
            s6,
            "1xx before the answer",
            GET_A,
            "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst",
            &[200],
        ),
        rp(s4, "status 99", GET_A, "HTTP/1.1 99 Odd\r\ncontent-length: 5\r\n\r\nfirst", &[502]),
        rp(s4, "status 1000", GET_A, "HTTP/1.1 1000 Odd\r\ncontent-length: 5\r\n\r\nfirst", &[502]),
        rp(s4, "status not digits", GET_A, "HTTP/1.1 2x0 Odd\r\ncontent-length: 5\r\n\r\nfirst", &[502]),
        rp(s4, "not HTTP at all", GET_A, "SSH-2.0-OpenSSH_9.2\r\n\r\n", &[502]),
        rp(s5, "NUL in a field", GET_A, "HTTP/1.1 200 OK\r\nx-a: a\0b\r\ncontent-length: 5\r\n\r\nfirst", &[502]),
        rp(s5, "space before colon", GET_A, "HTTP/1.1 200 OK\r\ncontent-length : 5\r\n\r\nfirst", &[502, 200]),
        rp(s5, "obs-fold", GET_A, "HTTP/1.1 200 OK\r\nx-a: a\r\n b\r\ncontent-length: 5\r\n\r\nfirst", &[200, 502]),
        closing(rp(r, "POST on a stale connection", POST_A, "", &[502, 0])),
        {
            let mut p = closing(rp(r, "GET on a stale connection", GET_A, "", &[200, 502]));
            p.max_sent = 2;
            p
        },
    ]
}

/// ferry's routes.yaml for the probes: `admin.test` and `/private` deny everyone.
fn ferry_yaml(up: SocketAddr) -> String {
    format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ match: {{ host: admin.test }}, access: [ {{ deny: all }} ], backend: b }}
      - {{ match: {{ path_prefix: /private }}, access: [ {{ deny: all }} ], backend: b }}
      - {{ backend: b }}
backends:
  b: {{ addresses: [{up}], retries: 0, preserve_host: true }}
"
    )
}

/// nginx's config for the same routes (the first server is the default, as ferry's last route).
fn nginx_conf(port: u16, up: SocketAddr) -> String {
    format!(
        "events {{ worker_connections 256; }}
http {{
  access_log off;
  upstream up {{ server {up}; keepalive 8; }}
  server {{
    listen 127.0.0.1:{port} default_server;
    server_name h1.test;
    # The probes half-close their side once sent; nginx must still answer (as ferry does).
    proxy_ignore_client_abort on;
    # An upstream that never finishes its answer (the framing probes) holds nginx this long.
    proxy_read_timeout 2s;
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header Host $host; }}
    location /private {{ deny all; }}
  }}
  server {{
    listen 127.0.0.1:{port};
    server_name admin.test;
    location / {{ deny all; }}
  }}
}}
"
    )
}

/// Real nginx on a fresh port in front of `up` (new ports if one was taken meanwhile).
async fn nginx(dir: &Path, up: SocketAddr) -> (tokio::process::Child, SocketAddr) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(port, up)).unwrap();
        match support::nginx::start(dir, &conf).await {
            Ok(child) => return (child, SocketAddr::from(([127, 0, 0, 1], port))),
            Err(e) if support::nginx::port_taken(&e) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no free port for nginx");
}

fn show(a: &Answers, seen: &[Seen]) -> String {
    let statuses = if a.statuses.is_empty() {
        "closed".to_string()
    } else {
        a.statuses.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
    };
    if seen.is_empty() {
        statuses
    } else {
        format!("{statuses} →{}", seen.len())
    }
}

/// Runs one probe against a proxy and its recorder.
async fn run_request(to: SocketAddr, log: &Mutex<Log>, bytes: &[u8]) -> (Answers, Vec<Seen>) {
    let mark = log.lock().unwrap().events.len();
    let a = exchange(to, bytes, false).await;
    // The upstream's reader records before it answers; a moment for a connection that was
    // refused mid-way to settle.
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    (a, seen_since(log, mark))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_probes_are_refused_or_forwarded_safely_beside_nginx() {
    let (f_up, f_log) = recorder().await;
    let (n_up, n_log) = recorder().await;
    let f = support::ferry(&ferry_yaml(f_up)).await;
    let web = f.addr("web").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, nweb) = nginx(dir.path(), n_up).await;

    let probes = request_probes();
    println!("{:<28} {:<38} {:>10} {:>10}  verdict", "section", "probe", "ferry", "nginx");
    let (mut failures, mut same) = (Vec::new(), 0);
    for p in &probes {
        let (fa, fs) = run_request(web, &f_log, &p.bytes).await;
        let (na, ns) = run_request(nweb, &n_log, &p.bytes).await;
        let smuggled = fs.iter().any(|s| s.target.contains("smuggled") || s.host() == "admin.test");
        let verdict = match (p.expect)(&fa, &fs) {
            Ok(()) if fa.hung => Err("ferry neither answered nor closed in time".to_string()),
            Ok(()) if smuggled => Err("a smuggled or denied request reached the upstream".to_string()),
            r => r,
        };
        let (fshow, nshow) = (show(&fa, &fs), show(&na, &ns));
        if fa.statuses.first() == na.statuses.first() && fs.len() == ns.len() {
            same += 1;
        }
        println!(
            "{:<28} {:<38} {:>10} {:>10}  {}",
            p.section,
            p.name,
            fshow,
            nshow,
            match &verdict {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("FAIL: {e}"),
            }
        );
        if let Err(e) = verdict {
            failures.push(format!("{}: {}: {e}", p.section, p.name));
        }
    }
    println!(
        "request probes: {} · ferry held: {} · same first answer and forwarded count as nginx: {}",
        probes.len(),
        probes.len() - failures.len(),
        same
    );
    assert!(probes.len() >= 150, "only {} request probes", probes.len());
    assert!(failures.is_empty(), "ferry failed {} probe(s):\n{}", failures.len(), failures.join("\n"));
    f.shutdown(std::time::Duration::ZERO, PATIENCE).await;
}

/// One response probe: warm the proxy's pool, send the request the script answers, then an
/// unrelated client's request, which must get its own answer.
async fn run_response(to: SocketAddr, up: &Scripted, p: &ResponseProbe) -> (Answers, Answers, usize) {
    let warm = exchange(to, GET_A.as_bytes(), false).await;
    assert_eq!(warm.statuses, [200], "warm-up request");
    let before = up.seen().len();
    up.arm(p.script.clone());
    let first = exchange(to, p.request.as_bytes(), p.request.starts_with("HEAD")).await;
    if p.script.later.is_some() {
        tokio::time::timeout(PATIENCE, up.stray_sent.notified()).await.expect("the stray bytes were sent");
    }
    let second = exchange(to, b"GET /b HTTP/1.1\r\nHost: h1.test\r\nConnection: close\r\n\r\n", false).await;
    let method = p.request.split(' ').next().unwrap_or_default();
    let sent = up.seen()[before..].iter().filter(|(m, t)| m == method && t == "/a").count();
    (first, second, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_upstream_never_answers_another_client_beside_nginx() {
    let f_up = Scripted::start().await;
    let n_up = Scripted::start().await;
    let f = support::ferry(&ferry_yaml(f_up.addr)).await;
    let web = f.addr("web").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, nweb) = nginx(dir.path(), n_up.addr).await;

    let probes = response_probes();
    let fmt = |first: &Answers, second: &Answers, sent: usize| {
        let one = match first.statuses.first() {
            Some(s) => s.to_string(),
            None if first.hung => "hung".to_string(),
            None => "closed".to_string(),
        };
        let two = match (second.statuses.first(), second.bodies.first()) {
            (Some(s), Some(b)) => format!("{s} {}", String::from_utf8_lossy(b)),
            _ => "closed".to_string(),
        };
        format!("{one} / {two} ×{sent}")
    };
    println!("{:<28} {:<38} {:>22} {:>22}  verdict", "section", "upstream does", "ferry", "nginx");
    let mut failures = Vec::new();
    let only = std::env::var("FERRY_PROBE").ok();
    for p in probes.iter().filter(|p| only.as_ref().is_none_or(|o| p.name.contains(o.as_str()))) {
        let (f1, f2, fsent) = run_response(web, &f_up, p).await;
        let (n1, n2, nsent) = run_response(nweb, &n_up, p).await;
        let first = f1.statuses.first().copied().unwrap_or(0);
        let mut problems = Vec::new();
        if f1.hung || f2.hung {
            problems.push("ferry neither answered nor closed in time".to_string());
        }
        if !p.first.contains(&first) {
            problems.push(format!("first answer {first}, expected one of {:?}", p.first));
        }
        if f2.statuses != [200] || f2.bodies.first().map(Vec::as_slice) != Some(b"second".as_slice()) {
            problems.push(format!("the next client got {:?} {:?}", f2.statuses, f2.bodies));
        }
        if fsent > p.max_sent {
            problems.push(format!("the request reached the upstream {fsent} times"));
        }
        if f1.bodies.iter().chain(&f2.bodies).any(|b| b.windows(6).any(|w| w == b"poison")) || f1.junk || f2.junk {
            problems.push("a client received the stray bytes".into());
        }
        println!(
            "{:<28} {:<38} {:>22} {:>22}  {}",
            p.section,
            p.name,
            fmt(&f1, &f2, fsent),
            fmt(&n1, &n2, nsent),
            if problems.is_empty() { "ok".to_string() } else { format!("FAIL: {}", problems.join("; ")) }
        );
        if !problems.is_empty() {
            failures.push(format!("{}: {}: {}", p.section, p.name, problems.join("; ")));
        }
    }
    println!("response probes: {} · ferry held: {}", probes.len(), probes.len() - failures.len());
    assert!(failures.is_empty(), "ferry failed {} probe(s):\n{}", failures.len(), failures.join("\n"));
    f.shutdown(std::time::Duration::ZERO, PATIENCE).await;
}
