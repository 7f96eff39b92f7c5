//! Client TLS for delivery: opportunistic (encrypt, accept any certificate,
//! as Postfix's `may`) and required (a certificate valid for the MX host name,
//! from the web PKI roots or the configured extra CA file).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};

/// The two client configurations.
pub struct ClientTls {
    pub opportunistic: Arc<ClientConfig>,
    pub verified: Arc<ClientConfig>,
}

impl ClientTls {
    pub fn new(extra_ca: Option<&Path>) -> Result<ClientTls> {
        crate::tls::install_crypto_provider();
        let provider = CryptoProvider::get_default().cloned().expect("crypto provider installed");
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(path) = extra_ca {
            let tls_error = |reason: String| Error::Tls { path: path.to_path_buf(), reason };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| tls_error(e.to_string()))? {
                let cert = cert.map_err(|e| tls_error(e.to_string()))?;
                roots.add(cert).map_err(|e| tls_error(e.to_string()))?;
            }
        }
        let verified = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let opportunistic = ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Ok(ClientTls { opportunistic: Arc::new(opportunistic), verified: Arc::new(verified) })
    }
}

/// Accepts any certificate but still checks the handshake signatures: the
/// channel is encrypted against passive listeners, as opportunistic TLS is.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
