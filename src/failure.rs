//! How a run ends when something goes wrong: one line that names the cause and what to do, and an
//! exit code that tells a supervisor (systemd, Kubernetes) which kind of failure it was.
//!
//! Whatever fails, the whole process ends: a worker that stopped alone would leave its peers
//! waiting forever for its progress. A process that ends takes the cluster with it, because the
//! other processes lose their connection to it and end in turn ([`EXIT_PEER_LOST`]). What is
//! committed stays consistent, and a restart resumes where the table says.
//!
//! Exit codes: 0 done; 2 a bad command line (clap's); and the codes below.

use std::fmt;

/// Start-up failed: a bad setting, an unreadable input, an unreachable broker or catalog. Fix what
/// the message says, then start again.
pub const EXIT_STARTUP: i32 = 1;
/// A running pipeline hit an error it cannot continue from (storage, catalog, broker, checkpoint).
/// Nothing partial is committed; a restart resumes from the last commit.
pub const EXIT_RUNTIME: i32 = 3;
/// Another pipeline committed to the same table: two writers must not share a table. Stop one of
/// them; restarting this one blindly would fail again.
pub const EXIT_CONFLICT: i32 = 4;
/// Another process of the cluster ended, so this one cannot go on. Restart every process.
pub const EXIT_PEER_LOST: i32 = 5;
/// A bug: a worker panicked. A restart resumes from the last commit; please report it.
pub const EXIT_INTERNAL: i32 = 70;

/// Another pipeline has committed to a table this run writes.
#[derive(Debug)]
pub struct TwoWriters(pub String);

impl fmt::Display for TwoWriters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TwoWriters {}

/// The exit code for an error that ends a running pipeline.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    if error.chain().any(|e| e.is::<TwoWriters>()) {
        EXIT_CONFLICT
    } else {
        EXIT_RUNTIME
    }
}

/// Ends the process after an error the pipeline cannot continue from, with one line on stderr.
pub fn stop(error: anyhow::Error) -> ! {
    tracing::error!("{error:#}");
    eprintln!("sessionize: {error:#}");
    std::process::exit(exit_code(&error))
}

/// Makes a panic in any thread (a worker, or timely's network threads when a peer process is
/// gone) end the whole process with one line instead of leaving the other workers waiting.
/// `RUST_BACKTRACE=1` adds the backtrace of a panic.
pub fn end_process_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        // timely's network threads panic with this prefix when a peer's connection ends.
        if message.contains("timely communication error") {
            eprintln!(
                "sessionize: lost the connection to another process of the cluster ({message}); \
                 this process stops too: restart every process (the table says where to resume)"
            );
            std::process::exit(EXIT_PEER_LOST);
        }
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default_hook(info);
        }
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "sessionize: internal error in thread {}: {message}{location}; the process stops \
             (a restart resumes from the last commit; please report this)",
            thread.name().unwrap_or("unnamed")
        );
        std::process::exit(EXIT_INTERNAL);
    }));
}

/// Named points in the commit protocol (and between the end of input's slices of closing
/// sessions) where the process can be made to die, as a kill -9 would, for the fault-injection
/// tests: `SESSIONIZE_FAIL_AT=<name>` aborts the process the first time it passes `name`, and
/// `<name>:<n>` the n-th time. The variable is read once; without it a fail point costs one
/// comparison.
pub fn fail_point(name: &str) {
    if injected(name) {
        eprintln!("sessionize: fail point {name} reached (SESSIONIZE_FAIL_AT); aborting");
        std::process::abort();
    }
}

/// Whether the fault named by `SESSIONIZE_FAIL_AT` is to happen at this pass of `name` (see
/// [`fail_point`]); for faults other than a kill, such as a commit whose response is lost.
pub fn injected(name: &str) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static ARMED: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let text = std::env::var("SESSIONIZE_FAIL_AT").ok()?;
        Some(match text.split_once(':') {
            Some((point, n)) => (point.to_string(), n.parse().unwrap_or(1)),
            None => (text, 1),
        })
    });
    matches!(armed, Some((point, n))
        if point == name && PASSED.fetch_add(1, Ordering::Relaxed) + 1 == *n)
}
