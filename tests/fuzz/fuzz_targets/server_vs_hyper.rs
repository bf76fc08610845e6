//! Differential: ferry's own HTTP/1 server against hyper's, on the same bytes (see `ferry::fuzzing::server_vs_hyper`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry::fuzzing::server_vs_hyper(data));
