//! The HTTP/1 wire rules, once, for ferry's own server (`proxy::h1`) and its own upstream
//! client (`upstream::h1`): neither decides framing by itself.
//!
//! - [`fields`]: field names as httparse hands them over, the `Connection` tokens (RFC 9110
//!   §7.6.1), one strict Content-Length reader (RFC 9112 §6.3 rule 5 and §8.6: digits only, no
//!   sign, no overflow; a list only where every item agrees), and whether `chunked` is the last
//!   transfer coding (§6.1).
//! - [`body`]: the message body decoder — Content-Length, chunked (§7.1: hex sizes, extensions,
//!   trailers, strict CRLF, bounded metadata) and close-delimited — decoded zero-copy out of the
//!   connection's read buffer, and the chunk-size line ferry writes.
//! - [`io`]: the read that clears readiness as of before it (no wasted `recvfrom`, no lost
//!   wake-up) and the fixed-size write queue behind every `writev`.
//!
//! What a head may carry is decided by the two codecs that parse heads (`proxy::h1::codec` for
//! requests, `upstream::h1::codec` for responses), both with these pieces; what framing a routed
//! request may have is stated again, for the heads hyper parses, in the proxy's early phase
//! (`proxy::head::check_target`). Nothing here does I/O but [`io`].

pub mod body;
pub mod fields;
pub mod io;

pub use body::{chunk_size_line, Chunked, Decoded, Decoder, ParseError};
pub use fields::{content_length, content_length_list, ends_chunked, list, token_name, ConnectionTokens, KEEP_ALIVE};
pub use io::{read_drained, Out};
