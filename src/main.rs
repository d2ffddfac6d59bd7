//! The `hookrace` binary: parse the command line, start logging, run the command; what each
//! command does and its exit code live in the library ([`hookrace::cli::run`]).

use std::process::ExitCode;

use hookrace::cli::run as command;

fn main() -> ExitCode {
    match command::parse() {
        Ok(cli) => {
            command::start_logging(&cli);
            command::run(cli)
        }
        Err(code) => code,
    }
}
