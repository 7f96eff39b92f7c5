//! Deserializers for the configuration's typed values (durations, routes,
//! domains, CIDRs, enumerations), so a bad value is reported with its line.

use std::time::Duration;

use magicmx_node::route::smtp::Xclient;
use magicmx_node::route::Route;
use magicmx_proto::Domain;
use serde::{de::Error, Deserialize, Deserializer};

/// `"500ms"`, `"15m"`, `"24h"` (humantime syntax).
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        D::Error::custom(format!("bad duration {text:?}: {e} (write e.g. \"500ms\", \"2s\", \"15m\")"))
    })
}

pub fn route<'de, D: Deserializer<'de>>(d: D) -> Result<Route, D::Error> {
    String::deserialize(d)?.parse().map_err(D::Error::custom)
}

pub fn domain<'de, D: Deserializer<'de>>(d: D) -> Result<Domain, D::Error> {
    let text = String::deserialize(d)?;
    let domain = Domain::parse(&text).map_err(|e| D::Error::custom(format!("{text:?}: {e}")))?;
    if domain.is_literal() {
        return Err(D::Error::custom("an address literal cannot be a served domain"));
    }
    Ok(domain)
}

pub fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| D::Error::custom(format!("{text:?} is not an address or CIDR block")))
        })
        .collect()
}

/// `xclient = "require" | "offered" | "off"`; `true` and `false`, as older
/// releases wrote it, mean `"offered"` and `"off"`.
pub fn xclient<'de, D: Deserializer<'de>>(d: D) -> Result<Xclient, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Flag(bool),
        Word(String),
    }
    match Given::deserialize(d)? {
        Given::Flag(true) => Ok(Xclient::Offered),
        Given::Flag(false) => Ok(Xclient::Off),
        Given::Word(word) => match word.as_str() {
            "require" => Ok(Xclient::Require),
            "offered" => Ok(Xclient::Offered),
            "off" => Ok(Xclient::Off),
            _ => Err(D::Error::custom(format!("{word:?}: use \"require\", \"offered\" or \"off\""))),
        },
    }
}
