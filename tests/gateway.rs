//! Gateway API through real requests, from manifests on disk: the same translation a Gateway's
//! data plane runs, with loopback upstreams behind each Service's EndpointSlice. Matching and the
//! spec's precedence, listener hostnames, filters, backend references and ReferenceGrants, and the
//! status each case gets (the official conformance suite on a real cluster is tests/gateway_api.rs).

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use support::*;

use ferry::sources::gateway::{self, Cond, Output, RouteStatus};
use ferry::sources::manifests::Manifests;

struct Site {
    _dir: tempfile::TempDir,
    running: ferry::Running,
    out: Output,
}

impl Site {
    fn port(&self, port: u16) -> SocketAddr {
        self.running.addr(&gateway::listener_name(port)).unwrap_or_else(|| panic!("no listener for port {port}"))
    }

    fn route(&self, name: &str) -> &RouteStatus {
        self.out.routes.iter().find(|r| r.key.1 == name).unwrap_or_else(|| panic!("no status for route {name}"))
    }

    fn listener(&self, name: &str) -> &gateway::ListenerStatus {
        self.out.status.listeners.iter().find(|l| l.name == name).unwrap_or_else(|| panic!("no listener {name}"))
    }
}

fn cond<'a>(cs: &'a [Cond], t: &str) -> &'a Cond {
    cs.iter().find(|c| c.type_ == t).unwrap_or_else(|| panic!("no {t} condition in {cs:?}"))
}

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: { name: ferry }
spec: { controllerName: ferry.dev/gateway-controller }
---
";

/// ferry serving Gateway `gw` in namespace `infra` of `yaml`.
async fn site(yaml: &str) -> Site {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), format!("{CLASS}{yaml}")).unwrap();
    let m = Manifests::read(&[dir.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e:?}"));
    let secrets = dir.path().join("secrets");
    let mut s = gateway::Settings::new([127, 0, 0, 1].into(), secrets.clone());
    s.any_port = true;
    let gws = gateway::our_gateways(&m.gateway, &s);
    let gw = gws.iter().find(|g| g.metadata.name.as_deref() == Some("gw")).expect("Gateway gw of class ferry");
    let mut out = gateway::translate(&m.gateway, &s, gw);
    m.resolve_backends(&mut out.backends);
    out.parsed = None;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let feed = ferry::server::feed::Feed { base: None, admin: any, secrets_dir: secrets };
    let cfg = feed.config(&out).unwrap_or_else(|e| panic!("{e}: {:#?}", out.listeners));
    let running = ferry::start_with(cfg, quiet()).await.unwrap();
    Site { _dir: dir, running, out }
}

/// A Service `name` (port 8080, named `http`) whose one endpoint is `up`.
fn service(ns: &str, name: &str, up: SocketAddr) -> String {
    service_manifests(ns, name, 8080, up)
}

fn gateway(listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{ name: gw, namespace: infra }}
spec:
  gatewayClassName: ferry
  listeners:
{listeners}---
"
    )
}

fn http_route(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{ name: {name}, namespace: {ns} }}
spec:
  parentRefs: [ {{ name: gw, namespace: infra }} ]
{spec}---
"
    )
}

async fn who(to: SocketAddr, host: &str, req: Request<Empty<Bytes>>) -> String {
    let mut req = req;
    req.headers_mut().insert("host", host.parse().unwrap());
    let r = send(to, req).await;
    match r.status.as_u16() {
        200 => r.upstream(),
        s => s.to_string(),
    }
}

fn get_req(path: &str) -> Request<Empty<Bytes>> {
    Request::builder().uri(path).body(Empty::new()).unwrap()
}

#[tokio::test]
async fn matches_follow_the_spec_precedence_across_routes() {
    let ups = [upstream("exact").await, upstream("long").await, upstream("short").await, upstream("header").await];
    let mut yaml = gateway("    - { name: http, port: 80, protocol: HTTP }\n");
    for (i, u) in ups.iter().enumerate() {
        yaml += &service("infra", &format!("s{i}"), u.addr);
    }
    // Written in the reverse of precedence, across three routes.
    yaml += &http_route(
        "infra",
        "a-short",
        "  rules:
    - matches: [ { path: { type: PathPrefix, value: /api } } ]
      backendRefs: [ { name: s2, port: 8080 } ]
    - matches: [ { path: { type: PathPrefix, value: /api }, headers: [ { name: X-Canary, value: 'yes' } ] } ]
      backendRefs: [ { name: s3, port: 8080 } ]
",
    );
    yaml += &http_route(
        "infra",
        "b-long",
        "  rules:
    - matches: [ { path: { type: PathPrefix, value: /api/v2/ } } ]
      backendRefs: [ { name: s1, port: 8080 } ]
",
    );
    yaml += &http_route(
        "infra",
        "c-exact",
        "  rules:
    - matches: [ { path: { type: Exact, value: /api/v2/health } } ]
      backendRefs: [ { name: s0, port: 8080 } ]
",
    );
    let s = site(&yaml).await;
    assert!(s.out.problems.is_empty(), "{:#?}", s.out.problems);
    let at = s.port(80);
    let cases = [
        ("/api/v2/health", None, "exact"),
        ("/api/v2/healthz", None, "long"),
        ("/api/v2", None, "long"),
        ("/api/v20", None, "short"),
        ("/api", None, "short"),
        ("/apix", None, "404"),
        ("/api/x", Some("yes"), "header"),
        ("/api/v2/x", Some("yes"), "long"),
    ];
    for (path, canary, want) in cases {
        let mut r = get_req(path);
        if let Some(v) = canary {
            r.headers_mut().insert("x-canary", v.parse().unwrap());
        }
        assert_eq!(who(at, "any.example", r).await, want, "{path} canary={canary:?}");
    }
    assert_eq!(s.listener("http").attached, 3);
    for r in ["a-short", "b-long", "c-exact"] {
        let p = &s.route(r).parents[0];
        assert!(cond(&p.conditions, "Accepted").status, "{r}: {p:?}");
        assert!(cond(&p.conditions, "ResolvedRefs").status, "{r}: {p:?}");
    }
}

#[tokio::test]
async fn method_and_query_matches() {
    let (a, b, c) = (upstream("get").await, upstream("post").await, upstream("query").await);
    let mut yaml = gateway("    - { name: http, port: 80, protocol: HTTP }\n");
    yaml += &service("infra", "a", a.addr);
    yaml += &service("infra", "b", b.addr);
    yaml += &service("infra", "c", c.addr);
    yaml += &http_route(
        "infra",
        "r",
        "  rules:
    - matches: [ { method: GET } ]
      backendRefs: [ { name: a, port: 8080 } ]
    - matches: [ { method: POST } ]
      backendRefs: [ { name: b, port: 8080 } ]
    - matches: [ { queryParams: [ { name: animal, value: whale } ] } ]
      backendRefs: [ { name: c, port: 8080 } ]
",
    );
    let s = site(&yaml).await;
    let at = s.port(80);
    let post = Request::builder().method("POST").uri("/").body(Empty::new()).unwrap();
    assert_eq!(who(at, "x", post).await, "post");
    let put = Request::builder().method("PUT").uri("/?animal=whale").body(Empty::new()).unwrap();
    assert_eq!(who(at, "x", put).await, "query");
    let put = Request::builder().method("PUT").uri("/?animal=dolphin").body(Empty::new()).unwrap();
    assert_eq!(who(at, "x", put).await, "404");
    // A method match outranks a query match (the spec's order), whatever the rule order.
    assert_eq!(who(at, "x", get_req("/?animal=whale")).await, "get");
}

#[tokio::test]
async fn listener_hostnames_decide_before_routes_and_status_says_why() {
    let (a, b) = (upstream("wild").await, upstream("any").await);
    let mut yaml = gateway(
        "    - { name: wild, port: 80, protocol: HTTP, hostname: '*.example.com' }
    - { name: any, port: 80, protocol: HTTP, allowedRoutes: { namespaces: { from: All } } }
",
    );
    yaml += &service("infra", "a", a.addr);
    yaml += &service("apps", "b", b.addr);
    yaml += "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: only-api, namespace: infra }
spec:
  parentRefs: [ { name: gw, sectionName: wild } ]
  rules:
    - matches: [ { path: { type: PathPrefix, value: /api } } ]
      backendRefs: [ { name: a, port: 8080 } ]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: everything, namespace: apps }
spec:
  parentRefs: [ { name: gw, namespace: infra } ]
  rules:
    - backendRefs: [ { name: b, port: 8080 } ]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: wrong-host, namespace: infra }
spec:
  parentRefs: [ { name: gw, sectionName: wild } ]
  hostnames: [ other.org ]
  rules:
    - backendRefs: [ { name: a, port: 8080 } ]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: no-such-section, namespace: infra }
spec:
  parentRefs: [ { name: gw, sectionName: nope } ]
  rules:
    - backendRefs: [ { name: a, port: 8080 } ]
---
";
    let s = site(&yaml).await;
    let at = s.port(80);
    assert_eq!(who(at, "www.example.com", get_req("/api/x")).await, "wild");
    // The most specific listener takes the host: its routes alone decide.
    assert_eq!(who(at, "www.example.com", get_req("/other")).await, "404");
    assert_eq!(who(at, "example.com", get_req("/other")).await, "any");
    assert_eq!(who(at, "elsewhere.org", get_req("/api")).await, "any");
    // `everything` is in another namespace: only the listener that allows All takes it.
    let p = &s.route("everything").parents[0];
    assert!(cond(&p.conditions, "Accepted").status, "{p:?}");
    assert_eq!(s.listener("wild").attached, 1);
    assert_eq!(s.listener("any").attached, 1);
    let p = &s.route("wrong-host").parents[0];
    assert_eq!(cond(&p.conditions, "Accepted").reason, "NoMatchingListenerHostname");
    let p = &s.route("no-such-section").parents[0];
    assert_eq!(cond(&p.conditions, "Accepted").reason, "NoMatchingParent");
}

#[tokio::test]
async fn filters_modify_redirect_and_rewrite() {
    let a = upstream("a").await;
    let mut yaml = gateway("    - { name: http, port: 80, protocol: HTTP }\n");
    yaml += &service("infra", "a", a.addr);
    yaml += &http_route(
        "infra",
        "r",
        "  rules:
    - matches: [ { path: { type: PathPrefix, value: /headers } } ]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [ { name: X-Set, value: set } ]
            add: [ { name: X-Add, value: added } ]
            remove: [ X-Remove ]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [ { name: X-Answer, value: 'yes' } ]
      backendRefs: [ { name: a, port: 8080 } ]
    - matches: [ { path: { type: PathPrefix, value: /old } } ]
      filters:
        - type: RequestRedirect
          requestRedirect: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /new }, statusCode: 301 }
    - matches: [ { path: { type: PathPrefix, value: /secure } } ]
      filters:
        - type: RequestRedirect
          requestRedirect: { scheme: https, hostname: example.org }
    - matches: [ { path: { type: PathPrefix, value: /v1 } } ]
      filters:
        - type: URLRewrite
          urlRewrite: { hostname: rewritten.example, path: { type: ReplacePrefixMatch, replacePrefixMatch: /v2 } }
      backendRefs: [ { name: a, port: 8080 } ]
    - matches: [ { path: { type: Exact, value: /full } } ]
      filters:
        - type: URLRewrite
          urlRewrite: { path: { type: ReplaceFullPath, replaceFullPath: /replaced } }
      backendRefs: [ { name: a, port: 8080 } ]
",
    );
    let s = site(&yaml).await;
    assert!(s.out.problems.is_empty(), "{:#?}", s.out.problems);
    let at = s.port(80);
    let mut r = get_req("/headers");
    r.headers_mut().insert("host", "h.example".parse().unwrap());
    r.headers_mut().insert("x-remove", "gone".parse().unwrap());
    r.headers_mut().insert("x-add", "first".parse().unwrap());
    let reply = send(at, r).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-answer"], "yes");
    let seen = reply.json();
    assert_eq!(seen["headers"]["x-set"], "set");
    assert!(seen["headers"].get("x-remove").is_none(), "{seen}");
    assert!(seen["headers"]["x-add"].as_str().unwrap().contains("added"), "{seen}");

    let r = get_host(at, "h.example", "/old/page?q=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.headers["location"], "http://h.example/new/page?q=1");
    let r = get_host(at, "h.example", "/old").await;
    assert_eq!(r.headers["location"], "http://h.example/new");
    let r = get_host(at, "h.example", "/secure/x").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "https://example.org/secure/x");

    let seen = get_host(at, "h.example", "/v1/items?id=7").await.json();
    assert_eq!(seen["uri"], "/v2/items?id=7");
    assert_eq!(seen["headers"]["host"], "rewritten.example");
    let seen = get_host(at, "h.example", "/full").await.json();
    assert_eq!(seen["uri"], "/replaced");
}

#[tokio::test]
async fn backend_references_resolve_or_answer_500_with_the_reason() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let mut yaml =
        gateway("    - { name: http, port: 80, protocol: HTTP, allowedRoutes: { namespaces: { from: All } } }\n");
    yaml += &service("infra", "a", a.addr);
    yaml += &service("shared", "b", b.addr);
    yaml += &http_route(
        "infra",
        "missing",
        "  hostnames: [missing.example]\n  rules:\n    - backendRefs: [ { name: nope, port: 8080 } ]\n",
    );
    yaml += &http_route(
        "infra",
        "not-granted",
        "  hostnames: [cross.example]\n  rules:\n    - backendRefs: [ { name: b, namespace: shared, port: 8080 } ]\n",
    );
    yaml += &http_route(
        "apps",
        "granted",
        "  hostnames: [granted.example]\n  rules:\n    - backendRefs: [ { name: b, namespace: shared, port: 8080 } ]\n",
    );
    yaml += &http_route(
        "infra",
        "wrong-kind",
        "  hostnames: [kind.example]\n  rules:\n    - backendRefs: [ { group: example.com, kind: Bucket, name: a } ]\n",
    );
    yaml += "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: apps-to-b, namespace: shared }
spec:
  from: [ { group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps } ]
  to: [ { group: '', kind: Service, name: b } ]
---
";
    let s = site(&yaml).await;
    let at = s.port(80);
    assert_eq!(who(at, "granted.example", get_req("/")).await, "b");
    for (host, route, reason) in [
        ("missing.example", "missing", "BackendNotFound"),
        ("cross.example", "not-granted", "RefNotPermitted"),
        ("kind.example", "wrong-kind", "InvalidKind"),
    ] {
        assert_eq!(who(at, host, get_req("/")).await, "500", "{host}");
        let p = &s.route(route).parents[0];
        assert!(cond(&p.conditions, "Accepted").status, "{route}: {p:?}");
        let c = cond(&p.conditions, "ResolvedRefs");
        assert!(!c.status, "{route}: {c:?}");
        assert_eq!(c.reason, reason, "{route}");
    }
    let p = &s.route("granted").parents[0];
    assert!(cond(&p.conditions, "ResolvedRefs").status, "{p:?}");
}

#[tokio::test]
async fn listeners_that_cannot_be_served_say_so() {
    let yaml = gateway(
        "    - { name: udp, port: 53, protocol: UDP }
    - { name: web, port: 8080, protocol: HTTP }
    - { name: raw, port: 8080, protocol: TCP }
    - { name: https, port: 443, protocol: HTTPS, tls: { certificateRefs: [ { name: absent } ] } }
    - { name: kinds, port: 81, protocol: HTTP, allowedRoutes: { kinds: [ { kind: TCPRoute } ] } }
",
    );
    let s = site(&yaml).await;
    let l = s.listener("udp");
    assert_eq!(cond(&l.conditions, "Accepted").reason, "UnsupportedProtocol");
    for n in ["web", "raw"] {
        let l = s.listener(n);
        assert_eq!(cond(&l.conditions, "Accepted").reason, "ProtocolConflict", "{n}");
        assert!(cond(&l.conditions, "Conflicted").status, "{n}");
    }
    let l = s.listener("https");
    assert_eq!(cond(&l.conditions, "ResolvedRefs").reason, "InvalidCertificateRef");
    assert!(!cond(&l.conditions, "Programmed").status);
    let l = s.listener("kinds");
    assert_eq!(cond(&l.conditions, "ResolvedRefs").reason, "InvalidRouteKinds");
    assert!(l.supported_kinds.is_empty(), "{:?}", l.supported_kinds);
    assert_eq!(cond(&s.out.status.conditions, "Accepted").reason, "ListenersNotValid");
    // Nothing is served on the ports of listeners that are not: only port 81 has a listener.
    assert!(s.running.addr(&gateway::listener_name(8080)).is_none());
    assert!(s.running.addr(&gateway::listener_name(443)).is_none());
    assert_eq!(get(s.port(81), "/").await.status, 404);
}
