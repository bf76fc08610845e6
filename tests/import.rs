//! `ferry import`'s location order, through ferry itself: random levels of nginx locations become
//! first-match rules, the rules become routes.yaml routes (`path_exact`, `path_starts_with`,
//! `path_regex`), ferry builds its table from that file, and for random paths ferry's own lookup
//! picks the location nginx's algorithm picks — nested locations included.

use std::collections::HashMap;

use ferry::import::locations::{choose, sample, Choice};
use ferry::import::order::{at, rules, Target};
use ferry::table::build::{build, BuildContext};

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[test]
fn ferry_routes_the_imported_order_to_the_location_nginx_chooses() {
    let mut rng = fastrand::Rng::with_seed(1515);
    let (mut configs, mut compared) = (0, 0);
    for _ in 0..200 {
        let level = sample::level(&mut rng, 8);
        let rules = rules(&level).unwrap();
        // Each rule a route answering with its target.
        let mut yaml = String::from("listeners:\n  - name: web\n    bind: 127.0.0.1:0\n    routes:\n");
        for r in &rules {
            let mut m = Vec::new();
            if let Some(e) = &r.exact {
                m.push(format!("path_exact: {}", quoted(e)));
            }
            if let Some(p) = &r.starts_with {
                m.push(format!("path_starts_with: {}", quoted(p)));
            }
            if let Some(i) = &r.regex {
                m.push(format!("path_regex: {}", quoted(&at(&level, i).name)));
            }
            let name = |v: &[usize]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(".");
            let body = match &r.target {
                Target::Location(i) => format!("L{}", name(i)),
                Target::Redirect(i) => format!("R{}", name(i)),
            };
            yaml.push_str(&format!("      - {{ match: {{ {} }}, respond: {{ body: {body} }} }}\n", m.join(", ")));
        }
        let cfg = ferry::config::Config::parse("rules.yaml", &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let table = build(&cfg, 1, &BuildContext::default(), &HashMap::new());
        let web = table.listener("web").unwrap();
        configs += 1;
        for _ in 0..50 {
            let path = sample::path(&mut rng, 4);
            let name = |v: &[usize]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(".");
            let want = match choose(&level, &path) {
                Choice::Location(v) => Some(format!("L{}", name(&v))),
                Choice::Redirect(v) => Some(format!("R{}", name(&v))),
                Choice::None => None,
            };
            let got = web.lookup("h", &path, &http::Method::GET, &http::HeaderMap::new()).map(|r| {
                let body = r.actions.as_ref().and_then(|a| a.respond.as_ref()).and_then(|x| x.body.as_ref());
                body.map(|b| b.to_string()).unwrap_or_default()
            });
            assert_eq!(got, want, "{path}\n{yaml}");
            compared += 1;
        }
    }
    assert_eq!((configs, compared), (200, 10_000));
}

/// Every config of the corpus imports, with the exit code its content calls for, into a file that
/// passes ferry's parser; then ferry's lookup on it sends sample requests where nginx would.
#[test]
fn the_corpus_imports_and_routes_as_nginx_would() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import");
    struct Case {
        file: &'static str,
        exit: u8,
        /// (listener, host, path, what the chosen route does: a backend name or `redirect`/`respond N`/`static`)
        requests: &'static [(&'static str, &'static str, &'static str, &'static str)],
    }
    let cases = [
        Case {
            file: "spa-prod-api.conf",
            exit: 3, // the front end's html directory is not on this machine
            requests: &[
                ("http-80", "localhost", "/", "static"),
                ("http-80", "localhost", "/user/profile", "static"),
                ("http-80", "localhost", "/prod-api/system/user/list", "ruoyi-gateway.prod-8080"),
                ("http-80", "localhost", "/prod-api", "redirect"),
                // The only server of the port is its default: other names reach it too.
                ("http-80", "other.example", "/prod-api/x", "ruoyi-gateway.prod-8080"),
            ],
        },
        Case {
            file: "eureka-hosts.conf",
            exit: 0,
            requests: &[
                ("http-80", "eureka-0.test-gateway.net", "/", "eureka-0"),
                ("http-80", "eureka-1.test-gateway.net", "/eureka/apps", "eureka-1"),
                ("http-80", "unknown.example", "/", "respond 404"),
            ],
        },
        Case {
            file: "nacos-weights.conf",
            exit: 0,
            requests: &[("http-8080", "x", "/nacos/v1/ns/instance", "nacos"), ("http-8080", "x", "/nacosx", "nacos")],
        },
        Case {
            file: "websocket.conf",
            exit: 0,
            requests: &[
                ("http-80", "x", "/ws/chat", "push"),
                ("http-80", "x", "/ws", "redirect"),
                ("http-80", "x", "/", "respond 200"),
            ],
        },
        Case { file: "stream-mysql-redis.conf", exit: 0, requests: &[] },
        Case {
            file: "tls-redirect.conf",
            exit: 3, // its certificate files are not on this machine
            requests: &[
                ("http-80", "www.test-gateway.net", "/a?b", "redirect"),
                ("https-443", "www.test-gateway.net", "/a", "gateway.prod-8080"),
            ],
        },
        Case {
            file: "admin-guarded.conf",
            exit: 3, // an `if`, and the htpasswd file
            requests: &[
                ("http-80", "x", "/actuator/health", "10.0.0.20-8080"),
                ("http-80", "x", "/admin/x.php", "10.0.0.21-8080"),
                ("http-80", "x", "/x.php", "respond 403"),
                ("http-80", "x", "/login", "10.0.0.21-8080"),
            ],
        },
        Case { file: "split/nginx.conf", exit: 0, requests: &[("http-80", "api.test-gateway.net", "/x", "gateway")] },
        Case {
            file: "gateway-prefix-strip.conf",
            exit: 0,
            requests: &[
                ("http-80", "gw.example.com", "/api/orders", "scg"),
                ("http-80", "gw.example.com", "/api/actuator/env", "respond 403"),
                ("http-80", "gw.example.com", "/", "redirect"),
                ("http-80", "gw.example.com", "/other", "respond 404"),
            ],
        },
        Case {
            file: "config-server.conf",
            exit: 0,
            requests: &[
                ("http-8888", "x", "/config/app/dev", "config-server.infra-8888"),
                ("http-8888", "x", "/config", "redirect"),
            ],
        },
        Case {
            file: "nacos-context-path.conf",
            exit: 0,
            requests: &[
                ("http-80", "nacos.example.com", "/nacos/v1/console", "nacos_cluster"),
                ("http-80", "nacos.example.com", "/", "redirect"),
            ],
        },
        Case {
            file: "static-assets-cache.conf",
            exit: 3, // /srv/www/shop is not on this machine
            requests: &[
                ("http-80", "x", "/assets/app.js", "static"),
                ("http-80", "x", "/index.html", "static"),
                ("http-80", "x", "/deep/link", "static"),
            ],
        },
        Case {
            file: "multi-vhost-wildcard.conf",
            exit: 0,
            requests: &[
                ("http-80", "admin.apps.example.com", "/", "10.0.5.2-8080"),
                ("http-80", "shop.apps.example.com", "/", "10.0.5.1-8080"),
                ("http-80", "example.org", "/", "respond 200"),
                ("http-80", "www.example.org", "/", "respond 200"),
            ],
        },
        Case {
            file: "regex-locations.conf",
            exit: 3, // its directories are not on this machine
            requests: &[
                ("http-80", "x", "/api/v2/users", "10.0.6.2-8080"),
                ("http-80", "x", "/api/v2/logo.PNG", "static"),
                ("http-80", "x", "/static/logo.png", "static"),
                ("http-80", "x", "/downloads/a.zip", "static"),
                ("http-80", "x", "/other", "10.0.6.1-8080"),
            ],
        },
        Case {
            file: "upstream-hash.conf",
            exit: 0,
            requests: &[("http-80", "x", "/a/x", "sticky"), ("http-80", "x", "/b/x", "iphash")],
        },
        Case { file: "real-ip.conf", exit: 0, requests: &[("http-80", "x", "/", "10.0.8.1-8080")] },
        Case {
            file: "quoting.conf",
            exit: 0,
            requests: &[
                ("http-80", "x", "/say", "respond 200"),
                ("http-80", "x", "/re/abc", "respond 204"),
                ("http-80", "x", "/re/abcd", "respond 404"), // no location: nginx's 404
            ],
        },
        Case {
            file: "unsupported.conf",
            exit: 3,
            // auth_request /auth: the location nginx picks for /auth (here `/` itself) is asked first.
            requests: &[("http-80", "x", "/", "10.0.9.1-8080"), ("http-80", "x", "/php/x", "respond 502")],
        },
    ];
    for c in &cases {
        let path = dir.join(c.file);
        let out = ferry::import::import(&path, Some("prod".into())).unwrap_or_else(|e| panic!("{}: {e}", c.file));
        let diags: Vec<String> = out.diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(out.exit_code(), c.exit, "{}: {diags:#?}", c.file);
        let cfg = ferry::config::Config::parse("imported.yaml", &out.yaml)
            .unwrap_or_else(|e| panic!("{}: the import does not parse:\n{e}\n{}", c.file, out.yaml));
        let table = build(&cfg, 1, &BuildContext::default(), &HashMap::new());
        for (listener, host, path, want) in c.requests {
            let l =
                table.listener(listener).unwrap_or_else(|| panic!("{}: no listener {listener}:\n{}", c.file, out.yaml));
            let got = match l.lookup(host, path, &http::Method::GET, &http::HeaderMap::new()) {
                None => "none".to_string(),
                Some(r) => match (r.backend, r.files.is_some(), r.actions.as_deref()) {
                    (Some(b), _, _) => table.backends[b].name.to_string(),
                    (_, true, _) => "static".into(),
                    (_, _, Some(a)) if a.redirect.is_some() => "redirect".into(),
                    (_, _, Some(a)) if a.respond.is_some() => {
                        format!("respond {}", a.respond.as_ref().unwrap().status.as_u16())
                    }
                    _ => "?".into(),
                },
            };
            assert_eq!(&got, want, "{}: {listener} {host}{path}\n{}", c.file, out.yaml);
        }
    }
    // nginx refuses over the rate with limit_req_status, 503 unless set.
    let out = ferry::import::import(&dir.join("admin-guarded.conf"), None).unwrap();
    assert!(out.yaml.contains("rate_limit: { rate: '5/s', burst: 10, status: 503 }"), "{}", out.yaml);
    // A second server with the same name on the same port: nginx keeps the first, and says so.
    let d = tempfile::tempdir().unwrap();
    let twice = d.path().join("twice.conf");
    std::fs::write(
        &twice,
        "http {\n  server { listen 80; server_name a.example; return 200 first; }\n  server { listen 80; server_name a.example; return 200 second; }\n}\n",
    )
    .unwrap();
    let out = ferry::import::import(&twice, None).unwrap();
    let w: Vec<String> = out.diags.iter().map(|d| d.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("twice.conf:3:3: warning: server_name a.example on 0.0.0.0:80 is already defined at")),
        "{w:?}"
    );
    let cfg = ferry::config::Config::parse("t.yaml", &out.yaml).unwrap();
    let table = build(&cfg, 1, &BuildContext::default(), &HashMap::new());
    let r = table
        .listener("http-80")
        .unwrap()
        .lookup("a.example", "/", &http::Method::GET, &http::HeaderMap::new())
        .unwrap();
    assert_eq!(r.actions.as_ref().unwrap().respond.as_ref().unwrap().body.as_ref().unwrap().to_string(), "first");
    // The stream servers are tcp listeners.
    let out = ferry::import::import(&dir.join("stream-mysql-redis.conf"), None).unwrap();
    let cfg = ferry::config::Config::parse("s.yaml", &out.yaml).unwrap();
    let tcp: Vec<(&str, Option<&str>)> =
        cfg.listeners.iter().map(|l| (l.name.as_str(), l.backend.as_deref())).collect();
    assert_eq!(tcp, [("tcp-3306", Some("mysql-outer.db.svc.cluster.local-3306")), ("tcp-6379", Some("redis"))]);
}

#[test]
fn unreadable_or_broken_input_is_an_error_at_its_place() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("nginx.conf");
    std::fs::write(&f, "http {\n  server {\n    listen 80\n  }\n}\n").unwrap();
    let e = ferry::import::import(&f, None).err().expect("a missing `;` is an error");
    assert!(e.to_string().contains("nginx.conf:4:3: error: unexpected \"}\""), "{e}");
    let e = ferry::import::import(&d.path().join("missing.conf"), None).err().unwrap();
    assert!(e.to_string().contains("cannot read"), "{e}");
}

#[test]
fn hazards_are_warned_at_their_lines() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import");
    let out = ferry::import::import(&dir.join("hazards.conf"), None).unwrap();
    let diags: Vec<String> = out.diags.iter().map(|d| d.to_string()).collect();
    let want = [
        ("hazards.conf:9:9: warning", "`$APP_DOMAIN` is not a variable nginx knows"),
        ("hazards.conf:11:13: warning", "`$BACKEND_HOST` is not a variable nginx knows"),
        ("hazards.conf:20:9: warning", "can never match: the same regex at line 19"),
        ("hazards.conf:15:13: warning", "drops the ones set above it (Host, X-Real-IP, X-Forwarded-For)"),
        ("hazards.conf:23:9: warning", "listen 443 with ssl_certificate but no `ssl`"),
    ];
    for (at, what) in want {
        assert!(diags.iter().any(|d| d.contains(at) && d.contains(what)), "{at} {what}:\n{diags:#?}");
    }
    // Nothing is left out by ferry's own parser: each hazard is named once, at its source.
    assert!(!diags.iter().any(|d| d.contains("left out of the import")), "{diags:#?}");
    assert_eq!(out.exit_code(), 3);
    ferry::config::Config::parse("imported.yaml", &out.yaml).unwrap();
}

#[test]
fn an_upstream_of_one_service_follows_the_service() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import");
    let out = ferry::import::import(&dir.join("ruoyi-rewrite.conf"), Some("ruoyi".into())).unwrap();
    assert!(out.yaml.contains("service: 'ruoyi-gateway.ruoyi'\n    port: 8080"), "{}", out.yaml);
    // Several members (a StatefulSet's pods by name) stay addresses.
    let out = ferry::import::import(&dir.join("eureka-peers.conf"), Some("infra".into())).unwrap();
    assert!(out.yaml.contains("address: 'eureka-0.eureka.infra.svc.cluster.local:8761'"), "{}", out.yaml);
}

#[test]
fn proxy_host_is_nginx_s_for_written_default_ports() {
    // ngx_http_proxy_set_vars: `http://name:80` sends `Host: name`, as `http://name` does.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import");
    let out = ferry::import::import(&dir.join("nested-locations.conf"), None).unwrap();
    assert!(out.yaml.contains("Host: 'portal-web.shop' }"), "{}", out.yaml);
    assert!(out.yaml.contains("Host: 'portal-api.shop:8080'"), "{}", out.yaml);
}
