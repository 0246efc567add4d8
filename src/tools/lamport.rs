//! Offline tools for the lamport model's logs (never inside the event loop): parsing the CSV
//! event logs, converting them for ShiViz, and the analysis the assignment asks for — clock
//! jumps, drift, queue lengths — with SVG plots (plotters, SVG backend only).
//!
//! Log format (one file per machine; `roles::lamport::EVENT_HEADER`):
//! `machine,event,system_time_us,logical_clock,queue_length,peer,rate[,vector]` where event is
//! `receive`, `send`, `send_all` or `internal`, peer is a machine id (`all` for `send_all`; the
//! machine itself for internal events) and vector, when present, is `;`-separated entries.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::roles::lamport::EVENT_HEADER;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub machine: usize,
    pub kind: String,
    pub time_us: u64,
    pub clock: u64,
    pub queue: u64,
    pub peer: String,
    pub rate: u32,
    pub vector: Option<Vec<u64>>,
}

impl Event {
    /// The CSV line for this event (what the role writes).
    pub fn to_line(&self) -> String {
        let mut line = format!(
            "{},{},{},{},{},{},{}",
            self.machine, self.kind, self.time_us, self.clock, self.queue, self.peer, self.rate
        );
        if let Some(vector) = &self.vector {
            line.push(',');
            let entries: Vec<String> = vector.iter().map(u64::to_string).collect();
            line.push_str(&entries.join(";"));
        }
        line
    }
}

/// Parses one event line; `None` for the header, blank lines, or a malformed (e.g. torn) line.
pub fn parse_line(line: &str) -> Option<Event> {
    let fields: Vec<&str> = line.trim_end().split(',').collect();
    if fields.len() < 7 || fields[0] == "machine" {
        return None;
    }
    let vector = match fields.get(7) {
        Some(text) => Some(
            text.split(';')
                .map(|v| v.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        ),
        None => None,
    };
    Some(Event {
        machine: fields[0].parse().ok()?,
        kind: fields[1].to_string(),
        time_us: fields[2].parse().ok()?,
        clock: fields[3].parse().ok()?,
        queue: fields[4].parse().ok()?,
        peer: fields[5].to_string(),
        rate: fields[6].parse().ok()?,
        vector,
    })
}

pub fn read_log(path: &Path) -> Result<Vec<Event>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    match lines.next() {
        Some(header) if header.starts_with(EVENT_HEADER) => {}
        _ => return Err(format!("{}: not a lamport log (no header)", path.display())),
    }
    Ok(lines.filter_map(parse_line).collect())
}

/// The ShiViz regular expression for `shiviz_event`'s two lines.
pub const SHIVIZ_REGEX: &str = r"(?<event>.*)\n(?<host>\S*) (?<clock>{.*})";

/// An event as ShiViz reads it: a description line, then `host {"host": n, ...}`.
pub fn shiviz_event(event: &Event) -> Option<String> {
    let vector = event.vector.as_ref()?;
    let mut clock = String::from("{");
    for (machine, &entry) in vector.iter().enumerate() {
        if entry > 0 {
            if clock.len() > 1 {
                clock.push_str(", ");
            }
            let _ = write!(clock, "\"m{machine}\":{entry}");
        }
    }
    clock.push('}');
    let peer = match event.kind.as_str() {
        "receive" => format!(" from m{}", event.peer),
        "send" => format!(" to m{}", event.peer),
        "send_all" => " to all".to_string(),
        _ => String::new(),
    };
    Some(format!(
        "{}{peer} (clock {}, queue {})\nm{} {clock}",
        event.kind, event.clock, event.queue, event.machine
    ))
}

/// Per-machine figures.
#[derive(Clone, Debug, Default)]
pub struct MachineStats {
    pub machine: usize,
    pub rate: u32,
    pub events: u64,
    pub receives: u64,
    pub sends: u64,
    pub internals: u64,
    pub jump_mean: f64,
    pub jump_max: u64,
    /// Jump sizes 1, 2, 3–4, 5–8, 9–16, 17+.
    pub jumps: [u64; 6],
    /// Final logical clock minus events (ticks): how far receives pushed it ahead.
    pub drift_ticks: i64,
    /// Behind the highest clock of any machine, sampled every second: mean and max.
    pub behind_mean: f64,
    pub behind_max: u64,
    pub queue_mean: f64,
    pub queue_max: u64,
    pub queue_end: u64,
    pub seconds: f64,
}

pub const JUMP_BUCKETS: [&str; 6] = ["1", "2", "3-4", "5-8", "9-16", "17+"];

fn bucket(jump: u64) -> usize {
    match jump {
        0 | 1 => 0,
        2 => 1,
        3..=4 => 2,
        5..=8 => 3,
        9..=16 => 4,
        _ => 5,
    }
}

/// The clock of a machine at time `at` (its last event at or before it).
fn clock_at(events: &[Event], at: u64) -> u64 {
    let index = events.partition_point(|event| event.time_us <= at);
    if index == 0 {
        0
    } else {
        events[index - 1].clock
    }
}

pub fn analyze(machines: &BTreeMap<usize, Vec<Event>>) -> Vec<MachineStats> {
    let start = machines
        .values()
        .filter_map(|e| e.first())
        .map(|e| e.time_us)
        .min()
        .unwrap_or(0);
    let end = machines
        .values()
        .filter_map(|e| e.last())
        .map(|e| e.time_us)
        .max()
        .unwrap_or(0);
    let samples: Vec<u64> = (0..)
        .map(|s| start + s * 1_000_000)
        .take_while(|&t| t <= end)
        .collect();
    let highest: Vec<u64> = samples
        .iter()
        .map(|&at| {
            machines
                .values()
                .map(|events| clock_at(events, at))
                .max()
                .unwrap_or(0)
        })
        .collect();
    machines
        .iter()
        .map(|(&machine, events)| {
            let mut stats = MachineStats {
                machine,
                ..MachineStats::default()
            };
            stats.rate = events.first().map_or(0, |e| e.rate);
            stats.events = events.len() as u64;
            let mut previous = 0;
            let mut jump_sum = 0;
            for event in events {
                match event.kind.as_str() {
                    "receive" => stats.receives += 1,
                    "internal" => stats.internals += 1,
                    _ => stats.sends += 1,
                }
                let jump = event.clock.saturating_sub(previous);
                previous = event.clock;
                jump_sum += jump;
                stats.jump_max = stats.jump_max.max(jump);
                stats.jumps[bucket(jump)] += 1;
                stats.queue_max = stats.queue_max.max(event.queue);
            }
            let count = events.len().max(1) as f64;
            stats.jump_mean = jump_sum as f64 / count;
            stats.queue_mean = events.iter().map(|e| e.queue).sum::<u64>() as f64 / count;
            stats.queue_end = events.last().map_or(0, |e| e.queue);
            stats.drift_ticks = events.last().map_or(0, |e| e.clock as i64) - events.len() as i64;
            let behind: Vec<u64> = samples
                .iter()
                .zip(&highest)
                .map(|(&at, &high)| high - clock_at(events, at))
                .collect();
            stats.behind_mean = behind.iter().sum::<u64>() as f64 / behind.len().max(1) as f64;
            stats.behind_max = behind.iter().copied().max().unwrap_or(0);
            stats.seconds = (events.last().map_or(0, |e| e.time_us)
                - events.first().map_or(0, |e| e.time_us)) as f64
                / 1e6;
            stats
        })
        .collect()
}

/// The analysis as Markdown (what `run_cluster.sh` saves as `analysis.md`): a heading, then each
/// table after a few lines saying what its columns mean.
pub fn report(stats: &[MachineStats]) -> String {
    let mut out = String::new();
    let seconds = stats.iter().map(|s| s.seconds).fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "# Lamport clock analysis\n\n{} machine{}, {seconds:.1} s of logs. One row per machine.\n",
        stats.len(),
        if stats.len() == 1 { "" } else { "s" }
    );
    out.push_str(concat!(
        "## Events, clock jumps, drift and queues\n\n",
        "- **rate/s**: the machine's clock rate, ticks (= events) per second; **events** splits ",
        "into **receive**, **send** (a send to all counts once) and **internal**.\n",
        "- **jump**: how far the logical clock moved from one event to the next on this machine. ",
        "A send or internal event adds 1; a receive sets it to max(local, received) + 1, so it ",
        "jumps further when the sender's clock was ahead.\n",
        "- **drift**: the final logical clock minus the number of events, i.e. how far receives ",
        "pushed this clock past its own ticks. **behind fastest**: sampled every second, how far ",
        "this clock was below the highest clock of any machine.\n",
        "- **queue**: messages still waiting in the machine's network queue after each event ",
        "(mean, max, at the end); a growing queue means the machine cannot keep up with what it ",
        "receives.\n\n",
    ));
    out.push_str("| machine | rate/s | events | receive | send | internal | jump mean | jump max | drift (clock − ticks) | behind fastest mean / max | queue mean / max / end |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in stats {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {:.1} / {} | {:.2} / {} / {} |",
            s.machine,
            s.rate,
            s.events,
            s.receives,
            s.sends,
            s.internals,
            s.jump_mean,
            s.jump_max,
            s.drift_ticks,
            s.behind_mean,
            s.behind_max,
            s.queue_mean,
            s.queue_max,
            s.queue_end
        );
    }
    out.push_str(concat!(
        "\n## Clock jump sizes\n\n",
        "Events per jump size, in buckets of ticks (3-4 counts jumps of 3 or 4). A jump of 1 is ",
        "an ordinary tick; larger jumps are receives catching up with a faster machine's clock, ",
        "so they are most common on the slower machines.\n\n| machine |",
    ));
    for bucket in JUMP_BUCKETS {
        let _ = write!(out, " {bucket} |");
    }
    out.push_str("\n|---:|");
    out.push_str(&"---:|".repeat(JUMP_BUCKETS.len()));
    out.push('\n');
    for s in stats {
        let _ = write!(out, "| {} |", s.machine);
        for count in s.jumps {
            let _ = write!(out, " {count} |");
        }
        out.push('\n');
    }
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(machine: usize, kind: &str, time_us: u64, clock: u64, queue: u64) -> Event {
        Event {
            machine,
            kind: kind.into(),
            time_us,
            clock,
            queue,
            peer: "1".into(),
            rate: 2,
            vector: None,
        }
    }

    #[test]
    fn lines_round_trip_and_torn_lines_are_skipped() {
        let mut with_vector = event(2, "receive", 1_000_000, 9, 3);
        with_vector.vector = Some(vec![4, 0, 7]);
        for e in [event(0, "send", 5, 1, 0), with_vector] {
            assert_eq!(parse_line(&e.to_line()), Some(e));
        }
        assert_eq!(parse_line(EVENT_HEADER), None);
        assert_eq!(parse_line("0,send,12"), None, "a torn last line is skipped");
    }

    #[test]
    fn analysis_of_a_small_known_log() {
        let mut machines = BTreeMap::new();
        // Machine 0 ticks once a second: internal, internal, then receives a clock of 10.
        machines.insert(
            0,
            vec![
                event(0, "internal", 0, 1, 0),
                event(0, "internal", 1_000_000, 2, 1),
                event(0, "receive", 2_000_000, 11, 0),
            ],
        );
        // Machine 1 ticks fast and sends.
        machines.insert(
            1,
            (1..=10)
                .map(|i| event(1, "send", i * 200_000, i, 0))
                .collect(),
        );
        let stats = analyze(&machines);
        let zero = &stats[0];
        assert_eq!(
            (zero.events, zero.receives, zero.internals, zero.sends),
            (3, 1, 2, 0)
        );
        assert_eq!(zero.jump_max, 9);
        assert_eq!(zero.jumps, [2, 0, 0, 0, 1, 0]);
        assert!((zero.jump_mean - 11.0 / 3.0).abs() < 1e-9);
        assert_eq!(zero.drift_ticks, 11 - 3);
        assert_eq!(zero.queue_max, 1);
        assert_eq!(zero.queue_end, 0);
        // At t = 1 s machine 1 is at clock 5 and machine 0 at 2: 3 behind; at 2 s, 10 vs 11.
        assert_eq!(zero.behind_max, 3);
        assert_eq!(stats[1].behind_max, 1);
        let table = report(&stats);
        assert!(
            table.contains("| 0 | 2 | 3 | 1 | 0 | 2 | 3.67 | 9 |"),
            "{table}"
        );
    }

    #[test]
    fn shiviz_lines_name_hosts_and_clocks() {
        let mut e = event(1, "receive", 7, 5, 2);
        e.peer = "0".into();
        e.vector = Some(vec![3, 2, 0]);
        assert_eq!(
            shiviz_event(&e).unwrap(),
            "receive from m0 (clock 5, queue 2)\nm1 {\"m0\":3, \"m1\":2}"
        );
        assert_eq!(
            shiviz_event(&event(0, "send", 1, 1, 0)),
            None,
            "needs a vector clock"
        );
    }

    #[test]
    fn report_opens_with_a_heading_and_explains_each_table() {
        let mut machines = BTreeMap::new();
        machines.insert(0, vec![event(0, "internal", 0, 1, 0)]);
        let text = report(&analyze(&machines));
        assert!(text.starts_with("# Lamport clock analysis\n"), "{text}");
        let events_section = text
            .find("## Events, clock jumps, drift and queues")
            .unwrap();
        let main_table = text.find("| machine | rate/s |").unwrap();
        let jumps_section = text.find("## Clock jump sizes").unwrap();
        let jumps_table = text.find("| machine | 1 | 2 | 3-4 |").unwrap();
        assert!(events_section < main_table && main_table < jumps_section);
        assert!(jumps_section < jumps_table, "{text}");
        for term in ["**jump**", "**drift**", "**behind fastest**", "**queue**"] {
            assert!(text[events_section..main_table].contains(term), "{term}");
        }
    }

    /// One SVG element as the plotters SVG backend writes it: where it starts, its attributes
    /// and its text (`<text ...>\nLABEL\n</text>`).
    struct Element {
        at: usize,
        attributes: BTreeMap<String, String>,
        text: String,
    }

    impl Element {
        fn get(&self, name: &str) -> &str {
            self.attributes.get(name).map_or("", String::as_str)
        }

        fn number(&self, name: &str) -> f64 {
            self.get(name).parse().unwrap_or_else(|_| panic!("{name}"))
        }

        /// A `<rect>`'s box: (left, top, right, bottom).
        fn rect(&self) -> (f64, f64, f64, f64) {
            let (x, y) = (self.number("x"), self.number("y"));
            (x, y, x + self.number("width"), y + self.number("height"))
        }

        fn points(&self) -> Vec<(f64, f64)> {
            self.get("points")
                .split_whitespace()
                .map(|point| {
                    let (x, y) = point.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect()
        }
    }

    /// The `<tag ...>` elements of `svg`, in document order.
    fn elements(svg: &str, tag: &str) -> Vec<Element> {
        let open = format!("<{tag} ");
        svg.match_indices(&open)
            .map(|(at, _)| {
                let rest = &svg[at + open.len()..];
                let end = rest.find('>').unwrap();
                let mut attributes = BTreeMap::new();
                for pair in rest[..end].trim_end_matches('/').split("\" ") {
                    if let Some((name, value)) = pair.split_once("=\"") {
                        let value = value.trim_end_matches('"');
                        attributes.insert(name.trim().to_string(), value.to_string());
                    }
                }
                let text = if rest[..end].ends_with('/') {
                    String::new()
                } else {
                    let close = format!("</{tag}>");
                    rest[end + 1..rest.find(&close).unwrap()].trim().to_string()
                };
                Element {
                    at,
                    attributes,
                    text,
                }
            })
            .collect()
    }

    /// The legend's frame: the unfilled `<rect>` around every "machine N (R/s)" text.
    fn legend_box(svg: &str, machines: usize) -> Element {
        let labels: Vec<(f64, f64)> = elements(svg, "text")
            .iter()
            .filter(|text| text.text.starts_with("machine "))
            .map(|text| (text.number("x"), text.number("y")))
            .collect();
        assert_eq!(labels.len(), machines, "one legend row per machine");
        let mut frames = elements(svg, "rect").into_iter().filter(|rect| {
            let (left, top, right, bottom) = rect.rect();
            rect.get("fill") == "none"
                && labels
                    .iter()
                    .all(|&(x, y)| left < x && x < right && top < y && y < bottom)
        });
        let frame = frames.next().expect("a frame around the legend");
        assert!(frames.next().is_none(), "one legend frame");
        frame
    }

    /// Whether the segment from `a` to `b` meets the box (left, top, right, bottom)
    /// (Liang–Barsky clipping: a non-empty part of the segment is left inside).
    fn segment_meets(a: (f64, f64), b: (f64, f64), area: (f64, f64, f64, f64)) -> bool {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let (left, top, right, bottom) = area;
        let (mut enter, mut leave) = (0.0f64, 1.0f64);
        for (p, q) in [
            (-dx, a.0 - left),
            (dx, right - a.0),
            (-dy, a.1 - top),
            (dy, bottom - a.1),
        ] {
            if p == 0.0 {
                if q < 0.0 {
                    return false;
                }
            } else if p < 0.0 {
                enter = enter.max(q / p);
            } else {
                leave = leave.min(q / p);
            }
        }
        enter <= leave
    }

    /// Three machines over 10 s: machine 1's clock jumps into every bucket, machine 2's queue
    /// ends at mid-height on the right (where plotters' default legend sat).
    fn plots_of_a_small_log(name: &str) -> (String, String, String) {
        let mut machines = BTreeMap::new();
        machines.insert(
            0,
            (1..=40)
                .map(|i| event(0, "send", i * 250_000, i, 0))
                .collect::<Vec<_>>(),
        );
        let mut clock = 0;
        let jumps = [1, 1, 2, 3, 1, 6, 1, 12, 1, 20, 1, 1, 2, 1, 4, 1, 1, 1, 9, 1];
        machines.insert(
            1,
            jumps
                .iter()
                .zip(1..)
                .map(|(&jump, i)| {
                    clock += jump;
                    event(1, "receive", i * 500_000, clock, 0)
                })
                .collect(),
        );
        let queues = [0, 1, 2, 3, 4, 5, 6, 5, 4, 3, 3];
        machines.insert(
            2,
            queues
                .iter()
                .zip(0..)
                .map(|(&queue, i)| event(2, "receive", i * 1_000_000, 30 + i, queue))
                .collect(),
        );
        let stats = analyze(&machines);
        assert_eq!(stats[1].jumps, [12, 2, 2, 1, 2, 1]);
        let dir = std::env::temp_dir().join(format!("pollen-{name}-{}", std::process::id()));
        plot(&machines, &stats, &dir).unwrap();
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
        let svgs = (read("jumps.svg"), read("queue.svg"), read("clock.svg"));
        std::fs::remove_dir_all(&dir).unwrap();
        svgs
    }

    #[test]
    fn jump_bucket_labels_sit_once_under_their_own_bars() {
        let (jumps, _, _) = plots_of_a_small_log("jump-labels");
        let legend = legend_box(&jumps, 3);
        // The bars are the coloured rects drawn before the legend: machine by machine, each
        // with one bar per bucket in bucket order.
        let bars: Vec<Element> = elements(&jumps, "rect")
            .into_iter()
            .filter(|rect| rect.at < legend.at && !["#FFFFFF", "none"].contains(&rect.get("fill")))
            .collect();
        assert_eq!(bars.len(), 3 * JUMP_BUCKETS.len());
        let baseline = bars.iter().map(|bar| bar.rect().3).fold(0.0, f64::max);
        let texts = elements(&jumps, "text");
        let mut previous_right = f64::MIN;
        for (bucket, label) in JUMP_BUCKETS.iter().enumerate() {
            let group: Vec<_> = (0..3)
                .map(|machine| bars[machine * JUMP_BUCKETS.len() + bucket].rect())
                .collect();
            let left = group.iter().map(|bar| bar.0).fold(f64::MAX, f64::min);
            let right = group.iter().map(|bar| bar.2).fold(f64::MIN, f64::max);
            assert!(
                previous_right <= left,
                "bucket {label}'s bars overlap the previous ones"
            );
            previous_right = right;
            let matches: Vec<&Element> = texts
                .iter()
                .filter(|text| text.text == *label && text.number("y") > baseline)
                .collect();
            assert_eq!(matches.len(), 1, "label {label} once under the axis");
            let x = matches[0].number("x");
            assert_eq!(matches[0].get("text-anchor"), "middle");
            assert!(
                left <= x && x <= right,
                "label {label} at x = {x}, its bars span {left}..{right}"
            );
        }
        for text in &texts {
            assert!(
                !text.text.contains(['[', '"']) && !text.text.contains("&quot;"),
                "{}",
                text.text
            );
        }
        assert!(texts.iter().any(|text| text.text == "clock jump (ticks)"));
        for bar in &bars {
            let (left, top, right, bottom) = bar.rect();
            let (l, t, r, b) = legend.rect();
            assert!(
                right < l || r < left || bottom < t || b < top,
                "the legend covers a bar"
            );
        }
    }

    #[test]
    fn legends_cover_no_line() {
        let (_, queue, clock) = plots_of_a_small_log("legends");
        for svg in [queue, clock] {
            let legend = legend_box(&svg, 3);
            let polylines = elements(&svg, "polyline");
            // The legend's swatches are the coloured lines after its frame; the data are the
            // lines of those colours drawn before it.
            let colours: Vec<String> = polylines
                .iter()
                .filter(|line| line.at > legend.at)
                .map(|line| line.get("stroke").to_string())
                .collect();
            assert_eq!(colours.len(), 3);
            let series: Vec<&Element> = polylines
                .iter()
                .filter(|line| {
                    line.at < legend.at && colours.iter().any(|c| c == line.get("stroke"))
                })
                .collect();
            assert_eq!(series.len(), 3, "one line per machine");
            for line in series {
                let points = line.points();
                assert!(points.len() >= 11);
                for pair in points.windows(2) {
                    assert!(
                        !segment_meets(pair[0], pair[1], legend.rect()),
                        "the legend covers {:?}-{:?} of the {} line",
                        pair[0],
                        pair[1],
                        line.get("stroke")
                    );
                }
            }
        }
    }
}
