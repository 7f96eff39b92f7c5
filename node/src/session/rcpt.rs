//! RCPT TO: is the recipient's domain served here, does its real MX take
//! it (the call-out, when configured), and does it fit the block's
//! mesh-wide limit (the throttle, which asks the block's home). Trusted
//! clients and `postmaster@` (RFC 5321 §4.5.1) skip the last two, and are
//! not counted.

use magicmx_proto::Address;

use super::Transaction;
use crate::checks::Checks;
use crate::clock::Millis;
use crate::domains::Domains;
use crate::replies::Refusal;
use crate::route::outbound::{NextHop, Outbound};
use crate::route::smtp::OriginalClient;
use crate::throttle::Throttle;

/// What the RCPT stage uses.
pub(crate) struct Rcpt<'a> {
    pub domains: &'a Domains,
    pub throttle: &'a Throttle,
    /// Call-outs to the real MX (`checks.verify_recipients`), if on.
    pub callout: Option<Callout<'a>>,
}

/// What a call-out uses: the cache of verdicts, the way out, and the
/// original client to hand over as a delivery would.
pub(crate) struct Callout<'a> {
    pub checks: &'a Checks,
    pub outbound: &'a Outbound,
    pub client: OriginalClient,
}

impl Rcpt<'_> {
    /// The verdict on `recipient` at `now_ms`; a recipient that fits stays
    /// reserved in the transaction until the hold.
    pub(crate) async fn verdict(
        &self,
        transaction: &mut Transaction,
        recipient: &Address,
        now_ms: Millis,
    ) -> Result<(), Refusal> {
        self.domains.verdict(recipient)?;
        if transaction.trusted || recipient.is_postmaster() {
            return Ok(());
        }
        if let Some(callout) = &self.callout {
            callout.verdict(self.domains, transaction.sender.as_ref(), recipient, now_ms).await?;
        }
        let client = transaction.client;
        let reserved = transaction.reserved.get_or_insert_with(|| self.throttle.transaction(client));
        self.throttle.recipient(reserved, now_ms).await
    }
}

impl Callout<'_> {
    /// What the recipient's real MX says of it (cached, or asked now).
    async fn verdict(
        &self,
        domains: &Domains,
        sender: Option<&Address>,
        recipient: &Address,
        now_ms: Millis,
    ) -> Result<(), Refusal> {
        let Some((route, address)) = domains.route_for(recipient) else { return Ok(()) };
        let Some(hop) = NextHop::for_route(route, address.domain.as_str()) else { return Ok(()) };
        let callouts = &self.checks.callouts;
        let refusal = match callouts.cached(&address, now_ms) {
            Some(cached) => cached,
            None => {
                let forwarding = domains.forwarding_for(&address);
                let probe =
                    self.outbound.probe(&hop, sender, &address, Some((&self.client, forwarding))).await;
                callouts.record(&address, probe, now_ms)
            }
        };
        refusal.map_or(Ok(()), Err)
    }
}
