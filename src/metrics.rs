//! Process-wide counters behind the progress line of a long run. They are approximate views for
//! people; the committed totals come from the dataflow itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub static BYTES_READ: AtomicU64 = AtomicU64::new(0);
pub static LINES_READ: AtomicU64 = AtomicU64::new(0);
pub static SESSIONS_CLOSED: AtomicU64 = AtomicU64::new(0);

/// Logs a progress line every `period` until dropped, so that a long run visibly lives.
pub struct ProgressReporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressReporter {
    pub fn start(period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut last = (Instant::now(), 0u64);
            while !flag.load(Relaxed) {
                std::thread::park_timeout(period);
                if flag.load(Relaxed) || last.0.elapsed() < period {
                    continue;
                }
                let lines = LINES_READ.load(Relaxed);
                let rate = (lines - last.1) as f64 / last.0.elapsed().as_secs_f64();
                tracing::info!(
                    elapsed_s = started.elapsed().as_secs(),
                    lines,
                    mib_read = BYTES_READ.load(Relaxed) >> 20,
                    lines_per_s = rate as u64,
                    sessions_closed = SESSIONS_CLOSED.load(Relaxed),
                    "progress"
                );
                last = (Instant::now(), lines);
            }
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
