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
            .filter(|line| line.at < legend.at && colours.iter().any(|c| c == line.get("stroke")))
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
