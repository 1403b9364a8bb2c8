//! `cargo xtask`: the vSwarm-u resources tool. The command line (`cli`)
//! parses into a command with typed arguments, which runs over one session
//! (`commands`); then the exit code says the class of a failure
//! (`cli::exit`), and with `--json` one document goes to stdout. A thin,
//! binary-only app over the engine crates in `xtask/crates/`, which import
//! one way only, as the dependency graph enforces:
//!
//! `github` (releases, mirrors, the download cache, uploads) → `fetch` (HTTP
//! and the download engine) → `archive` (compression formats, the tar
//! walker, sums, unpacking and packing) → `mgzip` (gzip on every core) and
//! `qcow2` (the image format and its converters) → `install` (the output
//! directory's layout, manifest and swap) → `util` (file-system rules,
//! locks, progress, what is said).

#[macro_use]
extern crate util;

mod cli;
mod commands;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Instant;

use cli::{exit, Task};
use util::say;
use util::text::clean_message;

fn main() -> ExitCode {
    let started = Instant::now();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // Known before parsing, so that a usage error still gets its document.
    let json = args.iter().any(|a| a == "--json");
    let (step, result) = match cli::parse(args) {
        Ok(task) => {
            let step = task_name(&task);
            if let Task::Resources(opts, ..) = &task {
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
        Task::Resources(_, cmd, _) => cmd.name().into(),
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Help(text) => {
            say::write_stdout(&text);
            Ok(())
        }
        Task::Bench(args) => args.run(),
        Task::Resources(opts, _, command) => commands::run(*opts, command),
    }
}
