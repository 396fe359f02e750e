//! `pulse-metrics`: the service and the operator's command line over one
//! store. Everything that is not about the command line lives in the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
