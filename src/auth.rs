//! HTTP basic authentication against htpasswd files (nginx `auth_basic` + `auth_basic_user_file`).
//!
//! Accepted hashes: bcrypt (`$2y$`, `$2b$`, `$2a$`; the `bcrypt` crate), Apache MD5 (`$apr1$`;
//! the algorithm on RustCrypto's `md-5`) and `{SHA}` (base64 SHA-1). Plaintext and DES crypt
//! lines are refused when the file is read, with their line number. Every comparison ferry makes
//! itself is constant-time (`subtle`); bcrypt's own verification is too.
//!
//! bcrypt is slow on purpose (tens of milliseconds), so it never runs on a proxy worker: it goes to
//! tokio's blocking pool, and a credential that verified is remembered (by its SHA-256, with the
//! file's digest, in a bounded cache) so a browser sending the same header on every request pays
//! once. A wrong password is never cached.
//!
//! Files are read when a config is applied (a bad file rejects the config) and again when they
//! change on disk (the server's file watch); a file that turns bad keeps the last good users, and
//! the error is logged, counted and shown on /routes as certificates are.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use base64::Engine as _;
use md5::{Digest as _, Md5};
use subtle::ConstantTimeEq;

use crate::config::{Config, FileError, FileErrors};

#[derive(Debug, Clone)]
enum Hash {
    Bcrypt(String),
    Apr1 { salt: String, hash: String },
    Sha1([u8; 20]),
}

/// The users of one htpasswd file.
#[derive(Debug, Default)]
pub struct Users {
    users: HashMap<String, Hash>,
    /// Over the file's bytes: a change of file invalidates remembered credentials.
    digest: u64,
}

impl Users {
    /// Parses htpasswd text (`user:hash` per line; `#` comments and blank lines skipped).
    pub fn parse(path: &Path, text: &str) -> Result<Users, FileError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let err = |m: &str| FileError { path: path.to_path_buf(), message: format!("line {}: {m}", i + 1) };
            let (user, hash) = line.split_once(':').ok_or_else(|| err("not `user:hash`"))?;
            if user.is_empty() {
                return Err(err("empty user name"));
            }
            let hash = if hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$") {
                Hash::Bcrypt(hash.to_string())
            } else if let Some(rest) = hash.strip_prefix("$apr1$") {
                let (salt, h) = rest.split_once('$').ok_or_else(|| err("malformed $apr1$ hash"))?;
                if salt.is_empty() || salt.len() > 8 || h.len() != 22 {
                    return Err(err("malformed $apr1$ hash"));
                }
                Hash::Apr1 { salt: salt.to_string(), hash: h.to_string() }
            } else if let Some(b64) = hash.strip_prefix("{SHA}") {
                let bytes =
                    base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| err("malformed {SHA} hash"))?;
                Hash::Sha1(bytes.try_into().map_err(|_| err("malformed {SHA} hash"))?)
            } else {
                return Err(err(
                    "plaintext or crypt(3) password refused; use bcrypt (htpasswd -B), $apr1$ (htpasswd -m) or {SHA} (htpasswd -s)",
                ));
            };
            users.insert(user.to_string(), hash);
        }
        Ok(Users { users, digest: xxhash_rust::xxh3::xxh3_64(text.as_bytes()) })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a password (may take tens of milliseconds for bcrypt: call off the proxy workers).
    fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            None => {
                // Spend about the same time as for a known user with a cheap hash.
                let _ = apr1("x", "00000000");
                false
            }
            Some(Hash::Bcrypt(h)) => bcrypt::verify(password, h).unwrap_or(false),
            Some(Hash::Apr1 { salt, hash }) => apr1(password, salt).as_bytes().ct_eq(hash.as_bytes()).into(),
            Some(Hash::Sha1(want)) => {
                let got: [u8; 20] = sha1::Sha1::digest(password.as_bytes()).into();
                got.ct_eq(want).into()
            }
        }
    }
}

/// Apache's MD5 crypt (`$apr1$`): md5-crypt with the magic `$apr1$`; returns the 22-character hash.
fn apr1(password: &str, salt: &str) -> String {
    let (pw, salt) = (password.as_bytes(), salt.as_bytes());
    let alt: [u8; 16] = Md5::new().chain_update(pw).chain_update(salt).chain_update(pw).finalize().into();
    let mut ctx = Md5::new().chain_update(pw).chain_update(b"$apr1$").chain_update(salt);
    let mut left = pw.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = pw.len();
    while i > 0 {
        ctx.update(if i & 1 == 1 { &[0u8][..] } else { &pw[..1] });
        i >>= 1;
    }
    let mut sum: [u8; 16] = ctx.finalize().into();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(pw);
        } else {
            c.update(sum);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(pw);
        }
        if round & 1 == 1 {
            c.update(sum);
        } else {
            c.update(pw);
        }
        sum = c.finalize().into();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut put = |v: u32, n: usize| {
        let mut v = v;
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let b = |i: usize| u32::from(sum[i]);
    for (x, y, z) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((b(x) << 16) | (b(y) << 8) | b(z), 4);
    }
    put(b(11), 2);
    out
}

/// Credentials that verified, remembered so bcrypt runs once per user and password.
const CACHE: usize = 4096;

/// One htpasswd file as a route uses it: its users (swapped when the file changes) and the
/// credentials already verified against them.
#[derive(Debug)]
pub struct UserFile {
    pub path: PathBuf,
    users: ArcSwap<Users>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl UserFile {
    /// A file with no users (everyone refused): what a route gets if its file was never read.
    pub fn empty(path: &Path) -> Arc<UserFile> {
        Arc::new(UserFile {
            path: path.to_path_buf(),
            users: ArcSwap::from_pointee(Users::default()),
            verified: Mutex::default(),
        })
    }

    fn load(path: &Path) -> Result<Users, FileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError::new(path, "cannot read htpasswd file", &e))?;
        Users::parse(path, &text)
    }

    /// Re-reads the file: `Ok(true)` when the users changed, `Ok(false)` when the bytes are the
    /// same, `Err` (old users kept) when it is broken.
    pub fn reload(&self) -> Result<bool, FileError> {
        let users = UserFile::load(&self.path)?;
        if users.digest == self.users.load().digest {
            return Ok(false);
        }
        self.users.store(Arc::new(users));
        Ok(true)
    }

    pub fn users(&self) -> usize {
        self.users.load().len()
    }

    /// Checks an `Authorization` header value. Runs bcrypt on the blocking pool.
    pub async fn check(&self, authorization: Option<&http::HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else { return false };
        let users = self.users.load_full();
        let key: [u8; 32] = {
            let mut h = sha2::Sha256::new();
            sha2::Digest::update(&mut h, users.digest.to_le_bytes());
            sha2::Digest::update(&mut h, user.as_bytes());
            sha2::Digest::update(&mut h, [0]);
            sha2::Digest::update(&mut h, password.as_bytes());
            sha2::Digest::finalize(h).into()
        };
        if self.verified.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
            return true;
        }
        let ok = match users.users.get(&user) {
            Some(Hash::Bcrypt(_)) => {
                let users = users.clone();
                tokio::task::spawn_blocking(move || users.verify(&user, &password)).await.unwrap_or(false)
            }
            _ => users.verify(&user, &password),
        };
        if ok {
            let mut seen = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= CACHE {
                seen.clear();
            }
            seen.insert(key);
        }
        ok
    }
}

/// `Basic base64(user:password)` → (user, password).
fn basic_credentials(v: &http::HeaderValue) -> Option<(String, String)> {
    let text = v.to_str().ok()?;
    let (scheme, b64) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (u, p) = raw.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// htpasswd files read for a config not yet applied.
#[derive(Debug)]
pub struct StagedUsers(Vec<(PathBuf, Users)>);

/// Every htpasswd file in use, by path: kept across table swaps (like the upstream pools), so a
/// reload does not forget verified credentials, and read when a config that names them is applied.
#[derive(Debug, Default)]
pub struct UserFiles {
    map: Mutex<HashMap<PathBuf, Arc<UserFile>>>,
}

impl UserFiles {
    /// Reads every htpasswd file `config` names (re-reading those already known), reporting
    /// every broken one. Nothing live changes until [`commit`](Self::commit).
    pub fn stage(&self, config: &Config) -> Result<StagedUsers, FileErrors> {
        let wanted: HashSet<&Path> = files_of(config).collect();
        let mut errors = Vec::new();
        let mut read = Vec::new();
        for path in wanted {
            match UserFile::load(path) {
                Ok(users) => read.push((path.to_path_buf(), users)),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(FileErrors(errors));
        }
        Ok(StagedUsers(read))
    }

    /// Puts what [`stage`](Self::stage) read in place; files no longer named are forgotten.
    pub fn commit(&self, staged: StagedUsers) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|p, _| staged.0.iter().any(|(w, _)| w == p));
        for (path, users) in staged.0 {
            match map.get(&path) {
                Some(f) => {
                    if users.digest != f.users.load().digest {
                        f.users.store(Arc::new(users));
                    }
                }
                None => {
                    let f = UserFile {
                        path: path.clone(),
                        users: ArcSwap::from_pointee(users),
                        verified: Mutex::default(),
                    };
                    map.insert(path, Arc::new(f));
                }
            }
        }
    }

    /// [`stage`](Self::stage) then [`commit`](Self::commit).
    pub fn load(&self, config: &Config) -> Result<(), FileErrors> {
        self.stage(config).map(|s| self.commit(s))
    }

    /// The loaded file at `path` (loaded by [`load`](Self::load) before the table is built).
    pub fn get(&self, path: &Path) -> Option<Arc<UserFile>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(path).cloned()
    }

    pub fn all(&self) -> Vec<Arc<UserFile>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

/// The htpasswd files a config names.
pub fn files_of(config: &Config) -> impl Iterator<Item = &Path> {
    config
        .listeners
        .iter()
        .flat_map(|l| &l.routes)
        .filter_map(|r| r.actions.basic_auth.as_ref())
        .map(|b| b.htpasswd.as_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_apache() {
        // `openssl passwd -apr1 -salt hfT7jp2q password`
        assert_eq!(apr1("password", "hfT7jp2q"), "two3QJlp/Qr/L8kifGFHF1");
    }

    #[test]
    fn plaintext_is_refused_with_its_line() {
        let e = Users::parse(Path::new("users"), "# admins\nalice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nbob:secret\n")
            .unwrap_err();
        assert!(e.message.starts_with("line 3: plaintext"), "{e}");
        let u = Users::parse(Path::new("users"), "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
        assert!(u.verify("alice", "password"));
        assert!(!u.verify("alice", "Password"));
        assert!(!u.verify("mallory", "password"));
    }
}
