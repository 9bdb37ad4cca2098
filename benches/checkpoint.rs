//! The cost of a checkpoint of 1M open sessions: writing it (state copy, bincode, fsync) and
//! restoring it, and its size on disk. `cargo bench --bench checkpoint`.

use criterion::{Criterion, criterion_group, criterion_main};
use sessionize::commit::{CheckpointRef, CheckpointStore};
use sessionize::config::PipelineConfig;
use sessionize::rules::{Boundary, SessionRules, Sessionizer};

const SESSIONS: u64 = 1_000_000;

/// A sessionizer holding `SESSIONS` open sessions of three events each, applied (no pending
/// events) and past the de-duplication window, as a long-running pipeline holds them.
fn open_sessions() -> Sessionizer {
    let rules = SessionRules {
        inactivity_ms: 30 * 60_000,
        max_duration_ms: 2 * 3_600_000,
        dedup_window_ms: 10 * 60_000,
    };
    let pages = ["home", "search", "results", "hotel_details", "cart"];
    let mut sessionizer = Sessionizer::new(rules);
    let mut closed = Vec::new();
    for step in 0..3u64 {
        for user in 0..SESSIONS {
            let time = 1_772_323_200_000 + step * 60_000 + user % 1000;
            sessionizer.push(
                format!("user-{user:08}"),
                format!("event-{user}-{step}"),
                Some(pages[((user + step) % 5) as usize]),
                time,
                Boundary::NONE,
            );
        }
    }
    sessionizer.advance(1_772_323_200_000 + 20 * 60_000, &mut closed);
    assert!(closed.is_empty());
    assert_eq!(sessionizer.open_sessions() as u64, SESSIONS);
    sessionizer
}

fn checkpoint(c: &mut Criterion) {
    let sessionizer = open_sessions();
    let dir = tempfile::tempdir().unwrap();
    let config = PipelineConfig::new(Vec::new(), dir.path());
    let store = CheckpointStore::new(&config, &uuid::Uuid::nil()).unwrap();
    let epoch_dir = CheckpointStore::epoch_dir(1, "bench");
    let part = store
        .write_part(&epoch_dir, 0, &sessionizer.checkpoint(), SESSIONS, 0)
        .unwrap();
    println!(
        "checkpoint of {SESSIONS} open sessions: {} bytes ({} bytes per session)",
        part.bytes,
        part.bytes / SESSIONS
    );
    let mut group = c.benchmark_group("checkpoint_1m_open_sessions");
    group.sample_size(10);
    group.bench_function("write", |b| {
        b.iter(|| {
            store
                .write_part(&epoch_dir, 0, &sessionizer.checkpoint(), SESSIONS, 0)
                .unwrap()
        })
    });
    let reference = CheckpointRef {
        dir: epoch_dir.clone(),
        parts: vec![part.file.clone()],
    };
    group.bench_function("restore", |b| {
        b.iter(|| {
            let state = store.read_part(&reference, &part.file).unwrap();
            let mut restored = Sessionizer::new(SessionRules {
                inactivity_ms: 30 * 60_000,
                max_duration_ms: 2 * 3_600_000,
                dedup_window_ms: 10 * 60_000,
            });
            restored.restore(state, |_| true);
            restored.open_sessions()
        })
    });
    group.finish();
}

criterion_group!(benches, checkpoint);
criterion_main!(benches);
