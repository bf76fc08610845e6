//! routes.yaml loader: loads and builds a table, or names where the text is wrong.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry::fuzzing::routes_yaml(data));
