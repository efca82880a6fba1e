//! Loading TLS settings from PEM files, for servers and clients.

use std::io;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
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
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem(client_ca_pem)? {
        roots.add(cert).map_err(|e| invalid(format!("client CA: {e}")))?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let verifier = if required { verifier } else { verifier.allow_unauthenticated() };
    let verifier = verifier.build().map_err(|e| invalid(format!("client CA: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs_from_pem(cert_pem)?, key_from_pem(key_pem)?)
        .map_err(|e| invalid(format!("certificate and key: {e}")))?;
    Ok(Arc::new(config))
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

/// A client configuration that trusts the certificates in `ca_pem`.
///
/// # Errors
/// When the PEM is malformed or a certificate is not a valid trust anchor.
pub fn client_config(ca_pem: &[u8]) -> io::Result<Arc<rustls::ClientConfig>> {
    let roots = roots(ca_pem)?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
