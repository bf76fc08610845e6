//! ferry's own HTTP/1 server: request head parsing and framing, in any fragmentation, and the
//! response head it writes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry::fuzzing::client_request(data));
