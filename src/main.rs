//! The `hookrace` binary: parse the command line, start logging, run the command; what each
//! command does and its exit code live in the library ([`hookrace::apps::command`]).

use std::process::ExitCode;

use hookrace::apps::command;

fn main() -> ExitCode {
    match command::parse() {
        Ok(cli) => {
            command::start_logging(&cli);
            command::run(cli)
        }
        Err(code) => code,
    }
}
