//! The command line: `magicmx run`, `magicmx check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(name = "magicmx", version, about = "A throttling magic-MX relay node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node (without --config: the embedded single-node default).
    Run {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and say what is wrong, with file, line and key.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Make a node directory with a starter configuration.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The node's name in the mesh.
        #[arg(long, default_value = "node1")]
        name: String,
        /// A mesh CA directory to issue this node's certificate from.
        #[arg(long, value_name = "DIR")]
        ca: Option<PathBuf>,
    },
    /// The mesh's certificates.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// What a running node is doing: counters, queue, peers, penalised and top blocks.
    Status {
        #[command(flatten)]
        node: NodeAddress,
    },
    /// A running node's mesh peers.
    Peers {
        #[command(flatten)]
        node: NodeAddress,
    },
    /// A running node's queue.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
        #[command(flatten)]
        node: NodeAddress,
    },
    /// Print the DNS records to publish for a domain, and the real MX's Postfix settings.
    DnsRecords {
        #[arg(long)]
        domain: String,
        /// The mesh's magic MX name.
        #[arg(long)]
        magic_mx: String,
        /// The domain's own mail server.
        #[arg(long)]
        real_mx: String,
        /// Where the real MX reaches a node's policy service.
        #[arg(long, default_value = "mx1.mesh.example:10040")]
        policy: String,
        /// The addresses mesh nodes deliver from (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "192.0.2.10,192.0.2.11")]
        mesh_nodes: Vec<std::net::IpAddr>,
        /// The real MX's listener for the mesh alone: `PORT` or `ADDRESS:PORT`.
        #[arg(long, default_value = "2525")]
        mesh_listen: String,
        /// Where the real MX's Postfix keeps its tables.
        #[arg(long, default_value = "/etc/postfix")]
        postfix_dir: String,
    },
    /// The trust list of a running node: sources that bypass the throttle.
    Trust {
        #[command(subcommand)]
        command: TrustCommand,
        #[command(flatten)]
        node: NodeAddress,
    },
}

/// Which running node a command talks to.
#[derive(clap::Args)]
struct NodeAddress {
    /// The node's configuration (for its admin address and token).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The admin API address, instead of the configuration's.
    #[arg(long, global = true, value_name = "ADDR")]
    admin: Option<std::net::SocketAddr>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
}

impl NodeAddress {
    fn client(&self) -> anyhow::Result<crate::client::AdminClient> {
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::embedded(),
        };
        let addr = self.admin.unwrap_or(config.admin.listen);
        Ok(crate::client::AdminClient::new(addr, config.admin.token.clone()))
    }
}

#[derive(Subcommand)]
enum QueueCommand {
    /// The messages waiting for delivery.
    List,
    /// One message and the state of each recipient.
    Show { id: String },
    /// Try a message's pending recipients now.
    Retry { id: String },
    /// Remove a message without delivering it.
    Drop { id: String },
}

#[derive(Subcommand)]
enum TrustCommand {
    /// List trusted sources.
    List,
    /// Trust a source (an address or a CIDR block).
    Add {
        cidr: String,
        #[arg(long)]
        reason: String,
    },
    /// Stop trusting a source added with `trust add`.
    Remove { cidr: String },
}

#[derive(Subcommand)]
enum MeshCommand {
    /// Create the mesh CA (mesh-ca.pem, mesh-ca.key) in DIR.
    CaInit {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Issue a node certificate (node.pem, node.key, with mesh-ca.pem) into DIR.
    Issue {
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// On a joining node: make its key (node.key, 0600) and a certificate
    /// request (node.csr) in DIR. Only the request goes to the CA holder.
    Request {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// At the CA holder: check a request (its signature, its node name) and
    /// issue the node's certificate, written with the CA's after it to OUT.
    Sign {
        /// The request (node.csr) the joining node made.
        request: PathBuf,
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Where to write the signed certificate (default: NAME.pem beside the request).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// On the joining node: check the signed certificate against its key
    /// and the CA, and put node.pem and mesh-ca.pem into DIR.
    Install {
        /// The file `magicmx mesh sign` wrote.
        cert: PathBuf,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print a node certificate's SHA-256 fingerprint, as `mesh.revoked` takes it.
    Fingerprint {
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
    },
    /// Revoke a member mesh-wide: sign its fingerprint with the CA key and
    /// hand the revocation to a running node, which passes it to every
    /// member; every node refuses the member from then on and keeps the
    /// revocation on disk.
    Revoke {
        /// The member's certificate fingerprint (`magicmx mesh fingerprint`),
        /// or a revocation line this command printed before.
        what: String,
        /// The mesh CA directory, whose key signs (not needed for a line).
        #[arg(long, value_name = "DIR")]
        ca: Option<PathBuf>,
        #[command(flatten)]
        node: NodeAddress,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let config = match config {
                Some(path) => match Config::load(&path) {
                    Ok(config) => config,
                    Err(e) => return fail(&format!("configuration error: {e}")),
                },
                None => Config::embedded(),
            };
            match crate::run::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            }
        }
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(parsed) => {
                let domains: Vec<String> =
                    parsed.domains.iter().map(|d| format!("{} → {}", d.name, d.route)).collect();
                println!("{}: OK", config.display());
                println!("  smtp: {:?}, hostname {}", parsed.smtp.listen, parsed.smtp.hostname);
                println!("  data: {}", parsed.data_dir().display());
                println!("  domains: {}", domains.join(", "));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
        Command::DefaultConfig => {
            print!("{}", crate::config::EMBEDDED_DEFAULT);
            ExitCode::SUCCESS
        }
        Command::Init { dir, name, ca } => report(crate::init::init(&dir, &name, ca.as_deref())),
        Command::Status { node } => {
            report(node.client().and_then(|c| crate::status_cmd::status(&c, node.json)))
        }
        Command::Peers { node } => {
            report(node.client().and_then(|c| crate::status_cmd::peers(&c, node.json)))
        }
        Command::Queue { command, node } => report(node.client().and_then(|client| match command {
            QueueCommand::List => crate::status_cmd::queue_list(&client, node.json),
            QueueCommand::Show { id } => crate::status_cmd::queue_show(&client, &id, node.json),
            QueueCommand::Retry { id } => crate::status_cmd::queue_retry(&client, &id),
            QueueCommand::Drop { id } => crate::status_cmd::queue_drop(&client, &id),
        })),
        Command::DnsRecords { domain, magic_mx, real_mx, policy, mesh_nodes, mesh_listen, postfix_dir } => {
            let real =
                crate::dns_records::RealMx { name: real_mx, policy, mesh_nodes, mesh_listen, postfix_dir };
            print!("{}", crate::dns_records::text(&domain, &magic_mx, &real));
            ExitCode::SUCCESS
        }
        Command::Trust { command, node } => report(node.client().and_then(|client| match command {
            TrustCommand::List => crate::trust_cmd::list(&client, node.json),
            TrustCommand::Add { cidr, reason } => crate::trust_cmd::add(&client, &cidr, &reason),
            TrustCommand::Remove { cidr } => crate::trust_cmd::remove(&client, &cidr),
        })),
        Command::Mesh(MeshCommand::CaInit { dir }) => report(crate::pki_files::ca_init(&dir).map(|cert| {
            println!(
                "mesh CA: {} (keep {} secret)",
                cert.display(),
                dir.join(crate::pki_files::CA_KEY).display()
            );
        })),
        Command::Mesh(MeshCommand::Issue { ca, name, out, days }) => {
            report(crate::pki_files::issue(&ca, &name, &out, days).map(|()| {
                println!("node {name}: {}/node.pem, node.key and mesh-ca.pem", out.display());
            }))
        }
        Command::Mesh(MeshCommand::Request { dir, name }) => {
            report(crate::pki_files::request(&dir, &name).map(|request| {
                println!("key: {} (stays here); request: {}", dir.join("node.key").display(), request.display());
                println!("send the request to the mesh CA's holder: magicmx mesh sign {} --ca DIR", request.display());
            }))
        }
        Command::Mesh(MeshCommand::Sign { request, ca, out, days }) => {
            report(crate::pki_files::sign(&request, &ca, out.as_deref(), days).map(|(name, out)| {
                println!("node {name}: {} (send it back; it holds no key)", out.display());
            }))
        }
        Command::Mesh(MeshCommand::Install { cert, dir }) => {
            report(crate::pki_files::install(&cert, &dir).map(|ca| {
                println!("installed {}/node.pem and mesh-ca.pem", dir.display());
                println!("mesh CA fingerprint: {ca} (compare it with the CA holder's `magicmx mesh fingerprint --cert mesh-ca.pem`)");
            }))
        }
        Command::Mesh(MeshCommand::Fingerprint { cert }) => {
            report(crate::pki_files::fingerprint(&cert).map(|fp| println!("{fp}")))
        }
        Command::Mesh(MeshCommand::Revoke { what, ca, node }) => {
            report(node.client().and_then(|client| crate::pki_files::revoke(&client, &what, ca.as_deref())))
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("magicmx: {message}");
    ExitCode::FAILURE
}
