//! The analysis's SVG plots (plotters, SVG backend only): clocks and queue lengths against
//! time, and the distribution of clock jumps, one colour per machine, the legend beside the
//! data.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Event, JUMP_BUCKETS, MachineStats};

const COLORS: [RGBColor; 8] = [
    RED,
    BLUE,
    GREEN,
    MAGENTA,
    CYAN,
    BLACK,
    RGBColor(255, 140, 0),
    RGBColor(128, 0, 128),
];

const PLOT_SIZE: (u32, u32) = (900, 500);
const AXIS_FONT: (&str, u32) = ("sans-serif", 14);
const LEGEND_FONT: (&str, u32) = ("sans-serif", 14);
/// Pixels: the gap between the plotting area and the legend, the legend's padding, the height of
/// one legend row, and the width of a row's swatch (line or square) plus the gap after it.
const LEGEND_GAP: i32 = 15;
const LEGEND_PAD: i32 = 8;
const LEGEND_ROW: i32 = 20;
const LEGEND_SWATCH: i32 = 22;

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// How a legend row shows its machine: a line sample (time series) or a filled square (bars).
#[derive(Clone, Copy)]
enum Swatch {
    Line,
    Square,
}

fn legend_style() -> TextStyle<'static> {
    LEGEND_FONT
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center))
}

/// The legend's width in pixels (box included) for these entries.
fn legend_width(root: &Area<'_>, entries: &[(String, RGBColor)]) -> Result<i32, String> {
    let font = legend_style();
    let mut widest = 0;
    for (label, _) in entries {
        let (width, _) = root
            .estimate_text_size(label, &font)
            .map_err(|e| e.to_string())?;
        widest = widest.max(width as i32);
    }
    Ok(2 * LEGEND_PAD + LEGEND_SWATCH + widest)
}

/// The right margin that leaves room for the legend beside the plotting area.
fn legend_margin(root: &Area<'_>, entries: &[(String, RGBColor)]) -> Result<i32, String> {
    Ok(LEGEND_GAP + legend_width(root, entries)? + 10)
}

/// Draws the legend in the column right of the plotting area `plot` (pixel ranges, as
/// `get_pixel_range` gives them), its top level with the plotting area's: outside the data, so
/// it covers no line or bar whatever the data.
fn draw_legend(
    root: &Area<'_>,
    plot: (std::ops::Range<i32>, std::ops::Range<i32>),
    entries: &[(String, RGBColor)],
    swatch: Swatch,
) -> Result<(), String> {
    let left = plot.0.end + LEGEND_GAP;
    let top = plot.1.start;
    let right = left + legend_width(root, entries)?;
    let bottom = top + 2 * LEGEND_PAD + LEGEND_ROW * entries.len() as i32;
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.draw(&Rectangle::new(
        [(left, top), (right, bottom)],
        WHITE.filled(),
    ))
    .map_err(err)?;
    root.draw(&Rectangle::new([(left, top), (right, bottom)], BLACK))
        .map_err(err)?;
    let font = legend_style();
    for (row, (label, color)) in entries.iter().enumerate() {
        let y = top + LEGEND_PAD + LEGEND_ROW * row as i32 + LEGEND_ROW / 2;
        let x = left + LEGEND_PAD;
        match swatch {
            Swatch::Line => root.draw(&PathElement::new(
                vec![(x, y), (x + 16, y)],
                color.stroke_width(2),
            )),
            Swatch::Square => root.draw(&Rectangle::new(
                [(x + 3, y - 5), (x + 13, y + 5)],
                color.filled(),
            )),
        }
        .map_err(err)?;
        root.draw(&Text::new(label.as_str(), (x + LEGEND_SWATCH, y), &font))
            .map_err(err)?;
    }
    Ok(())
}

fn machine_label(machine: usize, rate: u32) -> String {
    format!("machine {machine} ({rate}/s)")
}

/// One line per machine of `pick(event)` against seconds since the first event of any machine.
fn time_plot(
    machines: &BTreeMap<usize, Vec<Event>>,
    pick: &dyn Fn(&Event) -> u64,
    path: &Path,
    title: &str,
    label: &str,
) -> Result<(), String> {
    let start = machines
        .values()
        .filter_map(|e| e.first())
        .map(|e| e.time_us)
        .min()
        .unwrap_or(0);
    let seconds = |us: u64| (us - start) as f64 / 1e6;
    let end = machines
        .values()
        .filter_map(|e| e.last())
        .map(|e| seconds(e.time_us))
        .fold(1.0, f64::max);
    let high = machines
        .values()
        .flatten()
        .map(pick)
        .max()
        .unwrap_or(1)
        .max(1);
    let entries: Vec<(String, RGBColor)> = machines
        .iter()
        .enumerate()
        .map(|(index, (&machine, events))| {
            let rate = events.first().map_or(0, |e| e.rate);
            (machine_label(machine, rate), COLORS[index % COLORS.len()])
        })
        .collect();
    let root = SVGBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .margin_right(legend_margin(&root, &entries)?)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0u64..high + high / 10 + 1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(label)
        .label_style(AXIS_FONT)
        .axis_desc_style(AXIS_FONT)
        .draw()
        .map_err(|e| e.to_string())?;
    for ((_, events), (_, color)) in machines.iter().zip(&entries) {
        chart
            .draw_series(LineSeries::new(
                events.iter().map(|e| (seconds(e.time_us), pick(e))),
                *color,
            ))
            .map_err(|e| e.to_string())?;
    }
    draw_legend(
        &root,
        chart.plotting_area().get_pixel_range(),
        &entries,
        Swatch::Line,
    )?;
    root.present().map_err(|e| e.to_string())
}

/// The jumps plot's x axis: the buckets side by side, bucket `i` spanning `[i, i + 1]`, with one
/// key point (tick and label) at each bucket's centre `i + 0.5` — so every label sits under its
/// own group of bars, whatever the number of machines.
struct BucketAxis;

impl Ranged for BucketAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = value / JUMP_BUCKETS.len() as f64;
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new() // no light mesh lines between buckets
        } else {
            (0..JUMP_BUCKETS.len()).map(|i| i as f64 + 0.5).collect()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..JUMP_BUCKETS.len() as f64
    }
}

/// Grouped bars: one group per jump bucket, centred on `bucket + 0.5`, one bar per machine.
fn jumps_plot(stats: &[MachineStats], path: &Path) -> Result<(), String> {
    let most = stats.iter().flat_map(|s| s.jumps).max().unwrap_or(1).max(1);
    let entries: Vec<(String, RGBColor)> = stats
        .iter()
        .enumerate()
        .map(|(index, s)| {
            (
                machine_label(s.machine, s.rate),
                COLORS[index % COLORS.len()],
            )
        })
        .collect();
    let root = SVGBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("logical clock jump sizes", ("sans-serif", 20))
        .margin(10)
        .margin_right(legend_margin(&root, &entries)?)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(BucketAxis, 0u64..most + most / 10 + 1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("clock jump (ticks)")
        .y_desc("events")
        .label_style(AXIS_FONT)
        .axis_desc_style(AXIS_FONT)
        .x_label_formatter(&|x| {
            JUMP_BUCKETS
                .get(x.floor() as usize)
                .copied()
                .unwrap_or("")
                .to_string()
        })
        .draw()
        .map_err(|e| e.to_string())?;
    // The bars of a group fill the middle 80% of its bucket, side by side in machine order.
    let width = 0.8 / stats.len().max(1) as f64;
    for (index, (s, (_, color))) in stats.iter().zip(&entries).enumerate() {
        let bars = s.jumps.iter().enumerate().map(|(bucket, &count)| {
            let x = bucket as f64 + 0.1 + index as f64 * width;
            Rectangle::new([(x, 0), (x + width, count)], color.filled())
        });
        chart.draw_series(bars).map_err(|e| e.to_string())?;
    }
    draw_legend(
        &root,
        chart.plotting_area().get_pixel_range(),
        &entries,
        Swatch::Square,
    )?;
    root.present().map_err(|e| e.to_string())
}

/// Writes `clock.svg`, `queue.svg` and `jumps.svg` into `dir`. Each has its legend in a column
/// right of the plotting area, so it never hides data.
pub fn plot(
    machines: &BTreeMap<usize, Vec<Event>>,
    stats: &[MachineStats],
    dir: &Path,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    time_plot(
        machines,
        &|e| e.clock,
        &dir.join("clock.svg"),
        "logical clock against time",
        "logical clock",
    )?;
    time_plot(
        machines,
        &|e| e.queue,
        &dir.join("queue.svg"),
        "network queue length against time",
        "queue length",
    )?;
    jumps_plot(stats, &dir.join("jumps.svg"))
}
