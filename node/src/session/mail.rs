//! MAIL FROM: a new transaction, room for it on the disk (`disk/`: the
//! free-space floor and the bodies in flight, for every client), and the
//! sender checks (block lists, reverse DNS, the sender's domain, SPF; see
//! `checks/`) unless the client is trusted or no check is configured.

use std::net::IpAddr;

use magicmx_proto::Address;

use super::Transaction;
use crate::checks::Checks;
use crate::clock::Millis;
use crate::disk::Disk;
use crate::replies::Refusal;

/// What MAIL FROM uses: the checks, the disk, and the prefixes of a source
/// block (the disk's bounds are per block).
pub(crate) struct Mail<'a> {
    pub checks: &'a Checks,
    pub disk: &'a Disk,
    pub prefixes: (u8, u8),
}

/// The verdict on `sender` from `client` (who said `helo`) at `now`; what
/// the checks found stays with the transaction.
pub(crate) async fn mail(
    stage: Mail<'_>,
    client: IpAddr,
    helo: &str,
    sender: Option<Address>,
    transaction: &mut Transaction,
    now: Millis,
) -> Result<(), Refusal> {
    let checks = stage.checks;
    transaction.restart(sender, checks.dns_budget());
    let block = transaction.disk_block(stage.prefixes);
    stage.disk.room_for_message(block, now)?;
    if transaction.trusted || checks.idle_at_mail() {
        return Ok(());
    }
    let (findings, budget) = (&mut transaction.findings, &mut transaction.dns_budget);
    let refusal = checks.mail(client, helo, transaction.sender.as_ref(), findings, budget).await;
    refusal.map_or(Ok(()), Err)
}
