//! Sticky sessions by a cookie ferry sets (a backend's `affinity_cookie`, ingress-nginx's
//! `affinity: cookie`). The cookie's value is a hash of the endpoint's address — the same on every
//! ferry replica, so a client stays pinned whichever replica it reaches — and never the address
//! itself. A request whose cookie names a usable endpoint (ready, not ejected) goes there first; any
//! other gets the backend's balancing, and its answer sets the cookie to the endpoint that served
//! it. Backends without `affinity_cookie` never reach this module.

use std::net::SocketAddr;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};

use crate::config::AffinityCookie;
use crate::table::{Condition, Endpoint};

/// The cookie value for an endpoint: 16 hex digits of the xxh3 hash of `ip:port`.
pub fn token(addr: SocketAddr) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(addr.to_string().as_bytes()))
}

/// The value of cookie `name` in the request, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The endpoint the request's cookie pins it to, while that endpoint is usable.
pub fn pinned(a: &AffinityCookie, headers: &HeaderMap, eps: &[Endpoint]) -> Option<usize> {
    let want = cookie(headers, &a.name)?;
    if want.len() != 16 {
        return None;
    }
    eps.iter().position(|e| e.condition == Condition::Ready && !e.stats.is_ejected() && token(e.addr) == want)
}

/// Adds the `Set-Cookie` that pins the client to `addr`.
pub fn set(a: &AffinityCookie, headers: &mut HeaderMap, addr: SocketAddr) {
    let mut c = format!("{}={}; Path={}", a.name, token(addr), a.path);
    if let Some(d) = a.max_age {
        c.push_str(&format!("; Max-Age={}", d.as_secs()));
    }
    if let Some(d) = a.expires {
        c.push_str(&format!("; Expires={}", httpdate::fmt_http_date(std::time::SystemTime::now() + d)));
    }
    if a.secure {
        c.push_str("; Secure");
    }
    if let Some(s) = &a.same_site {
        c.push_str(&format!("; SameSite={s}"));
    }
    c.push_str("; HttpOnly");
    if let Ok(v) = HeaderValue::try_from(c) {
        headers.append(SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_tokens_are_stable() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; INGRESSCOOKIE=\"abc\""));
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "INGRESSCOOKIE"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        let addr: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        assert_eq!(token(addr), token(addr));
        assert_ne!(token(addr), token("10.0.0.2:8080".parse().unwrap()));
        assert_eq!(token(addr).len(), 16);
    }
}
