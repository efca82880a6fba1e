//! Loading TLS settings from PEM files, for servers and clients: a server certificate that can
//! be replaced while the server runs ([`ReloadableCert`]), and clients that trust the system's
//! certificate authorities ([`system_client_config`]) or given ones ([`client_config`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration's start: our crypto provider and its safe protocol versions.
fn server_builder() -> io::Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier>>
{
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Parses every certificate in a PEM document.
///
/// # Errors
/// When the PEM is malformed or holds no certificate.
pub fn certs_from_pem(pem: &[u8]) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut &pem[..]).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(invalid("no certificate found in PEM".into()));
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM document.
///
/// # Errors
/// When the PEM is malformed or holds no key.
pub fn key_from_pem(pem: &[u8]) -> io::Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut &pem[..])?
        .ok_or_else(|| invalid("no private key found in PEM".into()))
}

/// A server configuration from a PEM certificate chain and key.
///
/// # Errors
/// When either PEM is malformed or the key does not match the certificate.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<Arc<rustls::ServerConfig>> {
    let config = server_builder()?
        .with_no_client_auth()
        .with_single_cert(certs_from_pem(cert_pem)?, key_from_pem(key_pem)?)
        .map_err(|e| invalid(format!("certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// A server configuration from a PEM certificate chain and key that asks clients for a
/// certificate and verifies it against the CAs in `client_ca_pem`. With `required` a client
/// without one fails the TLS handshake; without, it may connect anonymously (a certificate
/// it does present must still verify). Handlers see the verified certificate through
/// [`Sock::peer_certificate`](crate::Sock::peer_certificate).
///
/// # Errors
/// When a PEM is malformed, a CA is not a valid trust anchor, or the key does not match.
pub fn server_config_verifying_clients(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
    required: bool,
) -> io::Result<Arc<rustls::ServerConfig>> {
    let config = server_builder()?
        .with_client_cert_verifier(client_verifier(client_ca_pem, required)?)
        .with_single_cert(certs_from_pem(cert_pem)?, key_from_pem(key_pem)?)
        .map_err(|e| invalid(format!("certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// Verifies client certificates against the CAs in `client_ca_pem`; with `required`, a
/// client without one is turned away.
fn client_verifier(
    client_ca_pem: &[u8],
    required: bool,
) -> io::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem(client_ca_pem)? {
        roots.add(cert).map_err(|e| invalid(format!("client CA: {e}")))?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let verifier = if required { verifier } else { verifier.allow_unauthenticated() };
    verifier.build().map_err(|e| invalid(format!("client CA: {e}")))
}

/// A client configuration that trusts the certificates in `ca_pem` and presents the
/// certificate chain and key in `cert_pem` and `key_pem` to servers that ask for one.
///
/// # Errors
/// When a PEM is malformed, a certificate is not a valid trust anchor, or the key does not
/// match.
pub fn client_config_with_cert(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> io::Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs_from_pem(cert_pem)?, key_from_pem(key_pem)?)
        .map_err(|e| invalid(format!("client certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

fn roots(ca_pem: &[u8]) -> io::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem(ca_pem)? {
        roots.add(cert).map_err(|e| invalid(format!("trust anchor: {e}")))?;
    }
    Ok(roots)
}

/// A client configuration that trusts the certificates in `ca_pem`, and no others.
///
/// # Errors
/// When the PEM is malformed or a certificate is not a valid trust anchor.
pub fn client_config(ca_pem: &[u8]) -> io::Result<Arc<rustls::ClientConfig>> {
    client_config_with_roots(roots(ca_pem)?)
}

/// The system's certificate authorities: the platform's store (on Linux the OpenSSL
/// locations, such as `/etc/ssl/certs`), or the file and folders `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` name when set.
///
/// # Errors
/// When no usable certificate is found (a container without a CA bundle, say).
pub fn system_roots() -> io::Result<rustls::RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no system certificate authorities found{why}"),
        ));
    }
    Ok(roots)
}

/// A client configuration that trusts the system's certificate authorities
/// ([`system_roots`]), as a browser or curl does.
///
/// # Errors
/// As [`system_roots`].
pub fn system_client_config() -> io::Result<Arc<rustls::ClientConfig>> {
    client_config_with_roots(system_roots()?)
}

fn client_config_with_roots(roots: rustls::RootCertStore) -> io::Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server certificate and key read from PEM files, which can be read again while servers
/// use it: [`reload`](Self::reload) on a signal, [`watch`](Self::watch) to poll the files.
/// New TLS connections get the certificate in use when they start; open ones keep theirs.
/// A file that cannot be used (half written, a key that does not match) leaves the
/// certificate in use as it was.
///
/// # Examples
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// use gotalk::tls::ReloadableCert;
///
/// let cert = ReloadableCert::load("/etc/gotalk/cert.pem", "/etc/gotalk/key.pem")?;
/// let tls = cert.server_config()?; // give it to the servers, as `server_config`'s
/// cert.watch(std::time::Duration::from_secs(10)); // picks up a renewed certificate
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as last read, used or not, so that [`watch`](Self::watch) parses (and
    /// reports) each new content once; `None` after a failed read.
    seen: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl ReloadableCert {
    /// Reads the PEM certificate chain at `cert` and the private key at `key`.
    ///
    /// # Errors
    /// When a file cannot be read, a PEM is malformed, or the key does not match the
    /// certificate.
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> io::Result<Arc<Self>> {
        let (cert_path, key_path) = (cert.into(), key.into());
        let files = read_pair(&cert_path, &key_path)?;
        let certified = certified_key(&files.0, &files.1)?;
        Ok(Arc::new(ReloadableCert {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(certified)),
            seen: Mutex::new(Some(files)),
        }))
    }

    /// A server configuration that presents the certificate in use at each handshake.
    ///
    /// # Errors
    /// When the crypto provider offers no safe protocol version (not with the default one).
    pub fn server_config(self: &Arc<Self>) -> io::Result<Arc<rustls::ServerConfig>> {
        let config = server_builder()?.with_no_client_auth().with_cert_resolver(self.clone());
        Ok(Arc::new(config))
    }

    /// As [`server_config`](Self::server_config), asking clients for a certificate as
    /// [`server_config_verifying_clients`] does.
    ///
    /// # Errors
    /// When the CA PEM is malformed or holds no valid trust anchor.
    pub fn server_config_verifying_clients(
        self: &Arc<Self>,
        client_ca_pem: &[u8],
        required: bool,
    ) -> io::Result<Arc<rustls::ServerConfig>> {
        let config = server_builder()?
            .with_client_cert_verifier(client_verifier(client_ca_pem, required)?)
            .with_cert_resolver(self.clone());
        Ok(Arc::new(config))
    }

    /// Reads both files again and, when they hold a usable certificate and key, puts them in
    /// use.
    ///
    /// # Errors
    /// As [`load`](Self::load); the certificate in use stays.
    pub fn reload(&self) -> io::Result<()> {
        self.read(false).map(drop)
    }

    /// As [`reload`](Self::reload), but only when the files changed since they were last
    /// read; returns whether the certificate was replaced. A content that failed is reported
    /// once, not at every call.
    ///
    /// # Errors
    /// As [`load`](Self::load), for a content not seen before; the certificate in use stays.
    pub fn reload_if_changed(&self) -> io::Result<bool> {
        self.read(true)
    }

    fn read(&self, only_changed: bool) -> io::Result<bool> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let files = match read_pair(&self.cert_path, &self.key_path) {
            Ok(files) => files,
            Err(_) if only_changed && seen.is_none() => return Ok(false),
            Err(e) => {
                *seen = None;
                return Err(e);
            }
        };
        if only_changed && seen.as_ref() == Some(&files) {
            return Ok(false);
        }
        let parsed = certified_key(&files.0, &files.1);
        *seen = Some(files);
        let certified = parsed?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        Ok(true)
    }

    /// Polls the files every `every` on a tokio task, putting a changed certificate in use
    /// and logging (with `tracing`) what was replaced or refused. The task ends when the
    /// certificate is dropped, or with the handle's `abort`.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let cert: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(cert) = cert.upgrade() else { return };
                cert.log_reload(cert.reload_if_changed(), "changed on disk");
            }
        })
    }

    /// Logs the outcome of a reload, `why` it was tried.
    pub fn log_reload(&self, outcome: io::Result<bool>, why: &str) {
        let cert = self.cert_path.display();
        match outcome {
            Ok(true) => tracing::info!(%cert, "TLS certificate reloaded: {why}"),
            Ok(false) => {}
            Err(e) => tracing::error!(
                %cert,
                "TLS certificate not reloaded ({why}), the one in use stays: {e}"
            ),
        }
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

fn read_pair(cert: &Path, key: &Path) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    Ok((read(cert)?, read(key)?))
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<CertifiedKey> {
    CertifiedKey::from_der(certs_from_pem(cert_pem)?, key_from_pem(key_pem)?, &provider())
        .map_err(|e| invalid(format!("certificate and key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pems() -> (String, String) {
        let names = vec!["localhost".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        (certified.cert.pem(), certified.key_pair.serialize_pem())
    }

    fn in_use(cert: &ReloadableCert) -> Vec<u8> {
        cert.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn the_system_store_has_certificate_authorities() {
        // This machine has a CA bundle (scripts/setup.sh installs ca-certificates).
        assert!(!system_roots().unwrap().is_empty());
        assert!(system_client_config().is_ok());
    }

    #[test]
    fn a_reload_swaps_in_a_good_pair_and_keeps_the_old_one_otherwise() {
        let dir = std::env::temp_dir().join(format!("gotalk-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        let (a, b) = (pems(), pems());
        let der = |pem: &str| certs_from_pem(pem.as_bytes()).unwrap()[0].to_vec();
        std::fs::write(&cert_path, &a.0).unwrap();
        std::fs::write(&key_path, &a.1).unwrap();
        let cert = ReloadableCert::load(&cert_path, &key_path).unwrap();
        assert_eq!(in_use(&cert), der(&a.0));
        assert!(!cert.reload_if_changed().unwrap(), "nothing changed");

        // B's certificate with A's key: refused, A stays; reported once.
        std::fs::write(&cert_path, &b.0).unwrap();
        assert!(cert.reload_if_changed().is_err());
        assert!(!cert.reload_if_changed().unwrap());
        assert!(cert.reload().is_err(), "an explicit reload reports it again");
        assert_eq!(in_use(&cert), der(&a.0));

        std::fs::write(&key_path, &b.1).unwrap();
        assert!(cert.reload_if_changed().unwrap());
        assert_eq!(in_use(&cert), der(&b.0));

        // A missing file and garbage keep B.
        std::fs::remove_file(&key_path).unwrap();
        assert!(cert.reload_if_changed().is_err());
        assert!(!cert.reload_if_changed().unwrap());
        std::fs::write(&key_path, "not a key").unwrap();
        assert!(cert.reload_if_changed().is_err());
        assert_eq!(in_use(&cert), der(&b.0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
