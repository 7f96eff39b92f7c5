//! DKIM signatures (RFC 6376) and the From domain's DMARC policy (RFC 7489),
//! verified with mail-auth once the message is in: recorded in the node's
//! `Authentication-Results:` (`dkim=`, `dmarc=`) for the real MX to decide.
//! With `checks.dmarc = "reject"` the node honours `p=reject` itself: a
//! message that fails DMARC under that policy is refused `550 5.7.1`.
//!
//! A message larger than `checks.dkim_max_size` is not verified (the real
//! MX can): verifying needs the whole message in memory, and the node keeps
//! its memory flat in message size.
//!
//! The key and policy look-ups spend the message's DNS budget; what runs
//! out of it is `temperror` (never a refusal).

use std::sync::Arc;

use crate::replies::Refusal;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult,
    MessageAuthenticator, SpfOutput,
};

use super::spf::Spf;
use super::DnsBudget;
use crate::settings::CheckMode;
use crate::stats::Stats;

/// What the verification found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Authenticity {
    /// `Authentication-Results:` parts (`;\r\n\tdkim=…;\r\n\tdmarc=…`).
    pub results: String,
    /// For the transaction log: `dkim=pass dmarc=pass`.
    pub summary: String,
    /// DMARC failed under `p=reject` and the node honours it.
    pub refusal: Option<Refusal>,
}

pub struct DkimChecker {
    authenticator: Arc<MessageAuthenticator>,
    dmarc: CheckMode,
}

impl DkimChecker {
    pub fn new(authenticator: Arc<MessageAuthenticator>, dmarc: CheckMode) -> DkimChecker {
        DkimChecker { authenticator, dmarc }
    }

    /// Verifies `content` (the message as the client sent it), whose
    /// envelope sender's domain is `mail_from` and whose SPF result, if
    /// checked, is `spf`, within the message's DNS `budget`.
    pub async fn check(
        &self,
        stats: &Stats,
        content: &[u8],
        mail_from: &str,
        spf: Option<&Spf>,
        budget: &mut DnsBudget,
    ) -> Authenticity {
        let Some(message) = AuthenticatedMessage::parse(content) else {
            stats.check("dkim", "unparsable");
            return Authenticity { summary: "dkim=unparsable".into(), ..Authenticity::default() };
        };
        let dkim = budget
            .within(self.authenticator.verify_dkim(&message))
            .await
            .unwrap_or_else(|| vec![DkimOutput::temp_err(spent())]);
        let dkim_label = dkim.iter().map(|d| label(d.result())).min_by_key(|l| rank(l)).unwrap_or("none");
        stats.check("dkim", dkim_label);
        let from = message.from().to_string();
        let mut results = AuthenticationResults::new("").with_dkim_results(&dkim, &from);
        let mut summary = format!("dkim={dkim_label}");
        let mut refusal = None;
        if self.dmarc != CheckMode::Off {
            let spf_output = match spf {
                Some(spf) => SpfOutput::new(spf.domain.clone()).with_result(spf.result),
                None => SpfOutput::new(mail_from.to_string()),
            };
            let params = DmarcParameters::new(&message, &dkim, mail_from, &spf_output);
            let dmarc = budget.within(self.authenticator.verify_dmarc(params)).await.unwrap_or_else(|| {
                let domain = from.rsplit_once('@').map_or("", |(_, domain)| domain).to_ascii_lowercase();
                let spent = DmarcResult::TempError(spent());
                DmarcOutput::new(domain).with_dkim_result(spent.clone()).with_spf_result(spent)
            });
            let result = match dmarc.result() {
                DmarcResult::Pass => "pass",
                DmarcResult::Fail(_) => "fail",
                DmarcResult::TempError(_) => "temperror",
                DmarcResult::PermError(_) => "permerror",
                DmarcResult::None => "none",
            };
            stats.check("dmarc", result);
            summary.push_str(&format!(" dmarc={result}"));
            if result == "fail" && dmarc.policy() == Policy::Reject && self.dmarc == CheckMode::Reject {
                refusal = Some(Refusal::Dmarc { domain: dmarc.domain().to_string() });
            }
            results = results.with_dmarc_result(&dmarc);
        }
        Authenticity { results: results.to_string(), summary, refusal }
    }
}

/// Why a look-up cut short by the message's DNS budget failed.
fn spent() -> mail_auth::Error {
    mail_auth::Error::Dns(mail_auth::DnsError::Resolver(crate::dns::SPENT.into()))
}

fn label(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

/// The best of several signatures' results sums them up for the log.
fn rank(label: &str) -> u8 {
    ["pass", "temperror", "neutral", "fail", "permerror", "none"]
        .iter()
        .position(|l| *l == label)
        .unwrap_or(9) as u8
}
