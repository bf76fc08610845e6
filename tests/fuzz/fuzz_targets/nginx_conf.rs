//! `ferry import`: parses as nginx.conf or names the line; what parses imports into routes.yaml
//! that ferry accepts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry::fuzzing::nginx_conf(data));
