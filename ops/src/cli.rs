//! The command line: `magicmx run`, `magicmx check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Parser)]
#[command(name = "magicmx", version, about = "A throttling magic-MX relay node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node (without --config: the embedded single-node default).
    Run {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and say what is wrong, with file, line and key.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the embedded default configuration.
    DefaultConfig,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let config = match config {
                Some(path) => match Config::load(&path) {
                    Ok(config) => config,
                    Err(e) => return fail(&format!("configuration error: {e}")),
                },
                None => Config::embedded(),
            };
            match crate::run::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            }
        }
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(parsed) => {
                let domains: Vec<String> =
                    parsed.domains.iter().map(|d| format!("{} → {}", d.name, d.route)).collect();
                println!("{}: OK", config.display());
                println!("  smtp: {:?}, hostname {}", parsed.smtp.listen, parsed.smtp.hostname);
                println!("  data: {}", parsed.data_dir().display());
                println!("  domains: {}", domains.join(", "));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
        Command::DefaultConfig => {
            print!("{}", crate::config::EMBEDDED_DEFAULT);
            ExitCode::SUCCESS
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("magicmx: {message}");
    ExitCode::FAILURE
}
