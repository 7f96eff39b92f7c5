//! `magicmx dns-records`: what a domain publishes to be protected by the
//! mesh, and the complete settings of its real MX's Postfix (main.cf,
//! master.cf, a table of mesh nodes) and of the nodes, with the reasoning.
//! Each file's part begins with a line `# ---- FILE ----`.

use std::net::IpAddr;

/// The real MX as the printed settings need it.
pub struct RealMx {
    pub name: String,
    /// Where it reaches a node's policy service (`HOST:PORT`).
    pub policy: String,
    /// The addresses mesh nodes deliver from.
    pub mesh_nodes: Vec<IpAddr>,
    /// Its listener for the mesh alone: `PORT` or `ADDRESS:PORT`.
    pub mesh_listen: String,
    /// Where its Postfix keeps its tables.
    pub postfix_dir: String,
}

pub fn text(domain: &str, magic_mx: &str, real_mx: &RealMx) -> String {
    let fq = |name: &str| format!("{}.", name.trim_end_matches('.'));
    let (domain, magic, real) = (fq(domain), fq(magic_mx), fq(&real_mx.name));
    let RealMx { policy, mesh_listen, postfix_dir, .. } = real_mx;
    let bare = real.trim_end_matches('.');
    let port = mesh_listen.rsplit(':').next().unwrap_or(mesh_listen);
    // No spaces: master.cf splits `-o` values at white space.
    let nodes = real_mx.mesh_nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let table: String = real_mx.mesh_nodes.iter().map(|n| format!("{n} permit\n")).collect();
    let domain_name = domain.trim_end_matches('.');
    format!(
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

# Postfix on the real MX ({real}) takes mail two ways.
#
# Port 25, the MX: everyone. It asks the mesh's policy service about every
# client: DUNNO for trusted senders (and mesh nodes), and for everyone else
# DEFER_IF_PERMIT: "450 4.7.1 ... please deliver through {magic}". Never a
# 5xx: a sender the mesh throttled, or one that could not reach it, keeps
# its message and tries the magic MX again; a bot never gets in. If the
# policy service cannot be reached, Postfix answers 451 4.3.5, which also
# keeps the message at its sender.
#
# {mesh_listen}, the mesh's own way in: postscreen lets only the mesh nodes
# ({nodes}) through and drops everyone else at connect. The nodes
# hand over each message's original client with XCLIENT, so that this
# Postfix's restrictions, milters (SPF, rspamd...) and logs see the real
# sender, not the node. Client restrictions cannot keep strangers off this
# port once XCLIENT has changed the client's address; postscreen, which
# judges the connection before smtpd, does.
#
# Nothing the node has already judged is judged again here: the node said
# 250 to the sender, so any 5xx on this listener would become a bounce (a
# DSN) sent in the mesh's name. main.cf's client, HELO, sender, data and
# end-of-data restrictions (reject_non_fqdn_helo_hostname against an
# Exchange server's NetBIOS HELO, reject_unknown_sender_domain,
# reject_rbl_client...) are emptied on this listener; only the recipient's
# domain is checked. Milters still run, and see the original client.
# The nodes require XCLIENT here (xclient = "require"): a node missing from
# smtpd_authorized_xclient_hosts keeps its mail queued, with a warning and
# magicmx_next_hop_faults_total, instead of delivering it as from itself.

# ---- main.cf ----
smtpd_recipient_restrictions =
    permit_mynetworks,
    reject_unauth_destination,
    check_policy_service inet:{policy}

# ---- master.cf ----
{mesh_listen}      inet  n       -       n       -       1       postscreen
    -o postscreen_access_list=cidr:{postfix_dir}/magicmx-nodes.cidr
    -o postscreen_denylist_action=drop
    -o smtpd_service_name=magicmx-smtpd
magicmx-smtpd pass  -       -       n       -       -       smtpd
    -o syslog_name=postfix/magicmx
    -o smtpd_authorized_xclient_hosts={nodes}
    -o smtpd_client_restrictions=
    -o smtpd_helo_required=no
    -o smtpd_helo_restrictions=
    -o smtpd_sender_restrictions=
    -o smtpd_relay_restrictions=reject_unauth_destination
    -o smtpd_recipient_restrictions=reject_unauth_destination
    -o smtpd_data_restrictions=
    -o smtpd_end_of_data_restrictions=
    -o smtpd_reject_unlisted_sender=no
# postscreen needs these; they are in Debian's master.cf, commented out:
tlsproxy  unix  -       -       n       -       0       tlsproxy
dnsblog   unix  -       -       n       -       0       dnsblog

# ---- {postfix_dir}/magicmx-nodes.cidr ----
{table}0.0.0.0/0 reject
::/0 reject

# ---- magicmx.toml, on every node: deliver through the mesh's own way in ----
[[domain]]
name = "{domain_name}"
route = "smtp://{bare}:{port}"
xclient = "require"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_name_every_node_and_the_mesh_listener() {
        let real = RealMx {
            name: "mail.example.org".into(),
            policy: "mx1.mesh.example:10040".into(),
            mesh_nodes: vec!["192.0.2.10".parse().unwrap(), "2001:db8::10".parse().unwrap()],
            mesh_listen: "192.0.2.25:2525".into(),
            postfix_dir: "/etc/postfix".into(),
        };
        let text = text("example.org", "mx.mesh.example", &real);
        assert!(text.contains("192.0.2.25:2525      inet  n"), "{text}");
        assert!(text.contains("smtpd_authorized_xclient_hosts=192.0.2.10,2001:db8::10\n"), "{text}");
        assert!(text.contains("192.0.2.10 permit\n2001:db8::10 permit\n0.0.0.0/0 reject"), "{text}");
        assert!(text.contains("route = \"smtp://mail.example.org:2525\"\nxclient = \"require\""), "{text}");
        for emptied in ["client", "helo", "sender", "data", "end_of_data"] {
            assert!(text.contains(&format!("    -o smtpd_{emptied}_restrictions=\n")), "{emptied}: {text}");
        }
        assert!(text.contains("check_policy_service inet:mx1.mesh.example:10040"), "{text}");
    }
}
