//! TLS: server certificates chosen by SNI and swapped live, upstream client configs, and reading a
//! ClientHello's server name for passthrough.
//!
//! A listener's certificates are a [`CertSet`] (loaded from PEM files, each pair checked: the key
//! must match the certificate) behind an `ArcSwap` in its [`SniResolver`]. Replacing the set is one
//! store: handshakes that start afterwards see the new certificates, established connections keep
//! the keys they negotiated. A set that fails to load is never stored, so the old one keeps
//! serving. Names come from the leaf certificate's DNS subject alternative names (the subject CN
//! when there are none); `*.example.com` matches one more label, as browsers do.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncReadExt;

use crate::config::{CertPair, ClientAuth, Config, FileError, FileErrors, UpstreamTls};
use rustls::server::danger::ClientCertVerifier;

/// ring, the provider kube already links; chosen explicitly so no process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// One listener's certificates, indexed by the names they serve.
#[derive(Debug)]
pub struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The first pair: for clients without SNI or with a name no certificate has.
    default: Arc<CertifiedKey>,
    /// Over every file's bytes, to tell a real change from a touch.
    digest: u64,
    /// Every name, in file order, for logs and /routes.
    pub names: Vec<String>,
}

/// A problem with one file, phrased to name it.
fn file_error(path: &Path, message: impl std::fmt::Display) -> FileError {
    FileError { path: path.to_path_buf(), message: message.to_string() }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|e| file_error(path, format!("cannot read {what}: {e}")))
}

impl CertSet {
    /// Loads every pair; the first is the default. `pairs` is never empty: the config refuses an
    /// empty `tls.certificates`.
    pub fn load(pairs: &[CertPair]) -> Result<CertSet, FileError> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        let mut names = Vec::new();
        let mut digest = xxhash_rust::xxh3::Xxh3::new();
        for p in pairs {
            let cert_pem = read(&p.cert, "certificate")?;
            let key_pem = read(&p.key, "private key")?;
            digest.update(&cert_pem);
            digest.update(&key_pem);
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_error(&p.cert, format!("not a PEM certificate chain: {e}")))?;
            if chain.is_empty() {
                return Err(file_error(&p.cert, "no CERTIFICATE block found"));
            }
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| file_error(&p.key, format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}")))?;
            let leaf_names = dns_names(&chain[0]).map_err(|e| file_error(&p.cert, e))?;
            let ck = CertifiedKey::from_der(chain, key, &provider())
                .map_err(|e| file_error(&p.key, format!("does not belong to certificate {}: {e}", p.cert.display())))?;
            let ck = Arc::new(ck);
            for n in leaf_names {
                let n = n.trim_end_matches('.').to_ascii_lowercase();
                match n.strip_prefix("*.") {
                    Some(rest) => wildcard.entry(rest.to_string()).or_insert_with(|| ck.clone()),
                    None => exact.entry(n.clone()).or_insert_with(|| ck.clone()),
                };
                names.push(n);
            }
            default.get_or_insert(ck);
        }
        let default = default.expect("the config refuses an empty tls.certificates");
        Ok(CertSet { exact, wildcard, default, digest: digest.digest(), names })
    }

    /// The certificate for a server name (lower-case): exact, then one-label wildcard, then the default.
    pub fn select(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name else { return &self.default };
        if let Some(ck) = self.exact.get(name) {
            return ck;
        }
        name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)).unwrap_or(&self.default)
    }
}

/// The leaf's DNS SANs, or its subject CN when it has none.
fn dns_names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("cannot parse certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for g in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = g {
                names.push(n.to_string());
            }
        }
    }
    if names.is_empty() {
        names.extend(cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_string));
    }
    Ok(names)
}

/// Picks a listener's certificate per handshake from the current [`CertSet`].
#[derive(Debug)]
pub struct SniResolver {
    set: ArcSwap<CertSet>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls hands the name over already lower-cased and validated as a DNS name.
        Some(self.set.load().select(hello.server_name()).clone())
    }
}

/// A TLS-terminating listener's state: the acceptor (whose config never changes) and the files its
/// certificates come from (which do).
pub struct ServerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    resolver: Arc<SniResolver>,
    files: Mutex<Vec<CertPair>>,
    /// Client certificates asked for, and whether a request needs one.
    pub client: Option<ClientAuth>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("names", &self.resolver.set.load().names).finish()
    }
}

impl ServerTls {
    /// TLS 1.2 and 1.3, ALPN h2 then http/1.1, stateless resumption tickets and a session cache;
    /// with `client`, client certificates asked for (see [`client_verifier`]).
    /// A `client` whose verifier is missing (its CA broke since the config was read) asks for no
    /// certificate, so a request that needs one gets 400: closed, not open.
    pub fn new(
        set: CertSet,
        files: Vec<CertPair>,
        client: Option<(ClientAuth, Option<Arc<dyn ClientCertVerifier>>)>,
    ) -> Arc<ServerTls> {
        let resolver = Arc::new(SniResolver { set: ArcSwap::from_pointee(set) });
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let (builder, client) = match client {
            Some((auth, Some(v))) => (builder.with_client_cert_verifier(v), Some(auth)),
            Some((auth, None)) => (builder.with_no_client_auth(), Some(auth)),
            None => (builder.with_no_client_auth(), None),
        };
        let mut cfg = builder.with_cert_resolver(resolver.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        if let Ok(t) = rustls::crypto::ring::Ticketer::new() {
            cfg.ticketer = t;
        }
        Arc::new(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
            resolver,
            files: Mutex::new(files),
            client,
        })
    }

    /// Installs an already loaded set (a config change).
    pub fn replace(&self, set: CertSet, files: Vec<CertPair>) {
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) = files;
        self.resolver.set.store(Arc::new(set));
    }

    /// Re-reads the files. `Ok(true)`: new certificates are in use; `Ok(false)`: the files hold
    /// what is already served; `Err`: they are broken and the old certificates stay.
    pub fn reload(&self) -> Result<bool, FileError> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let set = CertSet::load(&files)?;
        if set.digest == self.resolver.set.load().digest {
            return Ok(false);
        }
        self.resolver.set.store(Arc::new(set));
        Ok(true)
    }

    pub fn files(&self) -> Vec<CertPair> {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn names(&self) -> Vec<String> {
        self.resolver.set.load().names.clone()
    }
}

/// The check of client certificates against `c.ca`: the handshake asks for one but completes
/// without (nginx answers a missing certificate at the HTTP level, 400, so does ferry); one that
/// does not chain to the CA ends the handshake.
pub fn client_verifier(c: &ClientAuth) -> Result<Arc<dyn ClientCertVerifier>, FileError> {
    let pem = read(&c.ca, "client CA bundle")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| file_error(&c.ca, format!("not a PEM certificate bundle: {e}")))?;
        roots.add(cert).map_err(|e| file_error(&c.ca, format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(file_error(&c.ca, "no CERTIFICATE block found"));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| file_error(&c.ca, format!("not usable to verify clients: {e}")))
}

/// What a request may know of the client certificate its connection presented
/// (`$ssl_client_*`).
#[derive(Debug, Clone, Default)]
pub struct ClientCert {
    /// nginx's RFC 2253 forms of the subject and issuer (`CN=alice,O=Shop`).
    pub subject: String,
    pub issuer: String,
    /// Hex, upper case.
    pub serial: String,
    /// SHA-1 of the DER, hex lower case.
    pub fingerprint: String,
    /// PEM, URL-escaped (`$ssl_client_escaped_cert`).
    pub escaped_pem: String,
}

impl ClientCert {
    /// The certificate (DER) a connection's client presented; `None` if it cannot be read.
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        use sha1::Digest;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let dn = |name: &x509_parser::x509::X509Name<'_>| {
            let rdns: Vec<String> = name
                .iter()
                .map(|rdn| {
                    rdn.iter()
                        .map(|a| {
                            let key =
                                x509_parser::objects::oid2abbrev(a.attr_type(), x509_parser::objects::oid_registry())
                                    .map(str::to_string)
                                    .unwrap_or_else(|_| a.attr_type().to_id_string());
                            let value = a.as_str().unwrap_or_default().replace(',', "\\,");
                            format!("{key}={value}")
                        })
                        .collect::<Vec<_>>()
                        .join("+")
                })
                .collect();
            rdns.into_iter().rev().collect::<Vec<_>>().join(",")
        };
        let fingerprint = sha1::Sha1::digest(der).iter().map(|b| format!("{b:02x}")).collect();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        let escaped_pem = pem
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        Some(ClientCert {
            subject: dn(cert.subject()),
            issuer: dn(cert.issuer()),
            serial: cert.raw_serial().iter().map(|b| format!("{b:02X}")).collect(),
            fingerprint,
            escaped_pem,
        })
    }
}

/// Loads every TLS listener's certificates and checks every upstream CA of `cfg`, reporting every
/// broken file. Returns the certificate sets by listener name.
pub fn load_files(cfg: &Config) -> Result<HashMap<String, CertSet>, FileErrors> {
    let mut sets = HashMap::new();
    let mut errors = Vec::new();
    for l in &cfg.listeners {
        if let Some(c) = l.tls.as_ref().and_then(|t| t.client.as_ref()) {
            if let Err(mut e) = client_verifier(c) {
                e.message = format!("listener `{}`: {}", l.name, e.message);
                errors.push(e);
            }
        }
        if let Some(t) = &l.tls {
            match CertSet::load(&t.certificates) {
                Ok(s) => {
                    sets.insert(l.name.clone(), s);
                }
                Err(mut e) => {
                    e.message = format!("listener `{}`: {}", l.name, e.message);
                    errors.push(e);
                }
            }
        }
    }
    for b in &cfg.backends {
        if let Some(t) = &b.tls {
            if let Err(mut e) = client_config(t) {
                e.message = format!("backend `{}`: {}", b.name, e.message);
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(sets)
    } else {
        Err(FileErrors(errors))
    }
}

/// A client config trusting only `t.ca` — or, with `insecure_skip_verify`, any certificate.
pub fn client_config(t: &UpstreamTls) -> Result<rustls::ClientConfig, FileError> {
    let Some(ca) = &t.ca else {
        return Ok(client_config_unverified());
    };
    let pem = read(ca, "CA bundle")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| file_error(ca, format!("not a PEM certificate bundle: {e}")))?;
        roots.add(c).map_err(|e| file_error(ca, format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(file_error(ca, "no CERTIFICATE block found"));
    }
    Ok(client_config_with_roots(roots))
}

/// `insecure_skip_verify`: any certificate is accepted (nginx's default `proxy_ssl_verify off`).
/// The handshake's signatures are still checked, so the connection is encrypted to whoever holds
/// the key of the certificate shown — which nobody vouches for.
fn client_config_unverified() -> rustls::ClientConfig {
    let provider = provider();
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// ALPN is left empty: hyper-rustls sets http/1.1 itself.
pub fn client_config_with_roots(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Reads a TLS ClientHello from `stream` without answering it: returns the server name it asks
/// for and every byte read, to be replayed to the upstream (passthrough). rustls parses it. A
/// stream that does not start with a TLS handshake record has no server name (and its first bytes
/// are returned the same way).
pub async fn read_client_hello<S>(stream: &mut S, max: usize) -> io::Result<(Option<String>, Vec<u8>)>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut acceptor = rustls::server::Acceptor::default();
    let mut buf = Vec::with_capacity(2048);
    loop {
        let start = buf.len();
        if start >= max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("ClientHello larger than {max} bytes")));
        }
        buf.resize(start + 2048.min(max - start), 0);
        let n = stream.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a complete ClientHello",
            ));
        }
        // Not a TLS handshake record at all (plain TCP): no server name, as nginx's ssl_preread
        // declines it, and the bytes go on to the listener's own backend.
        if start == 0 && buf[0] != 0x16 {
            return Ok((None, buf));
        }
        let mut rd = &buf[start..];
        while !rd.is_empty() {
            acceptor.read_tls(&mut rd)?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let name = accepted.client_hello().server_name().map(str::to_ascii_lowercase);
                return Ok((name, buf));
            }
            Ok(None) => continue,
            Err((e, _)) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("not a TLS ClientHello: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, tag: &str, names: &[&str]) -> CertPair {
        let c = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let (cert, key) = (dir.join(format!("{tag}.crt")), dir.join(format!("{tag}.key")));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        CertPair { cert, key }
    }

    fn leaf_names(ck: &CertifiedKey) -> Vec<String> {
        dns_names(&ck.cert[0]).unwrap()
    }

    #[test]
    fn selects_exact_then_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a", &["a.example.com"]);
        let w = pair(dir.path(), "w", &["*.apps.example.com"]);
        let set = CertSet::load(&[a, w]).unwrap();
        assert_eq!(leaf_names(set.select(Some("a.example.com"))), ["a.example.com"]);
        assert_eq!(leaf_names(set.select(Some("x.apps.example.com"))), ["*.apps.example.com"]);
        // One label only, and not the apex.
        assert_eq!(leaf_names(set.select(Some("y.x.apps.example.com"))), ["a.example.com"]);
        assert_eq!(leaf_names(set.select(Some("apps.example.com"))), ["a.example.com"]);
        assert_eq!(leaf_names(set.select(None)), ["a.example.com"]);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a", &["a.example.com"]);
        let b = pair(dir.path(), "b", &["b.example.com"]);
        let mixed = CertPair { cert: a.cert.clone(), key: b.key.clone() };
        let e = CertSet::load(&[mixed]).unwrap_err();
        assert!(e.to_string().contains("b.key") && e.message.contains("does not belong"), "{e}");
        std::fs::write(&a.key, "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n").unwrap();
        let e = CertSet::load(&[a]).unwrap_err();
        assert!(e.to_string().contains("a.key") && e.message.contains("private key"), "{e}");
    }
}
