//! MAIL FROM: a new transaction, and the sender checks (block lists,
//! reverse DNS, the sender's domain, SPF; see `checks/`) unless the client
//! is trusted or no check is configured.

use std::net::IpAddr;

use magicmx_proto::Address;

use super::Transaction;
use crate::checks::Checks;
use crate::replies::Refusal;

/// The verdict on `sender` from `client` (who said `helo`); what the checks
/// found stays with the transaction.
pub(crate) async fn mail(
    checks: &Checks,
    client: IpAddr,
    helo: &str,
    sender: Option<Address>,
    transaction: &mut Transaction,
) -> Result<(), Refusal> {
    transaction.restart(sender, checks.dns_budget());
    if transaction.trusted || checks.idle_at_mail() {
        return Ok(());
    }
    let (findings, budget) = (&mut transaction.findings, &mut transaction.dns_budget);
    let refusal = checks.mail(client, helo, transaction.sender.as_ref(), findings, budget).await;
    refusal.map_or(Ok(()), Err)
}
