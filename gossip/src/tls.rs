//! Mutual TLS for the mesh, inside QUIC: each node presents its certificate
//! and accepts only peers whose certificate chains to the mesh CA, is within
//! its validity, and is not revoked by fingerprint. ALPN is `magicmx/1`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest::{digest, SHA256};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::counts::Fingerprint;
use crate::Error;

pub const ALPN: &[u8] = b"magicmx/1";

/// SHA-256s of the certificates refused at the handshake; revocations that
/// arrive while the node runs are added to it.
pub type RevokedSet = Arc<std::sync::RwLock<std::collections::HashSet<[u8; 32]>>>;

/// The QUIC configurations of one node.
pub struct MeshTls {
    pub server: quinn::ServerConfig,
    pub client: quinn::ClientConfig,
    pub fingerprint: Fingerprint,
}

/// SHA-256 of a certificate's DER.
pub fn sha256(cert: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, cert).as_ref());
    out
}

/// The origin id of a certificate: the first half of its SHA-256.
pub fn fingerprint(cert: &[u8]) -> Fingerprint {
    let mut out = [0u8; 16];
    out.copy_from_slice(&sha256(cert)[..16]);
    out
}

/// A SHA-256 fingerprint as written in `mesh.revoked`: hex, colons optional.
pub fn parse_revoked(text: &str) -> Option<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub fn load(
    ca: &Path,
    cert: &Path,
    key: &Path,
    revoked: RevokedSet,
    idle: Duration,
) -> Result<MeshTls, Error> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tls_err = |path: &Path, e: String| Error::Tls(format!("{}: {e}", path.display()));
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(ca).map_err(|e| tls_err(ca, e.to_string()))? {
        roots.add(der.map_err(|e| tls_err(ca, e.to_string()))?).map_err(|e| tls_err(ca, e.to_string()))?;
    }
    let roots = Arc::new(roots);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(cert, e.to_string()))?;
    let own = chain.first().ok_or_else(|| tls_err(cert, "no certificate".into()))?;
    let fingerprint = fingerprint(own);
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, e.to_string()))?;

    let client_verifier =
        WebPkiClientVerifier::builder(roots.clone()).build().map_err(|e| Error::Tls(e.to_string()))?;
    let mut server = rustls::ServerConfig::builder()
        .with_client_cert_verifier(Arc::new(RevocableClient {
            inner: client_verifier,
            revoked: revoked.clone(),
        }))
        .with_single_cert(chain.clone(), key_der.clone_key())
        .map_err(|e| tls_err(cert, e.to_string()))?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let server_verifier =
        WebPkiServerVerifier::builder(roots).build().map_err(|e| Error::Tls(e.to_string()))?;
    let mut client = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RevocableServer { inner: server_verifier, revoked }))
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| tls_err(cert, e.to_string()))?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle.try_into().map_err(|_| Error::Tls("idle time-out too long".into()))?));
    transport.keep_alive_interval(Some(idle / 3));
    // What one connection can make this node buffer: 16 MiB unread in all,
    // 16 streams open at once (one frame each).
    transport.receive_window(quinn::VarInt::from_u32(16 * 1024 * 1024));
    transport.stream_receive_window(quinn::VarInt::from_u32(4 * 1024 * 1024));
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(16));
    let transport = Arc::new(transport);

    let quic_server =
        quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(|e| Error::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic_server));
    server.transport_config(transport.clone());
    let quic_client =
        quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(|e| Error::Tls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(quic_client));
    client.transport_config(transport);
    Ok(MeshTls { server, client, fingerprint })
}

/// The handshake-signature methods both verifiers hand to their inner
/// web-PKI verifier unchanged.
macro_rules! delegate_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

fn check_revoked(revoked: &RevokedSet, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    if revoked.read().unwrap().contains(&sha256(cert)) {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
    }
    Ok(())
}

/// The web PKI server verifier, plus the revocation list.
#[derive(Debug)]
struct RevocableServer {
    inner: Arc<WebPkiServerVerifier>,
    revoked: RevokedSet,
}

impl ServerCertVerifier for RevocableServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_revoked(&self.revoked, end_entity)?;
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    delegate_signatures!();
}

/// The web PKI client verifier, plus the revocation list.
#[derive(Debug)]
struct RevocableClient {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: RevokedSet,
}

impl ClientCertVerifier for RevocableClient {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_revoked(&self.revoked, end_entity)?;
        self.inner.verify_client_cert(end_entity, intermediates, now)
    }

    delegate_signatures!();
}
