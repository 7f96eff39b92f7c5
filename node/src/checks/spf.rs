//! SPF (RFC 7208) with mail-auth: `strict` (`spf = "strict"`) refuses `fail`
//! with `550 5.7.23` (RFC 7372), and `softfail` too when asked; `header`
//! only records. The result is kept with the message: delivery returns a DSN
//! only to senders whose SPF passed. DMARC weighs SPF too: with `spf =
//! "off"` and DMARC on, SPF is still evaluated for DMARC alone (at the end
//! of DATA), and refuses nothing itself.

use std::net::IpAddr;
use std::sync::Arc;

use crate::replies::Refusal;
use magicmx_proto::Address;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfResult};

use super::{counted, DnsBudget};
use crate::settings::{CheckMode, CheckSettings, DnsSettings};
use crate::stats::Stats;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spf {
    pub result: SpfResult,
    pub domain: String,
}

impl Spf {
    pub fn as_str(&self) -> &'static str {
        match self.result {
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::Neutral => "neutral",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
            SpfResult::None => "none",
        }
    }

    /// The refusal, if the settings refuse this result.
    pub fn refusal(&self, settings: &CheckSettings) -> Option<Refusal> {
        if settings.spf != CheckMode::Reject {
            return None;
        }
        let refuse = matches!(self.result, SpfResult::Fail)
            || (settings.spf_softfail_rejects && matches!(self.result, SpfResult::SoftFail));
        if refuse {
            return Some(Refusal::Spf { result: self.as_str(), domain: self.domain.clone() });
        }
        if matches!(self.result, SpfResult::TempError) {
            return Some(Refusal::SpfDns { domain: self.domain.clone() });
        }
        None
    }
}

pub struct SpfChecker {
    authenticator: Option<Arc<MessageAuthenticator>>,
}

/// mail-auth's resolver, shared by SPF, DKIM and DMARC, with the node's
/// servers and options; `None` when it cannot be set up (logged: SPF then
/// gives temperror).
pub fn authenticator(dns: &DnsSettings) -> Option<Arc<MessageAuthenticator>> {
    let authenticator = crate::dns::resolver_config(dns)
        .and_then(|(config, options)| MessageAuthenticator::new(config, options));
    authenticator.map(Arc::new).map_err(|e| tracing::error!(error = %e, "SPF/DKIM resolver unavailable")).ok()
}

impl SpfChecker {
    pub fn new(authenticator: Option<Arc<MessageAuthenticator>>) -> SpfChecker {
        SpfChecker { authenticator }
    }

    /// SPF of the MAIL FROM domain (or of the HELO name for the null
    /// sender), within the message's DNS `budget` (past it: temperror).
    pub async fn check(
        &self,
        stats: &Stats,
        ip: IpAddr,
        helo: &str,
        sender: Option<&Address>,
        budget: &mut DnsBudget,
    ) -> Spf {
        let domain = sender.map(|s| s.domain.to_string()).unwrap_or_else(|| helo.to_string());
        let Some(authenticator) = &self.authenticator else {
            return Spf { result: SpfResult::TempError, domain };
        };
        let host = "magicmx";
        let sender = sender.map(ToString::to_string);
        let parameters = match &sender {
            Some(sender) => SpfParameters::verify_mail_from(ip, helo, host, sender),
            None => SpfParameters::verify_ehlo(ip, helo, host),
        };
        let output = budget.within(authenticator.verify_spf(parameters)).await;
        let result = output.map_or(SpfResult::TempError, |output| output.result());
        let spf = Spf { result, domain };
        counted(stats, "spf", spf.as_str(), spf)
    }
}
