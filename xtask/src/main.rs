//! `cargo xtask`: parses the command line and dispatches to the steps.
//! Usage errors exit with 2, failures of a step with 1.

use std::process::ExitCode;

use xtask::cli::{self, Step, Task, Usage};
use xtask::steps;
use xtask::util::text::clean_message;

fn main() -> ExitCode {
    let args = std::env::args_os().skip(1).collect();
    match cli::parse(args).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Messages may quote a server: no raw control characters, no token.
            if let Some(Usage(msg)) = err.downcast_ref::<Usage>() {
                eprintln!("error: {}", clean_message(msg));
                eprintln!("Run `cargo xtask resources --help` for usage.");
                return ExitCode::from(2);
            }
            eprintln!("error: {}", clean_message(&format!("{err:#}")));
            ExitCode::from(1)
        }
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Help(text) => {
            print!("{text}");
            Ok(())
        }
        Task::Bench(args) => steps::bench::run(&args),
        Task::Resources(opts, step) => match step {
            Step::Run => steps::run::run(&opts),
            Step::Download => steps::download::run(&opts),
            Step::Merge => steps::merge::run(&opts),
            Step::Decompress(None) => steps::decompress::run(&opts),
            Step::Decompress(Some(dir)) => steps::decompress::run_from(&opts, &dir),
            Step::Convert(args) => steps::convert::run(&opts, args),
            Step::Verify(args) => steps::verify::run(&opts, &args),
            Step::List => steps::list::run(&opts),
            Step::Mirror { arches, oses } => steps::mirror::run(&opts, &arches, &oses),
            Step::Pack(args) => steps::pack::run(&opts, args),
            Step::Upload(args) => steps::upload::run(&opts, args),
            Step::Cache(cmd) => steps::cache::run(&opts, &cmd),
        },
    }
}
