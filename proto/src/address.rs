//! Mail addresses and domains as they appear in the SMTP envelope (RFC 5321
//! §4.1.2, with the UTF-8 forms of RFC 6531), normalised for comparison.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an envelope address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address has no @domain")]
    MissingDomain,
    #[error("empty local part")]
    EmptyLocalPart,
    #[error("local part longer than 64 octets")]
    LocalPartTooLong,
    #[error("invalid domain: {0}")]
    InvalidDomain(&'static str),
}

/// A domain name, lower-cased and without a trailing dot, or an address
/// literal such as `[192.0.2.1]` (kept as written; never a served domain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Domain(String);

impl Domain {
    /// Maximum length of a domain name (RFC 5321 §4.5.3.1.2).
    pub const MAX_LEN: usize = 255;

    pub fn parse(input: &str) -> Result<Domain, AddressError> {
        if input.starts_with('[') {
            if !input.ends_with(']') || input.len() < 3 {
                return Err(AddressError::InvalidDomain("unterminated address literal"));
            }
            return Ok(Domain(input.to_ascii_lowercase()));
        }
        let name = input.strip_suffix('.').unwrap_or(input);
        if name.is_empty() {
            return Err(AddressError::InvalidDomain("empty"));
        }
        if name.len() > Self::MAX_LEN {
            return Err(AddressError::InvalidDomain("longer than 255 octets"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(AddressError::InvalidDomain("empty label"));
            }
            if label.len() > 63 {
                return Err(AddressError::InvalidDomain("label longer than 63 octets"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(AddressError::InvalidDomain("label starts or ends with '-'"));
            }
            let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii();
            if !label.chars().all(allowed) {
                return Err(AddressError::InvalidDomain("character not allowed in a name"));
            }
        }
        Ok(Domain(name.to_lowercase()))
    }

    /// True for `[...]` address literals.
    pub fn is_literal(&self) -> bool {
        self.0.starts_with('[')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `local@domain`. The local part keeps its case (RFC 5321 §2.4); the domain is
/// normalised by [`Domain::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Address {
    pub local: String,
    pub domain: Domain,
}

impl Address {
    /// Maximum length of a local part (RFC 5321 §4.5.3.1.1).
    pub const MAX_LOCAL_LEN: usize = 64;

    /// Parses `local@domain` (the path without angle brackets; source routes
    /// already removed). The last `@` separates the domain, so a quoted local
    /// part may contain `@`.
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        let (local, domain) = input.rsplit_once('@').ok_or(AddressError::MissingDomain)?;
        if local.is_empty() || local == "\"\"" {
            return Err(AddressError::EmptyLocalPart);
        }
        if local.len() > Self::MAX_LOCAL_LEN {
            return Err(AddressError::LocalPartTooLong);
        }
        Ok(Address { local: local.to_string(), domain: Domain::parse(domain)? })
    }

    /// True when the local part carries another routing: `%` hacks, bang
    /// paths or an `@` inside quotes. A relay that honoured any of these
    /// downstream would be open, so such recipients are refused.
    pub fn has_routing_characters(&self) -> bool {
        self.local.contains(['%', '!', '@'])
    }

    /// True when the address needs SMTPUTF8 (RFC 6531) to be carried.
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.as_str().is_ascii()
    }

    /// True for `postmaster` in any case (RFC 5321 §4.5.1).
    pub fn is_postmaster(&self) -> bool {
        self.local.eq_ignore_ascii_case("postmaster")
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_is_lower_cased_and_loses_its_trailing_dot() {
        let a = Address::parse("Joe@Example.TEST.").unwrap();
        assert_eq!(a.local, "Joe");
        assert_eq!(a.domain.as_str(), "example.test");
    }

    #[test]
    fn address_literal_is_kept_and_marked() {
        let a = Address::parse("user@[127.0.0.1]").unwrap();
        assert!(a.domain.is_literal());
    }

    #[test]
    fn bad_domains_are_refused() {
        for bad in ["a@", "a@.x", "a@x..y", "a@-x.y", "a@x_y.z", "a@[1.2.3.4", "noat"] {
            assert!(Address::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn routing_characters_are_detected() {
        for routed in ["user%other@example.test", "host!user@example.test", "\"a@b\"@example.test"] {
            assert!(Address::parse(routed).unwrap().has_routing_characters(), "{routed}");
        }
        assert!(!Address::parse("first.last+tag@example.test").unwrap().has_routing_characters());
    }

    #[test]
    fn utf8_addresses_are_recognised() {
        assert!(Address::parse("jösé@example.test").unwrap().is_utf8());
        assert!(Address::parse("a@bücher.example").unwrap().is_utf8());
        assert!(!Address::parse("a@example.test").unwrap().is_utf8());
    }
}
