//! magicmx (ops): the operator's face of a node: command line, configuration,
//! and the `run` loop.

pub mod cli;
pub mod config;
mod init;
mod pki_files;
mod run;
