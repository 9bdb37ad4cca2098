//! Session rules throughput (buffering, ordering, de-duplication, splitting, closing):
//! `cargo bench --bench rules`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sessionize::rules::{Boundary, SessionRules, Sessionizer};

const EVENTS: u64 = 200_000;
const USERS: u64 = 5_000;

fn rules(c: &mut Criterion) {
    // Users interleaved in event-time order, every user active every ~50 s of event time, with
    // the watermark advancing every 1000 events.
    let events: Vec<(String, String, &str, u64)> = (0..EVENTS)
        .map(|i| {
            let user = (i * 7919) % USERS;
            (
                format!("user-{user:06}"),
                format!("e-{i}"),
                ["home", "search", "results", "cart"][(i % 4) as usize],
                1_772_323_200_000 + i * 10,
            )
        })
        .collect();
    let rules = SessionRules {
        inactivity_ms: 30 * 60_000,
        max_duration_ms: 2 * 3_600_000,
        dedup_window_ms: 10 * 60_000,
    };
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("push_advance_finish", |b| {
        b.iter(|| {
            let mut sessionizer = Sessionizer::new(rules);
            let mut closed = Vec::new();
            for (i, (user, id, page, time)) in events.iter().enumerate() {
                sessionizer.push(
                    user.as_str(),
                    id.as_str(),
                    Some(page),
                    *time,
                    Boundary::NONE,
                );
                if i % 1000 == 999 {
                    sessionizer.advance(*time - 60_000, &mut closed);
                }
            }
            sessionizer.finish(u64::MAX, usize::MAX, &mut closed);
            closed.len()
        })
    });
    group.finish();
}

criterion_group!(benches, rules);
criterion_main!(benches);
