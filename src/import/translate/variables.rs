//! nginx's variables: which ones nginx itself knows (a name it does not is a template
//! placeholder left unexpanded), and which a block uses.

use crate::import::parse::{Directive, Pos};

/// Variables of nginx's own (http and stream modules) and the prefixes of its families.
const NGINX_VARIABLES: &[&str] = &[
    "args",
    "binary_remote_addr",
    "body_bytes_sent",
    "bytes_sent",
    "bytes_received",
    "connection",
    "connection_requests",
    "connection_time",
    "content_length",
    "content_type",
    "date_gmt",
    "date_local",
    "document_root",
    "document_uri",
    "fastcgi_path_info",
    "fastcgi_script_name",
    "gzip_ratio",
    "host",
    "hostname",
    "http2",
    "https",
    "invalid_referer",
    "is_args",
    "limit_conn_status",
    "limit_rate",
    "limit_req_status",
    "msec",
    "msie",
    "nginx_version",
    "pid",
    "pipe",
    "protocol",
    "proxy_add_x_forwarded_for",
    "proxy_host",
    "proxy_port",
    "proxy_protocol_addr",
    "proxy_protocol_port",
    "proxy_protocol_server_addr",
    "proxy_protocol_server_port",
    "query_string",
    "realip_remote_addr",
    "realip_remote_port",
    "realpath_root",
    "remote_addr",
    "remote_port",
    "remote_user",
    "request",
    "request_body",
    "request_body_file",
    "request_completion",
    "request_filename",
    "request_id",
    "request_length",
    "request_method",
    "request_time",
    "request_uri",
    "scheme",
    "secure_link",
    "secure_link_expires",
    "server_addr",
    "server_name",
    "server_port",
    "server_protocol",
    "session_time",
    "slice_range",
    "status",
    "tcpinfo_rtt",
    "tcpinfo_rttvar",
    "tcpinfo_snd_cwnd",
    "tcpinfo_rcv_space",
    "time_iso8601",
    "time_local",
    "uid_got",
    "uid_reset",
    "uid_set",
    "uri",
    "ancient_browser",
    "modern_browser",
    "memcached_key",
    "binary_remote_addr",
];
const NGINX_VARIABLE_PREFIXES: &[&str] = &[
    "http_",
    "sent_http_",
    "sent_trailer_",
    "cookie_",
    "arg_",
    "upstream_",
    "ssl_",
    "geoip_",
    "jwt_",
    "proxy_protocol_tlv_",
];

/// `$name`s that nginx would not know: not its own, not made by `set`, `map`, `geo`,
/// `split_clients`, `js_set`/`perl_set`, nor a regex's named capture (each reported once).
pub(super) fn unknown(top: &[Directive]) -> Vec<(Pos, String)> {
    fn defined(list: &[Directive], out: &mut std::collections::BTreeSet<String>) {
        for d in list {
            let var = |i: usize| d.args.get(i).and_then(|a| a.strip_prefix('$')).map(|v| v.to_ascii_lowercase());
            let made = match d.name.as_str() {
                "set" | "js_set" | "perl_set" | "auth_request_set" => var(0),
                "map" | "split_clients" => var(1),
                "geo" => var(d.args.len().saturating_sub(1)),
                _ => None,
            };
            out.extend(made);
            for a in &d.args {
                for marker in ["(?<", "(?P<", "(?'"] {
                    for (i, _) in a.match_indices(marker) {
                        let name: String = a[i + marker.len()..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        out.insert(name.to_ascii_lowercase());
                    }
                }
            }
            if let Some(b) = &d.block {
                defined(b, out);
            }
        }
    }
    fn walk(list: &[Directive], known: &std::collections::BTreeSet<String>, out: &mut Vec<(Pos, String)>) {
        for d in list {
            // A map's or geo's block holds values and patterns, not only variables.
            for a in &d.args {
                let b = a.as_bytes();
                let mut i = 0;
                while let Some(off) = a[i..].find('$') {
                    let start = i + off + 1;
                    let (name, end) = match b.get(start) {
                        Some(b'{') => match a[start + 1..].find('}') {
                            Some(close) => (&a[start + 1..start + 1 + close], start + close + 2),
                            None => ("", start + 1),
                        },
                        _ => {
                            let len =
                                a[start..].bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
                            (&a[start..start + len], start + len)
                        }
                    };
                    i = end.max(start);
                    let lower = name.to_ascii_lowercase();
                    let ours = NGINX_VARIABLES.contains(&lower.as_str())
                        || NGINX_VARIABLE_PREFIXES.iter().any(|p| lower.starts_with(p));
                    if !name.is_empty()
                        && !name.starts_with(|c: char| c.is_ascii_digit())
                        && !ours
                        && !known.contains(&lower)
                        && !out.iter().any(|(_, n)| n == name)
                    {
                        out.push((d.at.clone(), name.to_string()));
                    }
                    if i >= a.len() {
                        break;
                    }
                }
            }
            if let (Some(b), false) = (&d.block, matches!(d.name.as_str(), "map" | "geo" | "split_clients" | "types")) {
                walk(b, known, out);
            }
        }
    }
    let mut known = std::collections::BTreeSet::new();
    defined(top, &mut known);
    let mut out = Vec::new();
    walk(top, &known, &mut out);
    out
}

/// Does any argument in `list` (blocks included) use the variable `var` (`$name` or `${name}`)?
pub(super) fn args_mention(list: &[Directive], var: &str) -> bool {
    let braced = format!("${{{}}}", &var[1..]);
    list.iter().any(|d| {
        d.args.iter().any(|a| {
            a.match_indices(var)
                .any(|(i, _)| !a[i + var.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
                || a.contains(&braced)
        }) || d.block.as_deref().is_some_and(|b| args_mention(b, var))
    })
}

/// `value` with the variables `set` gives a value filled in (the last `set` of a name counts;
/// nginx's names are case-insensitive). Other variables stay as they are.
pub(super) fn expand(value: &str, sets: &[(String, String)]) -> String {
    if sets.is_empty() || !value.contains('$') {
        return value.to_string();
    }
    let find = |name: &str| sets.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(b) => match b.find('}') {
                Some(end) => (&b[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let n = after.bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
                (&after[..n], n)
            }
        };
        match find(name).filter(|_| !name.is_empty()) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[i..i + 1 + len]),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}
