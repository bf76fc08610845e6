//! The request-head path: route choice, header rewrite, prefix strip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry::fuzzing::request_head(data));
