//! The report's charts: binning and inline SVG, drawn by our own code so that the report is one
//! file that needs no script and no network.
//!
//! Every bar is a `<rect class="bar">` and every point a `<circle class="point">`, each carrying
//! its label and value as `data-label`/`data-value`, so that a browser test can count what was
//! drawn and compare it with what was computed.

use std::fmt::Write as _;

/// One bar of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: u64,
}

/// A bin of a histogram: values in `[low, high)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bin {
    pub low: u64,
    pub high: u64,
    pub count: u64,
}

/// Most bins a histogram gets: enough to show a shape, few enough to read.
pub const MAX_BINS: usize = 40;

/// A histogram of `values`: one bin per integer from the smallest value to the largest when that
/// makes at most [`MAX_BINS`] bins, else bins of a round width (1, 2 or 5 times a power of ten)
/// starting at a multiple of it. Empty bins in between are kept, so the shape is honest.
pub fn histogram(values: &[u64]) -> Vec<Bin> {
    let (Some(&min), Some(&max)) = (values.iter().min(), values.iter().max()) else {
        return Vec::new();
    };
    let width = bin_width(max - min + 1);
    let first = min / width * width;
    let count = ((max - first) / width + 1) as usize;
    let mut bins: Vec<Bin> = (0..count as u64)
        .map(|i| Bin {
            low: first + i * width,
            high: first + (i + 1) * width,
            count: 0,
        })
        .collect();
    for &value in values {
        bins[((value - first) / width) as usize].count += 1;
    }
    bins
}

/// The smallest round width that covers `span` integers in at most [`MAX_BINS`] bins.
fn bin_width(span: u64) -> u64 {
    let mut power = 1u64;
    loop {
        for step in [1, 2, 5] {
            let width = step * power;
            if span.div_ceil(width) <= MAX_BINS as u64 {
                return width;
            }
        }
        power *= 10;
    }
}

/// Times (ms since the epoch) counted per hour, from the first time's hour to the last's, empty
/// hours included; a span of more than [`MAX_TIME_BINS`] hours is counted per day (or per several
/// days). Returns each bin's start and width in ms with its count.
pub fn per_hour(times_ms: &[i64]) -> (i64, Vec<(i64, u64)>) {
    let (Some(&min), Some(&max)) = (times_ms.iter().min(), times_ms.iter().max()) else {
        return (HOUR_MS, Vec::new());
    };
    let mut width = HOUR_MS;
    if (max - min) / width >= MAX_TIME_BINS as i64 {
        width = DAY_MS * (((max - min) / DAY_MS) / MAX_TIME_BINS as i64 + 1);
    }
    let first = min.div_euclid(width) * width;
    let count = ((max - first) / width + 1) as usize;
    let mut bins: Vec<(i64, u64)> = (0..count as i64).map(|i| (first + i * width, 0)).collect();
    for &time in times_ms {
        bins[((time - first) / width) as usize].1 += 1;
    }
    (width, bins)
}

pub const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Most bars of a time chart.
pub const MAX_TIME_BINS: usize = 1000;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 46.0;
/// Most x-axis labels written; the others are left out, evenly.
const MAX_X_LABELS: usize = 12;

/// A bar chart: `bars` left to right, a y axis from 0 to a round maximum, the x labels under
/// the bars (thinned out when there are many).
pub fn bar_chart(id: &str, bars: &[Bar], x_title: &str, y_title: &str) -> String {
    let top = nice_ceiling(bars.iter().map(|b| b.value).max().unwrap_or(0));
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot = plot_width / bars.len().max(1) as f64;
    let gap = if slot > 4.0 { slot * 0.15 } else { 0.0 };
    let mut svg = open_svg(id, "bar-chart", bars.len());
    axes(&mut svg, top, x_title, y_title);
    let every = bars.len().div_ceil(MAX_X_LABELS).max(1);
    // Characters an axis label may take without running into the next (the bar keeps its whole
    // label in its tooltip and data-label).
    let room = (slot * every as f64 / LABEL_CHAR_WIDTH) as usize;
    for (i, bar) in bars.iter().enumerate() {
        let height = bar.value as f64 / top as f64 * plot_height;
        let x = LEFT + i as f64 * slot + gap / 2.0;
        let y = TOP + plot_height - height;
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{x:.2}" y="{y:.2}" width="{:.2}" height="{height:.2}" data-label="{label}" data-value="{value}"><title>{label}: {value}</title></rect>"#,
            (slot - gap).max(0.5),
            label = escape(&bar.label),
            value = bar.value,
        );
        if i % every == 0 {
            let _ = write!(
                svg,
                r#"<text class="x-label" x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
                LEFT + (i as f64 + 0.5) * slot,
                TOP + plot_height + 16.0,
                escape(&shortened(&bar.label, room))
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// About how wide a character of an axis label is, in px (11 px sans-serif).
const LABEL_CHAR_WIDTH: f64 = 6.5;

/// `label` cut to `room` characters (at least 3), with an ellipsis where it was cut.
fn shortened(label: &str, room: usize) -> String {
    let room = room.max(3);
    if label.chars().count() <= room {
        return label.to_string();
    }
    label.chars().take(room - 1).chain(['…']).collect()
}

/// A point of a scatter plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// A horizontal reference line of a scatter plot, such as a limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub y: f64,
    pub label: String,
}

/// A scatter plot of `points` from 0 to round maxima (which include `limit`), with the limit
/// drawn as a dashed line.
pub fn scatter(
    id: &str,
    points: &[Point],
    limit: Option<&Limit>,
    x_title: &str,
    y_title: &str,
) -> String {
    let x_top = nice_ceiling(points.iter().map(|p| p.x.ceil() as u64).max().unwrap_or(0));
    let y_max = points
        .iter()
        .map(|p| p.y)
        .chain(limit.map(|l| l.y))
        .fold(0.0, f64::max);
    let y_top = nice_ceiling(y_max.ceil() as u64);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let at = |x: f64, y: f64| {
        (
            LEFT + x / x_top as f64 * plot_width,
            TOP + plot_height - y / y_top as f64 * plot_height,
        )
    };
    let mut svg = open_svg(id, "scatter", points.len());
    axes(&mut svg, y_top, x_title, y_title);
    for step in 0..=4 {
        let value = x_top / 4 * step;
        let (x, _) = at(value as f64, 0.0);
        let _ = write!(
            svg,
            r#"<text class="x-label" x="{x:.2}" y="{:.2}" text-anchor="middle">{value}</text>"#,
            TOP + plot_height + 16.0
        );
    }
    for point in points {
        let (x, y) = at(point.x, point.y);
        let _ = write!(
            svg,
            r#"<circle class="point" cx="{x:.2}" cy="{y:.2}" r="2" data-value="{},{}"/>"#,
            point.x, point.y
        );
    }
    if let Some(limit) = limit {
        let (_, y) = at(0.0, limit.y);
        let _ = write!(
            svg,
            r#"<line class="limit" x1="{LEFT}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}"/><text class="limit-label" x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            WIDTH - RIGHT - 4.0,
            y - 4.0,
            escape(&limit.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn open_svg(id: &str, class: &str, items: usize) -> String {
    format!(
        r#"<svg id="{id}" class="{class}" data-items="{items}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">"#,
        id = escape(id)
    )
}

/// The axes, the y axis's grid lines and labels, and both titles.
fn axes(svg: &mut String, top: u64, x_title: &str, y_title: &str) {
    let plot_height = HEIGHT - TOP - BOTTOM;
    let bottom = TOP + plot_height;
    for step in 0..=4 {
        let value = top / 4 * step;
        let y = bottom - value as f64 / top as f64 * plot_height;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}"/><text class="y-label" x="{:.2}" y="{:.2}" text-anchor="end">{value}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{bottom:.2}" x2="{:.2}" y2="{bottom:.2}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom:.2}"/>"#,
        WIDTH - RIGHT
    );
    let _ = write!(
        svg,
        r#"<text class="title" x="{:.2}" y="{:.2}" text-anchor="middle">{}</text><text class="title" transform="translate(14 {:.2}) rotate(-90)" text-anchor="middle">{}</text>"#,
        LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
        HEIGHT - 6.0,
        escape(x_title),
        TOP + plot_height / 2.0,
        escape(y_title)
    );
}

/// The smallest of 4 × (1, 2, 2.5 or 5 × a power of ten) at or above `value`, so that the
/// four grid steps are round numbers; at least 4.
pub fn nice_ceiling(value: u64) -> u64 {
    let mut power = 1u64;
    loop {
        for step in [1, 2, 5] {
            let top = 4 * step * power;
            if top >= value {
                return top;
            }
        }
        power *= 10;
    }
}

/// `text` safe inside XML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ranges_get_a_bin_per_integer_with_empty_bins_kept() {
        let bins = histogram(&[3, 3, 5, 7]);
        let counts: Vec<(u64, u64)> = bins.iter().map(|b| (b.low, b.count)).collect();
        assert_eq!(counts, [(3, 2), (4, 0), (5, 1), (6, 0), (7, 1)]);
        assert!(bins.iter().all(|b| b.high == b.low + 1));
    }

    #[test]
    fn wide_ranges_get_round_bins_that_count_every_value() {
        let values: Vec<u64> = (0..10_000).map(|i| i * 7 % 7_201).collect();
        let bins = histogram(&values);
        assert!(bins.len() <= MAX_BINS);
        let width = bins[0].high - bins[0].low;
        assert_eq!(width, 200);
        assert_eq!(bins[0].low % width, 0);
        assert_eq!(bins.iter().map(|b| b.count).sum::<u64>(), 10_000);
        for (bin, next) in bins.iter().zip(&bins[1..]) {
            assert_eq!(bin.high, next.low);
        }
        assert!(histogram(&[]).is_empty());
    }

    #[test]
    fn hours_run_from_the_first_to_the_last_with_empty_hours() {
        let t0 = 1_772_323_200_000; // an hour's start
        let (width, bins) = per_hour(&[t0 + 10, t0 + 3 * HOUR_MS + 5, t0 + 20]);
        assert_eq!(width, HOUR_MS);
        assert_eq!(
            bins,
            [
                (t0, 2),
                (t0 + HOUR_MS, 0),
                (t0 + 2 * HOUR_MS, 0),
                (t0 + 3 * HOUR_MS, 1)
            ]
        );
        // Years of hours become days, never millions of bars.
        let (width, bins) = per_hour(&[t0, t0 + 3 * 365 * DAY_MS]);
        assert!(width >= DAY_MS && bins.len() <= MAX_TIME_BINS + 1);
        assert_eq!(bins.iter().map(|b| b.1).sum::<u64>(), 2);
    }

    #[test]
    fn a_bar_chart_draws_one_rect_per_bar_with_its_value() {
        let bars = [
            Bar {
                label: "inactivity".into(),
                value: 30,
            },
            Bar {
                label: "a<b".into(),
                value: 0,
            },
            Bar {
                label: "max_duration".into(),
                value: 7,
            },
        ];
        let svg = bar_chart("plot-x", &bars, "reason", "sessions");
        assert!(svg.starts_with(r#"<svg id="plot-x""#) && svg.ends_with("</svg>"));
        assert_eq!(svg.matches(r#"<rect class="bar""#).count(), 3);
        assert!(svg.contains(r#"data-label="inactivity" data-value="30""#));
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        // The tallest bar reaches the top of the y axis (40), scaled: 30/40 of the plot height.
        let plot_height = HEIGHT - TOP - BOTTOM;
        assert!(svg.contains(&format!(r#"height="{:.2}""#, 30.0 / 40.0 * plot_height)));
    }

    #[test]
    fn a_scatter_draws_every_point_and_the_limit() {
        let points = [Point { x: 1.0, y: 2.0 }, Point { x: 5.0, y: 7200.0 }];
        let limit = Limit {
            y: 7200.0,
            label: "max".into(),
        };
        let svg = scatter("s", &points, Some(&limit), "events", "seconds");
        assert_eq!(svg.matches(r#"<circle class="point""#).count(), 2);
        assert_eq!(svg.matches(r#"<line class="limit""#).count(), 1);
    }

    #[test]
    fn long_axis_labels_are_cut_to_their_room() {
        assert_eq!(shortened("inactivity", 20), "inactivity");
        assert_eq!(shortened("missing field `uuid`", 8), "missing…");
        assert_eq!(shortened("abcdef", 1), "ab…");
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0), 4);
        assert_eq!(nice_ceiling(30), 40);
        assert_eq!(nice_ceiling(41), 80);
        assert_eq!(nice_ceiling(7_201), 8_000);
    }
}
