//! Operating a live run (`--metrics-addr`): Prometheus metrics that move while the pipeline
//! catches up on a real Kafka topic, `/healthz` and `/readyz` through an outage of the catalog,
//! and the status page as headless chromium renders it.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    KillOnDrop, Service, Sessionize, TOPIC, catalog_at, headless_chromium, kafka_with_topic,
    screenshot,
};

/// The metric names the dashboards and alerts rely on (README, deploy/grafana/).
const NAMES: [&str; 15] = [
    "sessionize_events_read_total",
    "sessionize_events_total",
    "sessionize_sessions_closed_total",
    "sessionize_kafka_lag_records",
    "sessionize_watermark_ms",
    "sessionize_watermark_lag_seconds",
    "sessionize_open_sessions",
    "sessionize_pending_events",
    "sessionize_state_bytes",
    "sessionize_epoch",
    "sessionize_last_commit_timestamp_seconds",
    "sessionize_commit_duration_seconds_count",
    "sessionize_checkpoint_duration_seconds_count",
    "sessionize_session_visible_delay_seconds_count",
    "sessionize_session_visible_delay_seconds_bucket",
];

const PARTITIONS: i32 = 2;
const EVENTS: u64 = 60_000;

#[test]
fn a_live_run_from_kafka_serves_moving_metrics_probes_and_a_status_page() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = kafka_with_topic(dir.path(), PARTITIONS);
    let mut rest = Service::start("iceberg_rest", &dir.path().join("rest"));
    // Event times from 30 hours ago up to about now (the clickstream of 500 users spans a day),
    // so that the watermark lag is that of a pipeline catching up, and sessions close as it goes.
    let start = chrono::DateTime::from_timestamp_millis(
        chrono::Utc::now().timestamp_millis() - 30 * 3_600_000,
    )
    .unwrap()
    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Sessionize::new("produce")
        .args(["--kafka-servers", kafka.get("BOOTSTRAP"), "--topic", TOPIC])
        .args(["--num-users", "500", "--events", &EVENTS.to_string()])
        .args(["--rate", "0", "--start-time", &start])
        .success();

    let warehouse = dir.path().join("warehouse");
    let addr = free_address();
    // Read slowly enough (about 12 s for the topic) that several scrapes see the lag fall. The
    // run's log goes to the test's output, for a person reading a failure.
    let catalog = catalog_at(rest.get("URI"), Vec::new());
    let run = || {
        let mut command = Sessionize::run(&warehouse)
            .kafka(kafka.get("BOOTSTRAP"), TOPIC)
            .catalog(&catalog)
            .commit_interval("1s")
            .args(["--catalog-timeout", "60s", "--idle-commit-interval", "0"])
            .args(["--max-rate", &(EVENTS / 12).to_string(), "-w", "2"])
            .args(["--metrics-addr", &addr])
            .command();
        let child = command.stdout(Stdio::null()).stderr(Stdio::inherit());
        KillOnDrop(child.spawn().unwrap())
    };
    let mut child = run();

    // Scrape until every name has a plausible value and the figures have moved: the lag falls,
    // the epoch grows, events are read.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut scrapes: Vec<Scrape> = Vec::new();
    loop {
        assert_running(&mut child);
        if let Some(scrape) = get(&addr, "/metrics").and_then(|(status, body)| {
            assert_eq!(status, 200, "{body}");
            Scrape::parse(&body)
        }) {
            scrapes.push(scrape);
        }
        let verdict = judge(&scrapes);
        if verdict.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics did not move as expected: {verdict:?}\nlast scrape:\n{}",
            scrapes.last().map_or("(none)".into(), |s| s.text.clone())
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let last = scrapes.last().unwrap();
    println!(
        "{} scrapes; the last: events read {}, lag {}, epoch {}, watermark lag {:.0} s, open \
         sessions {}, state {} bytes",
        scrapes.len(),
        last.sum("sessionize_events_read_total"),
        last.sum("sessionize_kafka_lag_records"),
        last.sum("sessionize_epoch"),
        last.sum("sessionize_watermark_lag_seconds"),
        last.sum("sessionize_open_sessions"),
        last.sum("sessionize_state_bytes"),
    );

    dashboard_queries_what_is_served(&last.text);

    let (status, body) = get(&addr, "/healthz").unwrap();
    assert_eq!(status, 200, "/healthz: {body}");
    let (status, body) = poll(&addr, "/readyz", 200, &mut child);
    assert_eq!(status, 200, "/readyz: {body}");

    // /status names every partition with its offset, lag and watermark.
    let (status, body) = get(&addr, "/status").unwrap();
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let partitions = json["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), PARTITIONS as usize, "{body}");
    for p in partitions {
        assert!(p["next_offset"].as_u64().unwrap() > 0, "{p}");
        assert!(p["lag"].as_i64().is_some(), "{p}");
        assert!(
            p["watermark_ms"].as_u64().unwrap() > 1_700_000_000_000,
            "{p}"
        );
    }
    assert!(!json["commits"].as_array().unwrap().is_empty(), "{body}");
    assert!(json["history"].as_array().unwrap().len() >= 2, "{body}");

    status_page_in_chromium(&addr);

    // The catalog goes away: the next commit fails and /readyz says so, while /healthz still
    // answers that the process lives.
    assert!(rest.stop().unwrap().status.success());
    let (status, body) = poll(&addr, "/readyz", 503, &mut child);
    assert_eq!(status, 503, "/readyz while the catalog is down: {body}");
    println!("/readyz with the catalog down: {status} {}", body.trim());
    if let Some((status, body)) = get(&addr, "/healthz") {
        assert_eq!(status, 200, "/healthz while the catalog is down: {body}");
    }
    // Back again: a run that gave up on its commits (exit code 3, as documented) is restarted,
    // as a supervisor would, and becomes ready once it has committed.
    rest.restart_after(Duration::ZERO);
    let recovered = Instant::now() + Duration::from_secs(60);
    loop {
        match child.0.try_wait().unwrap() {
            Some(exit) => {
                assert_eq!(
                    exit.code(),
                    Some(3),
                    "the run ended otherwise than documented"
                );
                child = run();
                break;
            }
            None if get(&addr, "/readyz").is_some_and(|(s, _)| s == 200) => break,
            None => {}
        }
        assert!(Instant::now() < recovered, "neither recovered nor ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = poll(&addr, "/readyz", 200, &mut child);
    assert_eq!(status, 200, "/readyz after the catalog came back: {body}");
}

/// A run that cannot serve on `--metrics-addr` stops at start with a message naming the flag.
#[test]
fn a_taken_metrics_address_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, "").unwrap();
    let output = Sessionize::run(dir.path().join("warehouse"))
        .inputs([&input])
        .args(["--metrics-addr", &addr])
        .output();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--metrics-addr") && stderr.contains(&addr),
        "{stderr}"
    );
}

/// The metrics server faces a network: a 64 MiB header line, idle connections by the thousand,
/// and a client pipelining 30,000 requests without reading its answers each leave the process
/// under 300 MB and 200 threads, with `/healthz` answered within 2 s; the connection that does
/// not read is closed once its answers have waited too long.
#[test]
fn the_metrics_server_withstands_hostile_clients() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_address();
    // A live run on standard input, kept open: it serves until the test ends.
    let mut child = Sessionize::run(dir.path().join("warehouse"))
        .inputs(["-"])
        .args(["--metrics-addr", &addr])
        .command();
    let child = child.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = KillOnDrop(child.stderr(Stdio::inherit()).spawn().unwrap());
    let pid = child.0.id();
    let up = Instant::now() + Duration::from_secs(60);
    while healthz(&addr).is_err() {
        assert_running(&mut child);
        assert!(Instant::now() < up, "the metrics server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (baseline, at_rest) = (rss_mb(pid), sockets(pid));
    let fit = |what: &str| {
        let started = Instant::now();
        let answer = healthz(&addr);
        let took = started.elapsed();
        let (rss, threads) = (rss_mb(pid), threads(pid));
        println!("{what}: /healthz {answer:?} in {took:?}, {rss} MB, {threads} threads");
        assert!(
            answer.as_ref().is_ok_and(|status| *status == 200) && took < Duration::from_secs(2),
            "{what}: /healthz answered {answer:?} after {took:?}"
        );
        assert!(
            rss < 300 && rss < baseline + 64,
            "{what}: {rss} MB (at rest {baseline})"
        );
        assert!(threads < 200, "{what}: {threads} threads");
    };

    // A header line streamed until the server refuses it: long before its 64 MiB.
    let mut long = std::net::TcpStream::connect(&addr).unwrap();
    long.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    long.write_all(b"GET /healthz HTTP/1.1\r\nX-Long: ")
        .unwrap();
    let chunk = "a".repeat(64 << 10);
    let sent = (0..1024).take_while(|_| long.write_all(chunk.as_bytes()).is_ok());
    let sent = sent.count() << 16;
    assert!(
        sent < 64 << 20,
        "the server read a 64 MiB header line through"
    );
    fit(&format!("after a header line refused after {sent} bytes"));
    drop(long);

    // Idle connections: as many as the descriptors allow, up to 2,000.
    let idle = raise_descriptor_limit().min(2_000);
    let held: Vec<std::net::TcpStream> = (0..idle)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    fit(&format!("with {idle} idle connections"));
    drop(held);

    // One client sends 30,000 requests on one connection and reads nothing.
    let mut pipelining = std::net::TcpStream::connect(&addr).unwrap();
    pipelining
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let requests = "GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n".repeat(30_000);
    let written = pipelining.write_all(requests.as_bytes()).is_ok();
    // Watched for a few seconds while its answers wait.
    let watched = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watched {
        fit(&format!(
            "with a client pipelining (all written: {written})"
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    // The server gives up on it, and on every connection above, within their timeouts.
    let closed = Instant::now() + Duration::from_secs(40);
    while sockets(pid) > at_rest {
        assert!(
            Instant::now() < closed,
            "connections still open: {}",
            sockets(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(pipelining);
}

/// GET /healthz on a connection of its own, giving up after 2 s: the status.
fn healthz(addr: &str) -> std::io::Result<u16> {
    use std::io::Read;
    let limit = Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok());
    status.ok_or_else(|| std::io::Error::other(format!("not HTTP: {answer:?}")))
}

/// The resident memory of process `pid`, in MB.
fn rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// The sockets process `pid` holds open.
fn sockets(pid: u32) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Raises this process's limit of open descriptors as far as allowed (for its clients' sockets;
/// the server keeps the limit it started with); returns how many more sockets it may open.
fn raise_descriptor_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a struct of ours.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(8192);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    limit.rlim_cur.saturating_sub(open + 100) as usize
}

/// What one scrape of `/metrics` held: each sample line's value by its name and labels.
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn parse(text: &str) -> Option<Scrape> {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ')?;
            let value = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                v => v.parse().ok()?,
            };
            samples.insert(series.to_string(), value);
        }
        Some(Scrape {
            text: text.to_string(),
            samples,
        })
    }

    /// The series of `name` (any labels).
    fn series(&self, name: &str) -> impl Iterator<Item = (&str, f64)> {
        self.samples
            .iter()
            .filter(move |(series, _)| {
                series.as_str() == name || series.starts_with(&format!("{name}{{"))
            })
            .map(|(s, v)| (s.as_str(), *v))
    }

    fn sum(&self, name: &str) -> f64 {
        self.series(name).map(|(_, v)| v).sum()
    }
}

/// What is still missing for the scrapes so far to show a live pipeline catching up.
fn judge(scrapes: &[Scrape]) -> Vec<String> {
    let mut missing = Vec::new();
    let Some(last) = scrapes.last() else {
        return vec!["no scrape yet".into()];
    };
    for name in NAMES {
        if last.series(name).next().is_none() {
            missing.push(format!("{name} has no sample"));
        }
    }
    for partition in 0..PARTITIONS {
        for name in [
            "sessionize_events_read_total",
            "sessionize_kafka_lag_records",
            "sessionize_watermark_ms",
        ] {
            let series = format!("{name}{{partition=\"{partition}\"}}");
            if !last.samples.contains_key(&series) {
                missing.push(format!("no {series}"));
            }
        }
    }
    for outcome in ["on_time", "late", "quarantined", "duplicate"] {
        let series = format!("sessionize_events_total{{outcome=\"{outcome}\"}}");
        if !last.samples.contains_key(&series) {
            missing.push(format!("no {series}"));
        }
    }
    // Moving figures: lag seen above zero, then lower; the epoch and the events read growing.
    let lags: Vec<f64> = scrapes
        .iter()
        .filter(|s| s.series("sessionize_kafka_lag_records").next().is_some())
        .map(|s| s.sum("sessionize_kafka_lag_records"))
        .collect();
    let peak = lags.iter().copied().fold(0.0, f64::max);
    let peak_at = lags.iter().position(|l| *l == peak);
    if peak <= 0.0 {
        missing.push("the lag was never above zero".into());
    } else if !peak_at.is_some_and(|at| lags[at..].iter().any(|l| *l < peak / 2.0)) {
        missing.push(format!(
            "the lag did not fall below half its peak {peak}: {lags:?}"
        ));
    }
    let first = &scrapes[0];
    let grew = |name: &str, by: f64| last.sum(name) >= first.sum(name) + by;
    if !grew("sessionize_epoch", 2.0) {
        missing.push("the epoch did not grow by 2".into());
    }
    if !grew("sessionize_events_read_total", 1.0) {
        missing.push("events read did not grow".into());
    }
    let read = last.sum("sessionize_events_read_total");
    let by_outcome = ["on_time", "late", "quarantined"]
        .map(|o| {
            last.samples
                .get(&format!("sessionize_events_total{{outcome=\"{o}\"}}"))
                .copied()
                .unwrap_or(0.0)
        })
        .iter()
        .sum::<f64>();
    if read != by_outcome || read > EVENTS as f64 {
        missing.push(format!(
            "events read {read} != on time + late + quarantined {by_outcome}, or above {EVENTS}"
        ));
    }
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let committed = last.sum("sessionize_last_commit_timestamp_seconds");
    if !(now - 120.0..=now + 5.0).contains(&committed) {
        missing.push(format!("last commit at {committed}, now {now}"));
    }
    let watermark_lag = last.sum("sessionize_watermark_lag_seconds");
    if !(1.0..=31.0 * 3600.0).contains(&watermark_lag) {
        missing.push(format!("watermark lag {watermark_lag} s"));
    }
    for (name, what) in [
        ("sessionize_commit_duration_seconds_count", "commits"),
        (
            "sessionize_checkpoint_duration_seconds_count",
            "checkpoints",
        ),
        (
            "sessionize_session_visible_delay_seconds_count",
            "sessions made visible",
        ),
        ("sessionize_state_bytes", "checkpointed state"),
    ] {
        if last.sum(name) <= 0.0 {
            missing.push(format!("no {what} ({name})"));
        }
    }
    // The sessions table's shape after a commit: files and manifests in its current snapshot.
    for name in ["sessionize_table_data_files", "sessionize_table_manifests"] {
        let series = format!("{name}{{table=\"sessions.user_sessions\"}}");
        if last.samples.get(&series).is_none_or(|v| *v < 1.0) {
            missing.push(format!("no {series} above 0"));
        }
    }
    if !scrapes
        .iter()
        .any(|s| s.sum("sessionize_open_sessions") > 0.0)
    {
        missing.push("never an open session".into());
    }
    let closed = last.sum("sessionize_sessions_closed_total");
    let visible = last.sum("sessionize_session_visible_delay_seconds_count");
    if visible > closed {
        missing.push(format!("{visible} sessions visible of {closed} closed"));
    }
    missing
}

/// Every metric the Grafana dashboard queries is in a scrape of a live run.
fn dashboard_queries_what_is_served(scrape: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/sessionize.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut expressions = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            expressions.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(expressions.len() >= 10);
    let served: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for expr in &expressions {
        let names = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("sessionize_"));
        for name in names {
            assert!(
                served.contains(name),
                "the dashboard queries {name}, which /metrics does not serve"
            );
        }
    }
}

/// Loads the page in headless chromium: after its script ran, it shows every partition and the
/// charts; the screenshot is kept as a test artifact.
fn status_page_in_chromium(addr: &str) {
    let url = format!("http://{addr}/");
    let profile = tempfile::tempdir().unwrap();
    let args = ["--virtual-time-budget=5000", "--window-size=1280,1100"];
    let dom = headless_chromium(profile.path(), &url, &[&args[..], &["--dump-dom"]].concat());
    for partition in 0..PARTITIONS {
        assert!(
            dom.contains(&format!("id=\"partition-{partition}\"")),
            "partition {partition} is not on the page:\n{dom}"
        );
    }
    assert!(
        dom.contains("class=\"commit\""),
        "no commit on the page:\n{dom}"
    );
    let charted = |id: &str| {
        let at = dom.find(&format!("id=\"{id}\"")).unwrap();
        let tag = &dom[at..at + dom[at..].find('>').unwrap()];
        tag.split("data-samples=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    assert!(
        charted("chart-throughput") >= 2,
        "no throughput chart:\n{dom}"
    );
    assert!(charted("chart-lag") >= 2, "no lag chart:\n{dom}");

    screenshot(profile.path(), &url, &args, "status.png");
}

/// GET `path` on `addr`: the status and body, or `None` if nothing answered.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = client.get(format!("http://{addr}{path}")).send().ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().ok()?))
}

/// Polls `path` until it answers `status` (at most a minute); returns the last answer.
fn poll(addr: &str, path: &str, status: u16, child: &mut KillOnDrop) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, String::from("no answer"));
    while Instant::now() < deadline {
        if let Some(answer) = get(addr, path) {
            if answer.0 == status {
                return answer;
            }
            last = answer;
        } else {
            assert_running(child);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

fn assert_running(child: &mut KillOnDrop) {
    if let Some(exit) = child.0.try_wait().unwrap() {
        panic!("sessionize ended early: {exit}");
    }
}

/// A loopback address nothing listens on.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}
