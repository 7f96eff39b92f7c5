//! `magicmx mesh ca-init` and `magicmx mesh issue`: the mesh CA and node
//! certificates as files (keys readable by their owner only).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use magicmx_gossip::pki;

pub const CA_CERT: &str = "mesh-ca.pem";
pub const CA_KEY: &str = "mesh-ca.key";
pub const NODE_CERT: &str = "node.pem";
pub const NODE_KEY: &str = "node.key";

/// Writes a new CA into `dir`; refuses to overwrite one.
pub fn ca_init(dir: &Path) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cert = dir.join(CA_CERT);
    if cert.exists() {
        bail!("{} exists already: a mesh has one CA (remove it to start a new mesh)", cert.display());
    }
    let ca = pki::new_ca(10)?;
    write_secret(&dir.join(CA_KEY), &ca.key)?;
    fs::write(&cert, ca.cert).with_context(|| format!("cannot write {}", cert.display()))?;
    Ok(cert)
}

/// Issues a certificate for node `name` with the CA in `ca_dir`, into `out`
/// (with a copy of the CA certificate, which the node needs too).
pub fn issue(ca_dir: &Path, name: &str, out: &Path, days: i64) -> anyhow::Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        bail!("node name {name:?}: use letters, digits, '-' and '.'");
    }
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_key = fs::read_to_string(&ca_key_path).with_context(|| {
        format!("cannot read the CA key {} (run `magicmx mesh ca-init` first)", ca_key_path.display())
    })?;
    let issued = pki::issue_for_days(&ca_key, name, days)?;
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_secret(&out.join(NODE_KEY), &issued.key)?;
    fs::write(out.join(NODE_CERT), issued.cert).context("cannot write the node certificate")?;
    if ca_dir.canonicalize().ok() != out.canonicalize().ok() {
        fs::copy(ca_dir.join(CA_CERT), out.join(CA_CERT)).context("cannot copy the CA certificate")?;
    }
    Ok(())
}

/// The SHA-256 fingerprint of the (first) certificate in the PEM file
/// `cert`, as hex pairs joined by colons (as `openssl x509 -fingerprint
/// -sha256` prints it, and as `mesh.revoked` takes it).
pub fn fingerprint(cert: &Path) -> anyhow::Result<String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(cert)
        .with_context(|| format!("{}: no PEM certificate", cert.display()))?;
    let digest = magicmx_gossip::tls::sha256(&der);
    Ok(digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// `magicmx mesh revoke`: signs the revocation of the certificate with
/// fingerprint `what` with the CA key in `ca` (or takes `what` as a signed
/// line), prints its line, and hands it to the node behind `client`.
pub fn revoke(client: &crate::client::AdminClient, what: &str, ca: Option<&Path>) -> anyhow::Result<()> {
    use magicmx_gossip::revocation;
    let signed = match revocation::from_text(what) {
        Ok(signed) => signed,
        Err(_) => {
            let Some(sha) = magicmx_gossip::tls::parse_revoked(what) else {
                anyhow::bail!("{what:?} is neither a SHA-256 fingerprint (magicmx mesh fingerprint) nor a revocation line");
            };
            let Some(ca) = ca else { anyhow::bail!("--ca DIR is needed to sign a revocation") };
            let key_path = ca.join(CA_KEY);
            let key = std::fs::read_to_string(&key_path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
            revocation::sign(&key, sha, now).map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?
        }
    };
    let line = revocation::to_text(&signed);
    println!("{line}");
    client.post("/mesh/revoke", &crate::admin::revoke::RevokeJson { revocation: line })?;
    println!("revoked; the node passes it on to every member");
    Ok(())
}
