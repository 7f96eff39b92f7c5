//! Revocations that spread. The mesh CA's holder signs "the certificate
//! with this SHA-256 is revoked" (`magicmx mesh revoke`); a node takes it
//! in from its admin API or from a peer, checks the CA's signature against
//! its own copy of the CA certificate (a member's word alone revokes no
//! one), keeps it on disk, and passes it on to every member at once and to
//! each member that comes up later. Every node then refuses the revoked
//! member's connections and drops its counts, penalties and standing.
//!
//! On disk and on the command line a revocation is one line:
//! `magicmx-revocation:v1:<sha256 hex>:<unix ms>:<signature hex>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use magicmx_proto::wire::Revocation;
use rustls::pki_types::CertificateDer;

/// Revocations kept at most; a mesh revokes far fewer members than this.
pub const MAX_REVOCATIONS: usize = 4096;

const PREFIX: &str = "magicmx-revocation:v1:";

/// Signs the revocation of the certificate with `cert_sha256` with the CA
/// key in `ca_key_pem`, at `at_ms`.
pub fn sign(ca_key_pem: &str, cert_sha256: [u8; 32], at_ms: u64) -> Result<Revocation, String> {
    use rcgen::SigningKey;
    let key = rcgen::KeyPair::from_pem(ca_key_pem).map_err(|e| format!("the CA key: {e}"))?;
    let signature = key
        .sign(&Revocation::signed_bytes(&cert_sha256, at_ms))
        .map_err(|e| format!("signing with the CA key: {e}"))?;
    Ok(Revocation { cert_sha256, at_ms, signature })
}

/// Whether the mesh CA (`ca`, its certificate) signed `revocation`.
pub fn verify(ca: &CertificateDer<'_>, revocation: &Revocation) -> bool {
    let Ok(ca) = webpki::EndEntityCert::try_from(ca) else { return false };
    let signed = Revocation::signed_bytes(&revocation.cert_sha256, revocation.at_ms);
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .signature_verification_algorithms
        .all
        .iter()
        .any(|alg| ca.verify_signature(*alg, &signed, &revocation.signature).is_ok())
}

/// The one-line form.
pub fn to_text(revocation: &Revocation) -> String {
    format!("{PREFIX}{}:{}:{}", hex(&revocation.cert_sha256), revocation.at_ms, hex(&revocation.signature))
}

/// Reads the one-line form.
pub fn from_text(line: &str) -> Result<Revocation, String> {
    let bad = || format!("not a revocation (expected {PREFIX}SHA256:MS:SIGNATURE): {line:?}");
    let rest = line.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
    let mut parts = rest.split(':');
    let (Some(sha), Some(at), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let cert_sha256: [u8; 32] = unhex(sha).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
    let at_ms = at.parse().map_err(|_| bad())?;
    let signature = unhex(sig).filter(|s| !s.is_empty() && s.len() <= 512).ok_or_else(bad)?;
    Ok(Revocation { cert_sha256, at_ms, signature })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The revocations a node holds, by certificate, kept in a file of lines.
pub struct Revocations {
    by_cert: BTreeMap<[u8; 32], Revocation>,
    file: Option<PathBuf>,
}

impl Revocations {
    /// Those in `file` (none when it does not exist yet); lines that do not
    /// read are skipped with a warning.
    pub fn load(file: Option<PathBuf>) -> Revocations {
        let mut by_cert = BTreeMap::new();
        if let Some(text) = file.as_deref().and_then(|f| std::fs::read_to_string(f).ok()) {
            for line in text.lines().filter(|l| !l.trim().is_empty()).take(MAX_REVOCATIONS) {
                match from_text(line) {
                    Ok(r) => {
                        by_cert.insert(r.cert_sha256, r);
                    }
                    Err(error) => tracing::warn!(%error, "revocation file: line skipped"),
                }
            }
        }
        Revocations { by_cert, file }
    }

    pub fn contains(&self, cert_sha256: &[u8; 32]) -> bool {
        self.by_cert.contains_key(cert_sha256)
    }

    /// Keeps `revocation` (already verified); false when it was known, or
    /// the table is full. Written to the file before this returns.
    pub fn add(&mut self, revocation: Revocation) -> Result<bool, std::io::Error> {
        if self.contains(&revocation.cert_sha256) || self.by_cert.len() >= MAX_REVOCATIONS {
            return Ok(false);
        }
        self.by_cert.insert(revocation.cert_sha256, revocation);
        if let Some(file) = &self.file {
            save(file, self.by_cert.values())?;
        }
        Ok(true)
    }

    pub fn all(&self) -> Vec<Revocation> {
        self.by_cert.values().cloned().collect()
    }

    pub fn certs(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.by_cert.keys()
    }
}

/// Writes every line to a new file, syncs it and moves it into place.
fn save<'a>(file: &Path, all: impl Iterator<Item = &'a Revocation>) -> Result<(), std::io::Error> {
    use std::io::Write;
    let temporary = file.with_extension("new");
    let mut out = std::fs::File::create(&temporary)?;
    for revocation in all {
        writeln!(out, "{}", to_text(revocation))?;
    }
    out.sync_all()?;
    std::fs::rename(&temporary, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (rcgen::KeyPair, CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (key, cert.der().clone())
    }

    #[test]
    fn only_the_mesh_ca_s_signature_revokes() {
        let (key, cert) = ca();
        let (other_key, _) = ca();
        let signed = sign(&key.serialize_pem(), [7; 32], 1_000).unwrap();
        assert!(verify(&cert, &signed));
        let line = to_text(&signed);
        assert_eq!(from_text(&line), Ok(signed.clone()));
        // Another CA's key, another certificate or time under the same
        // signature, a cut signature: refused.
        assert!(!verify(&cert, &sign(&other_key.serialize_pem(), [7; 32], 1_000).unwrap()));
        assert!(!verify(&cert, &Revocation { cert_sha256: [8; 32], ..signed.clone() }));
        assert!(!verify(&cert, &Revocation { at_ms: 1_001, ..signed.clone() }));
        let mut cut = signed.clone();
        cut.signature.pop();
        assert!(!verify(&cert, &cut));
        assert!(from_text("magicmx-revocation:v1:zz:1:00").is_err());
    }

    #[test]
    fn revocations_are_kept_on_disk_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revoked");
        let (key, _) = ca();
        let mut kept = Revocations::load(Some(file.clone()));
        let first = sign(&key.serialize_pem(), [1; 32], 5).unwrap();
        assert!(kept.add(first.clone()).unwrap());
        assert!(!kept.add(first.clone()).unwrap(), "known already");
        let again = Revocations::load(Some(file.clone()));
        assert!(again.contains(&[1; 32]));
        let mut full = Revocations { by_cert: BTreeMap::new(), file: None };
        for n in 0..MAX_REVOCATIONS + 10 {
            let mut r = first.clone();
            r.cert_sha256[..8].copy_from_slice(&(n as u64).to_be_bytes());
            full.add(r).unwrap();
        }
        assert_eq!(full.all().len(), MAX_REVOCATIONS);
    }
}
