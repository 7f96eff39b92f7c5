//! `magicmx init`: a node directory with a starter configuration (and mesh
//! certificates when a CA is given), ready for `magicmx run --config`.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context};

use crate::pki_files;

pub fn init(dir: &Path, name: &str, ca: Option<&Path>) -> anyhow::Result<()> {
    fs::create_dir_all(dir.join("data")).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let config = dir.join("magicmx.toml");
    if config.exists() {
        bail!("{} exists already", config.display());
    }
    let mesh = match ca {
        Some(ca) => {
            pki_files::issue(ca, name, &dir, 365)?;
            format!(
                "ca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nseeds = []                       # other nodes, \"host:7946\"\n",
                dir.join(pki_files::CA_CERT).display(),
                dir.join(pki_files::NODE_CERT).display(),
                dir.join(pki_files::NODE_KEY).display()
            )
        }
        None => {
            "# No mesh yet: `magicmx mesh issue` a certificate and set ca_cert, cert, key and seeds.\n".into()
        }
    };
    let text = format!(
        r#"# magicmx node "{name}". Every key and its default: ops/deploy/magicmx.toml.
# Check this file with: magicmx check-config --config {config}

[node]
name = "{name}"
data_dir = "{data}"

[smtp]
listen = ["0.0.0.0:25"]
# hostname = "mx1.mesh.example"  # default: this machine's host name

[mesh]
listen = "0.0.0.0:7946"
{mesh}
# One [[domain]] per domain this node relays for.
[[domain]]
name = "example.org"
route = "mx"
"#,
        config = config.display(),
        data = dir.join("data").display(),
    );
    fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
    println!(
        "{}: a starter configuration; edit the [[domain]] and run `magicmx run --config {}`",
        config.display(),
        config.display()
    );
    Ok(())
}
