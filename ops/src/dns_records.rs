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
; MX must then refuse untrusted senders that did not come through the mesh
; (below), or spambots would simply skip the magic MX.
{domain}	3600	IN	MX	20	{real}
;
; Optional: a trap, published last. No honest sender gets this far while the
; others answer; whoever connects is penalised mesh-wide for a day.
; {domain}	3600	IN	MX	99	trap.{magic}

# Postfix on the real MX ({real}), main.cf: ask the mesh's policy service
# about every client; it answers DUNNO for mesh nodes and trusted senders,
# and REJECT ("use our MX") for everyone else.
smtpd_recipient_restrictions =
    permit_mynetworks,
    reject_unauth_destination,
    check_policy_service inet:{policy}
"#
    );
}
