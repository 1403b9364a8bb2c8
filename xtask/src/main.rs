//! `cargo xtask`: parses the command line and dispatches to the steps; then
//! the exit code says the class of a failure (`cli::exit`), and with
//! `--json` one document goes to stdout.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Instant;

use util::say;
use util::text::clean_message;
use xtask::cli::{self, exit, Step, Task};
use xtask::steps;

fn main() -> ExitCode {
    let started = Instant::now();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // Known before parsing, so that a usage error still gets its document.
    let json = args.iter().any(|a| a == "--json");
    let (step, result) = match cli::parse(args) {
        Ok(task) => {
            let step = task_name(&task);
            if let Task::Resources(opts, _) = &task {
                say::set(opts.quiet, opts.json);
            }
            (step, run(task))
        }
        Err(e) => ("resources".to_string(), Err(e)),
    };
    let code = match &result {
        Ok(()) => 0,
        Err(err) => {
            // Messages may quote a server: no raw control characters, no token.
            let msg = clean_message(&format!("{err:#}"));
            eprintln!("error: {msg}");
            let class = exit::class(err);
            if class == exit::Class::Usage {
                eprintln!("Run `cargo xtask resources --help` for usage.");
            }
            class.code()
        }
    };
    if json {
        say::write_stdout(&format!("{}\n", exit::document(&step, &result, started)));
    }
    ExitCode::from(code)
}

fn task_name(task: &Task) -> String {
    match task {
        Task::Help(_) => "help".into(),
        Task::Bench(_) => "bench".into(),
        Task::Resources(_, step) => step.name().into(),
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Help(text) => {
            say::write_stdout(&text);
            Ok(())
        }
        Task::Bench(args) => steps::bench::run(&args),
        Task::Resources(opts, step) => match step {
            Step::Run => steps::run::run(&opts),
            Step::Download => steps::download::run(&opts),
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
