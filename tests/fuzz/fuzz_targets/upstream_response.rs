//! ferry's own HTTP/1 client: response head parsing and body framing, in any fragmentation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry::fuzzing::upstream_response(data));
