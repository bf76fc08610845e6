//! Route matches and actions as nginx users write them, through real sockets: exact paths, regex
//! paths with captures, methods; prefix and regex rewrites (with X-Forwarded-Prefix); allow/deny;
//! redirects and fixed answers with variables; request and response header actions.

mod support;

use std::net::SocketAddr;

use support::*;

/// Sends a raw HTTP/1.1 request (with `Connection: close`) and returns the whole answer.
async fn exchange(to: SocketAddr, method: &str, target: &str, extra: &str) -> (u16, String, String) {
    let out = raw(
        to,
        format!("{method} {target} HTTP/1.1\r\nHost: shop.example:8080\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    )
    .await;
    let status = out.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn echo(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not the echo upstream's JSON ({e}): {body}"))
}

#[tokio::test]
async fn rewrites_replace_the_prefix_or_follow_a_regex_and_captures_reach_headers() {
    let up = upstream("gw").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ name: prod-api, match: {{ path_prefix: /prod-api/ }}, rewrite: {{ prefix: / }}, backend: gw }}
      - {{ name: v1, match: {{ path_prefix: /old }}, rewrite: {{ prefix: /v1/ }}, backend: gw }}
      - name: versioned
        match: {{ path_regex: '^/api/v(\\d+)/' }}
        request_headers: {{ set: {{ X-Api-Version: 'v$1' }} }}
        backend: gw
      - name: internal
        match: {{ path_regex: '^/in/(\\w+)/' }}
        rewrite: {{ regex: '^/in/\\w+/(.*)$', to: '/internal/$1' }}
        request_headers: {{ set: {{ X-Rest: '$1' }} }}
        backend: gw
      - name: query
        match: {{ path_prefix: /search }}
        rewrite: {{ regex: '^/search/(\\w+)$', to: '/find?q=$1&page=$arg_page' }}
        backend: gw
      - {{ name: rest, backend: gw }}
backends:
  gw: {{ addresses: [{}] }}
",
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let (status, _, body) = exchange(web, "GET", "/prod-api/x?y=1", "").await;
    assert_eq!(status, 200);
    let j = echo(&body);
    assert_eq!(j["uri"], "/x?y=1");
    assert_eq!(j["headers"]["x-forwarded-prefix"], "/prod-api");
    let j = echo(&exchange(web, "GET", "/prod-api", "").await.2);
    assert_eq!(j["uri"], "/");
    let j = echo(&exchange(web, "GET", "/old/a/b", "").await.2);
    assert_eq!(j["uri"], "/v1/a/b");
    assert_eq!(j["headers"]["x-forwarded-prefix"], "/old");

    // The route's regex captures `$1` for a header.
    let j = echo(&exchange(web, "GET", "/api/v2/orders/7?all=1", "").await.2);
    assert_eq!(j["uri"], "/api/v2/orders/7?all=1");
    assert_eq!(j["headers"]["x-api-version"], "v2");
    // With a rewrite regex as well, `$1` is the rewrite's (nginx: the most recent regex match).
    let j = echo(&exchange(web, "GET", "/in/eu/orders/7?all=1", "").await.2);
    assert_eq!(j["uri"], "/internal/orders/7?all=1", "query kept when `to` sets none");
    assert_eq!(j["headers"]["x-rest"], "orders/7");
    assert!(j["headers"].get("x-forwarded-prefix").is_none(), "a regex rewrite removes no prefix");

    // `to` with a query sets it; a path the rewrite regex does not match goes on unchanged.
    let j = echo(&exchange(web, "GET", "/search/shoes?page=3", "").await.2);
    assert_eq!(j["uri"], "/find?q=shoes&page=3");
    let j = echo(&exchange(web, "GET", "/search/a/b", "").await.2);
    assert_eq!(j["uri"], "/search/a/b");
    let j = echo(&exchange(web, "GET", "/elsewhere", "").await.2);
    assert_eq!(j["uri"], "/elsewhere");
}

#[tokio::test]
async fn exact_paths_regex_paths_and_methods_choose_routes() {
    let (a, b, c) = (upstream("exact").await, upstream("regex").await, upstream("rest").await);
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ match: {{ path_exact: /login }}, backend: a }}
      - {{ match: {{ path_regex: '(?i)\\.(png|css)$', methods: [GET, HEAD] }}, backend: b }}
      - {{ backend: c }}
backends:
  a: {{ addresses: [{}] }}
  b: {{ addresses: [{}] }}
  c: {{ addresses: [{}] }}
",
        a.addr, b.addr, c.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let who = |(_, head, _): (u16, String, String)| {
        head.lines().find_map(|l| l.strip_prefix("x-upstream: ").map(str::to_string)).unwrap_or_default()
    };
    assert_eq!(who(exchange(web, "GET", "/login", "").await), "exact");
    assert_eq!(who(exchange(web, "GET", "/login/x", "").await), "rest", "exact means exact");
    assert_eq!(who(exchange(web, "GET", "/img/Logo.PNG", "").await), "regex", "(?i) is nginx's ~*");
    assert_eq!(who(exchange(web, "POST", "/img/logo.png", "Content-Length: 0\r\n").await), "rest", "methods");
    assert_eq!(who(exchange(web, "GET", "/img/logo.pngx", "").await), "rest");
}

#[tokio::test]
async fn access_rules_redirects_fixed_answers_and_header_actions() {
    let up = upstream("app").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - name: deny-one
        match: {{ path_prefix: /admin }}
        access: [ {{ deny: 127.0.0.2 }}, {{ allow: 127.0.0.0/8 }}, {{ deny: all }} ]
        backend: app
      - name: nobody
        match: {{ path_prefix: /closed }}
        access: [ {{ deny: all }} ]
        backend: app
      - name: to-https
        match: {{ path_prefix: /pay }}
        redirect: {{ to: 'https://$host$request_uri', status: 301 }}
        response_headers: {{ set: {{ X-Why: moved }} }}
      - name: health
        match: {{ path_exact: /health }}
        respond: {{ status: 200, body: \"ok $request_method $uri$is_args$args on $hostname\\n\" }}
      - name: gone
        match: {{ path_prefix: /gone }}
        respond: {{ status: 410 }}
      - name: app
        request_headers:
          set: {{ X-Real-IP: $remote_addr, X-Host: $http_host, X-Empty: '', Host: backend.internal }}
          add: {{ X-Tag: 'cookie=$cookie_session' }}
          remove: [ X-Debug ]
        response_headers:
          set: {{ X-Frame-Options: DENY }}
          remove: [ X-Upstream ]
        backend: app
backends:
  app: {{ addresses: [{}], preserve_host: false }}
",
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();

    // allow/deny: first match decides.
    let from = |ip: [u8; 4], path: &'static str| async move {
        let r = send_from(
            ip.into(),
            web,
            req("GET", web, path).body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap(),
        )
        .await;
        (r.status.as_u16(), r.headers.get("x-ferry-error").map(|v| v.to_str().unwrap().to_string()))
    };
    assert_eq!(from([127, 0, 0, 1], "/admin").await, (200, None));
    assert_eq!(from([127, 0, 0, 2], "/admin").await, (403, Some("forbidden".into())));
    assert_eq!(from([127, 0, 0, 1], "/closed").await, (403, Some("forbidden".into())));
    let hits = up.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(hits, 1, "denied requests must not reach the upstream");

    // A redirect, built from variables, with the route's response headers.
    let (status, head, body) = exchange(web, "GET", "/pay/cart?id=7", "").await;
    assert_eq!(status, 301);
    assert!(head.contains("\r\nlocation: https://shop.example/pay/cart?id=7"), "{head}");
    assert!(head.contains("\r\nx-why: moved"), "{head}");
    assert!(body.is_empty(), "{body}");

    // Fixed answers.
    let (status, head, body) = exchange(web, "GET", "/health?probe=1", "").await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!((status, body), (200, format!("ok GET /health?probe=1 on {}\n", host.trim())));
    assert!(head.contains("content-type: text/plain"), "{head}");
    let (status, _, body) = exchange(web, "GET", "/gone/x", "").await;
    assert_eq!((status, body.as_str()), (410, ""));

    // Request headers rendered from the client's request; response headers set and removed.
    let (status, head, body) =
        exchange(web, "GET", "/x", "X-Debug: 1\r\nX-Empty: client\r\nCookie: a=1; session=abc\r\n").await;
    assert_eq!(status, 200);
    let h = &echo(&body)["headers"];
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{h}");
    assert_eq!(h["x-host"], "shop.example:8080", "{h}");
    assert_eq!(h["host"], "backend.internal", "a Host set by the route beats preserve_host: false");
    assert_eq!(h["x-tag"], "cookie=abc", "{h}");
    assert!(h.get("x-debug").is_none() && h.get("x-empty").is_none(), "removed, and emptied as nginx does: {h}");
    assert!(head.contains("\r\nx-frame-options: deny"), "{head}");
    assert!(!head.contains("x-upstream:"), "{head}");

    let m = get(f.admin, "/metrics").await.text();
    let count = |route: &str, backend: &str, class: &str| {
        metric(
            &m,
            "ferry_requests_total",
            &[("listener", "web"), ("route", route), ("backend", backend), ("class", class)],
        )
    };
    assert_eq!(count("to-https", "none", "3xx"), Some(1.0), "{m}");
    assert_eq!(count("health", "none", "2xx"), Some(1.0), "{m}");
    assert_eq!(count("deny-one", "app", "4xx"), Some(1.0), "{m}");
}

#[test]
fn misuses_are_reported_at_their_line() {
    let text = "\
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - { match: { path_regex: '^/(a' }, backend: b }
      - { match: { path_prefix: /x }, request_headers: { set: { X-A: $hots } }, backend: b }
      - { match: { path_prefix: /y }, redirect: { to: /z }, backend: b }
      - { match: { path_prefix: /w }, request_headers: { set: { X-A: $2 } }, backend: b }
      - { match: { path_prefix: /v }, redirect: { to: /z, status: 200 } }
      - { match: { path_prefix: /u, path_exact: /u }, backend: b }
      - { match: { methods: [get] }, backend: b }
      - { access: [ { allow: 10.0.0.0/33 } ], backend: b }
      - { match: { path_exact: /t }, rewrite: { prefix: / }, backend: b }
      - { match: { path_prefix: /s }, respond: { content_type: text/html } }
      - { backend: b, split: [ { backend: b, weight: 1 } ] }
      - { split: [ { backend: b, weight: 0 } ] }
      - { match: { when: [ { var: $http_x, equals: a, regex: b } ] }, backend: b }
      - { match: { when: [ { var: $nope, set: true } ] }, backend: b }
      - { match: { when: [ { var: $uri, regex: '(' } ] }, backend: b }
backends:
  b: { addresses: [127.0.0.1:9] }
";
    let errs = ferry::config::Config::parse("r.yaml", text).unwrap_err().0;
    let at = |line: usize, needle: &str| {
        assert!(errs.iter().any(|e| e.line == line && e.message.contains(needle)), "line {line} `{needle}`: {errs:#?}")
    };
    at(5, "not a valid regex");
    at(6, "unknown variable `$hots`");
    at(7, "more than one of `backend`, `split`, `static`, `redirect` and `respond`");
    at(8, "uses $2 but has no path_regex");
    at(9, "status `200` is not one of 301, 302, 303, 307, 308");
    at(10, "one of path_prefix, path_exact, path_starts_with and path_regex");
    at(11, "`get` is not an upper-case HTTP method");
    at(12, "`10.0.0.0/33` is not a CIDR");
    at(13, "rewrite.prefix replaces the route's match.path_prefix");
    at(14, "content_type without a body");
    at(15, "more than one of `backend`, `split`");
    at(16, "every split weight is 0");
    at(17, "one of equals, not_equals, regex, not_regex, set");
    at(18, "unknown variable `$nope`");
    at(19, "match.when.regex `(` is not a valid regex");
}

#[tokio::test]
async fn when_conditions_test_request_variables_as_nginx_if_does() {
    let up = upstream("app").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - name: maintenance
        match: {{ when: [ {{ var: $http_x_maintenance, regex: '(?i)^(on|yes)$' }} ] }}
        respond: {{ status: 503 }}
      - name: key
        match: {{ path_prefix: /api, when: [ {{ var: $http_x_api_key, not_equals: s3cret }} ] }}
        respond: {{ status: 401 }}
      - name: csv
        match: {{ when: [ {{ var: $arg_format, equals: csv }}, {{ var: $request_method, not_regex: '^POST$' }} ] }}
        respond: {{ status: 403, body: no csv }}
      - name: beta
        match: {{ when: [ {{ var: $cookie_beta, set: true }} ] }}
        redirect: {{ to: '/beta$request_uri', status: 302 }}
      - name: same-host
        match: {{ when: [ {{ var: '$http_x_origin', equals: 'http://$host' }} ] }}
        respond: {{ status: 204 }}
      - {{ name: rest, backend: app }}
backends:
  app: {{ addresses: [{}] }}
",
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let status = |r: (u16, String, String)| r.0;
    assert_eq!(status(exchange(web, "GET", "/", "X-Maintenance: YES\r\n").await), 503);
    assert_eq!(status(exchange(web, "GET", "/", "X-Maintenance: later\r\n").await), 200);
    assert_eq!(status(exchange(web, "GET", "/api/x", "").await), 401, "a missing header is empty, not s3cret");
    assert_eq!(status(exchange(web, "GET", "/api/x", "X-Api-Key: wrong\r\n").await), 401);
    assert_eq!(status(exchange(web, "GET", "/api/x", "X-Api-Key: s3cret\r\n").await), 200);
    // Every condition must hold.
    let (s, _, body) = exchange(web, "GET", "/r?format=csv", "").await;
    assert_eq!((s, body.as_str()), (403, "no csv"));
    assert_eq!(status(exchange(web, "POST", "/r?format=csv", "Content-Length: 0\r\n").await), 200);
    assert_eq!(status(exchange(web, "GET", "/r?format=json", "").await), 200);
    // `set`: present and not `0`, as nginx's `if ($var)`.
    let (s, head, _) = exchange(web, "GET", "/r?a=1", "Cookie: beta=1\r\n").await;
    assert_eq!(s, 302);
    assert!(head.contains("location: /beta/r?a=1"), "{head}");
    assert_eq!(status(exchange(web, "GET", "/r", "Cookie: beta=0\r\n").await), 200);
    // The value may hold variables.
    assert_eq!(status(exchange(web, "GET", "/", "X-Origin: http://shop.example\r\n").await), 204);
    assert_eq!(status(exchange(web, "GET", "/", "X-Origin: http://evil.example\r\n").await), 200);
}

#[tokio::test]
async fn weights_follow_nginx_smooth_round_robin_and_backups_wait_for_the_primaries() {
    let (a, b, c, spare, off) =
        (upstream("a").await, upstream("b").await, upstream("c").await, upstream("spare").await, upstream("off").await);
    let dead = dead_addr().await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ match: {{ path_prefix: /w }}, backend: weighted }}
      - {{ backend: guarded }}
backends:
  weighted:
    addresses: [ {{ address: {}, weight: 5 }}, {}, {{ address: {}, weight: 1 }}, {{ address: {}, down: true }} ]
  guarded:
    addresses: [ {}, {{ address: {}, backup: true }} ]
    retries: 1
",
        a.addr, b.addr, c.addr, off.addr, dead, spare.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let mut seq = String::new();
    for _ in 0..14 {
        seq.push_str(&get(web, "/w").await.upstream());
    }
    // nginx's order for 5/1/1 is a a b a c a a; ferry starts somewhere in the cycle.
    let cycle = "aabacaa";
    let twice = cycle.repeat(3);
    assert!((0..7).any(|k| seq == twice[k..k + 14]), "not nginx's smooth order: {seq}");
    assert_eq!(off.hits.load(std::sync::atomic::Ordering::SeqCst), 0, "a down address was used");

    // The primary is dead: every request ends at the backup, none fails.
    for _ in 0..4 {
        let r = get(web, "/").await;
        assert_eq!((r.status.as_u16(), r.upstream()), (200, "spare".to_string()));
    }
}

#[tokio::test]
async fn a_backup_is_not_used_while_a_primary_answers() {
    let (p, spare) = (upstream("primary").await, upstream("spare").await);
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners: [ {{ name: web, bind: 127.0.0.1:0, routes: [ {{ backend: b }} ] }} ]
backends:
  b: {{ addresses: [ {}, {{ address: {}, backup: true }} ] }}
",
        p.addr, spare.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    for _ in 0..10 {
        assert_eq!(get(web, "/").await.upstream(), "primary");
    }
    assert_eq!(spare.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn split_shifts_traffic_by_weight_per_request() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes: [ {{ name: canary, split: [ {{ backend: v1, weight: 90 }}, {{ backend: v2, weight: 30 }} ] }} ]
backends:
  v1: {{ addresses: [{}] }}
  v2: {{ addresses: [{}] }}
",
        v1.addr, v2.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let mut counts = std::collections::HashMap::new();
    for _ in 0..40 {
        *counts.entry(get(web, "/").await.upstream()).or_insert(0) += 1;
    }
    // 90:30 is 3:1, and the smooth cycle makes every 4 requests exactly 3 + 1.
    assert_eq!((counts["v1"], counts["v2"]), (30, 10), "{counts:?}");
    let m = get(f.admin, "/metrics").await.text();
    for (b, n) in [("v1", 30.0), ("v2", 10.0)] {
        let labels = [("listener", "web"), ("route", "canary"), ("backend", b), ("class", "2xx")];
        assert_eq!(metric(&m, "ferry_requests_total", &labels), Some(n), "{m}");
    }
}

/// `openssl passwd` output for `password` (the CLI the tests already need).
fn openssl_passwd(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl").arg("passwd").args(args).arg("password").output().unwrap();
    assert!(out.status.success(), "openssl passwd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn basic_auth_accepts_bcrypt_apr1_and_sha_and_follows_the_file() {
    use base64::Engine as _;
    let up = upstream("eureka").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let sha = {
        use sha1::Digest as _;
        base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b"password"))
    };
    let users = format!(
        "# ops\nbcrypt:{}\napr1:{}\nsha:{{SHA}}{sha}\n",
        bcrypt::hash("password", 4).unwrap(),
        openssl_passwd(&["-apr1"]),
    );
    std::fs::write(&file, users).unwrap();
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ basic_auth: {{ realm: Eureka, htpasswd: {} }}, backend: e }}
backends:
  e: {{ addresses: [{}] }}
",
        file.display(),
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let with = |user: &str, pass: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        async move {
            let r = req("GET", web, "/").header("authorization", format!("Basic {auth}"));
            send(web, r.body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap()).await
        }
    };
    for user in ["bcrypt", "apr1", "sha", "bcrypt"] {
        let r = with(user, "password").await;
        assert_eq!(r.status, 200, "{user}: {}", r.text());
    }
    for (user, pass) in [("bcrypt", "Password"), ("apr1", "passwor"), ("sha", ""), ("nobody", "password")] {
        let r = with(user, pass).await;
        assert_eq!(r.status, 401, "{user}/{pass}");
        assert_eq!(r.headers["www-authenticate"], "Basic realm=\"Eureka\"");
    }
    let r = get(web, "/").await;
    assert_eq!((r.status.as_u16(), r.headers["x-ferry-error"].to_str().unwrap()), (401, "unauthorized"));
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 4, "refused requests must not reach the upstream");

    // The file changes: a removed user is refused (even after having been verified before)...
    std::fs::write(&file, format!("sha:{{SHA}}{sha}\n")).unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while with("apr1", "password").await.status != 401 {
        assert!(tokio::time::Instant::now() < deadline, "the htpasswd change was not picked up");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // ...and a broken file keeps the last good users, with the error shown.
    std::fs::write(&file, "sha:plaintext\n").unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let routes = get(f.admin, "/routes").await.json();
        if routes["last_error"].as_str().is_some_and(|e| e.contains("line 1: plaintext")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the broken htpasswd file was not reported");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(with("sha", "password").await.status, 200);
}

#[tokio::test]
async fn rate_limits_refuse_past_the_burst_per_key() {
    let up = upstream("api").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ match: {{ path_prefix: /by-ip }}, rate_limit: {{ rate: 1/m, burst: 2 }}, backend: b }}
      - {{ match: {{ path_prefix: /by-user }}, rate_limit: {{ rate: 1/m, burst: 1, key: 'header:X-User', status: 503 }}, backend: b }}
      - {{ match: {{ path_prefix: /refill }}, rate_limit: {{ rate: 2/s }}, backend: b }}
backends:
  b: {{ addresses: [{}] }}
",
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let from = |ip: [u8; 4], path: &'static str, user: Option<&'static str>| async move {
        let mut r = req("GET", web, path);
        if let Some(u) = user {
            r = r.header("x-user", u);
        }
        send_from(ip.into(), web, r.body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap()).await.status.as_u16()
    };
    // One token a minute: burst 2 lets 3 through at once, then 429 — per client address.
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(from([127, 0, 0, 1], "/by-ip", None).await);
    }
    assert_eq!(got, [200, 200, 200, 429, 429]);
    assert_eq!(from([127, 0, 0, 3], "/by-ip", None).await, 200, "another client has its own bucket");
    // By header: per user, the configured status; without the header, not limited.
    let alice: Vec<u16> =
        futures_util::future::join_all((0..3).map(|_| from([127, 0, 0, 1], "/by-user", Some("alice")))).await;
    assert_eq!(alice.iter().filter(|s| **s == 200).count(), 2, "{alice:?}");
    assert_eq!(alice.iter().filter(|s| **s == 503).count(), 1, "{alice:?}");
    assert_eq!(from([127, 0, 0, 1], "/by-user", Some("bob")).await, 200);
    for _ in 0..4 {
        assert_eq!(from([127, 0, 0, 1], "/by-user", None).await, 200);
    }
    let m = get(f.admin, "/metrics").await.text();
    let refused = metric(&m, "ferry_proxy_errors_total", &[("kind", "rate_limited"), ("listener", "web")]);
    assert_eq!(refused, Some(3.0), "{m}");
    // A bucket refills: at 2/s with no burst, once refused, a request is admitted again later.
    let mut refused_once = false;
    for _ in 0..50 {
        if from([127, 0, 0, 9], "/refill", None).await == 429 {
            refused_once = true;
            break;
        }
    }
    assert!(refused_once, "50 back-to-back requests never exceeded 2/s");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while from([127, 0, 0, 9], "/refill", None).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the bucket never refilled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An upstream that answers every request with a chunked 200 whose body comes as `pieces` chunks,
/// one every `every`, then (with `stall`) stops sending without closing.
async fn trickling(pieces: usize, every: std::time::Duration, stall: bool) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    listen(move |mut s| async move {
        if !read_head(&mut s).await {
            return;
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
        for _ in 0..pieces {
            tokio::time::sleep(every).await;
            if s.write_all(b"1\r\nx\r\n").await.is_err() {
                return;
            }
        }
        if stall {
            std::future::pending::<()>().await;
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
    })
    .await
}

#[tokio::test]
async fn read_timeout_cuts_a_stalled_upstream_but_not_a_steady_stream() {
    let ms = std::time::Duration::from_millis;
    let (steady, stalls, hangs) =
        (trickling(8, ms(100), false).await, trickling(2, ms(10), true).await, scripted(b"", true).await);
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ match: {{ path_prefix: /steady }}, backend: steady }}
      - {{ match: {{ path_prefix: /stalls }}, backend: stalls }}
      - {{ match: {{ path_prefix: /hangs }}, backend: hangs }}
backends:
  steady: {{ addresses: [{steady}], read_timeout: 300ms }}
  stalls: {{ addresses: [{stalls}], read_timeout: 300ms }}
  hangs: {{ addresses: [{hangs}], read_timeout: 300ms }}
"
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    // 8 pieces, 100 ms apart: 800 ms in all, more than read_timeout, but never 300 ms silent.
    let (status, _, body) = exchange(web, "GET", "/steady", "").await;
    assert_eq!(status, 200);
    assert_eq!(body, "1\r\nx\r\n".repeat(8) + "0\r\n\r\n", "the steady stream was cut");
    // Two pieces, then silence: the head and the pieces arrive, then the response is cut (never a
    // clean end).
    let (status, _, body) = exchange(web, "GET", "/stalls", "").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("1\r\nx\r\n1\r\nx\r\n") && !body.ends_with("0\r\n\r\n"), "{body:?}");
    // No head at all: 504 after read_timeout.
    let (status, head, _) = exchange(web, "GET", "/hangs", "").await;
    assert_eq!(status, 504, "{head}");
    assert!(head.contains("x-ferry-error: timeout"), "{head}");
}

#[tokio::test]
async fn retry_on_statuses_and_timeouts_for_idempotent_requests() {
    let (good, busy, hangs) = (
        upstream("good").await,
        scripted(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nx-upstream: busy\r\n\r\nbusy", false).await,
        scripted(b"", true).await,
    );
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - {{ match: {{ path_prefix: /status }}, backend: status }}
      - {{ match: {{ path_prefix: /slow }}, backend: slow }}
      - {{ match: {{ path_prefix: /plain }}, backend: plain }}
backends:
  status: {{ addresses: [{busy}, {}], retry_on: [connect, reset, 503], eject_after: 1000 }}
  slow: {{ addresses: [{hangs}, {}], retry_on: [connect, timeout], read_timeout: 200ms, eject_after: 1000 }}
  plain: {{ addresses: [{busy}, {}], eject_after: 1000 }}
",
        good.addr, good.addr, good.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    for i in 0..6 {
        let r = get(web, "/status").await;
        assert_eq!((r.status.as_u16(), r.upstream()), (200, "good".into()), "GET {i} past the 503");
        let r = get(web, "/slow").await;
        assert_eq!((r.status.as_u16(), r.upstream()), (200, "good".into()), "GET {i} past the hang");
    }
    // Not for POST; and without retry_on the 503 reaches the client.
    let mut statuses = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let r =
            send(web, req("POST", web, "/status").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap()).await;
        statuses.insert(r.status.as_u16());
    }
    assert!(statuses.contains(&503), "a POST was retried on 503: {statuses:?}");
    let mut statuses = std::collections::BTreeSet::new();
    for _ in 0..6 {
        statuses.insert(get(web, "/plain").await.status.as_u16());
    }
    assert_eq!(statuses, [200, 503].into(), "default retry_on does not include statuses");
}

/// A resolver the test controls: host → addresses (`None`: the lookup fails).
#[derive(Clone, Default)]
struct Names(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Option<Vec<SocketAddr>>>>>);

impl ferry::server::dns::Resolve for Names {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ferry::server::dns::Lookup<'a> {
        let answer = self.0.lock().unwrap().get(host).cloned().flatten();
        Box::pin(async move {
            match answer {
                Some(addrs) => Ok(addrs.into_iter().map(|a| SocketAddr::new(a.ip(), port)).collect()),
                None => Err(std::io::Error::other(format!("{host}: no such name"))),
            }
        })
    }
}

/// A minimal HTTP/1.1 server on `ip:port` (0: any) answering every request with `name`.
async fn named_server(ip: [u8; 4], port: u16, name: &'static str) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind(SocketAddr::from((ip, port))).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { continue };
            tokio::spawn(async move {
                while read_head(&mut s).await {
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-upstream: {name}\r\n\r\n{name}",
                        name.len()
                    );
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn host_names_are_resolved_followed_and_kept_when_the_lookup_fails() {
    // Two "pods" on the same port at two addresses; the name moves from one to the other.
    let a = named_server([127, 0, 0, 2], 0, "a").await;
    let b = named_server([127, 0, 0, 3], a.port(), "b").await;
    let names = Names::default();
    let point = |to: Option<SocketAddr>| names.0.lock().unwrap().insert("app.test".into(), to.map(|t| vec![t]));
    point(Some(a));
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners: [ {{ name: web, bind: 127.0.0.1:0, routes: [ {{ backend: app }} ] }} ]
backends:
  app: {{ addresses: [ 'app.test:{}' ], dns_refresh: 1s }}
",
        a.port()
    );
    let cfg = ferry::config::Config::parse("dns.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    let opts = ferry::Options { resolver: Some(std::sync::Arc::new(names.clone())), ..quiet() };
    let f = ferry::start_with(cfg, opts).await.unwrap();
    let web = f.addr("web").unwrap();
    assert_eq!(get(web, "/").await.upstream(), "a", "resolved before start returned");

    // The name now points at b: re-resolved within dns_refresh.
    point(Some(b));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while get(web, "/").await.upstream() != "b" {
        assert!(tokio::time::Instant::now() < deadline, "the name was not resolved again");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The lookup fails: b stays, and the failure is shown and counted.
    point(None);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let routes = get(f.admin, "/routes").await.json();
        if routes["last_error"].as_str().is_some_and(|e| e.contains("cannot resolve app.test")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the failed lookup was not reported");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        assert_eq!(get(web, "/").await.upstream(), "b", "the last good addresses stay");
    }
    let m = get(f.admin, "/metrics").await.text();
    assert!(metric(&m, "ferry_dns_errors_total", &[("backend", "app")]).unwrap_or(0.0) >= 1.0, "{m}");
    f.shutdown(std::time::Duration::ZERO, PATIENCE).await;
}

#[tokio::test]
async fn send_timeout_cuts_an_upstream_that_stops_reading_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Reads the request head, then nothing more: its receive window fills and stays full.
    let deaf = listen(|mut s| async move {
        if read_head(&mut s).await {
            std::future::pending::<()>().await;
        }
    })
    .await;
    let good = upstream("good").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners: [ {{ name: web, bind: 127.0.0.1:0, routes: [ {{ match: {{ path_prefix: /deaf }}, backend: deaf }}, {{ backend: good }} ] }} ]
backends:
  deaf: {{ addresses: [{deaf}], send_timeout: 300ms }}
  good: {{ addresses: [{}], send_timeout: 300ms, read_timeout: 300ms }}
",
        good.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let upload = |path: &'static str, len: usize| async move {
        let s = tokio::net::TcpStream::connect(web).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let writer = tokio::spawn(async move {
            let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
            let _ = wr.write_all(head.as_bytes()).await;
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < len {
                let n = chunk.len().min(len - sent);
                if wr.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                sent += n;
            }
            // Keep the write side open: a half-close ends an HTTP/1 connection for hyper's server.
            std::future::pending::<()>().await;
            drop(wr);
        });
        // The answer's head is enough (the rest of the upload may still be on its way).
        let mut out = Vec::new();
        let read = async {
            let mut buf = [0u8; 4096];
            while !out.windows(4).any(|w| w == b"\r\n\r\n") {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(PATIENCE, read).await.expect("an answer in time");
        writer.abort();
        String::from_utf8_lossy(&out).into_owned()
    };
    // 32 MiB cannot all sit in socket buffers: the upload stalls, and ferry gives up.
    let out = upload("/deaf", 32 << 20).await;
    assert!(
        out.starts_with("HTTP/1.1 504") && out.contains("x-ferry-error: timeout"),
        "{}",
        &out[..out.len().min(300)]
    );
    // An upstream that reads the whole body (at its pace) and answers is not cut: the read
    // timeout starts only once the body is sent.
    let out = upload("/upload", 4 << 20).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
}

#[tokio::test]
async fn reroute_routes_the_rewritten_path_again_as_nginx_last_does() {
    let up = upstream("app").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - name: legacy
        match: {{ path_regex: '^/old/' }}
        rewrite: {{ regex: '^/old/(.*)$', to: '/new/$1', reroute: true }}
      - name: new
        match: {{ path_prefix: /new }}
        request_headers: {{ set: {{ X-Asked: '$request_uri', X-Now: '$uri' }} }}
        backend: app
      - name: admin
        match: {{ path_prefix: /admin }}
        access: [{{ deny: all }}]
        backend: app
      - name: sneaky
        match: {{ path_prefix: /public }}
        rewrite: {{ regex: '^/public/(admin.*)$', to: '/$1', reroute: true }}
        backend: app
      - name: cycle
        match: {{ path_prefix: /loop }}
        rewrite: {{ regex: '^/loop(.*)$', to: '/loop/x$1', reroute: true }}
      - name: only
        match: {{ path_prefix: /only }}
        rewrite: {{ regex: '^/only/(\\d+)$', to: '/new/$1', reroute: true }}
      - {{ name: rest, backend: app }}
backends:
  app: {{ addresses: [{}] }}
",
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let (s, _, body) = exchange(web, "GET", "/old/a/b?q=1", "").await;
    assert_eq!(s, 200);
    let j = echo(&body);
    assert_eq!(j["uri"], "/new/a/b?q=1", "the new route's own handling, the query kept");
    assert_eq!(j["headers"]["x-asked"], "/old/a/b?q=1", "$request_uri is what the client sent");
    assert_eq!(j["headers"]["x-now"], "/new/a/b");
    // The route the new path reaches decides access: a rewrite cannot walk around a deny.
    assert_eq!(exchange(web, "GET", "/public/admin/users", "").await.0, 403);
    // Where the regex does not match, a route with a backend forwards as it is.
    assert_eq!(echo(&exchange(web, "GET", "/public/page", "").await.2)["uri"], "/public/page");
    // A rewrite that keeps matching: 500 after ten cycles, as nginx.
    let (s, head, _) = exchange(web, "GET", "/loop", "").await;
    assert_eq!(s, 500);
    assert!(head.contains("x-ferry-error: reroute_loop"), "{head}");
    // A route that only reroutes: its regex decides; elsewhere nothing takes the path (404).
    assert_eq!(echo(&exchange(web, "GET", "/only/7", "").await.2)["uri"], "/new/7");
    assert_eq!(exchange(web, "GET", "/only/x", "").await.0, 404);
}

/// An auth service: decides on `Authorization`, tells what it saw in `x-seen` (method, target,
/// whether a body or Content-Length came, X-Original-URI).
async fn auth_service() -> SocketAddr {
    use http_body_util::BodyExt;
    listen(|s| async move {
        let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
            let seen = format!(
                "{} {} cl={} orig={}",
                req.method(),
                req.uri(),
                req.headers().contains_key("content-length"),
                req.headers().get("x-original-uri").and_then(|v| v.to_str().ok()).unwrap_or("-")
            );
            let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
            let r = http::Response::builder().header("x-seen", format!("{seen} body={body}"));
            let r = match auth.as_str() {
                "Bearer good" => r.status(200).header("x-auth-user", "alice").header("set-cookie", "s=fresh"),
                "Bearer forbidden" => r.status(403),
                "Bearer odd" => r.status(302).header("location", "/login"),
                _ => r.status(401).header("www-authenticate", "Bearer realm=\"shop\""),
            };
            Ok::<_, std::convert::Infallible>(
                r.body(http_body_util::Full::new(bytes::Bytes::from("auth says no"))).unwrap(),
            )
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(s), svc).await;
    })
    .await
}

#[tokio::test]
async fn forward_auth_asks_the_auth_service_as_nginx_auth_request_does() {
    let up = upstream("app").await;
    let auth = auth_service().await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - name: guarded
        match: {{ path_prefix: /app }}
        forward_auth:
          backend: auth
          path: /verify
          headers: {{ X-Original-URI: '$request_uri' }}
          copy_to_request: {{ X-User: x-auth-user, X-Auth-Seen: x-seen }}
          copy_to_response: {{ Set-Cookie: set-cookie }}
        backend: app
      - {{ name: down, match: {{ path_prefix: /down }}, forward_auth: {{ backend: gone }}, backend: app }}
backends:
  app: {{ addresses: [{}] }}
  auth: {{ addresses: [{auth}] }}
  gone: {{ addresses: [{}] }}
",
        up.addr,
        dead_addr().await
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    // Let through: the upstream gets the request with the auth answer's user; the client gets its cookie.
    let (s, head, body) = exchange(
        web,
        "POST",
        "/app/orders?x=1",
        "Authorization: Bearer good\r\nX-User: mallory\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(s, 200, "{head}");
    let j = echo(&body);
    assert_eq!(j["uri"], "/app/orders?x=1");
    assert_eq!(j["headers"]["x-user"], "alice", "the auth answer's user, never the client's own");
    // The auth service saw the client's method at its own path, no body and no Content-Length.
    assert_eq!(j["headers"]["x-auth-seen"], "POST /verify cl=false orig=/app/orders?x=1 body=0");
    assert!(head.contains("set-cookie: s=fresh"), "{head}");
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Refused: 401 with the service's challenge, 403; the upstream never sees them.
    let (s, head, _) = exchange(web, "GET", "/app/x", "Authorization: Bearer bad\r\n").await;
    assert_eq!(s, 401);
    assert!(head.contains("www-authenticate: bearer realm=\"shop\""), "{head}");
    assert!(head.contains("x-ferry-error: auth_refused"), "{head}");
    assert_eq!(exchange(web, "GET", "/app/x", "Authorization: Bearer forbidden\r\n").await.0, 403);
    // Anything but 2xx/401/403, or no answer at all: 500.
    assert_eq!(exchange(web, "GET", "/app/x", "Authorization: Bearer odd\r\n").await.0, 500);
    assert_eq!(exchange(web, "GET", "/down/x", "").await.0, 500);
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 1, "no refused request reached the upstream");
}

/// An app that redirects as Tomcat does: `Location` built from the Host it received, and a
/// `Refresh` the same way.
async fn tomcat_like() -> SocketAddr {
    listen(|s| async move {
        let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
            let host = req.headers().get("host").and_then(|v| v.to_str().ok()).unwrap_or("none").to_string();
            let r = http::Response::builder()
                .status(302)
                .header("location", format!("http://{host}/login?from={}", req.uri().path()))
                .header("refresh", format!("5; url=http://{host}/later"));
            Ok::<_, std::convert::Infallible>(r.body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap())
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(s), svc).await;
    })
    .await
}

#[tokio::test]
async fn rewrite_location_rules_replace_the_start_of_redirects_as_proxy_redirect_does() {
    let app = tomcat_like().await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - name: ui
        match: {{ path_starts_with: /eureka-ui/ }}
        rewrite: {{ regex: '^/eureka-ui/(.*)$', to: '/$1' }}
        request_headers: {{ set: {{ Host: 'eureka:8761' }} }}
        rewrite_location: [{{ from: 'http://eureka:8761/', to: '/eureka-ui/' }}]
        backend: app
      - name: vars
        match: {{ path_starts_with: /v/ }}
        request_headers: {{ set: {{ Host: 'inner' }} }}
        rewrite_location: [{{ from: 'http://other/', to: '/' }}, {{ from: 'http://inner/', to: '$scheme://$host/v/' }}]
        backend: app
      - name: off
        match: {{ path_starts_with: /off/ }}
        rewrite_location: false
        backend: app
backends:
  app: {{ addresses: [{app}] }}
"
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let (s, head, _) = exchange(web, "GET", "/eureka-ui/dashboard", "").await;
    assert_eq!(s, 302);
    assert!(head.contains("\r\nlocation: /eureka-ui/login?from=/dashboard\r\n"), "{head}");
    assert!(head.contains("\r\nrefresh: 5; url=/eureka-ui/later\r\n"), "{head}");
    // Rules in order, variables rendered for the request.
    let (_, head, _) = exchange(web, "GET", "/v/x", "").await;
    assert!(head.contains("\r\nlocation: http://shop.example/v/login?from=/v/x\r\n"), "{head}");
    // Off: as the upstream sent it (here, the Host ferry passed on).
    let (_, head, _) = exchange(web, "GET", "/off/x", "").await;
    assert!(head.contains("\r\nlocation: http://shop.example:8080/login?from=/off/x\r\n"), "{head}");
}

#[tokio::test]
async fn respond_444_closes_the_connection_without_an_answer_as_nginx_does() {
    let yaml = "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - { name: drop, match: { host: unknown.example }, respond: { status: 444 } }
      - { name: ok, respond: { status: 200, body: fine } }
";
    let f = ferry(yaml).await;
    let web = f.addr("web").unwrap();
    let out = raw(web, b"GET / HTTP/1.1\r\nHost: unknown.example\r\n\r\n").await;
    assert_eq!(out, "", "not a byte written");
    let (s, _, body) = exchange(web, "GET", "/", "").await;
    assert_eq!((s, body.as_str()), (200, "fine"));
    // Through hyper (an h2c prior-knowledge client): the stream is reset, the connection lives.
    let s = tokio::net::TcpStream::connect(web).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = |host: &str| {
        http::Request::builder()
            .uri(format!("http://{host}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert!(tx.send_request(req("unknown.example")).await.is_err(), "no answer");
    assert_eq!(tx.send_request(req("shop.example")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn more_nginx_variables_render_in_answers() {
    let yaml = "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - name: vars
        respond: { status: 200, body: 'user=$remote_user https=$https proto=$server_protocol line=$request type=$content_type len=$content_length' }
        response_headers: { add: { X-Date: '$date_gmt', X-Msec: '$msec' } }
";
    let f = ferry(yaml).await;
    let web = f.addr("web").unwrap();
    let (s, head, body) = exchange(
        web,
        "POST",
        "/a?b=1",
        "Authorization: Basic YWxpY2U6c2VjcmV0\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body, "user=alice https= proto=HTTP/1.1 line=POST /a?b=1 HTTP/1.1 type=text/plain len=0");
    let date = head.lines().find_map(|l| l.strip_prefix("x-date: ")).unwrap_or_default().to_string();
    assert!(
        date.ends_with(" gmt") && date.contains(", ") && date.matches('-').count() == 2,
        "{date} (the head is lower-cased)"
    );
    let msec = head.lines().find_map(|l| l.strip_prefix("x-msec: ")).unwrap_or_default().to_string();
    assert!(msec.split_once('.').is_some_and(|(s, ms)| s.len() >= 10 && ms.len() == 3), "{msec}");
}

#[tokio::test]
async fn satisfy_any_lets_an_allowed_address_or_good_credentials_through() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    // alice:secret (bcrypt, htpasswd -B).
    std::fs::write(&users, format!("alice:{}\n", bcrypt::hash("secret", 4).unwrap())).unwrap();
    let up = upstream("app").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    trusted_proxies: [127.0.0.1/32]
    routes:
      - name: tools
        access: [{{ allow: 192.168.10.0/24 }}, {{ deny: all }}]
        basic_auth: {{ realm: Tools, htpasswd: {} }}
        satisfy: any
        backend: app
backends:
  app: {{ addresses: [{}] }}
",
        users.display(),
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let office = "X-Forwarded-For: 192.168.10.7\r\n";
    let outside = "X-Forwarded-For: 203.0.113.9\r\n";
    assert_eq!(exchange(web, "GET", "/", office).await.0, 200, "the address alone");
    let (s, head, _) = exchange(web, "GET", "/", outside).await;
    assert_eq!(s, 401, "neither: asked for credentials, as nginx (not 403)");
    assert!(head.contains("www-authenticate: basic realm=\"tools\""), "{head}");
    let good = format!("{outside}Authorization: Basic YWxpY2U6c2VjcmV0\r\n");
    assert_eq!(exchange(web, "GET", "/", &good).await.0, 200, "the credentials alone");
    let e = refusal("[{ satisfy: any, respond: { status: 200 } }]");
    assert!(e.contains("satisfy: any needs `access`"), "{e}");
}

#[tokio::test]
async fn upstream_variables_in_response_headers_tell_who_answered() {
    let up = upstream("app").await;
    let yaml = format!(
        "admin: 127.0.0.1:0
listeners:
  - name: web
    bind: 127.0.0.1:0
    routes:
      - name: app
        match: {{ path_prefix: /app }}
        response_headers:
          add: {{ X-Upstream: '$upstream_addr', X-Took: '$request_time' }}
          on_success: {{ set: {{ X-Seen: '$upstream_status for $host' }} }}
        backend: app
      - name: own
        response_headers: {{ add: {{ X-Upstream: '$upstream_addr', X-Took: '$request_time' }} }}
        respond: {{ status: 200, body: ok }}
backends:
  app: {{ addresses: [{}] }}
",
        up.addr
    );
    let f = ferry(&yaml).await;
    let web = f.addr("web").unwrap();
    let (s, head, _) = exchange(web, "GET", "/app/x", "").await;
    assert_eq!(s, 200);
    assert!(head.contains(&format!("\r\nx-upstream: {}\r\n", up.addr)), "{head}");
    assert!(head.contains("\r\nx-seen: 200 for shop.example\r\n"), "request variables rendered beside: {head}");
    let took = head.lines().find_map(|l| l.strip_prefix("x-took: ")).unwrap_or_default().to_string();
    assert!(took.split_once('.').is_some_and(|(s, ms)| s.parse::<u64>().is_ok() && ms.len() == 3), "{took}");
    // No upstream answered: nothing to tell (the header is not sent), the time still is.
    let (_, head, _) = exchange(web, "GET", "/", "").await;
    assert!(!head.contains("x-upstream"), "{head}");
    assert!(head.contains("\r\nx-took: "), "{head}");
}
