//! The cost of checkpoints of 1M open sessions (`SESSIONIZE_BENCH_SESSIONS` for another count):
//! writing a full one and one that amends it after 1% of the users had an event (state
//! serialization, zstd, fsync), their sizes, and restoring the two. `cargo bench --bench
//! checkpoint`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use criterion::{Criterion, criterion_group, criterion_main};
use sessionize::commit::{CheckpointPart, CheckpointRef, CheckpointStore};
use sessionize::config::PipelineConfig;
use sessionize::rules::{Boundary, SessionRules, Sessionizer};

const START_MS: u64 = 1_772_323_200_000;
const MINUTE_MS: u64 = 60_000;

fn rules() -> SessionRules {
    SessionRules {
        inactivity_ms: 30 * MINUTE_MS,
        max_duration_ms: 2 * 60 * MINUTE_MS,
        dedup_window_ms: 10 * MINUTE_MS,
    }
}

fn sessions() -> u64 {
    std::env::var("SESSIONIZE_BENCH_SESSIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

/// A user id as tracking pipelines make them: a random UUID (so that compression finds in ids
/// only what it would find in real ones).
fn user_id(user: u64) -> String {
    let random = xxhash_rust::xxh3::xxh3_128(&user.to_le_bytes());
    uuid::Uuid::from_u128(random).to_string()
}

/// A sessionizer holding `sessions` open sessions of three events each, applied (no pending
/// events) and past the de-duplication window, as a long-running pipeline holds them.
fn open_sessions(sessions: u64) -> Sessionizer {
    let pages = ["home", "search", "results", "hotel_details", "cart"];
    let mut sessionizer = Sessionizer::new(rules());
    let mut closed = Vec::new();
    for step in 0..3u64 {
        for user in 0..sessions {
            sessionizer.push(
                &user_id(user),
                &format!("{}-{step}", user_id(user ^ u64::MAX)),
                Some(pages[((user + step) % 5) as usize]),
                START_MS + step * MINUTE_MS + user % 1000,
                Boundary::NONE,
            );
        }
    }
    sessionizer.advance(START_MS + 20 * MINUTE_MS, &mut closed);
    assert!(closed.is_empty());
    assert_eq!(sessionizer.open_sessions() as u64, sessions);
    sessionizer
}

/// One commit interval later: every hundredth user had one more event.
fn one_percent_more(sessionizer: &mut Sessionizer, sessions: u64) {
    let mut closed = Vec::new();
    for user in (0..sessions).step_by(100) {
        let time = START_MS + 21 * MINUTE_MS + user % 1000;
        sessionizer.push(
            &user_id(user),
            &format!("{}-3", user_id(user ^ u64::MAX)),
            Some("checkout"),
            time,
            Boundary::NONE,
        );
    }
    sessionizer.advance(START_MS + 22 * MINUTE_MS, &mut closed);
    assert!(closed.is_empty());
}

fn checkpoint(c: &mut Criterion) {
    let sessions = sessions();
    let mut sessionizer = open_sessions(sessions);
    let dir = tempfile::tempdir().unwrap();
    let config = PipelineConfig::new(Vec::new(), dir.path());
    let store = CheckpointStore::new(&config, &uuid::Uuid::nil()).unwrap();
    // Parts are written once: every write gets a directory of its own.
    let written = AtomicU64::new(0);
    let write = |sessionizer: &Sessionizer, full: bool| -> (String, CheckpointPart) {
        let dir = CheckpointStore::epoch_dir(written.fetch_add(1, Relaxed), "bench");
        let checkpoint = sessionizer.checkpoint(full);
        let part = store.write_part(&dir, 0, &checkpoint, sessions, 0).unwrap();
        (dir, part)
    };
    let raw = bincode::serialized_size(&sessionizer.checkpoint(true)).unwrap();
    println!("checkpoint of {sessions} open sessions, uncompressed: {raw} bytes");
    let (full_dir, full) = write(&sessionizer, true);
    sessionizer.saved();
    one_percent_more(&mut sessionizer, sessions);
    let (amending_dir, amending) = write(&sessionizer, false);
    for (what, part) in [("full", &full), ("amending, 1% changed", &amending)] {
        println!(
            "checkpoint of {sessions} open sessions, {what}: {} bytes ({:.1} bytes per session)",
            part.bytes,
            part.bytes as f64 / sessions as f64
        );
    }
    let mut group = c.benchmark_group(format!("checkpoint_{sessions}_open_sessions"));
    group.sample_size(10);
    group.bench_function("write_full", |b| b.iter(|| write(&sessionizer, true)));
    group.bench_function("write_amending", |b| b.iter(|| write(&sessionizer, false)));
    let chain = CheckpointRef {
        dir: amending_dir,
        parts: vec![amending.file.clone()],
        amends: vec![CheckpointRef {
            dir: full_dir,
            parts: vec![full.file.clone()],
            amends: Vec::new(),
        }],
    };
    group.bench_function("restore_full_and_amending", |b| {
        b.iter(|| {
            let mut restored = Sessionizer::new(rules());
            for link in chain.chain() {
                let state = store.read_part(link, &link.parts[0]).unwrap();
                restored.restore(state, |_| true);
            }
            assert_eq!(restored.open_sessions() as u64, sessions);
        })
    });
    group.finish();
}

criterion_group!(benches, checkpoint);
criterion_main!(benches);
