//! `magicmx trust list | add CIDR --reason TEXT | remove CIDR`.

use crate::admin::trust_json::{AddTrust, TrustedJson};
use crate::client::AdminClient;

pub fn list(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let list: Vec<TrustedJson> = client.get("/trust")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("{:<43} {:<8} REASON", "CIDR", "SOURCE");
    for t in list {
        let source = if t.from_config { "config" } else { "added" };
        println!("{:<43} {:<8} {}", t.cidr, source, t.reason);
    }
    Ok(())
}

pub fn add(client: &AdminClient, cidr: &str, reason: &str) -> anyhow::Result<()> {
    client.post("/trust", &AddTrust { cidr: cidr.to_string(), reason: reason.to_string() })?;
    println!("trusted {cidr}");
    Ok(())
}

pub fn remove(client: &AdminClient, cidr: &str) -> anyhow::Result<()> {
    let query: String =
        cidr.bytes().map(|b| if b == b'/' { "%2F".to_string() } else { (b as char).to_string() }).collect();
    client.delete(&format!("/trust?cidr={query}"))?;
    println!("no longer trusted: {cidr}");
    Ok(())
}
