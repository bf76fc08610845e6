//! Whole documents through `Config::parse`: positions, cross-checks and normalisation.

use super::*;

const GOOD: &str = "\
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - match: { host: WWW.Example.com }
        backend: a
      - match: { path_prefix: /eureka/, headers: { x-user: alice } }
        strip_prefix: true
        backend: a
      - backend: a
backends:
  a:
    addresses: [127.0.0.1:1, '[::1]:2']
    balance: client_ip
    request_timeout: 0
";

#[test]
fn positions_name_places_that_exist_in_the_file() {
    let at = |text: &str| {
        let e = &Config::parse("t.yaml", text).unwrap_err().0[0];
        (e.line, e.column, e.message.clone())
    };
    // A NUL would end the parser's view of the text; it is reported where it is.
    let (line, column, message) = at("listeners: []\nbackends: {a: \0}\n");
    assert_eq!((line, column), (2, 15), "{message}");
    assert!(message.contains("U+0000"), "{message}");
    // A syntax error at the end of a text without a final line break is on its last line.
    let (line, column, message) = at("listeners:\n  - name: web\n  y#");
    assert_eq!((line, column), (3, 5), "{message}");
    // CR LF, CR and LF each end a line, as the parser counts them.
    let (line, _, message) = at("backends: {}\r\nlisteners: []\r\r\x07");
    assert_eq!(line, 4, "{message}");
}

#[test]
fn http_limits_on_a_tcp_listener_are_refused() {
    let text = "\
listeners:
  - { name: db, bind: 127.0.0.1:0, protocol: tcp, backend: a, max_connections: 10, idle_timeout: 1m }
  - name: db2
    bind: 127.0.0.1:0
    protocol: tcp
    backend: a
    header_read_timeout: 5s
    min_body_rate: 100
    trusted_proxies: [10.0.0.0/8]
backends:
  a: { addresses: [10.0.0.1:3306] }
";
    let errs = Config::parse("t.yaml", text).unwrap_err().0;
    let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("t.yaml:7:") && lines[0].contains("`header_read_timeout` applies to http"),
        "{lines:#?}"
    );
    assert!(lines[1].starts_with("t.yaml:8:") && lines[1].contains("`min_body_rate`"), "{lines:#?}");
    assert!(lines[2].starts_with("t.yaml:9:") && lines[2].contains("`trusted_proxies`"), "{lines:#?}");
}

#[test]
fn a_backend_pointing_at_ferry_itself_is_refused() {
    let text = "\
admin: 127.0.0.1:9901
listeners:
  - { name: web, bind: 0.0.0.0:8080, routes: [ { backend: self } ] }
  - { name: db, bind: 127.0.0.1:3306, protocol: tcp, backend: admin }
backends:
  self: { addresses: [10.0.0.1:8080, 127.0.0.1:8080] }
  admin: { addresses: ['127.0.0.1:9901'] }
";
    let errs = Config::parse("t.yaml", text).unwrap_err().0;
    let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 2, "{lines:#?}");
    assert!(lines[0].starts_with("t.yaml:6:") && lines[0].contains("127.0.0.1:8080 is listener `web`"), "{lines:#?}");
    assert!(lines[1].starts_with("t.yaml:7:") && lines[1].contains("the admin listener"), "{lines:#?}");
    // Another host on the same port is fine.
    assert!(Config::parse(
        "t.yaml",
        &text.replace(", 127.0.0.1:8080", "").replace("127.0.0.1:9901']", "10.0.0.2:9901']")
    )
    .is_ok());
}

#[test]
fn parses_and_normalises() {
    let c = Config::parse("t.yaml", GOOD).unwrap();
    assert_eq!(c.admin, "127.0.0.1:9901".parse().unwrap());
    let r = &c.listeners[0].routes;
    assert_eq!(r[0].host, Some(HostMatch::Exact("www.example.com".into())));
    assert_eq!(r[1].path_prefix.as_deref(), Some("/eureka"));
    assert_eq!(r[1].headers[0].0.as_str(), "x-user");
    assert_eq!(r[2].name, "web.2");
    let b = &c.backends[0];
    assert_eq!(b.balance, Balance::ClientIp);
    assert_eq!(b.request_timeout, None);
    assert_eq!(b.connect_timeout, defaults::CONNECT_TIMEOUT);
    assert_eq!(b.addresses.len(), 2);
}

#[test]
fn reports_every_error_with_position() {
    let text = "\
listeners:
  - name: web
    bind: nowhere
    routes:
      - match: { path_prefix: eureka }
        backend: missing
      - match: { host: 'a b' }
        backend: a
        colour: blue
backends:
  a:
    addresses: [127.0.0.1:1]
    balance: random
    connect_timeout: soon
";
    let errs = Config::parse("r.yaml", text).unwrap_err().0;
    let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str, line: usize| {
        errs.iter().any(|e| e.line == line && e.message.contains(needle) && e.file == "r.yaml")
    };
    assert!(has("balance `random`", 13), "{lines:#?}");
    assert!(has("not a duration", 14), "{lines:#?}");
    assert!(has("not an IP:port", 3), "{lines:#?}");
    assert!(has("must start with `/`", 5), "{lines:#?}");
    assert!(has("backend `missing`", 6), "{lines:#?}");
    assert!(has("colour", 7) || has("colour", 9), "{lines:#?}");
    assert!(lines.iter().all(|l| l.starts_with("r.yaml:")), "{lines:#?}");
}

#[test]
fn tls_proxy_protocol_and_sni_settings_go_where_they_make_sense() {
    let text = "\
listeners:
  - name: web
    bind: 127.0.0.1:8443
    proxy_protocol: yes
    sni: [ { server_names: [a.example.com], backend: plain } ]
    tls: { certificates: [ { cert: certs/tls.crt, key: /abs/tls.key } ] }
    routes: [ { backend: pp } ]
  - name: db
    bind: 127.0.0.1:3306
    protocol: tcp
    tls: { certificates: [] }
    sni: [ { server_names: ['*.db.example.com'], backend: secure } ]
backends:
  plain: { addresses: [10.0.0.1:80] }
  pp: { addresses: [10.0.0.2:80], send_proxy_protocol: v3 }
  secure: { addresses: [10.0.0.3:443], tls: { ca: ca.pem, server_name: 'not a name' } }
";
    let errs = Config::parse("/etc/ferry/routes.yaml", text).unwrap_err().0;
    let at = |line: usize, needle: &str| {
        assert!(errs.iter().any(|e| e.line == line && e.message.contains(needle)), "line {line} `{needle}`: {errs:#?}")
    };
    at(4, "proxy_protocol: `yes` is not true or false");
    at(5, "`sni` (TLS passthrough) goes with `protocol: tcp`");
    at(11, "TLS is terminated on http listeners");
    at(15, "send_proxy_protocol `v3` is not v1 or v2");
    at(16, "tls.server_name `not a name` is not a DNS name");

    let ok = text
        .replace("proxy_protocol: yes", "proxy_protocol: true")
        .replace("    sni: [ { server_names: [a.example.com], backend: plain } ]\n", "")
        .replace("    tls: { certificates: [] }\n", "")
        .replace(", send_proxy_protocol: v3", "")
        .replace(", server_name: 'not a name'", "");
    // A backend with upstream TLS cannot serve a tcp listener (passthrough keeps the client's TLS).
    let errs = Config::parse("r.yaml", &ok).unwrap_err().0;
    assert!(errs.iter().any(|e| e.line == 14 && e.message.contains("backend `secure` sets `tls`")), "{errs:#?}");
    let ok = ok.replace(", tls: { ca: ca.pem }", "");
    let c = Config::parse("/etc/ferry/routes.yaml", &ok).unwrap_or_else(|e| panic!("{e}"));
    let certs = &c.listeners[0].tls.as_ref().unwrap().certificates[0];
    assert_eq!(certs.cert, Path::new("/etc/ferry/certs/tls.crt"));
    assert_eq!(certs.key, Path::new("/abs/tls.key"));
    assert!(c.listeners[0].proxy_protocol);
    assert_eq!(c.listeners[1].sni[0].server_names, [HostMatch::Suffix(".db.example.com".into())]);
}

#[test]
fn syntax_error_has_position() {
    let errs = Config::parse("s.yaml", "listeners:\n  - name: [web\n").unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("syntax"), "{:?}", errs[0]);
    assert!(errs[0].line >= 2, "{:?}", errs[0]);
}

#[test]
fn unknown_top_key_and_duplicate_key() {
    let errs = Config::parse("u.yaml", "listners: []\n").unwrap_err().0;
    assert!(errs.iter().any(|e| e.line == 1 && e.message.contains("unknown key `listners`")), "{errs:?}");
    let dup = "backends:\n  a: { addresses: [127.0.0.1:1] }\n  a: { addresses: [127.0.0.1:2] }\nlisteners: []\n";
    let errs = Config::parse("d.yaml", dup).unwrap_err().0;
    assert!(errs[0].message.contains("duplicate key `a`"), "{errs:?}");
    assert_eq!(errs[0].line, 3);
}

#[test]
fn wildcard_host_and_root_prefix() {
    let text = GOOD.replace("WWW.Example.com", "'*.Example.com'").replace("/eureka/", "/");
    let c = Config::parse("w.yaml", &text).unwrap();
    assert_eq!(c.listeners[0].routes[0].host, Some(HostMatch::Suffix(".example.com".into())));
    assert_eq!(c.listeners[0].routes[1].path_prefix.as_deref(), Some("/"));
}

#[test]
fn trailing_wildcard_and_regex_hosts() {
    let text = GOOD.replace("WWW.Example.com", "'www.Example.*'");
    let c = Config::parse("w.yaml", &text).unwrap();
    let h = c.listeners[0].routes[0].host.clone().unwrap();
    assert_eq!(h, HostMatch::Prefix("www.example.".into()));
    assert!(h.matches("www.example.org") && h.matches("www.example.co.uk"));
    assert!(!h.matches("www.example.") && !h.matches("api.example.org"));
    let text = GOOD.replace("WWW.Example.com", r"'~^(?<t>[a-z]+)\.saas\.example\.net$'");
    let c = Config::parse("r.yaml", &text).unwrap();
    let h = c.listeners[0].routes[0].host.clone().unwrap();
    assert!(matches!(h, HostMatch::Regex(_)), "{h:?}");
    assert!(h.matches("acme.saas.example.net") && !h.matches("acme.saas.example.com"));
    assert_eq!(h.to_string(), r"~^(?<t>[a-z]+)\.saas\.example\.net$");
    let errs = Config::parse("b.yaml", &GOOD.replace("WWW.Example.com", "'~^(unclosed'")).unwrap_err().0;
    assert!(errs[0].message.contains("not a valid regex"), "{errs:?}");
}

#[test]
fn service_backends() {
    let text = "\
listeners: [ { name: web, bind: 127.0.0.1:0, routes: [ { backend: eureka } ] } ]
backends:
  config: { service: jycloud-config.default, port: 8088 }
  eureka: { service: eureka.test-basic-eureka, port: eureka, balance: client_ip, pod: eureka-0 }
  nacos: { service: nacos-headless, port: 8848, include_not_ready: true, hold_for_endpoints: 30s }
";
    let c = Config::parse("k.yaml", text).unwrap();
    let svc = |i: usize| c.backends[i].service.clone().unwrap();
    assert_eq!(svc(0).namespace.as_deref(), Some("default"));
    assert_eq!(svc(0).port, PortRef::Number(8088));
    assert_eq!(svc(1).port, PortRef::Name("eureka".into()));
    assert_eq!(svc(1).pod.as_deref(), Some("eureka-0"));
    assert_eq!(svc(2).namespace, None);
    assert!(svc(2).include_not_ready);
    assert_eq!(c.backends[2].hold_for_endpoints, Duration::from_secs(30));
    assert!(c.uses_kubernetes());
    let bad = "\
listeners: [ { name: web, bind: 127.0.0.1:0, routes: [ { backend: a } ] } ]
backends:
  a: { service: Eureka_Svc, port: 80 }
  b: { service: x, addresses: [127.0.0.1:1], port: 1 }
  c: { service: y }
  d: { addresses: [127.0.0.1:1], pod: eureka-0 }
";
    let errs = Config::parse("b.yaml", bad).unwrap_err().0;
    let has = |line: usize, w: &str| errs.iter().any(|e| e.line == line && e.message.contains(w));
    assert!(has(3, "not `name` or `name.namespace`"), "{errs:?}");
    assert!(has(4, "both `addresses` and `service`"), "{errs:?}");
    assert!(has(5, "no `port`"), "{errs:?}");
    assert!(has(6, "`pod` goes with `service`"), "{errs:?}");
}

#[test]
fn tcp_listeners() {
    let text = "\
listeners:
  - { name: mysql, bind: 127.0.0.1:0, protocol: tcp, backend: db, idle_timeout: 30s }
  - { name: bad, bind: 127.0.0.1:0, protocol: tcp, routes: [ { backend: db } ] }
  - { name: web, bind: 127.0.0.1:0, backend: db, routes: [ { backend: db } ] }
backends:
  db: { addresses: [127.0.0.1:3306], balance: least_connections }
";
    let errs = Config::parse("t.yaml", text).unwrap_err().0;
    let has = |line: usize, w: &str| errs.iter().any(|e| e.line == line && e.message.contains(w));
    assert!(has(3, "takes one `backend`, not `routes`"), "{errs:?}");
    assert!(has(3, "needs a `backend`"), "{errs:?}");
    assert!(has(4, "goes with `protocol: tcp`"), "{errs:?}");
    let good =
        text.lines().filter(|l| !l.contains("name: bad") && !l.contains("name: web")).collect::<Vec<_>>().join("\n");
    let c = Config::parse("t.yaml", &good).unwrap();
    assert_eq!(c.listeners[0].protocol, Protocol::Tcp);
    assert_eq!(c.listeners[0].backend.as_deref(), Some("db"));
    assert_eq!(c.listeners[0].idle_timeout, Duration::from_secs(30));
    assert_eq!(c.backends[0].balance, Balance::LeastRequest);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("fast").is_err());
}

#[test]
fn an_unknown_key_is_reported_at_the_key_with_the_valid_ones() {
    let text = "\
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - backend: a
    colour: blue
backends:
  a: { addresses: [127.0.0.1:1] }
";
    let errs = Config::parse("k.yaml", text).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!((errs[0].line, errs[0].column), (6, 5), "{errs:#?}");
    let m = &errs[0].message;
    assert!(m.contains("unknown key `colour`"), "{m}");
    for key in ["name", "bind", "routes", "protocol", "tls"] {
        assert!(m.contains(&format!(" {key},")) || m.contains(&format!(" {key})")), "`{key}` not listed: {m}");
    }
    assert!(!m.contains("did you mean"), "no near miss for `colour`: {m}");
}

#[test]
fn near_misses_suggest_the_key_meant() {
    let text = "\
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - backend: a
        match: { host: a.example, paht_prefix: /x }
      - backend: a
        strip-prefix: true
  - { name: two, bnd: 127.0.0.1:0, routes: [ { backend: a } ] }
backends:
  a: { adresses: [127.0.0.1:1] }
listners: []
";
    let errs = Config::parse("k.yaml", text).unwrap_err().0;
    let at = |line: usize, column: usize, want: &str| {
        assert!(
            errs.iter().any(|e| (e.line, e.column) == (line, column) && e.message.contains(want)),
            "{line}:{column} `{want}`: {errs:#?}"
        )
    };
    at(6, 35, "did you mean `path_prefix`?");
    at(8, 9, "did you mean `strip_prefix`?");
    at(9, 18, "did you mean `bind`?");
    at(11, 8, "did you mean `addresses`?");
    at(12, 1, "did you mean `listeners`?");
}

#[test]
fn a_valid_key_of_the_same_name_elsewhere_is_not_blamed() {
    // `backend` is valid on the route, unknown inside `match`: the one in `match` is reported.
    let text = "listeners: [ { name: web, bind: 127.0.0.1:0, routes: [ { backend: a, match: { backend: a } } ] } ]\nbackends: { a: { addresses: [127.0.0.1:1] } }\n";
    let errs = Config::parse("k.yaml", text).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!((errs[0].line, errs[0].column), (1, 79), "{errs:#?}");
}

#[test]
fn indentation_errors_say_so() {
    let text = "listeners:\n  - name: web\n    bind: 127.0.0.1:0\n     routes: []\nbackends: {}\n";
    let errs = Config::parse("i.yaml", text).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].message.contains("check the indentation of line 4"), "{errs:#?}");
}

#[test]
fn access_log_settings_are_checked_where_they_are_written() {
    let errs = |text: &str| -> Vec<(usize, usize, String)> {
        Config::parse("t.yaml", text).unwrap_err().0.iter().map(|e| (e.line, e.column, e.message.clone())).collect()
    };
    let e = errs(
        "listeners:
  - name: web
    bind: 127.0.0.1:0
    access_log: { format: '$remote_addr $reqest_time', escape: loud }
    trace_context: { sample: 2 }
    routes: [ { backend: a } ]
  - name: db
    bind: 127.0.0.1:0
    protocol: tcp
    backend: a
    request_id: true
    access_log: { format: '$request_time' }
backends: { a: { addresses: [127.0.0.1:1] } }
",
    );
    let has = |line: usize, text: &str| e.iter().any(|(l, _, m)| *l == line && m.contains(text));
    assert!(has(4, "unknown variable `$reqest_time` for an http listener"), "{e:?}");
    assert!(has(4, "(at character 14)"), "{e:?}");
    assert!(has(4, "access_log.escape `loud`"), "{e:?}");
    assert!(has(5, "trace_context.sample `2`"), "{e:?}");
    assert!(has(11, "`request_id` applies to http listeners only"), "{e:?}");
    assert!(has(12, "unknown variable `$request_time` for a tcp listener"), "{e:?}");
    // Defaults: combined to stdout, ids on, traces started at 10 %.
    let c = Config::parse("t.yaml", GOOD).unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.access_log, Some(log::AccessLog::default_for(Protocol::Http)));
    assert!(l.request_id);
    assert_eq!(l.trace_context, log::TraceContext { start: true, sample: 0.1 });
    let off = GOOD.replace("bind: 127.0.0.1:0", "bind: 127.0.0.1:0\n    access_log: { to: off }");
    assert_eq!(Config::parse("t.yaml", &off).unwrap().listeners[0].access_log, None);
    let file = GOOD.replace("bind: 127.0.0.1:0", "bind: 127.0.0.1:0\n    access_log: { to: logs/a.log, format: json }");
    let a = Config::parse("/etc/ferry/routes.yaml", &file).unwrap().listeners[0].access_log.clone().unwrap();
    assert_eq!(a.to, log::LogTarget::File("/etc/ferry/logs/a.log".into()));
    assert_eq!(a.format, log::LogFormat::Json);
}

#[test]
fn anchors_aliases_and_merge_keys_spare_repeating_a_list() {
    // An anchor is defined where it is first used (ferry refuses top-level keys it does not know).
    let text = "\
listeners:
  - name: a
    bind: 127.0.0.1:0
    routes:
      - match: { path_prefix: /eureka-ui }
        strip_prefix: true
        body_replace: &ui [{ from: 'href=\"/', to: 'href=\"/eureka-ui/' }, { from: 'src=\"/', to: 'src=\"/eureka-ui/' }]
        backend: eureka
  - name: b
    bind: 127.0.0.1:0
    routes: [{ match: { path_prefix: /eureka-ui }, strip_prefix: true, body_replace: *ui, backend: eureka }]
backends:
  base: &timeouts { addresses: [127.0.0.1:9], read_timeout: 30s, connect_timeout: 2s }
  eureka: { <<: *timeouts, addresses: [127.0.0.1:8761], read_timeout: 60s }
";
    let c = Config::parse("t.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    for l in &c.listeners {
        assert_eq!(l.routes[0].body_replace.len(), 2, "{}", l.name);
    }
    let b = c.backend("eureka").unwrap();
    assert_eq!(b.read_timeout, Some(std::time::Duration::from_secs(60)), "its own key wins over the merged one");
    assert_eq!(b.connect_timeout, std::time::Duration::from_secs(2), "merged");
    // An error in an aliased value points at what was written.
    let bad = text.replace("from: 'src=\"/'", "from: ''");
    let e = Config::parse("t.yaml", &bad).unwrap_err();
    assert!(e.0.iter().all(|e| e.line == 7), "{e}");
}
