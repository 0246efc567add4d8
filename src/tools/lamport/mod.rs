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

mod plot;

pub use plot::plot;

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

#[cfg(test)]
mod tests;
