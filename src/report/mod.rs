//! `sessionize report`: one self-contained HTML file of plots of what the tables hold (inline
//! SVG from [`svg`], no script, no network), and the rule checks of the Spark job sessionize
//! replaced, run on the committed sessions.
//!
//! The tables are read through iceberg's own scan ([`load`]), only the columns the plots need;
//! [`ReportData`] is what the plots are computed from, so that they are tested without a catalog.

pub mod svg;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anyhow::{Context, Result};
use arrow_array::{Array, Int64Array, ListArray, RecordBatch, StringArray};
use futures::TryStreamExt;
use iceberg::table::Table;

use crate::commit::record::last_record;
use crate::commit::{Mark, summary};
use crate::inspect::time_text;
use crate::sink::{TableKind, Warehouse};
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

/// The outcome of one rule check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// Rows or pairs checked, and how many broke the rule.
    pub checked: u64,
    pub violations: u64,
    /// What passing shows, and what it cannot.
    pub proves: &'static str,
    pub cannot: &'static str,
}

/// The rule checks the seed job printed, on what the sessions table holds. Each says what it can
/// prove from the table's columns: the table has each session's first and last event time and
/// event count, not the times of the events in between.
pub fn rule_checks(sessions: &[SessionFacts], rules: Rules) -> Vec<Check> {
    let longer = sessions
        .iter()
        .filter(|s| s.end_ms - s.start_ms > rules.max_duration_ms)
        .count() as u64;
    // If every gap is at most the timeout, n events span at most (n - 1) timeouts.
    let spread = sessions
        .iter()
        .filter(|s| s.end_ms - s.start_ms > (s.event_count - 1).max(0) * rules.inactivity_ms)
        .count() as u64;
    let mut by_user: BTreeMap<&str, Vec<&SessionFacts>> = BTreeMap::new();
    for session in sessions {
        by_user.entry(&session.user_id).or_default().push(session);
    }
    let (mut pairs, mut overlaps, mut inactivity_pairs, mut short_gaps) = (0, 0, 0, 0);
    let (mut duration_pairs, mut early_cuts) = (0, 0);
    for user_sessions in by_user.values_mut() {
        user_sessions.sort_by_key(|s| (s.start_ms, s.end_ms));
        for pair in user_sessions.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            pairs += 1;
            overlaps += u64::from(after.start_ms <= before.end_ms);
            match before.end_reason.as_str() {
                "inactivity" => {
                    inactivity_pairs += 1;
                    short_gaps += u64::from(after.start_ms - before.end_ms <= rules.inactivity_ms);
                }
                "max_duration" => {
                    duration_pairs += 1;
                    early_cuts +=
                        u64::from(after.start_ms - before.start_ms <= rules.max_duration_ms);
                }
                _ => {}
            }
        }
    }
    vec![
        Check {
            name: "no session longer than the maximum duration",
            checked: sessions.len() as u64,
            violations: longer,
            proves: "every committed session's last event is within the maximum duration of its \
                     first (both times are columns, so this is exact)",
            cannot: "nothing about sessions still open (they are in the checkpoint, not the table)",
        },
        Check {
            name: "no gap inside a session above the inactivity timeout (necessary condition)",
            checked: sessions.len() as u64,
            violations: spread,
            proves: "a violation proves a gap above the timeout: n events spanning more than \
                     n − 1 timeouts must have one",
            cannot: "passing does not prove there is none: the table keeps no per-event times, \
                     and one long gap among quick events fits within n − 1 timeouts",
        },
        Check {
            name: "a session ended by inactivity is followed by a gap above the timeout",
            checked: inactivity_pairs,
            violations: short_gaps,
            proves: "every inactivity cut with a later session of the same user in the table \
                     was justified: the next event came more than the timeout later",
            cannot: "a user's last session has no successor to check against",
        },
        Check {
            name: "a session cut at the maximum duration is followed by an event past it",
            checked: duration_pairs,
            violations: early_cuts,
            proves: "no session was cut before its maximum duration had passed",
            cannot: "whether the cut event belonged there (per-event times are not kept)",
        },
        Check {
            name: "sessions of a user never overlap",
            checked: pairs,
            violations: overlaps,
            proves: "each event went to one session; a replay appended twice would show here",
            cannot: "events lost entirely (compare counts with the input for that)",
        },
    ]
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
    use super::*;

    const MIN: i64 = 60_000;

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

    fn session(user: &str, start: i64, end: i64, events: i64, reason: &str) -> SessionFacts {
        SessionFacts {
            user_id: user.into(),
            start_ms: start,
            end_ms: end,
            duration_s: (end - start) / 1000,
            event_count: events,
            pages: 2,
            end_reason: reason.into(),
        }
    }

    const RULES: Rules = Rules {
        inactivity_ms: 30 * MIN,
        max_duration_ms: 120 * MIN,
    };

    #[test]
    fn the_checks_pass_on_sessions_cut_by_the_rules() {
        // The seed's three users: a 35-minute pause, 3 hours of activity, a short visit.
        let sessions = [
            session("user_1", 0, 10 * MIN, 3, "inactivity"),
            session("user_1", 45 * MIN, 50 * MIN, 2, "end_of_input"),
            session("user_2", 0, 120 * MIN, 25, "max_duration"),
            session("user_2", 125 * MIN, 180 * MIN, 12, "end_of_input"),
            session("user_3", 0, 4 * MIN, 3, "end_of_input"),
        ];
        let checks = rule_checks(&sessions, RULES);
        assert!(checks.iter().all(|c| c.violations == 0), "{checks:?}");
        assert_eq!(checks[2].checked, 1);
        assert_eq!(checks[3].checked, 1);
        assert_eq!(checks[4].checked, 2);
    }

    #[test]
    fn the_checks_find_what_breaks_the_rules() {
        let sessions = [
            session("a", 0, 121 * MIN, 100, "max_duration"), // too long
            session("a", 122 * MIN, 123 * MIN, 2, "inactivity"),
            session("a", 130 * MIN, 131 * MIN, 2, "end_of_input"), // only 7 min after
            session("b", 0, 61 * MIN, 3, "end_of_input"),          // 3 events over 61 minutes
            session("d", 0, 60 * MIN, 40, "max_duration"),         // cut an hour early:
            session("d", 100 * MIN, 110 * MIN, 2, "end_of_input"), // 100 min after its start
            session("c", 0, 10 * MIN, 2, "end_of_input"),
            session("c", 5 * MIN, 20 * MIN, 2, "end_of_input"), // overlaps
        ];
        let violations: Vec<u64> = rule_checks(&sessions, RULES)
            .iter()
            .map(|c| c.violations)
            .collect();
        assert_eq!(violations, [1, 1, 1, 1, 1]);
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
