//! Operating a pipeline from outside: `sessionize inspect` against the table's own snapshot and
//! the reference, with real Kafka's lag; `sessionize report` rendered by headless chromium; the
//! progress bar on a pseudo-terminal, the log line without one, and `--log-format json`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    Expected, HOUR, Sessionize, TOPIC, default_reference, headless_chromium, kafka_with_topic,
    read_tables, records_of, screenshot, workload, write_inputs,
};

/// A bounded run over three generated files in `dir`; the inputs, their files, the warehouse and
/// what the reference says the tables hold.
fn pipeline(dir: &Path, seed: u64) -> (Vec<Vec<u8>>, Vec<PathBuf>, PathBuf, Expected) {
    let inputs = workload(seed, 3);
    let files = write_inputs(dir, &inputs);
    let warehouse = dir.join("warehouse");
    Sessionize::run(&warehouse)
        .inputs(&files)
        .args(["-w", "2"])
        .success();
    let expected = default_reference(&inputs);
    (inputs, files, warehouse, expected)
}

fn inspect_json(warehouse: &Path, extra: &[&str]) -> serde_json::Value {
    Sessionize::new("inspect")
        .arg("--warehouse")
        .arg(warehouse)
        .arg("--json")
        .args(extra)
        .json()
}

/// The rows of a table in `inspect --json`.
fn rows(inspection: &serde_json::Value, table: &str) -> u64 {
    inspection["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .unwrap_or_else(|| panic!("no table {table} in {inspection}"))["rows"]
        .as_u64()
        .unwrap()
}

#[test]
fn inspect_agrees_with_the_tables_snapshot_and_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, files, warehouse, expected) = pipeline(dir.path(), 31);
    let actual = read_tables(&warehouse);
    let inspection = inspect_json(&warehouse, &["--commits", "1000"]);

    // Where the table says the pipeline stands.
    let summary = &actual.summary;
    assert_eq!(
        inspection["epoch"].to_string(),
        summary["sessionize.epoch"],
        "{inspection}"
    );
    assert_eq!(inspection["run_id"], summary["sessionize.run-id"].as_str());
    assert_eq!(
        inspection["watermark_ms"].to_string(),
        summary["sessionize.watermark-ms"]
    );
    let offsets: BTreeMap<u32, u64> = inspection["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_u64().unwrap() as u32,
                p["next_offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(offsets, actual.next_offsets());
    // A bounded run over files ends at each file's end.
    let ends: BTreeMap<u32, u64> = inputs
        .iter()
        .enumerate()
        .map(|(p, bytes)| (p as u32, bytes.len() as u64))
        .collect();
    assert_eq!(offsets, ends);

    // Row counts, and the commits that added them.
    assert_eq!(
        rows(&inspection, "sessions.user_sessions"),
        expected.sessions.len() as u64
    );
    assert_eq!(
        rows(&inspection, "sessions.user_sessions_quarantine"),
        expected.quarantined.len() as u64
    );
    assert_eq!(
        rows(&inspection, "sessions.user_sessions_late_events"),
        expected.late.len() as u64
    );
    // Every session closed at the end of the input.
    assert_eq!(rows(&inspection, "sessions.user_sessions_open"), 0);
    let commits = inspection["commits"].as_array().unwrap();
    assert_eq!(commits[0]["epoch"], inspection["epoch"]);
    let added: u64 = commits
        .iter()
        .map(|c| c["rows_added"].as_u64().unwrap())
        .sum();
    assert_eq!(added, expected.sessions.len() as u64);

    // The checkpoint the snapshot names: a bounded run closed every session.
    let checkpoint = &inspection["checkpoint"];
    assert!(checkpoint["bytes"].as_u64().unwrap() > 0, "{checkpoint}");
    assert_eq!(checkpoint["open_sessions"], 0);
    assert!(
        Path::new(checkpoint["location"].as_str().unwrap()).is_dir(),
        "{checkpoint}"
    );

    // The human form names every partition's file and aligns its columns.
    let inspect = Sessionize::new("inspect")
        .arg("--warehouse")
        .arg(&warehouse);
    let text = String::from_utf8(inspect.success().stdout).unwrap();
    for (partition, file) in files.iter().enumerate() {
        let line = text
            .lines()
            .find(|l| l.contains(file.to_str().unwrap()))
            .unwrap_or_else(|| panic!("partition {partition} is not shown:\n{text}"));
        assert!(
            line.trim_start().starts_with(&partition.to_string()),
            "{line}"
        );
        assert!(
            line.contains(&inputs[partition].len().to_string()),
            "{line}"
        );
    }
    for section in ["rows", "partitions", "checkpoint", "last commits"] {
        assert!(text.lines().any(|l| l == section), "no {section}:\n{text}");
    }
    println!("{text}");

    // A directory without tables is one line that says what to give.
    let output = Sessionize::new("inspect")
        .arg("--warehouse")
        .arg(dir.path().join("nothing"))
        .output();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no sessionize tables"), "{stderr}");
}

/// What a chart of the report drew: each bar's (or point's) label and value, in order.
fn drawn(dom: &str, id: &str) -> Vec<(String, String)> {
    let start = dom
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id} in the page"));
    let svg = &dom[start..start + dom[start..].find("</svg>").unwrap()];
    let attribute = |element: &str, name: &str| {
        element
            .split(&format!("{name}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    svg.split('<')
        .filter(|e| e.starts_with("rect class=\"bar\"") || e.starts_with("circle class=\"point\""))
        .map(|e| (attribute(e, "data-label"), attribute(e, "data-value")))
        .collect()
}

fn values(bars: &[(String, String)]) -> Vec<u64> {
    bars.iter().map(|(_, v)| v.parse().unwrap()).collect()
}

/// Counts per hour from the first hour to the last, empty hours included.
fn hourly(times: impl Iterator<Item = i64>) -> Vec<u64> {
    let hours: Vec<i64> = times.map(|t| t / HOUR as i64).collect();
    let (first, last) = (*hours.iter().min().unwrap(), *hours.iter().max().unwrap());
    let mut counts = vec![0; (last - first + 1) as usize];
    for hour in hours {
        counts[(hour - first) as usize] += 1;
    }
    counts
}

#[test]
fn the_report_renders_in_headless_chromium_with_the_references_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, warehouse, expected) = pipeline(dir.path(), 37);
    let page = dir.path().join("sessions.html");
    Sessionize::new("report")
        .arg("--warehouse")
        .arg(&warehouse)
        .arg("--out")
        .arg(&page)
        .success();
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("<script") && !html.contains("src=") && !html.contains("href="),
        "the report must stand alone"
    );

    let url = format!("file://{}", page.display());
    let profile = tempfile::tempdir().unwrap();
    let window = ["--window-size=900,4200"];
    let dom = headless_chromium(
        profile.path(),
        &url,
        &[&window[..], &["--dump-dom"]].concat(),
    );
    let sessions = &expected.sessions;

    // End reasons: one bar per reason, with the reference's count.
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for session in sessions {
        *reasons.entry(session.end_reason.clone()).or_default() += 1;
    }
    let bars = drawn(&dom, "plot-end-reasons");
    let shown: BTreeMap<String, u64> = bars
        .iter()
        .map(|(label, value)| (label.clone(), value.parse().unwrap()))
        .collect();
    assert_eq!(shown, reasons);

    // Sessions per hour of their start, every hour from the first to the last.
    let bars = drawn(&dom, "plot-sessions-per-hour");
    assert_eq!(values(&bars), hourly(sessions.iter().map(|s| s.start_ms)));

    // Late events per hour of their partition's watermark on arrival.
    let bars = drawn(&dom, "plot-late-per-hour");
    assert_eq!(values(&bars), hourly(expected.late.iter().map(|l| l.2)));

    // Quarantined lines: all of them, by the hour of their commit.
    let bars = drawn(&dom, "plot-quarantined-per-hour");
    assert_eq!(
        values(&bars).iter().sum::<u64>(),
        expected.quarantined.len() as u64
    );

    // Pages per session: a bar per count from the fewest pages to the most.
    let pages: Vec<u64> = sessions.iter().map(|s| s.pages.len() as u64).collect();
    let (fewest, most) = (*pages.iter().min().unwrap(), *pages.iter().max().unwrap());
    assert!(most - fewest < 40, "the workload's pages fit one bar each");
    let per_count: Vec<u64> = (fewest..=most)
        .map(|n| pages.iter().filter(|&&p| p == n).count() as u64)
        .collect();
    let bars = drawn(&dom, "plot-pages-per-session");
    assert_eq!(values(&bars), per_count);
    assert_eq!(bars[0].0, fewest.to_string());

    // The histograms hold every session once.
    for id in ["plot-durations", "plot-events-per-session"] {
        let bars = drawn(&dom, id);
        assert_eq!(
            values(&bars).iter().sum::<u64>(),
            sessions.len() as u64,
            "{id}"
        );
    }
    // A point per session against the limit line.
    assert_eq!(drawn(&dom, "plot-duration-vs-events").len(), sessions.len());

    // Every data file of the current snapshot, as pyiceberg lists them, in one bar of sizes.
    let files: u64 = common::pyiceberg(
        &warehouse,
        "print(len(catalog.load_table('sessions.user_sessions').inspect.files()))",
    )
    .trim()
    .parse()
    .unwrap();
    let bars = drawn(&dom, "plot-file-sizes");
    assert!(files > 0);
    assert_eq!(values(&bars).iter().sum::<u64>(), files);
    assert!(dom.contains("class=\"limit\""));

    // The seed's rule checks hold on the committed sessions.
    assert_eq!(dom.matches("class=\"check pass\"").count(), 5, "{dom}");
    assert!(!dom.contains("class=\"check fail\""));

    screenshot(profile.path(), &url, &window, "report.png");
}

/// Each partition's (next offset, log end offset, lag) in `inspect --json --kafka-servers`.
fn lags(warehouse: &Path, servers: &str) -> BTreeMap<u32, (u64, u64, u64)> {
    let inspection = inspect_json(warehouse, &["--kafka-servers", servers]);
    assert_eq!(inspection["kafka_topic"], TOPIC);
    inspection["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let number = |key: &str| p[key].as_u64().unwrap_or_else(|| panic!("{key}: {p}"));
            (
                number("partition") as u32,
                (
                    number("next_offset"),
                    number("log_end_offset"),
                    number("lag"),
                ),
            )
        })
        .collect()
}

#[test]
fn inspect_shows_kafkas_lag_falling_to_zero_after_a_bounded_run() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = kafka_with_topic(dir.path(), 2);
    let servers = kafka.get("BOOTSTRAP");
    let partitions = workload(41, 2);
    // The first half of each partition's records, then the rest.
    let records: Vec<Vec<&[u8]>> = partitions.iter().map(|p| records_of(p)).collect();
    let half = |first: bool| -> Vec<Vec<u8>> {
        records
            .iter()
            .map(|r| {
                let (a, b) = r.split_at(r.len() / 2);
                let part = if first { a } else { b };
                part.iter()
                    .flat_map(|line| line.iter().copied().chain([b'\n']))
                    .collect()
            })
            .collect()
    };
    common::produce(servers, &half(true), None);
    let warehouse = dir.path().join("warehouse");
    let run = || {
        Sessionize::run(&warehouse)
            .kafka(servers, TOPIC)
            .arg("--test-mode")
            .success()
    };
    run();
    common::produce(servers, &half(false), None);
    let ends: Vec<u64> = records.iter().map(|r| r.len() as u64).collect();
    let behind = lags(&warehouse, servers);
    for (partition, (next, end, lag)) in &behind {
        let total = ends[*partition as usize];
        assert_eq!(*next, total / 2, "partition {partition}");
        assert_eq!(
            (*end, *lag),
            (total, total - total / 2),
            "partition {partition}"
        );
    }
    assert_eq!(behind.len(), 2);

    run();
    let caught_up = lags(&warehouse, servers);
    for (partition, (next, end, lag)) in &caught_up {
        assert_eq!(
            (*next, *end, *lag),
            (ends[*partition as usize], ends[*partition as usize], 0)
        );
    }
    // The human form shows the lag column and its total.
    let inspect = Sessionize::new("inspect")
        .arg("--warehouse")
        .arg(&warehouse)
        .args(["--kafka-servers", servers]);
    let text = String::from_utf8(inspect.success().stdout).unwrap();
    assert!(
        text.contains("lag") && text.contains("total lag 0 records"),
        "{text}"
    );
}

/// The command line of a bounded run over `files` into `warehouse`, as one shell word list.
fn run_line(files: &[PathBuf], warehouse: &Path, extra: &str) -> String {
    let inputs: String = files
        .iter()
        .map(|f| format!(" --input {}", f.display()))
        .collect();
    format!(
        "{} run{inputs} --warehouse {} {extra}",
        env!("CARGO_BIN_EXE_sessionize"),
        warehouse.display()
    )
}

#[test]
fn a_terminal_gets_a_progress_bar_and_a_pipe_gets_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = workload(43, 3);
    let files = write_inputs(dir.path(), &inputs);
    let total_bytes: usize = inputs.iter().map(Vec::len).sum();

    // Under a pseudo-terminal (`script`), the bar: its figures end at the whole input.
    let line = run_line(&files, &dir.path().join("bar"), "");
    let output = Command::new("script")
        .args(["-qfec", &line, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success());
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(screen.contains("events/s"), "no bar:\n{screen}");
    assert!(
        screen.contains("100%"),
        "the bar did not end full:\n{screen}"
    );
    let kib = format!(
        "{:.2} KiB/{:.2} KiB",
        total_bytes as f64 / 1024.0,
        total_bytes as f64 / 1024.0
    );
    assert!(screen.contains(&kib), "no {kib} on the bar:\n{screen}");
    assert!(
        !screen.contains(" progress "),
        "a log line beside the bar:\n{screen}"
    );

    // Through a pipe, log lines: the run lasts at least a second (--max-rate), so lines every
    // 100 ms come.
    let events = records_of(&inputs.concat()).len();
    let rate = (events / 2).to_string();
    let output = Sessionize::run(dir.path().join("log"))
        .inputs(&files)
        .small_epochs()
        .args(["--max-rate", &rate, "--progress-interval", "100ms"])
        .output();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("progress") && l.contains("done_pct")),
        "no progress line:\n{stderr}"
    );
    assert!(!stderr.contains("events/s"), "a bar in a pipe:\n{stderr}");
}

#[test]
fn log_format_json_writes_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = workload(47, 2);
    let files = write_inputs(dir.path(), &inputs);
    let events = records_of(&inputs.concat()).len();
    let rate = (events / 2).to_string();
    let output = Sessionize::run(dir.path().join("warehouse"))
        .inputs(&files)
        .small_epochs()
        .args(["--log-format", "json"])
        .args(["--max-rate", &rate, "--progress-interval", "100ms"])
        .output();
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["fields"]["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"starting"), "{stderr}");
    assert!(messages.contains(&"progress"), "{stderr}");

    // Even a start-up error is a JSON line.
    let output = Sessionize::new("inspect")
        .args(["--log-format", "json", "--warehouse"])
        .arg(dir.path().join("nothing"))
        .output();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let line: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(line["level"], "ERROR");
}
