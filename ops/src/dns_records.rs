//! `magicmx dns-records`: what a domain publishes to be protected by the
//! mesh, and what its real MX needs, with the reasoning.

pub fn print(domain: &str, magic_mx: &str, real_mx: &str, policy: &str) {
    let fq = |name: &str| format!("{}.", name.trim_end_matches('.'));
    let (domain, magic, real) = (fq(domain), fq(magic_mx), fq(real_mx));
    println!(
        r#"; DNS records for {domain} behind the magicmx mesh.
;
; The mesh's magic MX comes first (the lowest preference number): every
; standards-following sender tries it first, and the mesh throttles each
; source block to person-to-person volumes before relaying to the real MX.
{domain}	3600	IN	MX	10	{magic}
;
; The real MX stays published behind it: senders the mesh trusts (big
; providers, list hosts) may deliver to it directly, and anyone whose
; attempt at the magic MX fails falls back to it as RFC 5321 says. The real
; MX must then turn away untrusted senders that did not come through the
; mesh (below), or spambots would simply skip the magic MX.
{domain}	3600	IN	MX	20	{real}
;
; Optional: a trap, published last, on the mesh nodes' addresses. A bot
; that goes straight for the last MX is penalised mesh-wide for a day. An
; honest sender the mesh throttled also ends up here, after the real MX sent
; it back; the mesh has just seen it, and the trap spares it.
; {domain}	3600	IN	MX	99	trap.{magic}

# Postfix on the real MX ({real}), main.cf: ask the mesh's policy service
# about every client. It answers DUNNO for mesh nodes and trusted senders,
# and for everyone else DEFER_IF_PERMIT: "450 4.7.1 ... please deliver
# through {magic}". Never a 5xx: a sender the mesh throttled, or one that
# could not reach it, keeps its message and tries the magic MX again; a bot
# never gets in. If the policy service cannot be reached, Postfix answers
# 451 4.3.5, which also keeps the message at its sender.
smtpd_recipient_restrictions =
    permit_mynetworks,
    reject_unauth_destination,
    check_policy_service inet:{policy}
"#
    );
}
