//! magicmx (ops): the operator's face of a node: command line, configuration,
//! and the `run` loop.

mod admin;
pub mod cli;
mod client;
pub mod config;
mod dns_records;
mod init;
mod pki_files;
mod policy;
mod priority;
mod run;
mod status_cmd;
mod trust_cmd;
