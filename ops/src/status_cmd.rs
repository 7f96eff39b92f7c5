//! `magicmx status`, `magicmx peers` and `magicmx queue …`: the running
//! node's state as tables, or JSON with `--json`.

use crate::admin::queue::QueuedJson;
use crate::admin::status::StatusJson;
use crate::client::AdminClient;

fn ago(ms: Option<u64>) -> String {
    ms.map_or("never".into(), |ms| format!("{:.1} s ago", ms as f64 / 1000.0))
}

pub fn status(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let s: StatusJson = client.get("/status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let c = &s.counters;
    println!("magicmx {} — node {} — up {} s", s.version, s.node, s.uptime_seconds);
    println!();
    println!(
        "connections {:>8}   accepted {:>8}   tempfailed {:>6}   rejected {:>6}   refused at connect {:>8}",
        c.connections, c.accepted, c.tempfailed, c.rejected, c.refused_at_connect
    );
    println!("delivered   {:>8}   deferred {:>8}   bounced    {:>6}", c.delivered, c.deferred, c.bounced);
    println!("queue       {:>8} messages, oldest {} s", s.queue.messages, s.queue.oldest_age_seconds);
    let alive = s.peers.iter().filter(|p| p.alive).count();
    println!("peers       {:>8} alive of {}", alive, s.peers.len());
    if !s.refusals.is_empty() {
        println!("\nREFUSALS");
        for (reason, n) in &s.refusals {
            println!("  {reason:<24} {n:>8}");
        }
    }
    if !s.penalised.is_empty() {
        println!("\nPENALISED BLOCK                             UNTIL                  STRIKES");
        for p in &s.penalised {
            println!("  {:<41} {:<22} {:>3}", p.block, p.until, p.strikes);
        }
    }
    if !s.top_blocks.is_empty() {
        println!("\nTOP BLOCK                                   RCPT/HOUR   CONN/MIN");
        for b in &s.top_blocks {
            println!("  {:<41} {:>9.1} {:>10.1}", b.block, b.recipients_per_hour, b.connections_per_minute);
        }
    }
    Ok(())
}

pub fn peers(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let s: StatusJson = client.get("/status")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s.peers)?);
        return Ok(());
    }
    if s.peers.is_empty() {
        println!("no peers (the node runs alone, or has not met its seeds yet)");
        return Ok(());
    }
    println!(
        "{:<20} {:<24} {:<6} {:<11} {:<9} {:<8} WHY",
        "NAME", "ADDRESS", "STATE", "LAST HEARD", "STANDING", "CLOCK"
    );
    for p in &s.peers {
        let (weight, clock, why) = match &p.standing {
            Some(st) => (
                format!("{:.2}", st.weight),
                format!("{:+.1}s", st.clock_offset_ms as f64 / 1000.0),
                standing_why(st),
            ),
            None => ("—".into(), "—".into(), String::new()),
        };
        println!(
            "{:<20} {:<24} {:<6} {:<11} {:<9} {:<8} {}",
            p.name,
            p.addr,
            if p.alive { "alive" } else { "down" },
            ago(p.last_heard_ms),
            weight,
            clock,
            why
        );
    }
    Ok(())
}

/// Why a member stands where it does, in a few words.
fn standing_why(st: &crate::admin::status::StandingJson) -> String {
    let mut why = format!("{} corroborated, {} outvoted", st.corroborated, st.outvoted);
    for (what, n) in &st.caught {
        why.push_str(&format!(", caught {n}× {what}"));
    }
    if let Some(last) = &st.last_fault {
        why.push_str(&format!("; last: {last}"));
    }
    why
}

pub fn queue_list(client: &AdminClient, json: bool) -> anyhow::Result<()> {
    let queued: Vec<QueuedJson> = client.get("/queue")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&queued)?);
        return Ok(());
    }
    if queued.is_empty() {
        println!("the queue is empty");
        return Ok(());
    }
    println!("{:<17} {:>8} {:<32} RECIPIENTS (pending)", "ID", "SIZE", "SENDER");
    for q in &queued {
        let pending: Vec<&str> =
            q.recipients.iter().filter(|r| r.status == "pending").map(|r| r.address.as_str()).collect();
        let sender = if q.sender.is_empty() { "<>" } else { &q.sender };
        println!("{:<17} {:>8} {:<32} {}", q.id, q.size, sender, pending.join(", "));
    }
    println!("{} message(s)", queued.len());
    Ok(())
}

pub fn queue_show(client: &AdminClient, id: &str, json: bool) -> anyhow::Result<()> {
    let q: QueuedJson = client.get(&format!("/queue/{id}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&q)?);
        return Ok(());
    }
    println!(
        "id       {}\nsender   <{}>\nclient   {}\nsize     {}\narrived  {} (Unix)",
        q.id, q.sender, q.client, q.size, q.arrived
    );
    for r in &q.recipients {
        let error = r.last_error.as_deref().unwrap_or("");
        println!("  {:<40} {:<9} attempts {:<3} {error}", r.address, r.status, r.attempts);
    }
    Ok(())
}

pub fn queue_retry(client: &AdminClient, id: &str) -> anyhow::Result<()> {
    client.post(&format!("/queue/{id}/retry"), &())?;
    println!("{id}: delivery is being tried now");
    Ok(())
}

pub fn queue_drop(client: &AdminClient, id: &str) -> anyhow::Result<()> {
    client.delete(&format!("/queue/{id}"))?;
    println!("{id}: dropped");
    Ok(())
}
