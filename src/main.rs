use std::process::ExitCode;

use clap::Parser;
use ztp_operator::{
    api,
    cli::{Cli, Command},
    telemetry,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => match api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRDs as YAML: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Controller | Command::Serve | Command::Standalone => {
            telemetry::init(cli.log_json);
            eprintln!("error: `{}` is not implemented yet", subcommand_name(&cli.command));
            ExitCode::from(2)
        }
    }
}

fn subcommand_name(c: &Command) -> &'static str {
    match c {
        Command::Controller => "controller",
        Command::Serve => "serve",
        Command::Standalone => "standalone",
        Command::Crds => "crds",
    }
}
