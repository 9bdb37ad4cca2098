//! The plot of the sessions table's data files by size: whether the table is made of files near
//! its target size, or of the small files that slow every query down (and that compaction
//! rewrites).

use super::Plot;
use super::svg::{Bar, bar_chart};
use crate::maintain::shape::small_below;

/// What the plot is drawn from: the data files of the current snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSizes {
    pub sizes: Vec<u64>,
    /// `write.target-file-size-bytes`.
    pub target_bytes: u64,
}

/// Sizes grow by this factor from one bar to the next: a few bars span bytes to gigabytes.
const STEP: u64 = 4;
/// The upper bound of the first bar.
const FIRST: u64 = 1 << 10;

/// The files by size, in bars of sizes growing by [`STEP`] from below [`FIRST`] to the largest
/// file's; empty bars in between are kept.
///
/// ```
/// use sessionize::report::files::size_bars;
/// let bars = size_bars(&[100, 3_000, 5_000, 5_000]);
/// let shown: Vec<(&str, u64)> = bars.iter().map(|b| (b.label.as_str(), b.value)).collect();
/// assert_eq!(shown, [("< 1 KiB", 1), ("1–4 KiB", 1), ("4–16 KiB", 2)]);
/// ```
pub fn size_bars(sizes: &[u64]) -> Vec<Bar> {
    let Some(&largest) = sizes.iter().max() else {
        return Vec::new();
    };
    let mut bounds = vec![FIRST];
    while *bounds.last().expect("not empty") <= largest {
        let next = bounds.last().expect("not empty").saturating_mul(STEP);
        bounds.push(next);
    }
    bounds
        .iter()
        .enumerate()
        .map(|(i, &high)| {
            let low = if i == 0 { 0 } else { bounds[i - 1] };
            Bar {
                label: if i == 0 {
                    format!("< {}", size_text(high))
                } else {
                    format!("{}–{}", size_number(low, high), size_text(high))
                },
                value: sizes.iter().filter(|&&s| s >= low && s < high).count() as u64,
            }
        })
        .collect()
}

/// The plot, with a caption that counts the small files against the target.
pub fn plot(files: &FileSizes) -> Plot {
    let small_below = small_below(files.target_bytes);
    let small = files.sizes.iter().filter(|&&s| s < small_below).count();
    Plot {
        id: "plot-file-sizes",
        title: "Data files by size",
        caption: format!(
            "The sessions table's {} data files in its current snapshot, by size; {small} of them \
             are below three quarters of the target size ({}, write.target-file-size-bytes), \
             which compaction rewrites. Many small files make every query slower.",
            files.sizes.len(),
            size_text(files.target_bytes)
        ),
        svg: bar_chart(
            "plot-file-sizes",
            &size_bars(&files.sizes),
            "file size",
            "files",
        ),
    }
}

const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];

/// `bytes`, a power of two, in the largest unit it is a whole number of.
fn size_text(bytes: u64) -> String {
    let unit = unit_of(bytes);
    format!("{} {}", bytes >> (10 * unit), UNITS[unit])
}

/// `low` in the unit of `high`, so that a range reads `1–4 KiB`, or `256 KiB–1 MiB`.
fn size_number(low: u64, high: u64) -> String {
    let (unit, low_unit) = (unit_of(high), unit_of(low));
    if unit == low_unit {
        (low >> (10 * unit)).to_string()
    } else {
        size_text(low)
    }
}

fn unit_of(bytes: u64) -> usize {
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= 1 << (10 * (unit + 1)) {
        unit += 1;
    }
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_in_one_bar_and_ranges_name_their_units() {
        let sizes = [0, 1023, 1024, 300 << 10, 1 << 20, 130 << 20];
        let bars = size_bars(&sizes);
        assert_eq!(
            bars.iter().map(|b| b.value).sum::<u64>(),
            sizes.len() as u64
        );
        let labels: Vec<&str> = bars.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels[0], "< 1 KiB");
        assert!(labels.contains(&"256 KiB–1 MiB"), "{labels:?}");
        assert_eq!(*labels.last().unwrap(), "64–256 MiB");
        assert_eq!(bars[0].value, 2);
        assert!(size_bars(&[]).is_empty());
    }

    #[test]
    fn the_caption_counts_the_small_files() {
        let files = FileSizes {
            sizes: vec![10 << 10, 20 << 10, 100 << 20],
            target_bytes: 128 << 20,
        };
        let plot = plot(&files);
        assert!(plot.caption.contains("3 data files"), "{}", plot.caption);
        assert!(plot.caption.contains("2 of them"), "{}", plot.caption);
        assert!(plot.caption.contains("128 MiB"), "{}", plot.caption);
    }
}
