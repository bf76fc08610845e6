//! `ferry import`: an nginx.conf (with its includes) read as nginx reads it (`parse`), nginx's
//! choice of location for a path (`locations`) and the first-match order that reproduces it
//! (`order`), and the translation into routes.yaml (`translate`).

pub mod locations;
pub mod order;
pub mod parse;
pub mod translate;

use std::path::Path;

pub use parse::{Diag, Level};
pub use translate::{Imported, Options};

/// Imports `path` (`namespace`: see [`Options::namespace`]): `Err` (exit 1) when it cannot be
/// read or parsed.
pub fn import(path: &Path, namespace: Option<String>) -> Result<Imported, Diag> {
    let (top, mut diags) = parse::parse_file(path)?;
    let prefix = std::path::absolute(path).unwrap_or(path.to_path_buf());
    let prefix = prefix.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut out = translate::translate(&top, &Options { prefix, namespace });
    diags.append(&mut out.diags);
    out.diags = diags;
    Ok(out)
}
