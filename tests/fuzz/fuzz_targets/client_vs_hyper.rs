//! Differential: ferry's own HTTP/1 client against hyper's, on the same bytes (see `ferry::fuzzing::client_vs_hyper`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry::fuzzing::client_vs_hyper(data));
