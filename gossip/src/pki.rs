//! The mesh's certificates: a mesh CA, and node certificates it signs (rcgen).
//! Every node certificate names the node and carries the shared name
//! [`MESH_NAME`], which nodes verify when they dial a peer by address.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The DNS name every node certificate carries and every dialer checks.
pub const MESH_NAME: &str = "magicmx-mesh";

/// A certificate and its private key, PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
#[error("certificate: {0}")]
pub struct PkiError(String);

fn err(e: impl std::fmt::Display) -> PkiError {
    PkiError(e.to_string())
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "magicmx mesh CA");
    name.push(DnType::OrganizationName, "magicmx");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A new mesh CA, valid for `years`.
pub fn new_ca(years: i64) -> Result<Pem, PkiError> {
    let key = KeyPair::generate().map_err(err)?;
    let mut params = ca_params();
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(365 * years);
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

/// A node certificate for `name`, signed by the CA whose key is `ca_key_pem`,
/// valid from `not_before` to `not_after`.
pub fn issue(
    ca_key_pem: &str,
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Pem, PkiError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(err)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let key = KeyPair::generate().map_err(err)?;
    let cert = node_params(name, not_before, not_after)?.signed_by(&key, &issuer).map_err(err)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

/// What every node certificate says: its name and [`MESH_NAME`], for
/// both ends of a connection, valid from `not_before` to `not_after`.
fn node_params(
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(vec![name.to_string(), MESH_NAME.to_string()]).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = not_before;
    params.not_after = not_after;
    Ok(params)
}

/// Whether `name` can name a node: letters, digits, '-' and '.'.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// A new key and a certificate request (PKCS#10) naming `name`, both PEM
/// (`cert` holds the request): made on the joining node, whose key never
/// leaves it.
pub fn request(name: &str) -> Result<Pem, PkiError> {
    if !valid_node_name(name) {
        return Err(err(format!("node name {name:?}: use letters, digits, '-' and '.'")));
    }
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(vec![name.to_string()]).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, name);
    let request = params.serialize_request(&key).map_err(err)?;
    Ok(Pem { cert: request.pem().map_err(err)?, key: key.serialize_pem() })
}

/// Issues a node certificate for the request `request_pem` with the CA key
/// `ca_key_pem`, valid from yesterday for `days`: the request's own
/// signature must verify (its maker holds the key) and its common name
/// must be a node name. Nothing else it asks for is taken: the
/// certificate says what [`issue`]'s say. The node's name and the
/// certificate, PEM.
pub fn sign_request(ca_key_pem: &str, request_pem: &str, days: i64) -> Result<(String, String), PkiError> {
    let request = rcgen::CertificateSigningRequestParams::from_pem(request_pem)
        .map_err(|e| err(format!("the request does not read or its signature does not verify: {e}")))?;
    let name = match request.params.distinguished_name.get(&DnType::CommonName) {
        Some(rcgen::DnValue::Utf8String(name)) => name.clone(),
        Some(rcgen::DnValue::PrintableString(name)) => name.as_str().to_string(),
        _ => return Err(err("the request names no node (no common name)")),
    };
    if !valid_node_name(&name) {
        return Err(err(format!("the request's name {name:?} is not a node name")));
    }
    let issuer = Issuer::new(ca_params(), KeyPair::from_pem(ca_key_pem).map_err(err)?);
    let now = OffsetDateTime::now_utc();
    let params = node_params(&name, now - Duration::days(1), now + Duration::days(days))?;
    let signed = rcgen::CertificateSigningRequestParams { params, public_key: request.public_key };
    Ok((name, signed.signed_by(&issuer).map_err(err)?.pem()))
}

/// Checks that the node certificate `cert` chains to the CA certificate
/// `ca`, and that `key_pem` is its private key (a message signed with the
/// key verifies under the certificate).
pub fn check_issued(
    ca: &rustls::pki_types::CertificateDer<'_>,
    cert: &rustls::pki_types::CertificateDer<'_>,
    key_pem: &str,
) -> Result<(), PkiError> {
    use rcgen::SigningKey;
    let anchor =
        webpki::anchor_from_trusted_cert(ca).map_err(|e| err(format!("the CA certificate: {e:?}")))?;
    let node = webpki::EndEntityCert::try_from(cert).map_err(|e| err(format!("the certificate: {e:?}")))?;
    let algorithms = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
    let now = rustls::pki_types::UnixTime::now();
    node.verify_for_usage(algorithms.all, &[anchor], &[], now, webpki::KeyUsage::client_auth(), None, None)
        .map_err(|e| err(format!("the certificate is not valid under this mesh's CA: {e:?}")))?;
    let key = KeyPair::from_pem(key_pem).map_err(err)?;
    let probe = b"magicmx: does this key belong to this certificate?";
    let signature = key.sign(probe).map_err(err)?;
    if !algorithms.all.iter().any(|alg| node.verify_signature(*alg, probe, &signature).is_ok()) {
        return Err(err("the certificate is not for this node's key (was it made from another request?)"));
    }
    Ok(())
}

/// A node certificate valid from yesterday for `days`.
pub fn issue_for_days(ca_key_pem: &str, name: &str, days: i64) -> Result<Pem, PkiError> {
    let now = OffsetDateTime::now_utc();
    issue(ca_key_pem, name, now - Duration::days(1), now + Duration::days(days))
}
