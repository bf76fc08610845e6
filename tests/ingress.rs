//! Ingress v1 through real requests, from manifests on disk (`ferry run -k`'s path: the same
//! translation the live watch runs, tests/cluster.rs covers the watch itself): IngressClass
//! selection, every row of the Kubernetes documentation's path-matching table, wildcard hosts,
//! default backends, conflicts, TLS from Secrets, and the ingress-nginx annotations one by one.
//! Upstreams are loopback servers; each Service's EndpointSlice on disk points at one.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{Empty, Full};
use support::pki::Pki;
use support::*;

use ferry::sources::{ingress, manifests::Manifests, Problem, Severity};

struct Site {
    _dir: tempfile::TempDir,
    running: ferry::Running,
    http: SocketAddr,
    problems: Vec<Problem>,
}

impl Site {
    fn https(&self) -> SocketAddr {
        self.running.addr(ingress::HTTPS_LISTENER).expect("an HTTPS listener")
    }

    fn problem(&self, field_part: &str) -> &Problem {
        self.problems
            .iter()
            .find(|p| p.field.contains(field_part))
            .unwrap_or_else(|| panic!("no problem at a field with `{field_part}`: {:#?}", self.problems))
    }
}

/// ferry serving the Ingresses of `yaml` (manifests, `---` between them).
async fn site(yaml: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), yaml).unwrap();
    let m = Manifests::read(&[dir.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e:?}"));
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let secrets = dir.path().join("secrets");
    let mut out = ingress::translate(&m.objects, &ingress::Settings::new(any, any, secrets.clone()));
    m.resolve_services(&mut out);
    let feed = ferry::server::feed::Feed { base: None, admin: any, secrets_dir: secrets };
    let cfg = feed.config(&out).unwrap();
    let running = ferry::start_with(cfg, quiet()).await.unwrap();
    let http = running.addr(ingress::HTTP_LISTENER).unwrap();
    Site { _dir: dir, running, http, problems: out.problems }
}

/// A Service `name` (port 80, named `http`) whose one endpoint is `up`.
fn service(ns: &str, name: &str, up: SocketAddr) -> String {
    service_manifests(ns, name, 80, up)
}

fn backend(svc: &str) -> String {
    format!("{{ service: {{ name: {svc}, port: {{ number: 80 }} }} }}")
}

/// An Ingress of class ferry with `annotations` (YAML mapping lines) and `rules` (YAML).
fn ing(ns: &str, name: &str, annotations: &[(&str, &str)], spec: &str) -> String {
    let ann: String = annotations
        .iter()
        .map(|(k, v)| format!("    nginx.ingress.kubernetes.io/{k}: {}\n", serde_json::to_string(v).unwrap()))
        .collect();
    let ann = if ann.is_empty() { String::new() } else { format!("  annotations:\n{ann}") };
    format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {ns}\n{ann}spec:\n  ingressClassName: ferry\n{spec}---\n")
}

/// One host with paths: (path, pathType, service).
fn rules(host: &str, paths: &[(&str, &str, &str)]) -> String {
    let mut s = format!("  rules:\n    - host: '{host}'\n      http:\n        paths:\n");
    for (p, t, svc) in paths {
        s.push_str(&format!("          - {{ path: '{p}', pathType: {t}, backend: {} }}\n", backend(svc)));
    }
    s
}

async fn who(to: SocketAddr, host: &str, path: &str) -> String {
    let r = get_host(to, host, path).await;
    match r.status.as_u16() {
        200 => r.upstream(),
        s => s.to_string(),
    }
}

#[tokio::test]
async fn every_row_of_the_kubernetes_path_matching_table() {
    let ups = [upstream("a").await, upstream("b").await, upstream("c").await];
    // (paths as (path, type), request, which path index serves it or None for the default backend)
    let table = support::PATH_TABLE;
    let mut yaml = String::new();
    for (i, u) in ups.iter().enumerate() {
        yaml.push_str(&service("docs", &format!("s{i}"), u.addr));
    }
    for (n, (paths, _, _)) in table.iter().enumerate() {
        let p: Vec<(&str, &str, String)> =
            paths.iter().enumerate().map(|(i, (p, t))| (*p, *t, format!("s{i}"))).collect();
        let p: Vec<(&str, &str, &str)> = p.iter().map(|(a, b, c)| (*a, *b, c.as_str())).collect();
        yaml.push_str(&ing("docs", &format!("row{n}"), &[], &rules(&format!("row{n}.example.com"), &p)));
    }
    let s = site(&yaml).await;
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    for (n, (paths, request, want)) in table.iter().enumerate() {
        let got = who(s.http, &format!("row{n}.example.com"), request).await;
        let want = match want {
            Some(i) => ["a", "b", "c"][*i].to_string(),
            None => "404".to_string(),
        };
        assert_eq!(got, want, "row {n}: paths {paths:?}, request {request}");
    }
}

#[tokio::test]
async fn classes_select_which_ingresses_are_served() {
    let up = upstream("u").await;
    let class = |name: &str, controller: &str, default: bool| {
        let ann =
            if default { "\n  annotations: { ingressclass.kubernetes.io/is-default-class: \"true\" }" } else { "" };
        format!("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: {name}{ann}\nspec: {{ controller: {controller} }}\n---\n")
    };
    let plain = |name: &str, extra: &str, host: &str| {
        format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: c\n{extra}spec:\n{}---\n", rules(host, &[("/", "Prefix", "svc")]))
    };
    let mut yaml = service("c", "svc", up.addr);
    yaml.push_str(&class("ferry", ingress::CONTROLLER, false));
    yaml.push_str(&class("nginx", "k8s.io/ingress-nginx", true));
    yaml.push_str(&plain("by-name", "", "unused.example.com").replace("spec:\n", "spec:\n  ingressClassName: ferry\n"));
    yaml.push_str(&plain("other", "", "other.example.com").replace("spec:\n", "spec:\n  ingressClassName: nginx\n"));
    yaml.push_str(&plain("legacy", "  annotations: { kubernetes.io/ingress.class: ferry }\n", "legacy.example.com"));
    yaml.push_str(&plain(
        "legacy-other",
        "  annotations: { kubernetes.io/ingress.class: nginx }\n",
        "legacy-other.example.com",
    ));
    yaml.push_str(&plain("classless", "", "classless.example.com"));
    let s = site(&yaml.replace("unused.example.com", "by-name.example.com")).await;
    assert_eq!(who(s.http, "by-name.example.com", "/").await, "u");
    assert_eq!(who(s.http, "legacy.example.com", "/").await, "u");
    assert_eq!(who(s.http, "other.example.com", "/").await, "404", "another controller's class");
    assert_eq!(who(s.http, "legacy-other.example.com", "/").await, "404");
    assert_eq!(who(s.http, "classless.example.com", "/").await, "404", "the default class is nginx's");

    // With ferry's class the default, an Ingress without a class is ferry's.
    let yaml = yaml.replace("k8s.io/ingress-nginx", "other").replace(
        "name: ferry\nspec",
        "name: ferry\n  annotations: { ingressclass.kubernetes.io/is-default-class: \"true\" }\nspec",
    );
    let s = site(&yaml).await;
    assert_eq!(who(s.http, "classless.example.com", "/").await, "u");
    assert_eq!(who(s.http, "other.example.com", "/").await, "404");
}

#[tokio::test]
async fn wildcards_defaults_and_conflicts() {
    let (a, b, d) = (upstream("a").await, upstream("b").await, upstream("d").await);
    let mut yaml = service("w", "a", a.addr) + &service("w", "b", b.addr) + &service("w", "d", d.addr);
    yaml.push_str(&ing("w", "wild", &[], &rules("*.foo.com", &[("/", "Prefix", "a")])));
    // The older Ingress (by creationTimestamp) keeps /x; the newer one's /x is left out.
    let old = ing(
        "w",
        "old",
        &[],
        &format!("  defaultBackend: {}\n{}", backend("d"), rules("shop.com", &[("/x", "Prefix", "a")])),
    );
    let new = ing("w", "new", &[], &rules("shop.com", &[("/x", "Prefix", "b"), ("/y", "Prefix", "b")]));
    yaml.push_str(&new.replace("namespace: w\n", "namespace: w\n  creationTimestamp: \"2026-01-02T00:00:00Z\"\n"));
    yaml.push_str(&old.replace("namespace: w\n", "namespace: w\n  creationTimestamp: \"2026-01-01T00:00:00Z\"\n"));
    let s = site(&yaml).await;
    assert_eq!(who(s.http, "a.foo.com", "/").await, "a");
    assert_eq!(who(s.http, "foo.com", "/").await, "d", "the apex is not under the wildcard: the catch-all default");
    assert_eq!(who(s.http, "a.b.foo.com", "/").await, "d", "exactly one label");
    assert_eq!(who(s.http, "shop.com", "/x/1").await, "a", "the oldest Ingress wins");
    assert_eq!(who(s.http, "shop.com", "/y").await, "b", "the newer Ingress keeps its other paths");
    assert_eq!(who(s.http, "shop.com", "/nothing").await, "d", "the host's defaultBackend");
    assert_eq!(who(s.http, "unknown.com", "/").await, "d", "spec.defaultBackend takes every other host");
    let p = s.problem("spec.rules[0].http.paths[0]");
    assert_eq!(p.object.name, "new");
    assert!(p.message.contains("already served by Ingress w/old"), "{}", p.message);
}

#[tokio::test]
async fn tls_from_a_secret_by_sni_and_the_http_redirect() {
    use base64::Engine as _;
    let up = upstream("u").await;
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["secure.example.com"]);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut yaml = service("t", "svc", up.addr);
    yaml.push_str(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: cert, namespace: t }}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\n",
        b64(&cert),
        b64(&key)
    ));
    let tls = "  tls:\n    - hosts: [secure.example.com]\n      secretName: cert\n";
    yaml.push_str(&ing(
        "t",
        "secure",
        &[],
        &format!("{tls}{}", rules("secure.example.com", &[("/", "Prefix", "svc")])),
    ));
    yaml.push_str(&ing("t", "plain", &[], &rules("plain.example.com", &[("/", "Prefix", "svc")])));
    yaml.push_str(&ing(
        "t",
        "stay",
        &[("ssl-redirect", "false")],
        &format!(
            "  tls:\n    - hosts: [stay.example.com]\n      secretName: cert\n{}",
            rules("stay.example.com", &[("/", "Prefix", "svc")])
        ),
    ));
    let s = site(&yaml).await;
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    let r = get_host(s.http, "secure.example.com", "/a?b=1").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "https://secure.example.com/a?b=1");
    assert_eq!(who(s.http, "plain.example.com", "/").await, "u", "no TLS, no redirect");
    assert_eq!(who(s.http, "stay.example.com", "/").await, "u", "ssl-redirect: false");
    // HTTPS with the Secret's certificate, chosen by SNI.
    let tcp = tokio::net::TcpStream::connect(s.https()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("secure.example.com").unwrap();
    let tls = pki.connector(&[b"http/1.1"]).connect(name, tcp).await.expect("handshake with the Secret's certificate");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(Request::get("/").header("host", "secure.example.com").body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "u");
}

#[tokio::test]
async fn a_bad_secret_or_service_fails_only_its_own_part() {
    let up = upstream("u").await;
    let mut yaml = service("b", "svc", up.addr);
    yaml.push_str(&ing(
        "b",
        "missing-svc",
        &[],
        &rules("m.example.com", &[("/ok", "Prefix", "svc"), ("/gone", "Prefix", "nope")]),
    ));
    yaml.push_str(&ing(
        "b",
        "grpc",
        &[("backend-protocol", "GRPC")],
        &rules("g.example.com", &[("/", "Prefix", "svc")]),
    ));
    yaml.push_str(&ing(
        "b",
        "bad-range",
        &[("whitelist-source-range", "10.0.0.0/8,nonsense")],
        &rules("r.example.com", &[("/", "Prefix", "svc")]),
    ));
    yaml.push_str(&ing(
        "b",
        "snippet",
        &[("configuration-snippet", "return 200 pwned;"), ("server-alias", "x")],
        &rules("s.example.com", &[("/", "Prefix", "svc")]),
    ));
    let s = site(&yaml).await;
    assert_eq!(who(s.http, "m.example.com", "/ok").await, "u");
    assert_eq!(who(s.http, "m.example.com", "/gone").await, "503", "an unknown Service answers 503");
    assert!(s.problem("paths[1].backend.service.name").message.contains("Service b/nope not found"));
    assert_eq!(who(s.http, "g.example.com", "/").await, "503", "gRPC is refused, not spoken as HTTP/1");
    assert_eq!(s.problem("backend-protocol").severity, Severity::Error);
    assert_eq!(who(s.http, "r.example.com", "/").await, "503", "a bad allowlist denies");
    assert_eq!(who(s.http, "s.example.com", "/").await, "u", "the snippet is not run");
    assert!(s.problem("configuration-snippet").message.contains("never executed"));
    assert!(s.problem("server-alias").message.contains("not supported"));
}

#[tokio::test]
async fn one_bad_ingress_among_fifty_good_ones() {
    let up = upstream("u").await;
    let mut yaml = service("many", "svc", up.addr);
    for i in 0..50 {
        yaml.push_str(&ing(
            "many",
            &format!("good{i}"),
            &[],
            &rules(&format!("h{i}.example.com"), &[("/", "Prefix", "svc")]),
        ));
    }
    yaml.push_str(&ing(
        "many",
        "bad",
        &[("rewrite-target", "/$1")],
        &rules("bad.example.com", &[("/(unclosed", "ImplementationSpecific", "svc")]),
    ));
    let s = site(&yaml).await;
    for i in 0..50 {
        assert_eq!(who(s.http, &format!("h{i}.example.com"), "/").await, "u");
    }
    assert_eq!(who(s.http, "bad.example.com", "/(unclosed").await, "503");
    let p = s.problem("spec.rules[0].http.paths[0]");
    assert_eq!(p.object.name, "bad");
    assert!(p.message.contains("regex"), "{}", p.message);
}

#[tokio::test]
async fn rewrite_target_use_regex_app_root_and_redirects() {
    let up = upstream("u").await;
    let mut yaml = service("r", "svc", up.addr);
    yaml.push_str(&ing(
        "r",
        "rw",
        &[("rewrite-target", "/$2"), ("use-regex", "true")],
        &rules("rw.example.com", &[("/something(/|$)(.*)", "ImplementationSpecific", "svc")]),
    ));
    // use-regex on one Ingress of a host makes every path of the host a case-insensitive regex.
    yaml.push_str(&ing("r", "same-host", &[], &rules("rw.example.com", &[("/plain", "Prefix", "svc")])));
    yaml.push_str(&ing("r", "root", &[("app-root", "/app1")], &rules("root.example.com", &[("/", "Prefix", "svc")])));
    yaml.push_str(&ing(
        "r",
        "moved",
        &[("permanent-redirect", "https://new.example.com/")],
        &rules("moved.example.com", &[("/", "Prefix", "svc")]),
    ));
    yaml.push_str(&ing(
        "r",
        "moved-code",
        &[("permanent-redirect", "https://new.example.com/"), ("permanent-redirect-code", "308")],
        &rules("moved2.example.com", &[("/", "Prefix", "svc")]),
    ));
    yaml.push_str(&ing(
        "r",
        "temp",
        &[("temporal-redirect", "https://tmp.example.com/")],
        &rules("temp.example.com", &[("/", "Prefix", "svc")]),
    ));
    let s = site(&yaml).await;
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    let uri = |r: &Reply| r.json()["uri"].as_str().unwrap().to_string();
    assert_eq!(uri(&get_host(s.http, "rw.example.com", "/something/new/path?q=1").await), "/new/path?q=1");
    assert_eq!(uri(&get_host(s.http, "rw.example.com", "/something").await), "/");
    assert_eq!(uri(&get_host(s.http, "rw.example.com", "/SOMETHING/x").await), "/x", "~* is case-insensitive");
    assert_eq!(uri(&get_host(s.http, "rw.example.com", "/PLAIN/y").await), "/PLAIN/y", "the host is regex-wide");
    let r = get_host(s.http, "root.example.com", "/").await;
    assert_eq!((r.status.as_u16(), r.headers["location"].to_str().unwrap()), (302, "http://root.example.com/app1"));
    assert_eq!(who(s.http, "root.example.com", "/app1").await, "u");
    let r = get_host(s.http, "moved.example.com", "/x").await;
    assert_eq!((r.status.as_u16(), r.headers["location"].to_str().unwrap()), (301, "https://new.example.com/"));
    assert_eq!(get_host(s.http, "moved2.example.com", "/").await.status, 308);
    assert_eq!(get_host(s.http, "temp.example.com", "/").await.status, 302);
}

#[tokio::test]
async fn headers_body_size_access_and_auth() {
    let up = upstream("u").await;
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let mut yaml = service("h", "svc", up.addr);
    yaml.push_str(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: users, namespace: h }}\nstringData:\n  auth: \"alice:{hash}\\n\"\n---\n"
    ));
    yaml.push_str(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: map, namespace: h }}\nstringData:\n  bob: \"{hash}\"\n---\n"
    ));
    yaml.push_str(&ing(
        "h",
        "hdr",
        &[("upstream-vhost", "internal.svc"), ("x-forwarded-prefix", "/shop"), ("proxy-body-size", "10")],
        &rules("hdr.example.com", &[("/", "Prefix", "svc")]),
    ));
    yaml.push_str(&ing("h", "default-size", &[], &rules("size.example.com", &[("/", "Prefix", "svc")])));
    yaml.push_str(&ing(
        "h",
        "allow",
        &[("whitelist-source-range", "127.0.0.1/32")],
        &rules("allow.example.com", &[("/", "Prefix", "svc")]),
    ));
    yaml.push_str(&ing(
        "h",
        "allow2",
        &[("allowlist-source-range", "127.0.0.2")],
        &rules("allow2.example.com", &[("/", "Prefix", "svc")]),
    ));
    yaml.push_str(&ing(
        "h",
        "deny",
        &[("denylist-source-range", "127.0.0.1/32")],
        &rules("deny.example.com", &[("/", "Prefix", "svc")]),
    ));
    yaml.push_str(&ing(
        "h",
        "auth",
        &[("auth-type", "basic"), ("auth-secret", "users"), ("auth-realm", "Team only")],
        &rules("auth.example.com", &[("/", "Prefix", "svc")]),
    ));
    yaml.push_str(&ing(
        "h",
        "authmap",
        &[("auth-type", "basic"), ("auth-secret", "h/map"), ("auth-secret-type", "auth-map")],
        &rules("authmap.example.com", &[("/", "Prefix", "svc")]),
    ));
    yaml.push_str(&ing(
        "h",
        "noauth",
        &[("auth-type", "basic"), ("auth-secret", "absent")],
        &rules("noauth.example.com", &[("/", "Prefix", "svc")]),
    ));
    let s = site(&yaml).await;
    let r = get_host(s.http, "hdr.example.com", "/").await;
    assert_eq!(r.json()["headers"]["host"], "internal.svc");
    assert_eq!(r.json()["headers"]["x-forwarded-prefix"], "/shop");
    let post = |host: &str, n: usize| {
        Request::post("/").header("host", host).body(Full::new(Bytes::from(vec![b'x'; n]))).unwrap()
    };
    assert_eq!(send(s.http, post("hdr.example.com", 10)).await.status, 200);
    assert_eq!(send(s.http, post("hdr.example.com", 11)).await.status, 413);
    assert_eq!(send(s.http, post("size.example.com", 1024 * 1024)).await.status, 200, "ingress-nginx's 1m default");
    assert_eq!(send(s.http, post("size.example.com", 1024 * 1024 + 1)).await.status, 413);
    let from = |ip: [u8; 4], host: &str| {
        let r = Request::get("/").header("host", host).body(Empty::<Bytes>::new()).unwrap();
        send_from(ip.into(), s.http, r)
    };
    assert_eq!(from([127, 0, 0, 1], "allow.example.com").await.status, 200);
    assert_eq!(from([127, 0, 0, 3], "allow.example.com").await.status, 403);
    assert_eq!(from([127, 0, 0, 2], "allow2.example.com").await.status, 200);
    assert_eq!(from([127, 0, 0, 1], "allow2.example.com").await.status, 403);
    assert_eq!(from([127, 0, 0, 1], "deny.example.com").await.status, 403);
    assert_eq!(from([127, 0, 0, 5], "deny.example.com").await.status, 200);
    use base64::Engine as _;
    let basic =
        |u: &str, p: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
    let authed = |host: &str, cred: Option<String>| {
        let mut r = Request::get("/").header("host", host);
        if let Some(c) = cred {
            r = r.header("authorization", c);
        }
        send(s.http, r.body(Empty::<Bytes>::new()).unwrap())
    };
    let r = authed("auth.example.com", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["www-authenticate"], "Basic realm=\"Team only\"");
    assert_eq!(authed("auth.example.com", Some(basic("alice", "wrong"))).await.status, 401);
    assert_eq!(authed("auth.example.com", Some(basic("alice", "s3cret"))).await.status, 200);
    assert_eq!(authed("authmap.example.com", Some(basic("bob", "s3cret"))).await.status, 200);
    assert_eq!(
        authed("noauth.example.com", Some(basic("bob", "s3cret"))).await.status,
        503,
        "a missing auth Secret denies"
    );
    assert!(s.problem("auth-secret").message.contains("Secret h/absent not found"));
}

#[tokio::test]
async fn canary_by_header_cookie_and_weight() {
    let (main, can) = (upstream("main").await, upstream("canary").await);
    let mut yaml = service("k", "main", main.addr) + &service("k", "can", can.addr);
    yaml.push_str(&ing("k", "primary", &[], &rules("app.example.com", &[("/", "Prefix", "main")])));
    yaml.push_str(&ing(
        "k",
        "canary",
        &[("canary", "true"), ("canary-by-header", "X-Canary"), ("canary-by-cookie", "beta"), ("canary-weight", "25")],
        &rules("app.example.com", &[("/", "Prefix", "can")]),
    ));
    let s = site(&yaml).await;
    let with = |h: &str, v: &str| {
        send(
            s.http,
            Request::get("/").header("host", "app.example.com").header(h, v).body(Empty::<Bytes>::new()).unwrap(),
        )
    };
    assert_eq!(with("x-canary", "always").await.upstream(), "canary");
    assert_eq!(with("x-canary", "never").await.upstream(), "main");
    assert_eq!(with("cookie", "beta=always").await.upstream(), "canary");
    // Header before cookie.
    let r = send(
        s.http,
        Request::get("/")
            .header("host", "app.example.com")
            .header("x-canary", "never")
            .header("cookie", "beta=always")
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.upstream(), "main");
    let mut canary = 0;
    for _ in 0..40 {
        if who(s.http, "app.example.com", "/").await == "canary" {
            canary += 1;
        }
    }
    assert_eq!(canary, 10, "25% of 40, in ferry's smooth weighted cycle");
}

#[tokio::test]
async fn cors_rate_limits_timeouts_and_service_upstream() {
    let up = upstream("u").await;
    let mut yaml = service("x", "svc", up.addr);
    yaml.push_str(&ing("x", "cors", &[("enable-cors", "true")], &rules("cors.example.com", &[("/", "Prefix", "svc")])));
    yaml.push_str(&ing(
        "x",
        "cors2",
        &[
            ("enable-cors", "true"),
            ("cors-allow-origin", "https://a.com, https://b.com"),
            ("cors-allow-credentials", "false"),
        ],
        &rules("cors2.example.com", &[("/", "Prefix", "svc")]),
    ));
    yaml.push_str(&ing(
        "x",
        "limited",
        &[("limit-rpm", "1"), ("limit-burst-multiplier", "1")],
        &rules("limit.example.com", &[("/", "Prefix", "svc")]),
    ));
    // service-upstream: the Service's clusterIP:port is the one endpoint (kube-proxy's job from
    // there); here the clusterIP is the upstream's loopback address and the port its own.
    let port = up.addr.port();
    yaml.push_str(&service("x", "su", up.addr).replace("port: 80,", &format!("port: {port},")));
    let su = rules("su.example.com", &[("/", "Prefix", "su")]).replace("number: 80", &format!("number: {port}"));
    yaml.push_str(&ing("x", "su", &[("service-upstream", "true")], &su));
    let s = site(&yaml).await;
    let pre = |host: &str, origin: &str| {
        send(
            s.http,
            Request::builder()
                .method("OPTIONS")
                .uri("/")
                .header("host", host)
                .header("origin", origin)
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
    };
    let r = pre("cors.example.com", "https://any.com").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    assert_eq!(r.headers["access-control-max-age"], "1728000");
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the preflight is ferry's answer");
    let r = get_host(s.http, "cors.example.com", "/").await;
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    let r = pre("cors2.example.com", "https://b.com").await;
    assert_eq!(r.headers["access-control-allow-origin"], "https://b.com");
    assert!(r.headers.get("access-control-allow-credentials").is_none());
    let r = pre("cors2.example.com", "https://evil.com").await;
    assert!(r.headers.get("access-control-allow-origin").is_none(), "an origin not listed gets no CORS headers");
    // limit-rpm 1 with burst multiplier 1: one request, plus one of burst, then 503 for a minute.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get_host(s.http, "limit.example.com", "/").await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 503]);
    assert_eq!(who(s.http, "su.example.com", "/").await, "u");
}

#[test]
fn check_k_names_file_line_and_column_and_fails_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = service("c", "svc", "127.0.0.1:9".parse().unwrap())
        + &ing("c", "good", &[("proxy-body-size", "8m")], &rules("a.example.com", &[("/", "Prefix", "svc")]));
    std::fs::write(dir.path().join("good.yaml"), &good).unwrap();
    let run = |files: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("check")
            .arg("-k")
            .args(files.iter().map(|f| dir.path().join(f)))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&["good.yaml"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("1 Ingress(es) of class ferry"), "{stdout}");
    let bad = ing("c", "bad", &[("proxy-read-timeout", "soon")], &rules("b.example.com", &[("/", "Prefix", "nope")]));
    std::fs::write(dir.path().join("bad.yaml"), &bad).unwrap();
    let (code, _, stderr) = run(&["good.yaml", "bad.yaml"]);
    assert_eq!(code, Some(1));
    let bad_file = dir.path().join("bad.yaml").display().to_string();
    // Line 7 holds the annotation, line 14 the backend.
    assert!(
        stderr.contains(&format!("{bad_file}:7:"))
            && stderr.contains(
                "warning: Ingress c/bad: metadata.annotations.nginx.ingress.kubernetes.io/proxy-read-timeout"
            ),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{bad_file}:14:"))
            && stderr.contains(
                "error: Ingress c/bad: spec.rules[0].http.paths[0].backend.service.name: Service c/nope not found"
            ),
        "{stderr}"
    );
}

/// A Service whose endpoints are `ups` (one EndpointSlice each: loopback endpoints differ only
/// by port).
fn service_of(ns: &str, name: &str, ups: &[SocketAddr]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: {name}, namespace: {ns} }}\nspec:\n  ports: [ {{ name: http, port: 80 }} ]\n---\n"
    );
    for (i, u) in ups.iter().enumerate() {
        y.push_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: {ns}\n  labels: {{ kubernetes.io/service-name: {name} }}\naddressType: IPv4\nports: [ {{ name: http, port: {} }} ]\nendpoints:\n  - addresses: [{}]\n    conditions: {{ ready: true }}\n---\n",
            u.port(),
            u.ip()
        ));
    }
    y
}

#[tokio::test]
async fn cookie_affinity_pins_a_client_to_its_endpoint() {
    let ups = [upstream("p0").await, upstream("p1").await, upstream("p2").await];
    let mut yaml = service_of("a", "svc", &ups.iter().map(|u| u.addr).collect::<Vec<_>>());
    yaml.push_str(&ing(
        "a",
        "sticky",
        &[
            ("affinity", "cookie"),
            ("session-cookie-name", "route"),
            ("session-cookie-max-age", "3600"),
            ("session-cookie-samesite", "Lax"),
        ],
        &rules("sticky.example.com", &[("/", "Prefix", "svc")]),
    ));
    let s = site(&yaml).await;
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    let first = get_host(s.http, "sticky.example.com", "/").await;
    let set = first.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("route=") && set.contains("; Path=/; Max-Age=3600; SameSite=Lax; HttpOnly"), "{set}");
    let pair = set.split(';').next().unwrap().to_string();
    let with_cookie = |c: String| {
        send(
            s.http,
            Request::get("/")
                .header("host", "sticky.example.com")
                .header("cookie", c)
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
    };
    for _ in 0..9 {
        let r = with_cookie(format!("other=1; {pair}")).await;
        assert_eq!(r.upstream(), first.upstream(), "pinned by its cookie");
        assert!(r.headers.get("set-cookie").is_none(), "a kept pin is not set again");
    }
    // Without the cookie the balancer spreads clients; a cookie naming no endpoint is replaced.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(get_host(s.http, "sticky.example.com", "/").await.upstream());
    }
    assert_eq!(seen.len(), 3);
    let r = with_cookie("route=0000000000000000".into()).await;
    assert!(r.headers["set-cookie"].to_str().unwrap().starts_with("route="), "a stale pin is replaced");
}

#[tokio::test]
async fn custom_http_errors_go_to_the_default_backend() {
    let (app, err) = (upstream("app").await, upstream("err").await);
    let mut yaml = service("e", "app", app.addr) + &service("e", "errors", err.addr);
    // A Service with no endpoints: ferry's own 503, intercepted as well.
    yaml.push_str("apiVersion: v1\nkind: Service\nmetadata: { name: empty, namespace: e }\nspec:\n  ports: [ { name: http, port: 80 } ]\n---\n");
    let ann = [("custom-http-errors", "404,503"), ("default-backend", "errors")];
    yaml.push_str(&ing(
        "e",
        "shop",
        &ann,
        &rules("shop.example.com", &[("/", "Prefix", "app"), ("/empty", "Prefix", "empty")]),
    ));
    let s = site(&yaml).await;
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    assert_eq!(who(s.http, "shop.example.com", "/fine").await, "app", "other statuses pass");
    let r = send(
        s.http,
        Request::get("/status/404?x=1")
            .header("host", "shop.example.com")
            .header("accept", "application/json")
            .body(Empty::<Bytes>::new())
            .unwrap(),
    )
    .await;
    // The error backend answered (the test upstream echoes /status/404 with a 404 of its own).
    assert_eq!((r.status.as_u16(), r.upstream()), (404, "err".to_string()));
    let h = &r.json()["headers"];
    assert_eq!(h["x-code"], "404");
    assert_eq!(h["x-format"], "application/json");
    assert_eq!(h["x-original-uri"], "/status/404?x=1");
    assert_eq!((h["x-namespace"].as_str(), h["x-ingress-name"].as_str()), (Some("e"), Some("shop")));
    assert_eq!((h["x-service-name"].as_str(), h["x-service-port"].as_str()), (Some("app"), Some("80")));
    assert_eq!(r.json()["method"], "GET");
    let r = get_host(s.http, "shop.example.com", "/empty/x").await;
    assert_eq!((r.status.as_u16(), r.upstream()), (200, "err".to_string()), "no endpoints: the default backend");
    assert_eq!(r.json()["headers"]["x-code"], "503");
    // Without default-backend there is nothing to send errors to: an Event, and errors pass.
    let yaml = yaml.replace("    nginx.ingress.kubernetes.io/default-backend: \"errors\"\n", "");
    let s = site(&yaml).await;
    assert_eq!(get_host(s.http, "shop.example.com", "/status/404").await.upstream(), "app");
    assert!(s.problem("custom-http-errors").message.contains("needs default-backend"));
}

#[test]
fn intercept_errors_is_checked_like_any_route_key() {
    let e = refusal("[ { respond: { status: 200 }, intercept_errors: { backend: nowhere, statuses: [404, 99] } } ]");
    assert!(e.contains("intercept_errors names backend `nowhere`, which is not defined"), "{e}");
    assert!(e.contains("`99` is not a status from 300 to 599"), "{e}");
}

#[tokio::test]
async fn limit_connections_counts_requests_in_progress_per_client() {
    let up = upstream("u").await;
    let mut yaml = service("l", "svc", up.addr);
    yaml.push_str(&ing(
        "l",
        "conn",
        &[("limit-connections", "1")],
        &rules("conn.example.com", &[("/", "Prefix", "svc")]),
    ));
    let s = site(&yaml).await;
    assert!(s.problems.is_empty(), "{:#?}", s.problems);
    // One slow request in progress from 127.0.0.1 (the upstream waits before answering).
    let slow = {
        let to = s.http;
        tokio::spawn(async move { get_host(to, "conn.example.com", "/slow/3000").await.status.as_u16() })
    };
    // Wait until the upstream has it: then the client has one request in progress.
    while up.hits.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let r = get_host(s.http, "conn.example.com", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-ferry-error"], "max_requests_per_client");
    let other = send_from(
        [127, 0, 0, 2].into(),
        s.http,
        Request::get("/").header("host", "conn.example.com").body(Empty::<Bytes>::new()).unwrap(),
    )
    .await;
    assert_eq!(other.status, 200, "another client is not limited");
    assert_eq!(slow.await.unwrap(), 200);
    // Its answer has ended: the place is free again.
    assert_eq!(get_host(s.http, "conn.example.com", "/").await.status, 200);
}
