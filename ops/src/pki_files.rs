//! `magicmx mesh ca-init`, `issue`, `request`, `sign` and `install`: the
//! mesh CA and node certificates as files (keys readable by their owner
//! only). `issue` makes a node's key at the CA holder, for one operator's
//! own nodes; `request` → `sign` → `install` joins a stranger's node, whose
//! key is made where it is used and never travels: only the request and
//! the certificate do.

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
pub const NODE_REQUEST: &str = "node.csr";

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
    if !pki::valid_node_name(name) {
        bail!("node name {name:?}: use letters, digits, '-' and '.'");
    }
    let ca_key = read_ca_key(ca_dir)?;
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

fn read_ca_key(ca_dir: &Path) -> anyhow::Result<String> {
    let path = ca_dir.join(CA_KEY);
    fs::read_to_string(&path).with_context(|| {
        format!("cannot read the CA key {} (run `magicmx mesh ca-init` first)", path.display())
    })
}

/// `magicmx mesh request`: a new key (0600) and a certificate request for
/// node `name` in `dir`; the request is what goes to the CA holder.
pub fn request(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key_path = dir.join(NODE_KEY);
    if key_path.exists() {
        bail!("{} exists already: this directory has a key (use another, or remove it)", key_path.display());
    }
    let made = pki::request(name)?;
    write_secret(&key_path, &made.key)?;
    let request = dir.join(NODE_REQUEST);
    fs::write(&request, made.cert).with_context(|| format!("cannot write {}", request.display()))?;
    Ok(request)
}

/// `magicmx mesh sign`: the certificate for `request`, signed by the CA in
/// `ca_dir`, written to `out` (default: NAME.pem beside the request) with
/// the CA certificate after it (what `install` takes). The node's name and
/// where the certificate went.
pub fn sign(
    request: &Path,
    ca_dir: &Path,
    out: Option<&Path>,
    days: i64,
) -> anyhow::Result<(String, PathBuf)> {
    let text = fs::read_to_string(request).with_context(|| format!("cannot read {}", request.display()))?;
    let (name, cert) = pki::sign_request(&read_ca_key(ca_dir)?, &text, days)
        .with_context(|| request.display().to_string())?;
    let ca_path = ca_dir.join(CA_CERT);
    let ca = fs::read_to_string(&ca_path).with_context(|| format!("cannot read {}", ca_path.display()))?;
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| request.with_file_name(format!("{name}.pem")));
    fs::write(&out, format!("{cert}{ca}")).with_context(|| format!("cannot write {}", out.display()))?;
    Ok((name, out))
}

/// `magicmx mesh install`: checks that `signed` (from `sign`) is for the
/// key in `dir` and chains to the CA it carries (or to `dir`'s own
/// mesh-ca.pem, which must be the same), then writes node.pem and
/// mesh-ca.pem there. The CA's fingerprint, to compare with the CA holder's.
pub fn install(signed: &Path, dir: &Path) -> anyhow::Result<String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::CertificateDer::pem_file_iter(signed)
            .with_context(|| format!("cannot read {}", signed.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: not PEM certificates", signed.display()))?;
    let [cert, ca] = certs.as_slice() else {
        bail!(
            "{}: expected the node certificate and the CA certificate (as `magicmx mesh sign` writes)",
            signed.display()
        )
    };
    let own_ca = dir.join(CA_CERT);
    if own_ca.exists() {
        let known = rustls::pki_types::CertificateDer::from_pem_file(&own_ca)
            .with_context(|| format!("{}: no PEM certificate", own_ca.display()))?;
        if known.as_ref() != ca.as_ref() {
            bail!("{} was signed by another CA than {}", signed.display(), own_ca.display());
        }
    }
    let key_path = dir.join(NODE_KEY);
    let key = fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read {} (made by `magicmx mesh request`)", key_path.display()))?;
    pki::check_issued(ca, cert, &key).with_context(|| signed.display().to_string())?;
    let blocks = pem_blocks(&fs::read_to_string(signed)?);
    fs::write(dir.join(NODE_CERT), &blocks[0]).context("cannot write node.pem")?;
    fs::write(&own_ca, &blocks[1]).context("cannot write mesh-ca.pem")?;
    let digest = magicmx_gossip::tls::sha256(ca);
    Ok(digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

/// The `-----BEGIN …-----` to `-----END …-----` blocks of a PEM text, each
/// with its line end.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = &mut current {
            block.push_str(line.trim_end());
            block.push('\n');
        }
        if line.starts_with("-----END ") {
            blocks.extend(current.take());
        }
    }
    blocks
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
