//! Trust by host name: addresses whose reverse DNS proved a trusted host
//! name (`[trust] hostnames`, forward-confirmed), remembered so that the
//! gate, which asks no DNS, lets them through. A proof lives an hour. A
//! connection past half of it re-proves the address in the background, so a
//! host that keeps coming never lapses; while a re-proof is under way the
//! old proof stands, even past its hour. A re-proof that cannot ask DNS
//! leaves the old proof to its end and is tried again a minute later; one
//! that finds the name no longer confirmed ends the trust at once. Time is
//! the caller's, in Unix ms.

use std::net::IpAddr;
use std::sync::Arc;

use crate::bounded::BoundedMap;
use crate::Shared;

/// What asking DNS about an address's host name found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Forward-confirmed, and a trusted name.
    Proved,
    /// Not a trusted name, or not forward-confirmed.
    Refuted,
    /// DNS could not say (time-out, SERVFAIL).
    Unknown,
}

/// How long a proof stands.
pub const PROOF_LIFE_MS: u64 = 3600 * 1000;
/// A connection re-proves an address whose proof is this old.
const REFRESH_AFTER_MS: u64 = PROOF_LIFE_MS / 2;
/// A re-proof under way keeps the old proof standing this long at most
/// (more than the longest DNS budget; a lost one lets the proof go).
const PENDING_MS: u64 = 2 * 60 * 1000;
/// After a re-proof that could not ask DNS, the next one waits this long.
const RETRY_MS: u64 = 60 * 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Standing {
    proved_ms: u64,
    /// A re-proof under way since then.
    pending_since: Option<u64>,
    /// The last re-proof could not ask DNS, then.
    unknown_at: Option<u64>,
}

pub struct NamedTrust {
    proofs: BoundedMap<IpAddr, Standing>,
}

impl NamedTrust {
    /// At most `cap` addresses (one pushed out is proved again at its next connection).
    pub fn new(cap: usize) -> NamedTrust {
        NamedTrust { proofs: BoundedMap::new(cap) }
    }

    pub fn is_trusted(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.proofs.get(&ip, now_ms).is_some()
    }

    /// What a proof (or re-proof) of `ip` found at `now_ms`.
    pub fn record(&self, ip: IpAddr, proof: Proof, now_ms: u64) {
        match proof {
            Proof::Proved => {
                let fresh = Standing { proved_ms: now_ms, ..Standing::default() };
                self.proofs.insert(ip, fresh, now_ms + PROOF_LIFE_MS, now_ms);
            }
            Proof::Refuted => self.proofs.remove(&ip),
            Proof::Unknown => {
                // The old proof stands to its own end (which may be now).
                self.proofs.modify(&ip, now_ms, |standing, expires_ms| {
                    standing.pending_since = None;
                    standing.unknown_at = Some(now_ms);
                    *expires_ms = standing.proved_ms + PROOF_LIFE_MS;
                });
            }
        }
    }

    /// Whether a connection from `ip` at `now_ms` is to re-prove it: trusted
    /// by name, past half its proof's life, and no re-proof under way or
    /// lately failed. If so the re-proof is under way from now, and the old
    /// proof stands until it ends.
    pub fn begin_refresh(&self, ip: IpAddr, now_ms: u64) -> bool {
        let begun = self.proofs.modify(&ip, now_ms, |standing, expires_ms| {
            let since = |at: Option<u64>, wait: u64| at.is_some_and(|at| now_ms < at + wait);
            if now_ms < standing.proved_ms + REFRESH_AFTER_MS
                || since(standing.pending_since, PENDING_MS)
                || since(standing.unknown_at, RETRY_MS)
            {
                return false;
            }
            standing.pending_since = Some(now_ms);
            *expires_ms = (*expires_ms).max(now_ms + PENDING_MS);
            true
        });
        begun == Some(true)
    }

    /// Forgets proofs past their time.
    pub fn sweep(&self, now_ms: u64) {
        self.proofs.sweep(now_ms);
    }

    pub fn len(&self) -> usize {
        self.proofs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.proofs.is_empty()
    }
}

/// Whether a new connection from `ip` is trusted: the gate's word
/// (`gate_trusted`), whose proof by name is renewed in the background when
/// due; or else a proof by name asked now.
pub(crate) async fn at_connect(shared: &Arc<Shared>, ip: IpAddr, gate_trusted: bool) -> bool {
    let named = shared.trust.by_name();
    if gate_trusted {
        if named.begin_refresh(ip, shared.clock.now()) {
            let shared = shared.clone();
            tokio::spawn(async move {
                let proof = shared.checks.prove_name(ip).await;
                shared.trust.by_name().record(ip, proof, shared.clock.now());
                tracing::debug!(client = %ip, ?proof, "trusted host name proved again");
            });
        }
        return true;
    }
    let proof = shared.checks.prove_name(ip).await;
    named.record(ip, proof, shared.clock.now());
    proof == Proof::Proved
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60 * 1000;

    fn ip(n: u32) -> IpAddr {
        std::net::Ipv4Addr::from(n).into()
    }

    /// A provider's host connecting every `every` ms for `hours`, each due
    /// re-proof answered `answer_after` ms later with `proof`; whether it
    /// was trusted at every connection.
    fn replay(trust: &NamedTrust, every: u64, hours: u64, answer_after: u64, proof: Proof) -> bool {
        let host = ip(1);
        trust.record(host, Proof::Proved, 0);
        let mut pending: Option<u64> = None;
        let mut now = 0;
        while now < hours * 60 * MINUTE {
            if let Some(at) = pending.filter(|at| *at <= now) {
                trust.record(host, proof, at);
                pending = None;
            }
            if !trust.is_trusted(host, now) {
                return false;
            }
            if trust.begin_refresh(host, now) {
                pending = Some(now + answer_after);
            }
            now += every;
        }
        true
    }

    #[test]
    fn a_host_that_keeps_coming_stays_trusted_for_days() {
        let trust = NamedTrust::new(100);
        // Every 5 minutes for two days, re-proofs answered in 50 ms.
        assert!(replay(&trust, 5 * MINUTE, 48, 50, Proof::Proved));
        // Every 25 minutes, each re-proof answered after 90 s: still never lapses.
        let trust = NamedTrust::new(100);
        assert!(replay(&trust, 25 * MINUTE, 48, 90 * 1000, Proof::Proved));
        // Coming only once in a proof's second half is enough.
        let trust = NamedTrust::new(100);
        assert!(replay(&trust, 59 * MINUTE, 48, 1000, Proof::Proved));
    }

    #[test]
    fn the_old_proof_stands_while_its_re_proof_is_under_way() {
        let trust = NamedTrust::new(100);
        let host = ip(7);
        trust.record(host, Proof::Proved, 0);
        assert!(!trust.begin_refresh(host, 10 * MINUTE), "young proofs are not asked again");
        // A burst right at the end of the hour: the first connection starts
        // the re-proof, the others neither start another nor lose trust.
        let end = PROOF_LIFE_MS;
        assert!(trust.begin_refresh(host, end - 100));
        for t in [end - 50, end, end + 500, end + 5_000] {
            assert!(trust.is_trusted(host, t), "at {t}");
            assert!(!trust.begin_refresh(host, t), "one re-proof at a time");
        }
        trust.record(host, Proof::Proved, end + 6_000);
        assert!(trust.is_trusted(host, end + 6_000 + PROOF_LIFE_MS - 1));
        assert!(!trust.is_trusted(host, end + 6_000 + PROOF_LIFE_MS));

        // A re-proof that never comes back lets the proof go, a little late.
        let lost = ip(8);
        trust.record(lost, Proof::Proved, 0);
        assert!(trust.begin_refresh(lost, end - 1));
        assert!(trust.is_trusted(lost, end + PENDING_MS - 2));
        assert!(!trust.is_trusted(lost, end + PENDING_MS));
    }

    #[test]
    fn dns_that_cannot_say_keeps_the_old_proof_and_a_refuted_name_ends_it() {
        let trust = NamedTrust::new(100);
        let host = ip(9);
        trust.record(host, Proof::Proved, 0);
        assert!(trust.begin_refresh(host, 30 * MINUTE));
        trust.record(host, Proof::Unknown, 30 * MINUTE + 5_000);
        assert!(trust.is_trusted(host, 59 * MINUTE), "the old proof stands to its end");
        assert!(!trust.begin_refresh(host, 30 * MINUTE + 30_000), "not asked again at once");
        assert!(trust.begin_refresh(host, 32 * MINUTE), "asked again a minute later");
        trust.record(host, Proof::Proved, 32 * MINUTE + 100);
        assert!(trust.is_trusted(host, 90 * MINUTE));
        // A resolver down for the proof's whole second half: it lapses.
        assert!(replay(&NamedTrust::new(100), 5 * MINUTE, 1, 50, Proof::Unknown));
        assert!(!replay(&NamedTrust::new(100), 5 * MINUTE, 2, 50, Proof::Unknown));
        // The name no longer confirms: trust ends with the answer.
        assert!(trust.begin_refresh(host, 70 * MINUTE));
        trust.record(host, Proof::Refuted, 70 * MINUTE + 100);
        assert!(!trust.is_trusted(host, 70 * MINUTE + 100));
    }

    #[test]
    fn a_million_names_proved_keep_at_most_the_cap_and_the_latest() {
        let trust = NamedTrust::new(100_000);
        for n in 0..1_000_000u32 {
            trust.record(ip(n), Proof::Proved, 0);
            assert!(trust.len() <= 100_000);
        }
        assert!(trust.is_trusted(ip(999_999), 1));
        assert!(!trust.is_trusted(ip(999_999), PROOF_LIFE_MS));
    }
}
