//! `compress`: gzip, brotli or zstd for answers worth compressing, when the client accepts one.
//!
//! The negotiation (q-values), the encoders (async-compression, streaming: each chunk is encoded
//! as it comes, nothing is held whole) and the header work (Content-Encoding, Vary, no
//! Content-Length or Accept-Ranges on a compressed answer; an answer that already has a
//! Content-Encoding or is a range is never touched) are tower-http's `Compression`, run on the one
//! response. What is worth compressing is ferry's [`Worth`]: a 2xx (not 204/206) or an error page,
//! not `Cache-Control: no-transform`, a compressible media type, and not known to be under the
//! route's `compress_min_bytes` (a streamed answer of unknown length is compressed).

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, VARY,
};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use tower_http::compression::predicate::Predicate;
use tower_http::compression::Compression;
use tower_service::Service;

use super::body::ProxyBody;

/// Media types worth compressing: text, JSON, JavaScript, XML, SVG, WebAssembly, uncompressed fonts.
fn compressible(content_type: &[u8]) -> bool {
    let t = content_type.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    let t = t.to_ascii_lowercase();
    let t = t.as_slice();
    if t == b"text/event-stream" {
        // Server-sent events must reach the client event by event, not when a block fills.
        return false;
    }
    t.starts_with(b"text/")
        || t.ends_with(b"+json")
        || t.ends_with(b"+xml")
        || matches!(
            t,
            b"application/json"
                | b"application/javascript"
                | b"application/x-javascript"
                | b"application/ecmascript"
                | b"application/xml"
                | b"application/wasm"
                | b"application/x-yaml"
                | b"application/yaml"
                | b"image/svg+xml"
                | b"image/x-icon"
                | b"image/vnd.microsoft.icon"
                | b"image/bmp"
                | b"font/ttf"
                | b"font/otf"
                | b"application/vnd.ms-fontobject"
        )
}

/// Is this answer worth compressing (before asking whether the client accepts it)? Not when it is
/// known to be shorter than the field.
#[derive(Clone, Copy, Debug)]
pub struct Worth(pub u64);

impl Predicate for Worth {
    fn should_compress<B: Body>(&self, r: &Response<B>) -> bool {
        let status = r.status();
        let h = r.headers();
        (status.is_success() || status.is_client_error() || status.is_server_error())
            && status != StatusCode::NO_CONTENT
            && status != StatusCode::PARTIAL_CONTENT
            && !h.contains_key(CONTENT_ENCODING)
            && !h.contains_key(CONTENT_RANGE)
            && !h.get_all(CACHE_CONTROL).iter().any(|v| {
                v.as_bytes().split(|b| *b == b',').any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
            })
            && h.get(CONTENT_TYPE).is_some_and(|t| compressible(t.as_bytes()))
            && known_length(r).is_none_or(|n| n >= self.0)
    }
}

fn known_length<B: Body>(r: &Response<B>) -> Option<u64> {
    let declared = r.headers().get(CONTENT_LENGTH).and_then(|v| crate::http1::content_length(v.as_bytes()));
    declared.or(r.body().size_hint().exact())
}

/// The one response, handed to tower-http's `Compression` as its inner service.
struct Ready(Option<Response<ProxyBody>>);

impl Service<Request<()>> for Ready {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(self.0.take().expect("called once")))
    }
}

/// `resp` compressed for a client that sent `accept` (its Accept-Encoding), if worth it. A
/// compressible answer says `Vary: Accept-Encoding` whether or not this client got it compressed.
pub fn compress(accept: Option<&HeaderValue>, mut resp: Response<ProxyBody>, min_bytes: u64) -> Response<ProxyBody> {
    let worth = Worth(min_bytes);
    if !worth.should_compress(&resp) {
        return resp;
    }
    let varies = resp.headers().get_all(VARY).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|d| d.trim_ascii().eq_ignore_ascii_case(b"accept-encoding") || d == b"*")
    });
    if !varies {
        resp.headers_mut().append(VARY, HeaderValue::from_static("accept-encoding"));
    }
    let Some(accept) = accept else {
        return resp;
    };
    let mut req = Request::new(());
    req.headers_mut().insert(ACCEPT_ENCODING, accept.clone());
    let status = resp.status();
    let mut svc = Compression::new(Ready(Some(resp))).compress_when(worth);
    let Some(Ok(mut out)) = svc.call(req).now_or_never() else {
        unreachable!("the inner service is ready at once and infallible");
    };
    // tower-http answers 406 when the client refuses every encoding including identity; ferry
    // sends the answer as it is instead, as nginx does.
    *out.status_mut() = status;
    out.map(ProxyBody::boxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_types() {
        for t in
            ["text/html; charset=utf-8", "application/json", "application/problem+json", "image/svg+xml", "TEXT/CSS"]
        {
            assert!(compressible(t.as_bytes()), "{t}");
        }
        for t in ["image/png", "application/octet-stream", "text/event-stream", "font/woff2", "video/mp4"] {
            assert!(!compressible(t.as_bytes()), "{t}");
        }
    }
}
