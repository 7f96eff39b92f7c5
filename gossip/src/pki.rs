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
    let mut params = CertificateParams::new(vec![name.to_string(), MESH_NAME.to_string()]).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
}

/// A node certificate valid from yesterday for `days`.
pub fn issue_for_days(ca_key_pem: &str, name: &str, days: i64) -> Result<Pem, PkiError> {
    let now = OffsetDateTime::now_utc();
    issue(ca_key_pem, name, now - Duration::days(1), now + Duration::days(days))
}
