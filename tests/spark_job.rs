//! The Spark job's own queries, unchanged, on our table (issue 21): its daily counts by
//! `session_date`, its cohort sample by `user_hash_bucket`, and its lookup by both, run in Spark
//! (PySpark with Iceberg's runtime, through Iceberg's REST catalog on moto's S3) on the sessions
//! table, give exactly what the same queries give over Spark's own `date_format` and `hash` of the
//! reference sessions. pyiceberg's planning shows that a day's filter on `session_date` skips the
//! other days' files.

mod common;

use common::{
    HOUR, Lcg, MIN, RestOverS3, Sessionize, default_reference, event, read_tables_from,
    reader_script, write_inputs,
};

/// The first day of the workload: 2026-03-01.
const FIRST_DAY: u64 = 1_772_323_200_000;
const DAY: u64 = 24 * HOUR;
const DAYS: u64 = 6;

/// Two partitions of sessions of many users over six days, each partition in event-time order (so
/// that nothing is late): enough users that every cohort bucket the job samples has some.
fn workload() -> Vec<Vec<u8>> {
    let mut rng = Lcg(21);
    let mut events: [Vec<(u64, String)>; 2] = [Vec::new(), Vec::new()];
    for user in 0..3_000usize {
        let user_id = format!("user-{user}-ü");
        for visit in 0..1 + rng.below(3) {
            // Any minute of any day: some visits run on past midnight.
            let start = FIRST_DAY + rng.below(DAYS * DAY);
            for step in 0..1 + rng.below(4) {
                let id = format!("{user}-{visit}-{step}");
                let time = start + step * 7 * MIN;
                let line = event(&user_id, &id, time, "home", step % 2 == 0);
                events[user % 2].push((time, line));
            }
        }
    }
    events
        .into_iter()
        .map(|mut partition| {
            partition.sort();
            partition
                .into_iter()
                .flat_map(|(_, line)| (line + "\n").into_bytes())
                .collect()
        })
        .collect()
}

/// The UTC date of `ms`, as the job's queries write dates.
fn date(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .expect("a time of the workload")
        .format("%Y-%m-%d")
        .to_string()
}

#[test]
fn the_spark_jobs_queries_give_what_spark_computes_for_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let lake = RestOverS3::start(dir.path());
    let (uri, endpoint) = (&lake.uri, &lake.endpoint);
    let partitions = workload();
    let inputs = write_inputs(dir.path(), &partitions);
    let expected = default_reference(&partitions);
    let catalog = lake.catalog();
    Sessionize::run("s3://lake/warehouse")
        .inputs(&inputs)
        .catalog(&catalog)
        .args(["-w", "2"])
        .success();
    assert_eq!(
        read_tables_from(&catalog, dir.path().join("reader")).sessions,
        expected.sessions
    );

    let reference = serde_json::json!({
        "sessions": expected
            .sessions
            .iter()
            .map(|s| (s.user_id.clone(), s.start_ms))
            .collect::<Vec<_>>(),
        "from": date(FIRST_DAY + DAY),
        "to": date(FIRST_DAY + 4 * DAY),
        "day": date(FIRST_DAY + 2 * DAY),
    });
    let reference_path = dir.path().join("reference.json");
    std::fs::write(&reference_path, reference.to_string()).unwrap();
    let result = reader_script(
        "spark_job.py",
        &[uri.as_ref(), endpoint.as_ref(), reference_path.as_ref()],
        dir.path(),
    );
    for query in ["daily_counts", "cohort_sample", "day_and_bucket"] {
        let ours = &result["ours"][query];
        let job = &result["spark_job"][query];
        assert!(
            ours.as_array().is_some_and(|rows| !rows.is_empty()),
            "{query}: no rows on our table: {result}"
        );
        assert_eq!(
            ours, job,
            "{query}: our table against the Spark job's columns"
        );
    }
    // Four days of daily counts, every cohort bucket sampled.
    assert_eq!(result["ours"]["daily_counts"].as_array().unwrap().len(), 4);
    let buckets: std::collections::BTreeSet<i64> = result["ours"]["cohort_sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].as_i64().unwrap())
        .collect();
    assert_eq!(buckets, [10, 25, 50, 75].into());
    // A one-day filter on session_date plans only that day's files.
    let (all, one_day) = (
        result["files"]["all"].as_u64().unwrap(),
        result["files"]["one_day"].as_u64().unwrap(),
    );
    eprintln!("pyiceberg plans {one_day} of {all} data files for session_date = one day");
    assert!(
        one_day >= 1 && one_day * 3 <= all,
        "a one-day filter planned {one_day} of {all} files"
    );
}
