//! `ferry import` (in progress): an nginx.conf (with its includes) read as nginx reads it
//! (`parse`), and nginx's choice of location for a path (`locations`), the reference the route
//! order the importer emits will be tested against.

pub mod locations;
pub mod order;
pub mod parse;
