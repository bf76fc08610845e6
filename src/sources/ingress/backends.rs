//! The backends an Ingress names: a Service port (by number or name, checked against the
//! Service), an ExternalName, or the ClusterIP (`service-upstream`), with the annotations'
//! timeouts, retries, upstream TLS and cookie affinity; and the error backend of
//! `custom-http-errors`.

use k8s_openapi::api::networking::v1::IngressBackend;
use serde_json::{json, Map, Value};

use super::super::Severity;
use super::annotations::BackendProtocol;
use super::{problem, Ing, Objects, Output};

/// The backend of `default-backend` (its Service's first port), or `None` with a problem.
pub(super) fn error_backend(
    objects: &Objects,
    ing: &Ing<'_>,
    ns: &str,
    name: &str,
    field: &str,
    out: &mut Output,
) -> Option<String> {
    let Some(svc) = objects.services.get(&(ns.to_string(), name.to_string())) else {
        out.problems.push(problem(
            &ing.key,
            field,
            Severity::Error,
            &format!("Service {ns}/{name} not found; custom-http-errors is ignored"),
        ));
        return None;
    };
    let Some(port) = svc.spec.as_ref().and_then(|s| s.ports.as_ref()).and_then(|p| p.first()).map(|p| p.port) else {
        out.problems.push(problem(
            &ing.key,
            field,
            Severity::Error,
            &format!("Service {ns}/{name} has no port; custom-http-errors is ignored"),
        ));
        return None;
    };
    let b = format!("{ns}/{name}:{port}#errors");
    out.backends.insert(b.clone(), json!({"service": format!("{name}.{ns}"), "port": port}));
    Some(b)
}

/// The backend an Ingress backend names, or why it cannot be served.
pub(super) fn backend(
    objects: &Objects,
    ing: &Ing<'_>,
    b: &IngressBackend,
    field: &str,
    out: &mut Output,
) -> Result<String, String> {
    let mut fail = |f: String, m: String| {
        out.problems.push(problem(&ing.key, &f, Severity::Error, &format!("{m}; requests for it get 503")));
        Err(m)
    };
    let Some(svc) = &b.service else {
        return fail(field.to_string(), "only Service backends are supported (not `resource`)".into());
    };
    let ns = &ing.key.0;
    let port = svc.port.as_ref();
    let (port_json, port_text): (Value, String) = match (port.and_then(|p| p.number), port.and_then(|p| p.name.clone()))
    {
        (Some(n), _) => (json!(n), n.to_string()),
        (None, Some(n)) if !n.is_empty() => (json!(n), n),
        _ => return fail(format!("{field}.service.port"), "the Service port has neither a number nor a name".into()),
    };
    let Some(service) = objects.services.get(&(ns.clone(), svc.name.clone())) else {
        return fail(format!("{field}.service.name"), format!("Service {ns}/{} not found", svc.name));
    };
    let spec = service.spec.clone().unwrap_or_default();
    let sport = spec.ports.iter().flatten().find(|p| match &port_json {
        Value::Number(n) => n.as_i64() == Some(p.port.into()),
        _ => p.name.as_deref() == Some(port_text.as_str()),
    });
    let Some(sport) = sport else {
        return fail(format!("{field}.service.port"), format!("Service {ns}/{} has no port {port_text}", svc.name));
    };
    let name = format!("{ns}/{}/{}:{port_text}", ing.key.1, svc.name);
    let a = &ing.ann;
    let mut f = Map::new();
    if spec.type_.as_deref() == Some("ExternalName") {
        let host = spec.external_name.clone().unwrap_or_default();
        f.insert("addresses".into(), json!([format!("{host}:{}", sport.port)]));
    } else if a.service_upstream && spec.cluster_ip.as_deref().is_some_and(|ip| ip != "None" && !ip.is_empty()) {
        let ip: String = spec.cluster_ip.clone().unwrap_or_default();
        let addr = match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{}", sport.port),
            _ => format!("{ip}:{}", sport.port),
        };
        f.insert("addresses".into(), json!([addr]));
    } else {
        f.insert("service".into(), json!(format!("{}.{ns}", svc.name)));
        f.insert("port".into(), port_json);
    }
    if let Some(t) = a.connect_timeout {
        f.insert("connect_timeout".into(), json!(format!("{t}s")));
    }
    if let Some(t) = a.read_timeout {
        f.insert("read_timeout".into(), json!(format!("{t}s")));
    }
    if let Some(t) = a.send_timeout {
        f.insert("send_timeout".into(), json!(format!("{t}s")));
    }
    // ingress-nginx's default proxy_next_upstream is `error timeout`.
    let retry_on = a.next_upstream.clone().unwrap_or_else(|| vec!["connect", "reset", "timeout"]);
    if retry_on.is_empty() {
        f.insert("retries".into(), json!(0));
    } else {
        f.insert("retry_on".into(), json!(retry_on));
        // proxy_next_upstream_tries counts every try (0: no limit); ferry counts extra ones.
        let tries = a.next_upstream_tries.unwrap_or(3);
        let extra = if tries == 0 {
            crate::config::defaults::MAX_RETRIES
        } else {
            (tries - 1).min(crate::config::defaults::MAX_RETRIES)
        };
        f.insert("retries".into(), json!(extra));
    }
    if let Some(fields) = &a.affinity {
        let cookie: Map<String, Value> = fields.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        f.insert("affinity_cookie".into(), Value::Object(cookie));
    }
    if a.backend_protocol == BackendProtocol::Https {
        f.insert("tls".into(), json!({"insecure_skip_verify": true}));
    }
    out.backends.insert(name.clone(), Value::Object(f));
    Ok(name)
}
