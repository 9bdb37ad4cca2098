//! `sessionize report`: one self-contained HTML file of plots of what the tables hold (inline
//! SVG from [`svg`], no script, no network), and the rule checks of the Spark job sessionize
//! replaced, run on the committed sessions.
//!
//! The tables are read through iceberg's own scan ([`load`]), only the columns the plots need;
//! [`ReportData`] is what the plots are computed from, so that they are tested without a catalog.

mod checks;
pub mod files;
pub mod svg;

pub use checks::{Check, rule_checks};

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anyhow::{Context, Result};
use arrow_array::{Array, Int64Array, ListArray, RecordBatch, StringArray};
use futures::TryStreamExt;
use iceberg::table::Table;

use crate::commit::record::last_record;
use crate::commit::{Mark, summary};
use crate::inspect::time_text;
use crate::maintain::shape::{data_file_sizes, target_bytes};
use crate::sink::{TableKind, Warehouse};
use files::FileSizes;
use svg::{Bar, Limit, Point, bar_chart, escape, histogram, per_hour, scatter};

/// One committed session, as much of it as the plots use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    pub user_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub duration_s: i64,
    pub event_count: i64,
    pub pages: usize,
    pub end_reason: String,
}

/// The session rules the table records (`sessionize.rules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub inactivity_ms: i64,
    pub max_duration_ms: i64,
}

/// What the report is drawn from.
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    /// `database.table` of the sessions table.
    pub table: String,
    pub sessions: Vec<SessionFacts>,
    /// The watermark of each late event's partition when it arrived: the stream's time then.
    pub late_arrivals_ms: Vec<i64>,
    /// The epoch and reason of each quarantined line.
    pub quarantined: Vec<(i64, String)>,
    /// When each epoch was committed to the quarantine table (from its snapshots still kept).
    pub quarantine_commits_ms: HashMap<i64, i64>,
    pub rules: Option<Rules>,
    pub epoch: Option<u64>,
    /// The sessions table's data files.
    pub files: FileSizes,
}

/// Most points of the scatter plot: beyond this many sessions, an even sample of them.
pub const MAX_POINTS: usize = 5_000;

/// Reads the three tables of `warehouse`.
pub async fn load(warehouse: &Warehouse) -> Result<ReportData> {
    let sessions_table = warehouse.load(TableKind::Sessions).await?;
    let record = last_record(&sessions_table).unwrap_or_default();
    let rules = record
        .get(summary::RULES)
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .and_then(|r| {
            Some(Rules {
                inactivity_ms: r.get("inactivity_ms")?.as_i64()?,
                max_duration_ms: r.get("max_duration_ms")?.as_i64()?,
            })
        });
    let mut data = ReportData {
        table: warehouse.ident(TableKind::Sessions).to_string(),
        rules,
        epoch: Mark::from_record(&record).map(|m| m.epoch),
        files: FileSizes {
            sizes: data_file_sizes(&sessions_table).await?,
            target_bytes: target_bytes(&sessions_table),
        },
        ..ReportData::default()
    };
    let columns = [
        "user_id",
        "session_start_time_ms",
        "session_end_time_ms",
        "session_duration_seconds",
        "event_count",
        "pages_visited",
        "end_reason",
    ];
    for batch in scan(&sessions_table, &columns).await? {
        let users = column::<StringArray>(&batch, "user_id")?;
        let starts = column::<Int64Array>(&batch, "session_start_time_ms")?;
        let ends = column::<Int64Array>(&batch, "session_end_time_ms")?;
        let durations = column::<Int64Array>(&batch, "session_duration_seconds")?;
        let counts = column::<Int64Array>(&batch, "event_count")?;
        let pages = column::<ListArray>(&batch, "pages_visited")?;
        let reasons = column::<StringArray>(&batch, "end_reason")?;
        for row in 0..batch.num_rows() {
            data.sessions.push(SessionFacts {
                user_id: users.value(row).to_string(),
                start_ms: starts.value(row),
                end_ms: ends.value(row),
                duration_s: durations.value(row),
                event_count: counts.value(row),
                pages: pages.value_length(row) as usize,
                end_reason: reasons.value(row).to_string(),
            });
        }
    }
    let late = warehouse.load(TableKind::LateEvents).await?;
    for batch in scan(&late, &["watermark_ms"]).await? {
        let watermarks = column::<Int64Array>(&batch, "watermark_ms")?;
        data.late_arrivals_ms
            .extend((0..batch.num_rows()).map(|row| watermarks.value(row)));
    }
    let quarantine = warehouse.load(TableKind::Quarantine).await?;
    for batch in scan(&quarantine, &["epoch", "reason"]).await? {
        let epochs = column::<Int64Array>(&batch, "epoch")?;
        let reasons = column::<StringArray>(&batch, "reason")?;
        for row in 0..batch.num_rows() {
            data.quarantined
                .push((epochs.value(row), reasons.value(row).to_string()));
        }
    }
    data.quarantine_commits_ms = quarantine
        .metadata()
        .snapshots()
        .filter_map(|s| {
            let mark = Mark::from_record(&s.summary().additional_properties)?;
            Some((mark.epoch as i64, s.timestamp_ms()))
        })
        .collect();
    Ok(data)
}

/// The table's rows, only `columns`, through iceberg's scan.
async fn scan(table: &Table, columns: &[&str]) -> Result<Vec<RecordBatch>> {
    if table.metadata().current_snapshot().is_none() {
        return Ok(Vec::new());
    }
    let stream = table
        .scan()
        .select(columns.iter().copied())
        .build()?
        .to_arrow()
        .await?;
    stream
        .try_collect()
        .await
        .with_context(|| format!("cannot read table {}", table.identifier()))
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .with_context(|| format!("the table's column `{name}` is missing or of another type"))
}

/// One chart of the report, for its HTML and for tests.
pub struct Plot {
    pub id: &'static str,
    pub title: &'static str,
    pub caption: String,
    pub svg: String,
}

/// Every plot of the report.
pub fn plots(data: &ReportData) -> Vec<Plot> {
    let hour_label = |ms: i64, width: i64| {
        let text = time_text(ms);
        if width < 86_400_000 {
            format!("{} {}h", &text[5..10], &text[11..13])
        } else {
            text[..10].to_string()
        }
    };
    let time_bars = |times: &[i64]| -> (i64, Vec<Bar>) {
        let (width, bins) = per_hour(times);
        let bars = bins
            .into_iter()
            .map(|(start, count)| Bar {
                label: hour_label(start, width),
                value: count,
            })
            .collect();
        (width, bars)
    };
    let histogram_bars = |values: &[u64]| -> Vec<Bar> {
        histogram(values)
            .into_iter()
            .map(|bin| Bar {
                label: if bin.high == bin.low + 1 {
                    bin.low.to_string()
                } else {
                    format!("{}–{}", bin.low, bin.high - 1)
                },
                value: bin.count,
            })
            .collect()
    };
    let sessions = &data.sessions;
    let mut plots = Vec::new();

    let starts: Vec<i64> = sessions.iter().map(|s| s.start_ms).collect();
    let (width, bars) = time_bars(&starts);
    plots.push(Plot {
        id: "plot-sessions-per-hour",
        title: "Sessions per hour",
        caption: format!(
            "Sessions by the hour of their first event (UTC){}.",
            per_day_note(width)
        ),
        svg: bar_chart(
            "plot-sessions-per-hour",
            &bars,
            "hour of the session's start (UTC)",
            "sessions",
        ),
    });

    let durations: Vec<u64> = sessions
        .iter()
        .map(|s| s.duration_s.max(0) as u64)
        .collect();
    plots.push(Plot {
        id: "plot-durations",
        title: "Session durations",
        caption: "Sessions by duration in seconds (first to last event); a single-event session \
                  lasts 0 s."
            .into(),
        svg: bar_chart(
            "plot-durations",
            &histogram_bars(&durations),
            "duration (s)",
            "sessions",
        ),
    });

    let events: Vec<u64> = sessions
        .iter()
        .map(|s| s.event_count.max(0) as u64)
        .collect();
    plots.push(Plot {
        id: "plot-events-per-session",
        title: "Events per session",
        caption: "Sessions by their number of events (duplicates not counted).".into(),
        svg: bar_chart(
            "plot-events-per-session",
            &histogram_bars(&events),
            "events",
            "sessions",
        ),
    });

    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    for session in sessions {
        *reasons.entry(&session.end_reason).or_default() += 1;
    }
    let reason_bars: Vec<Bar> = reasons
        .into_iter()
        .map(|(label, value)| Bar {
            label: label.to_string(),
            value,
        })
        .collect();
    plots.push(Plot {
        id: "plot-end-reasons",
        title: "End reasons",
        caption: "Why sessions ended: inactivity, the maximum duration, a business rule \
                  (boundary), or the end of a bounded run's input."
            .into(),
        svg: bar_chart("plot-end-reasons", &reason_bars, "end reason", "sessions"),
    });

    let pages: Vec<u64> = sessions.iter().map(|s| s.pages as u64).collect();
    plots.push(Plot {
        id: "plot-pages-per-session",
        title: "Pages per session",
        caption: "Sessions by their number of distinct pages visited (the table keeps at most 64)."
            .into(),
        svg: bar_chart(
            "plot-pages-per-session",
            &histogram_bars(&pages),
            "distinct pages",
            "sessions",
        ),
    });

    let (width, bars) = time_bars(&data.late_arrivals_ms);
    plots.push(Plot {
        id: "plot-late-per-hour",
        title: "Late events per hour",
        caption: format!(
            "Events that came after the allowed lateness, by the hour of their partition's \
             watermark when they arrived (the stream's time then, UTC){}; {} in all.",
            per_day_note(width),
            data.late_arrivals_ms.len()
        ),
        svg: bar_chart(
            "plot-late-per-hour",
            &bars,
            "hour of arrival, stream time (UTC)",
            "late events",
        ),
    });

    let committed: Vec<i64> = data
        .quarantined
        .iter()
        .filter_map(|(epoch, _)| data.quarantine_commits_ms.get(epoch).copied())
        .collect();
    let unplaced = data.quarantined.len() - committed.len();
    let (width, bars) = time_bars(&committed);
    plots.push(Plot {
        id: "plot-quarantined-per-hour",
        title: "Quarantined lines per hour",
        caption: format!(
            "Malformed or invalid lines (they carry no trustworthy time), by the hour their \
             commit was made (wall clock, UTC){}; {} in all{}.",
            per_day_note(width),
            data.quarantined.len(),
            if unplaced > 0 {
                format!(
                    ", of which {unplaced} from commits whose snapshots were expired (not drawn)"
                )
            } else {
                String::new()
            }
        ),
        svg: bar_chart(
            "plot-quarantined-per-hour",
            &bars,
            "hour of commit (UTC)",
            "quarantined lines",
        ),
    });

    let mut quarantine_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (_, reason) in &data.quarantined {
        *quarantine_reasons.entry(reason_kind(reason)).or_default() += 1;
    }
    let bars: Vec<Bar> = quarantine_reasons
        .into_iter()
        .map(|(label, value)| Bar { label, value })
        .collect();
    plots.push(Plot {
        id: "plot-quarantine-reasons",
        title: "Why lines were quarantined",
        caption: "Quarantined lines by the kind of their reason.".into(),
        svg: bar_chart("plot-quarantine-reasons", &bars, "reason", "lines"),
    });

    let every = sessions.len().div_ceil(MAX_POINTS).max(1);
    let points: Vec<Point> = sessions
        .iter()
        .step_by(every)
        .map(|s| Point {
            x: s.event_count as f64,
            y: (s.end_ms - s.start_ms) as f64 / 1000.0,
        })
        .collect();
    let limit = data.rules.map(|r| Limit {
        y: r.max_duration_ms as f64 / 1000.0,
        label: format!("maximum duration {} s", r.max_duration_ms / 1000),
    });
    plots.push(Plot {
        id: "plot-duration-vs-events",
        title: "Duration against events",
        caption: format!(
            "Each point a session{}; no point may lie above the dashed line of the maximum \
             duration.",
            if every > 1 {
                format!(" (every {every}th of {})", sessions.len())
            } else {
                String::new()
            }
        ),
        svg: scatter(
            "plot-duration-vs-events",
            &points,
            limit.as_ref(),
            "events",
            "duration (s)",
        ),
    });
    plots.push(files::plot(&data.files));
    plots
}

fn per_day_note(width: i64) -> String {
    if width > svg::HOUR_MS {
        format!(
            " — the span is long, so each bar is {} h",
            width / svg::HOUR_MS
        )
    } else {
        String::new()
    }
}

/// The whole report as one HTML page.
pub fn html(data: &ReportData, generated_ms: i64) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Sessions of {table}</title><style>{STYLE}</style></head><body>\
         <h1>Sessions of <code>{table}</code></h1>\
         <p class=\"meta\">{sessions} sessions, {late} late events, {quarantined} quarantined \
         lines; {epoch}; made {generated}.</p>",
        table = escape(&data.table),
        sessions = data.sessions.len(),
        late = data.late_arrivals_ms.len(),
        quarantined = data.quarantined.len(),
        epoch = data
            .epoch
            .map_or("no commit yet".to_string(), |e| format!("last epoch {e}")),
        generated = time_text(generated_ms),
    );
    page.push_str("<section id=\"rule-checks\"><h2>Rule checks</h2>");
    match data.rules {
        None => page.push_str(
            "<p>The table records no session rules (no commit of sessionize yet): nothing to \
             check against.</p>",
        ),
        Some(rules) => {
            let _ = write!(
                page,
                "<p>Against the rules the table records: inactivity timeout {} s, maximum \
                 duration {} s.</p><table><tr><th>check</th><th>checked</th>\
                 <th>violations</th><th>result</th><th>what it proves</th>\
                 <th>what it cannot</th></tr>",
                rules.inactivity_ms / 1000,
                rules.max_duration_ms / 1000
            );
            for check in rule_checks(&data.sessions, rules) {
                let pass = check.violations == 0;
                let _ = write!(
                    page,
                    "<tr class=\"check {class}\" data-violations=\"{violations}\"><td>{name}</td>\
                     <td>{checked}</td><td>{violations}</td><td>{result}</td><td>{proves}</td>\
                     <td>{cannot}</td></tr>",
                    class = if pass { "pass" } else { "fail" },
                    name = escape(check.name),
                    checked = check.checked,
                    violations = check.violations,
                    result = if pass { "pass" } else { "FAIL" },
                    proves = escape(check.proves),
                    cannot = escape(check.cannot),
                );
            }
            page.push_str("</table>");
        }
    }
    page.push_str("</section>");
    for plot in plots(data) {
        let _ = write!(
            page,
            "<section class=\"plot\"><h2>{}</h2><p>{}</p>{}</section>",
            escape(plot.title),
            escape(&plot.caption),
            plot.svg
        );
    }
    page.push_str("</body></html>\n");
    page
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:800px;\
color:#222}h1{font-size:22px}h2{font-size:17px;margin:28px 0 4px}p{margin:4px 0 8px}\
.meta{color:#555}table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ccc;\
padding:4px 6px;text-align:left;vertical-align:top}tr.pass td:nth-child(4){color:#176c2e;\
font-weight:600}tr.fail td:nth-child(4){color:#b00020;font-weight:700}\
svg{display:block;background:#fff}.bar{fill:#3b6ea8}.bar:hover{fill:#f0a030}.point{fill:#3b6ea8;\
fill-opacity:.55}.grid{stroke:#e5e5e5}.axis{stroke:#444}.limit{stroke:#b00020;\
stroke-dasharray:6 4}.limit-label{fill:#b00020;font-size:11px}\
text{font-size:11px;fill:#444}.title{font-size:12px;fill:#222}";

/// The kind of a quarantine reason, to count by: reasons name the offending detail after a colon,
/// and sizes, times and offsets as numbers, which make every line's reason its own.
fn reason_kind(reason: &str) -> String {
    let head = reason.split(':').next().unwrap_or(reason).trim();
    let mut kind = String::with_capacity(head.len());
    for c in head.chars() {
        if !c.is_ascii_digit() {
            kind.push(c);
        } else if !kind.ends_with('N') {
            kind.push('N');
        }
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::checks::tests::{MIN, RULES, session};
    use super::*;

    #[test]
    fn reasons_with_numbers_count_as_one_kind() {
        let skew = |t: u64| {
            format!("event_timestamp {t} is more than --max-future-skew (86400000 ms) ahead")
        };
        assert_eq!(reason_kind(&skew(4_102_444_800_000)), reason_kind(&skew(5)));
        assert_eq!(
            reason_kind("line of 2000000 bytes exceeds --max-event-bytes 1048576"),
            "line of N bytes exceeds --max-event-bytes N"
        );
        assert_eq!(
            reason_kind("invalid JSON: expected value at line 1 column 2"),
            "invalid JSON"
        );
    }

    #[test]
    fn the_page_has_every_plot_and_no_script_or_remote_resource() {
        let data = ReportData {
            table: "sessions.user_sessions".into(),
            sessions: vec![
                session("a", 0, 10 * MIN, 3, "inactivity"),
                session("a", 3 * 3_600_000, 3 * 3_600_000 + MIN, 2, "end_of_input"),
            ],
            late_arrivals_ms: vec![5 * MIN],
            quarantined: vec![(1, "invalid JSON: x".into()), (9, "too long".into())],
            quarantine_commits_ms: HashMap::from([(1, 7 * MIN)]),
            rules: Some(RULES),
            epoch: Some(1),
            files: FileSizes {
                sizes: vec![3 << 10, 200 << 20],
                target_bytes: 128 << 20,
            },
        };
        let page = html(&data, 0);
        for plot in plots(&data) {
            assert!(
                page.contains(&format!("<svg id=\"{}\"", plot.id)),
                "{}",
                plot.id
            );
        }
        // Sessions at hours 0 and 3: four hourly bars, the empty ones included.
        let sessions = &plots(&data)[0].svg;
        assert_eq!(sessions.matches("class=\"bar\"").count(), 4);
        assert!(page.contains("of which 1 from commits whose snapshots were expired"));
        assert_eq!(page.matches("class=\"check pass\"").count(), 5);
        assert!(!page.contains("<script") && !page.contains("https://") && !page.contains("src="));
    }
}
