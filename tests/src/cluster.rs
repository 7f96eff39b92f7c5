//! Nodes for multi-node tests: certificates made with the real CLI, and a
//! configuration builder for a node alone or in a mesh on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::node::{magicmx_binary, NodeProcess};
use crate::ports::claim_port;

/// Runs the `magicmx` binary; its success and all its output.
pub fn magicmx(args: &[&str]) -> (bool, String) {
    let out = Command::new(magicmx_binary()).args(args).output().unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// A mesh CA under `root` and a node directory with a certificate from it
/// for each name (made with `magicmx mesh ca-init` and `mesh issue`).
pub fn certified_nodes(root: &Path, names: &[&str]) -> Vec<PathBuf> {
    let ca = root.join("ca");
    let (ok, out) = magicmx(&["mesh", "ca-init", "--dir", ca.to_str().unwrap()]);
    assert!(ok, "{out}");
    names
        .iter()
        .map(|name| {
            let dir = root.join(name);
            let (ok, out) = magicmx(&[
                "mesh",
                "issue",
                "--ca",
                ca.to_str().unwrap(),
                "--name",
                name,
                "--out",
                dir.to_str().unwrap(),
            ]);
            assert!(ok, "{out}");
            dir
        })
        .collect()
}

/// One node's ports and settings; `config()` writes its TOML.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub dir: PathBuf,
    pub smtp: u16,
    pub gossip: u16,
    pub admin: u16,
    pub trap: Option<u16>,
    /// Gossip port of the seed to join (none: the first node, or alone).
    pub seed: Option<u16>,
    /// In a mesh (its directory holds node.pem, node.key, mesh-ca.pem).
    pub meshed: bool,
    /// Keys for `[throttle]`, one per line.
    pub throttle: String,
    pub trusted: Vec<String>,
    pub trusted_hostnames: Vec<String>,
    /// The body of `[checks]` (default: every check off).
    pub checks: String,
    /// example.test's route (default: a maildir under the node's directory).
    pub route: Option<String>,
    /// The address SMTP listens on (default 127.0.0.1).
    pub listen_ip: std::net::IpAddr,
    /// Keys for `[delivery]`, one per line.
    pub delivery: String,
    /// More keys for `[smtp]`, one per line.
    pub smtp_keys: String,
}

impl Spec {
    pub fn new(name: &str, dir: &Path) -> Spec {
        Spec {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            smtp: claim_port(),
            gossip: claim_port(),
            admin: claim_port(),
            trap: None,
            seed: None,
            meshed: false,
            throttle: String::new(),
            trusted: vec![],
            trusted_hostnames: vec![],
            checks: "fcrdns = \"off\"\nspf = \"off\"\nsender_domain = false\nverify_recipients = false\ndkim = \"off\"\ndmarc = \"off\""
                .into(),
            route: None,
            listen_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            delivery: String::new(),
            smtp_keys: String::new(),
        }
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.listen_ip, self.smtp)
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.join("data/maildir")
    }

    pub fn config(&self) -> String {
        let d = self.dir.display();
        let mut mesh = format!("listen = \"127.0.0.1:{}\"\ngossip_interval = \"200ms\"\n", self.gossip);
        if self.meshed {
            mesh.push_str(&format!(
                "ca_cert = \"{d}/mesh-ca.pem\"\ncert = \"{d}/node.pem\"\nkey = \"{d}/node.key\"\n"
            ));
            if let Some(seed) = self.seed {
                mesh.push_str(&format!("seeds = [\"127.0.0.1:{seed}\"]\n"));
            }
        }
        let trap = self.trap.map(|p| format!("[trap]\nlisten = [\"127.0.0.1:{p}\"]\n")).unwrap_or_default();
        let quoted = |list: &[String]| list.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let route = self.route.clone().unwrap_or_else(|| format!("maildir:{d}/data/maildir"));
        format!(
            r#"[node]
name = "{name}"
data_dir = "{d}/data"

[smtp]
listen = ["{listen_ip}:{smtp}"]
hostname = "{name}.mesh.test"
greet_pause = "0s"
{smtp_extra}

[throttle]
{throttle}

[mesh]
{mesh}
[admin]
listen = "127.0.0.1:{admin}"
policy_listen = "127.0.0.1:0"

{trap}
[trust]
cidrs = [{trusted}]
hostnames = [{hostnames}]

[checks]
{checks}

[delivery]
{delivery}

[[domain]]
name = "example.test"
route = "{route}"
"#,
            name = self.name,
            smtp = self.smtp,
            listen_ip = self.listen_ip,
            throttle = self.throttle,
            admin = self.admin,
            trusted = quoted(&self.trusted),
            hostnames = quoted(&self.trusted_hostnames),
            checks = self.checks,
            delivery = self.delivery,
            smtp_extra = self.smtp_keys,
        )
    }

    pub fn start(&self) -> NodeProcess {
        NodeProcess::start(&self.dir, &self.config(), self.smtp_addr())
    }
}

/// Specs of `n` nodes under `root`: meshed through the first one when
/// `meshed`, else each alone; `throttle` goes into each `[throttle]`.
pub fn specs(root: &Path, n: usize, meshed: bool, throttle: &str) -> Vec<Spec> {
    let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let dirs =
        if meshed { certified_nodes(root, &names) } else { names.iter().map(|n| root.join(n)).collect() };
    let mut specs: Vec<Spec> = names.iter().zip(dirs).map(|(name, dir)| Spec::new(name, &dir)).collect();
    let first_gossip = specs[0].gossip;
    for (i, spec) in specs.iter_mut().enumerate() {
        spec.meshed = meshed;
        spec.seed = (meshed && i > 0).then_some(first_gossip);
        spec.throttle = throttle.to_string();
        std::fs::create_dir_all(&spec.dir).unwrap();
    }
    specs
}

/// Waits until each node has logged meeting every other.
pub fn wait_for_mesh(nodes: &[NodeProcess], timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let met = nodes.iter().all(|n| n.log_text().matches("mesh peer up").count() >= nodes.len() - 1);
        if met || std::time::Instant::now() > deadline {
            return met;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
