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

use plotters::prelude::*;

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

/// The analysis as markdown tables.
pub fn report(stats: &[MachineStats]) -> String {
    let mut out = String::new();
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
    out.push_str("\nJump sizes (events per bucket):\n\n| machine |");
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

/// Writes `clock.svg`, `queue.svg` and `jumps.svg` into `dir`.
pub fn plot(
    machines: &BTreeMap<usize, Vec<Event>>,
    stats: &[MachineStats],
    dir: &Path,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
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
    let series = |pick: &dyn Fn(&Event) -> u64,
                  file: &str,
                  title: &str,
                  label: &str|
     -> Result<(), String> {
        let high = machines
            .values()
            .flatten()
            .map(pick)
            .max()
            .unwrap_or(1)
            .max(1);
        let path = dir.join(file);
        let root = SVGBackend::new(&path, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..end, 0u64..high + high / 10 + 1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(label)
            .draw()
            .map_err(|e| e.to_string())?;
        for (index, (machine, events)) in machines.iter().enumerate() {
            let color = COLORS[index % COLORS.len()];
            let rate = events.first().map_or(0, |e| e.rate);
            chart
                .draw_series(LineSeries::new(
                    events.iter().map(|e| (seconds(e.time_us), pick(e))),
                    color,
                ))
                .map_err(|e| e.to_string())?
                .label(format!("machine {machine} ({rate}/s)"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    };
    series(
        &|e| e.clock,
        "clock.svg",
        "logical clock against time",
        "logical clock",
    )?;
    series(
        &|e| e.queue,
        "queue.svg",
        "network queue length against time",
        "queue length",
    )?;
    let path = dir.join("jumps.svg");
    let root = SVGBackend::new(&path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let most = stats.iter().flat_map(|s| s.jumps).max().unwrap_or(1).max(1);
    let machines_count = stats.len().max(1) as u32;
    let mut chart = ChartBuilder::on(&root)
        .caption("logical clock jump sizes", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(
            0u32..(JUMP_BUCKETS.len() as u32 * (machines_count + 1)),
            0u64..most + most / 10 + 1,
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(format!(
            "jump size buckets {JUMP_BUCKETS:?}, one bar per machine"
        ))
        .y_desc("events")
        .x_label_formatter(&|x| {
            JUMP_BUCKETS
                .get((*x / (machines_count + 1)) as usize)
                .copied()
                .unwrap_or("")
                .to_string()
        })
        .draw()
        .map_err(|e| e.to_string())?;
    for (index, s) in stats.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let bars = s.jumps.iter().enumerate().map(|(bucket, &count)| {
            let x = bucket as u32 * (machines_count + 1) + index as u32;
            Rectangle::new([(x, 0), (x + 1, count)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(format!("machine {} ({}/s)", s.machine, s.rate))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
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
}
