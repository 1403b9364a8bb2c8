//! `cargo xtask`: parses the command line and dispatches to the steps.
//! Usage errors exit with 2, failures of a step with 1.

use std::process::ExitCode;

use xtask::cli::{self, Step, Task, Usage};
use xtask::{bench, convert, merge, mirror, pipeline, release, verify};

fn main() -> ExitCode {
    let args = std::env::args_os().skip(1).collect();
    match cli::parse(args).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Messages may quote a server: no raw control characters, no token.
            if let Some(Usage(msg)) = err.downcast_ref::<Usage>() {
                eprintln!("error: {}", xtask::text::clean_message(msg));
                eprintln!("Run `cargo xtask resources --help` for usage.");
                return ExitCode::from(2);
            }
            eprintln!("error: {}", xtask::text::clean_message(&format!("{err:#}")));
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
        Task::Bench(args) => bench::main(args),
        Task::Resources(opts, step) => match step {
            Step::Run => pipeline::run(&opts),
            Step::Download => pipeline::download(&opts),
            Step::Merge => merge::run(&opts),
            Step::Decompress => pipeline::decompress(&opts),
            Step::Convert(args) => convert::run(&opts, args),
            Step::Verify(depth) => verify::run(&opts, depth),
            Step::List => release::list(&opts),
            Step::Mirror { arches, oses } => mirror::run(&opts, &arches, &oses),
        },
    }
}
