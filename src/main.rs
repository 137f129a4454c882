//! The `tinydevcrm` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use tinydevcrm::config::{Cli, Command, SampleDataset};
use tinydevcrm::tables::sample;
use tinydevcrm::{app, cli as client, service, telemetry};

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors exit 1 (clap's own default is 2, which the client's exit codes give to
        // "the server said no"); `--help` and `--version` print and succeed.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Client(command) => return client::run(command).await,
        Command::Serve(args) => app::serve(*args).await,
        Command::Migrate(args) => app::migrate(args).await,
        Command::Health(args) => service::health_check::run(&args).await,
        Command::Sample(args) => match args.dataset {
            SampleDataset::Calls => sample::write_sample(&args.out, args.calls, args.seed),
            SampleDataset::SimInventory => sample::write_sim_inventory(&args.out),
            SampleDataset::SimUsage => sample::write_sim_usage(&args.out),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
