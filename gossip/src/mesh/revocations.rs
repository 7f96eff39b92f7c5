//! The mesh's side of revocations (`crate::revocation` has the record):
//! one taken in from the admin API or a peer is checked against the mesh
//! CA, kept on disk, applied at once (the member's connections closed,
//! its handshakes refused, its counts, penalties and standing dropped) and
//! passed to every member, so it reaches the whole mesh within one gossip
//! interval; a member that comes up later gets every revocation first.

use std::path::Path;
use std::sync::Arc;

use magicmx_proto::wire::{encode, Frame, Revocation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::{Mesh, Shared};
use crate::counts::{short, Fingerprint};
use crate::revocation::{self, MAX_REVOCATIONS};
use crate::tally::now_ms;
use crate::Error;

/// The mesh CA's certificate (the first in its file).
pub(super) fn ca_certificate(path: &Path) -> Result<CertificateDer<'static>, Error> {
    let tls_err = |e: String| Error::Tls(format!("{}: {e}", path.display()));
    CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(e.to_string()))?
        .next()
        .ok_or_else(|| tls_err("no certificate".into()))?
        .map_err(|e| tls_err(e.to_string()))
}

impl Mesh {
    /// Takes in a revocation given to this node (its admin API): refused
    /// unless the mesh CA signed it; true when it is new here.
    pub fn revoke(&self, revocation: Revocation) -> Result<bool, String> {
        if !revocation::verify(&self.shared.ca, &revocation) {
            return Err("not signed by this mesh's CA".into());
        }
        self.shared.apply_revocation(revocation)
    }

    /// The revocations this node holds.
    pub fn revocations(&self) -> Vec<Revocation> {
        self.shared.revocations.lock().unwrap().all()
    }
}

impl Shared {
    /// Revocations passed on by `from`: each new one the CA signed is
    /// applied; one it did not sign costs `from` its standing and ends the
    /// frame, so a flood of forgeries costs one signature check a frame.
    pub(super) fn take_revocations(&self, from: Fingerprint, list: Vec<Revocation>) {
        for revocation in list.into_iter().take(MAX_REVOCATIONS) {
            if self.revocations.lock().unwrap().contains(&revocation.cert_sha256) {
                continue;
            }
            if !revocation::verify(&self.ca, &revocation) {
                let mut engine = self.tally.engine();
                engine.forged_revocation(from, now_ms());
                self.flush(&mut engine);
                return;
            }
            if let Err(error) = self.apply_revocation(revocation) {
                tracing::error!(%error, "cannot keep a revocation");
            }
        }
    }

    /// Keeps a verified revocation, applies it and passes it on; true when new.
    fn apply_revocation(&self, revocation: Revocation) -> Result<bool, String> {
        let added = self.revocations.lock().unwrap().add(revocation.clone());
        if !added.map_err(|e| format!("writing the revocations file: {e}"))? {
            return Ok(false);
        }
        let cert = revocation.cert_sha256;
        self.revoked.write().unwrap().insert(cert);
        let mut member: Fingerprint = [0; 16];
        member.copy_from_slice(&cert[..16]);
        let name = self.peers.lock().unwrap().remove(&member).map(|p| p.id.name);
        self.ghosts.lock().unwrap().retain(|g| *g != member);
        self.heard.lock().unwrap().remove(&member);
        self.transport.drop_member(member);
        let (registers, penalties) = self.tally.engine().revoke(member);
        tracing::warn!(member = name.as_deref().unwrap_or("?"), fingerprint = %short(&member), registers, penalties, "mesh member revoked by the CA; passed on to every member");
        self.members_changed();
        self.send_to_all(&Frame::Revoked(vec![revocation]));
        Ok(true)
    }

    /// Every revocation, to a member that has just come up.
    pub(super) fn send_revocations_to(&self, member: Fingerprint) {
        let all = self.revocations.lock().unwrap().all();
        if all.is_empty() {
            return;
        }
        let frame = Arc::new(encode(&Frame::Revoked(all)));
        let peers = self.peers.lock().unwrap();
        if let Some(outbox) = peers.get(&member).and_then(|p| p.outbox.as_ref()) {
            let _ = outbox.try_send(frame);
        }
    }

    fn send_to_all(&self, frame: &Frame) {
        let frame = Arc::new(encode(frame));
        for peer in self.peers.lock().unwrap().values().filter(|p| p.verified) {
            if let Some(outbox) = &peer.outbox {
                let _ = outbox.try_send(frame.clone());
            }
        }
    }
}
