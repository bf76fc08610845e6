//! Secret data as private files: the certificates of `spec.tls` and the htpasswd files of basic
//! auth. Every file-backed part of ferry (certificate sets chosen by SNI, htpasswd checks, their
//! reloads) reads files, and ingress-nginx keeps Secrets as files the same way. Names are the
//! content's SHA-256, so a changed Secret is a new path — the config changes and is applied like
//! any other change — and an unchanged one is never rewritten.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};

use super::ingress::annotations::{AuthSecretType, BasicAuth};

/// A file to write: (path, bytes).
pub type File = (PathBuf, Vec<u8>);

fn named(dir: &Path, data: &[u8], ext: &str) -> PathBuf {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().take(16).map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.{ext}"))
}

fn data<'a>(s: &'a Secret, key: &str) -> Option<&'a [u8]> {
    s.data.as_ref()?.get(key).map(|b| b.0.as_slice())
}

/// A kubernetes.io/tls Secret's `tls.crt` and `tls.key`, checked (PEM, at least one certificate, a
/// private key), as (cert path, key path) and the files to write.
pub fn tls_pair(secret: Option<&Secret>, dir: &Path) -> Result<((String, String), Vec<File>), String> {
    let s = secret.ok_or("not found")?;
    let crt = data(s, "tls.crt").ok_or("has no tls.crt")?;
    let key = data(s, "tls.key").ok_or("has no tls.key")?;
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(crt).collect::<Result<Vec<_>, _>>();
    match certs {
        Ok(c) if !c.is_empty() => {}
        Ok(_) => return Err("tls.crt holds no PEM certificate".into()),
        Err(e) => return Err(format!("tls.crt is not valid PEM: {e}")),
    }
    if let Err(e) = rustls_pki_types::PrivateKeyDer::from_pem_slice(key) {
        return Err(format!("tls.key holds no PEM private key: {e}"));
    }
    let (c, k) = (named(dir, crt, "crt"), named(dir, key, "key"));
    let pair = (c.display().to_string(), k.display().to_string());
    Ok((pair, vec![(c, crt.to_vec()), (k, key.to_vec())]))
}

/// Basic auth's Secret as an htpasswd file: its `auth` key (`auth-file`) or one `user:hash` line
/// per key (`auth-map`), checked with ferry's htpasswd reader (which refuses plaintext and
/// crypt(3) lines).
pub fn htpasswd(secret: Option<&Secret>, a: &BasicAuth, dir: &Path) -> Result<(String, File), String> {
    let (ns, name) = &a.secret;
    let s = secret.ok_or_else(|| format!("Secret {ns}/{name} not found"))?;
    let text = match a.kind {
        AuthSecretType::File => {
            let b = data(s, "auth").ok_or_else(|| format!("Secret {ns}/{name} has no `auth` key"))?;
            String::from_utf8_lossy(b).into_owned()
        }
        AuthSecretType::Map => {
            let mut t = String::new();
            for (user, hash) in s.data.iter().flatten() {
                t.push_str(user);
                t.push(':');
                t.push_str(String::from_utf8_lossy(&hash.0).trim());
                t.push('\n');
            }
            t
        }
    };
    let path = named(dir, text.as_bytes(), "htpasswd");
    crate::auth::Users::parse(&path, &text).map_err(|e| format!("Secret {ns}/{name}: {}", e.message))?;
    Ok((path.display().to_string(), (path, text.into_bytes())))
}

/// Writes the files (an existing one is the same content: kept), private to ferry's user.
pub fn write(dir: &Path, files: &[File]) -> std::io::Result<()> {
    create_private_dir(dir)?;
    for (path, bytes) in files {
        if path.exists() {
            continue;
        }
        let tmp = path.with_extension("tmp");
        let mut f = private_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(())
}

/// Removes the files of `dir` that `files` does not name (after the config naming only these is
/// live, so nothing in use disappears).
pub fn sweep(dir: &Path, files: &[File]) -> std::io::Result<()> {
    let keep: BTreeSet<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if !keep.contains(p.as_path()) {
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}
