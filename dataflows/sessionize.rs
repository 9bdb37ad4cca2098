//! `sessionize`: the command line. Subcommands run the pipeline over a Kafka topic or files, run
//! an embedded Kafka broker, produce or generate a realistic clickstream, or show the whole path
//! at once (`demo`); [`sessionize::cli`] defines them and carries them out.

use std::io::IsTerminal;
use std::process::ExitCode;

use sessionize::cli::{self, Command, GlobalArgs, LogFormat, commands};
use sessionize::failure;
use sessionize::ops::progress as metrics;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc asks for transparent huge pages on its memory. Memory it gives back and takes again
/// then comes back as whole 2 MiB pages for the kernel to zero: up to a tenth of a run's CPU in
/// `clear_page_erms`. Without them a run takes about 5% less wall time and 45 MiB less memory
/// (docs/PERFORMANCE.md, "Transparent huge pages"). Failure only leaves the kernel's default.
fn without_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    without_transparent_huge_pages();
    let cli = match cli::parse_command_line() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(failure::EXIT_STARTUP as u8);
        }
    };
    init_logging(&cli.global);
    failure::end_process_on_panic();
    let result = match cli.command {
        Command::Run(args) => commands::run(*args),
        Command::Broker(args) => commands::broker(args),
        Command::Inspect(args) => commands::inspect(args),
        Command::Report(args) => commands::report(args),
        Command::Maintain(args) => commands::maintain(args),
        Command::Produce(args) => commands::produce(args),
        Command::Generate(args) => commands::generate(args),
        Command::Demo(args) => commands::demo(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match cli.global.log_format {
                LogFormat::Text => eprintln!("error: {e:#}"),
                LogFormat::Json => tracing::error!("{e:#}"),
            }
            // What reaches here failed to start, but another writer on the table has its own
            // code: restarting blindly would fail again, so schedulers must not retry it.
            let code = match failure::exit_code(&e) {
                failure::EXIT_CONFLICT => failure::EXIT_CONFLICT,
                _ => failure::EXIT_STARTUP,
            };
            ExitCode::from(code as u8)
        }
    }
}

/// Log lines on standard error, through the progress bar's writer, which lifts the bar while a
/// line is written.
fn init_logging(global: &GlobalArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&global.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(metrics::LogWriter);
    match global.log_format {
        LogFormat::Text => logs.with_ansi(colours_wanted()).init(),
        LogFormat::Json => {
            // Every line of standard error is then a JSON object: no bar between them.
            metrics::disable_bars();
            logs.json().with_ansi(false).init();
        }
    }
}

/// Colours only for a person at a terminal, who has not asked for none (https://no-color.org).
fn colours_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    std::io::stderr().is_terminal() && !no_color
}
