//! `ferry import`: an nginx.conf (with its includes) read as nginx reads it (`parse`), to be
//! turned into routes.yaml.

pub mod parse;
