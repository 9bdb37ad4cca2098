//! Process-wide counters behind the progress of a run, and how it is shown: a progress bar on a
//! terminal for a bounded run, a log line every few seconds otherwise. They are approximate views
//! for people; the committed totals come from the dataflow itself.
//!
//! Log lines go through [`LogWriter`], which lifts the bar out of the way while a line is written,
//! so that logs and the bar never garble each other.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub static BYTES_READ: AtomicU64 = AtomicU64::new(0);
pub static LINES_READ: AtomicU64 = AtomicU64::new(0);
pub static SESSIONS_CLOSED: AtomicU64 = AtomicU64::new(0);

/// Input a bounded run has to read in this process, in offsets (bytes of files, records of
/// Kafka partitions) from where each partition starts to where it stops; readers add their
/// partitions' spans as they open them ([`add_input`]).
pub static INPUT_TOTAL: AtomicU64 = AtomicU64::new(0);
/// Offsets of that input the stampers have consumed.
pub static INPUT_DONE: AtomicU64 = AtomicU64::new(0);
/// Some input of this process has no known end (standard input, an unbounded topic).
pub static INPUT_UNSIZED: AtomicBool = AtomicBool::new(false);

/// Whether a run may draw progress bars (`--log-format json` turns them off: every line of
/// standard error is then for machines).
static BARS_ALLOWED: AtomicBool = AtomicBool::new(true);

/// The bar being drawn, if any, for [`LogWriter`] to lift while it writes.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A partition's span of input: `to` is where a bounded run stops, `None` if it never does.
pub fn add_input(from: u64, to: Option<u64>) {
    match to {
        Some(to) => {
            INPUT_TOTAL.fetch_add(to.saturating_sub(from), Relaxed);
        }
        None => INPUT_UNSIZED.store(true, Relaxed),
    }
}

/// Offsets a stamper consumed.
pub fn input_done(offsets: u64) {
    INPUT_DONE.fetch_add(offsets, Relaxed);
}

/// No progress bars in this process, whatever standard error is.
pub fn disable_bars() {
    BARS_ALLOWED.store(false, Relaxed);
}

/// What a run's input offsets count, for the bar's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputUnit {
    /// Bytes of files.
    Bytes,
    /// Records of Kafka partitions.
    Records,
}

/// How a run shows that it lives: a bar for a bounded run on a terminal, else a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressStyleChoice {
    Bar(InputUnit),
    LogLine,
}

impl ProgressStyleChoice {
    /// A bar when the run is `bounded`, standard error is a terminal and bars are allowed.
    pub fn for_run(bounded: bool, unit: InputUnit) -> Self {
        if bounded && BARS_ALLOWED.load(Relaxed) && std::io::stderr().is_terminal() {
            ProgressStyleChoice::Bar(unit)
        } else {
            ProgressStyleChoice::LogLine
        }
    }
}

/// Shows the run's progress until dropped, so that a long run visibly lives.
pub struct ProgressReporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How often the bar's figures are refreshed.
const BAR_REFRESH: Duration = Duration::from_millis(250);

impl ProgressReporter {
    /// A log line every `period`, or a bar refreshed a few times a second.
    pub fn start(period: Duration, style: ProgressStyleChoice) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || match style {
            ProgressStyleChoice::LogLine => log_lines(&flag, period),
            ProgressStyleChoice::Bar(unit) => draw_bar(&flag, unit),
        });
        ProgressReporter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressReporter {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn log_lines(stop: &AtomicBool, period: Duration) {
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    while !stop.load(Relaxed) {
        std::thread::park_timeout(period);
        if stop.load(Relaxed) || last.0.elapsed() < period {
            continue;
        }
        let lines = LINES_READ.load(Relaxed);
        let rate = (lines - last.1) as f64 / last.0.elapsed().as_secs_f64();
        let total = INPUT_TOTAL.load(Relaxed);
        // Only a run whose every input has an end knows how much is done.
        let done_pct = (total > 0 && !INPUT_UNSIZED.load(Relaxed))
            .then(|| percent(INPUT_DONE.load(Relaxed), total));
        tracing::info!(
            elapsed_s = started.elapsed().as_secs(),
            lines,
            mib_read = BYTES_READ.load(Relaxed) >> 20,
            lines_per_s = rate as u64,
            sessions_closed = SESSIONS_CLOSED.load(Relaxed),
            done_pct,
            "progress"
        );
        last = (Instant::now(), lines);
    }
}

/// `done` of `total` in percent, one decimal.
fn percent(done: u64, total: u64) -> f64 {
    (done.min(total) as f64 * 1000.0 / total.max(1) as f64).round() / 10.0
}

fn draw_bar(stop: &AtomicBool, unit: InputUnit) {
    let amounts = match unit {
        InputUnit::Bytes => "{binary_bytes}/{binary_total_bytes}",
        InputUnit::Records => "{human_pos}/{human_len} records",
    };
    let template = format!(
        "{{elapsed_precise}} [{{wide_bar}}] {{percent:>3}}% {amounts} {{msg}}, {{eta}} left"
    );
    let style = ProgressStyle::with_template(&template)
        .expect("the bar's template is valid")
        .progress_chars("=> ");
    // Hidden until the readers have said how much there is to read: a bar of 0 of 0 is "100%".
    let bar =
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden()).with_style(style);
    let mut shown = false;
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
    // Events per second over the last few seconds: steadier than per refresh, and it follows a
    // change of pace sooner than the average since the start.
    let mut window = std::collections::VecDeque::from([(Instant::now(), 0u64)]);
    loop {
        let stopping = stop.load(Relaxed);
        let lines = LINES_READ.load(Relaxed);
        let now = Instant::now();
        window.push_back((now, lines));
        while window.len() > 2 && now - window[0].0 > Duration::from_secs(5) {
            window.pop_front();
        }
        let (since, before) = window[0];
        let rate = (lines - before) as f64 / (now - since).as_secs_f64().max(1e-3);
        let total = INPUT_TOTAL.load(Relaxed);
        bar.set_length(total);
        bar.set_position(INPUT_DONE.load(Relaxed));
        bar.set_message(format!(
            "{} events/s, {} sessions",
            rate.round() as u64,
            SESSIONS_CLOSED.load(Relaxed)
        ));
        if !shown && (total > 0 || stopping) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            shown = true;
        }
        if stopping {
            break;
        }
        std::thread::park_timeout(BAR_REFRESH);
    }
    bar.finish();
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The writer of the log subscriber: standard error, one whole line at a time, with the progress
/// bar (if one is drawn) lifted while the line is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One log line, written to standard error when dropped.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let write = || {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&self.0);
            let _ = stderr.flush();
        };
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_capped_and_rounded() {
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(5, 4), 100.0);
        assert_eq!(percent(0, 0), 0.0);
    }
}
