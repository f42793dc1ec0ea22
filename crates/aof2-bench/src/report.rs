//! Results: one [`Row`] per measurement, printed as a table per workload, written as
//! `report.json` and drawn as SVG charts.
//!
//! Contract:
//! - `report.json` is a JSON array of [`Row`] objects. Field names are an interface: `system`,
//!   `class` (`aof2` | `peer` | `baseline`), `workload` (`w1`…`w7`), `operation`, `record_size`
//!   (bytes), `writers`, `durable` (the ack waited for fdatasync), `payload`, `records`, `secs`,
//!   `records_per_sec`, `mb_per_sec` (10^6 payload bytes/s), `p50_us`, `p99_us`, `p999_us`,
//!   `max_us`, `fsyncs` (the system's own fdatasync count; null when it keeps none),
//!   `device_flushes` and `device_writes` (device-wide flush and write requests during the
//!   measurement: estimates),
//!   `volume_bytes` and `reopen_ms` (W5), `best_peer` and `aof2_vs_best_peer`, `notes`.
//!   Metrics a row does not have are null.
//! - [`compare_to_peers`] sets `aof2_vs_best_peer` on aof2 rows: how many times better aof2 is
//!   than the best peer log of the same comparison group (same workload, operation, record size,
//!   writers — W5: same volume), > 1 meaning aof2 is ahead. Better = more records/s, or for W5
//!   a shorter reopen. Baselines (raw file, memcpy) are limits, not peers.
//! - [`write_charts`] draws `<workload>_<metric>.svg` files with plotters' SVG backend (text is
//!   laid out with plotters' built-in estimate, no font files).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

use crate::payload::PayloadKind;
use crate::systems::{Result, SystemKind};

/// The workloads.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Durable appends, closed-loop writers (+ aof2 pipelined, and aof2 async tasks).
    W1,
    /// Buffered appends, one writer.
    W2,
    /// Append-to-visible latency of a following reader.
    W3,
    /// Read-back: sequential scan and random point reads.
    W4,
    /// Reopen after `kill -9`.
    W5,
    /// Tiering: compression, Tier 1 reads, ingest through a Tier 0 budget (aof2 only).
    W6,
    /// Tier 2 against a local S3 server: upload, cold reads, scan, restore (aof2 only).
    W7,
}

impl Workload {
    /// Every workload, in order.
    pub const ALL: [Workload; 7] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W6,
        Workload::W7,
    ];

    /// Short id (`w1`).
    pub fn id(self) -> &'static str {
        match self {
            Workload::W1 => "w1",
            Workload::W2 => "w2",
            Workload::W3 => "w3",
            Workload::W4 => "w4",
            Workload::W5 => "w5",
            Workload::W6 => "w6",
            Workload::W7 => "w7",
        }
    }

    /// Title of its table.
    pub fn title(self) -> &'static str {
        match self {
            Workload::W1 => "W1 durable appends (closed-loop writers; ack after fdatasync)",
            Workload::W2 => "W2 buffered appends (1 writer; ack before any fdatasync)",
            Workload::W3 => {
                "W3 tail latency: append -> visible to a following reader (aof2 only: the peers have no follow mode)"
            }
            Workload::W4 => "W4 read-back (page cache warm: data just written)",
            Workload::W5 => "W5 reopen after kill -9 of an appending child process",
            Workload::W6 => {
                "W6 tiering: Tier 1 compression and reads vs plain zstd, ingest through a Tier 0 budget"
            }
            Workload::W7 => {
                "W7 Tier 2 on a local S3 server (s3s-fs, loopback): upload, cold reads, scan, restore vs plain object_store requests"
            }
        }
    }
}

/// Whether a row is aof2, a peer log or a physical baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// aof2 itself.
    Aof2,
    /// Another log library.
    Peer,
    /// Raw file or memcpy.
    Baseline,
}

impl Class {
    /// The class of a system kind.
    pub fn of(kind: SystemKind) -> Self {
        if kind.is_aof2() {
            Class::Aof2
        } else if kind.is_peer() {
            Class::Peer
        } else {
            Class::Baseline
        }
    }
}

/// One measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub system: String,
    pub class: Class,
    pub workload: Workload,
    pub operation: String,
    pub record_size: usize,
    pub writers: usize,
    pub durable: bool,
    pub payload: PayloadKind,
    pub records: u64,
    pub secs: f64,
    pub records_per_sec: Option<f64>,
    pub mb_per_sec: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    pub fsyncs: Option<u64>,
    pub device_flushes: Option<u64>,
    pub device_writes: Option<u64>,
    pub volume_bytes: Option<u64>,
    pub reopen_ms: Option<f64>,
    pub best_peer: Option<String>,
    pub aof2_vs_best_peer: Option<f64>,
    pub notes: String,
}

impl Row {
    /// A row with identity fields set and no metrics.
    pub fn new(
        kind: SystemKind,
        workload: Workload,
        operation: &str,
        record_size: usize,
        writers: usize,
        payload: PayloadKind,
    ) -> Self {
        Row {
            system: kind.name().to_string(),
            class: Class::of(kind),
            workload,
            operation: operation.to_string(),
            record_size,
            writers,
            durable: kind.durable(),
            payload,
            records: 0,
            secs: 0.0,
            records_per_sec: None,
            mb_per_sec: None,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            max_us: None,
            fsyncs: None,
            device_flushes: None,
            device_writes: None,
            volume_bytes: None,
            reopen_ms: None,
            best_peer: None,
            aof2_vs_best_peer: None,
            notes: String::new(),
        }
    }

    /// Set records, time and the rates derived from them.
    pub fn set_rate(&mut self, records: u64, secs: f64) {
        self.records = records;
        self.secs = secs;
        if secs > 0.0 {
            self.records_per_sec = Some(records as f64 / secs);
            self.mb_per_sec = Some(records as f64 * self.record_size as f64 / secs / 1e6);
        }
    }

    /// Set the latency columns.
    pub fn set_latency(&mut self, summary: Option<crate::stats::Summary>) {
        if let Some(s) = summary {
            self.p50_us = Some(s.p50);
            self.p99_us = Some(s.p99);
            self.p999_us = Some(s.p999);
            self.max_us = Some(s.max);
        }
    }

    /// Append a note (`; `-separated).
    pub fn note(&mut self, text: &str) {
        if !self.notes.is_empty() {
            self.notes.push_str("; ");
        }
        self.notes.push_str(text);
    }

    /// The comparison group and the metric compared (see the module contract).
    fn comparison(&self) -> (GroupKey, Option<f64>) {
        let writers = if self.workload == Workload::W5 {
            0
        } else {
            self.writers
        };
        let key = (
            self.workload,
            self.operation.clone(),
            self.record_size,
            writers,
            self.volume_bytes,
        );
        let score = if self.workload == Workload::W5 {
            self.reopen_ms.filter(|&ms| ms > 0.0).map(|ms| 1.0 / ms)
        } else {
            self.records_per_sec
        };
        (key, score)
    }
}

/// What makes two rows comparable (see the module contract).
type GroupKey = (Workload, String, usize, usize, Option<u64>);

/// Fill `best_peer` / `aof2_vs_best_peer` of every aof2 row (see the module contract).
pub fn compare_to_peers(rows: &mut [Row]) {
    for i in 0..rows.len() {
        if rows[i].class != Class::Aof2 {
            continue;
        }
        let (key, Some(score)) = rows[i].comparison() else {
            continue;
        };
        let best = rows
            .iter()
            .filter(|r| r.class == Class::Peer)
            .filter_map(|r| {
                let (k, s) = r.comparison();
                (k == key).then_some((s?, r.system.clone()))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((peer_score, peer)) = best {
            rows[i].aof2_vs_best_peer = Some(score / peer_score);
            rows[i].best_peer = Some(peer);
        }
    }
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// A ratio with three significant digits.
fn ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A number with an SI suffix and three significant digits (`1.23M`).
fn si(x: f64) -> String {
    let (v, suffix) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    if v >= 100.0 {
        format!("{v:.0}{suffix}")
    } else if v >= 10.0 {
        format!("{v:.1}{suffix}")
    } else {
        format!("{v:.2}{suffix}")
    }
}

/// Print one workload's rows as a table, then aof2's ratios to the best peer.
pub fn write_table<W: Write>(out: &mut W, workload: Workload, rows: &[Row]) -> io::Result<()> {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.workload == workload).collect();
    writeln!(out, "\n## {}\n", workload.title())?;
    if rows.is_empty() {
        return writeln!(out, "(no rows)");
    }
    let reopen = workload == Workload::W5;
    let mut header = vec![
        "system",
        "operation",
        "B",
        "W",
        "durable",
        "records",
        "records/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "fsyncs",
        "dev flushes",
    ];
    if reopen {
        header.splice(6..11, ["volume MiB", "reopen ms"]);
    }
    header.push("notes");
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.system.clone(),
                r.operation.clone(),
                r.record_size.to_string(),
                r.writers.to_string(),
                if r.durable { "yes" } else { "no" }.to_string(),
                r.records.to_string(),
            ];
            if reopen {
                cells.push(
                    r.volume_bytes
                        .map_or("-".into(), |v| format!("{}", v >> 20)),
                );
                cells.push(opt(r.reopen_ms, 1));
            } else {
                cells.extend([
                    opt(r.records_per_sec, 0),
                    opt(r.mb_per_sec, 1),
                    opt(r.p50_us, 1),
                    opt(r.p99_us, 1),
                    opt(r.p999_us, 1),
                ]);
            }
            cells.push(r.fsyncs.map_or("n/a".into(), |n| n.to_string()));
            cells.push(r.device_flushes.map_or("n/a".into(), |n| format!("~{n}")));
            cells.push(r.notes.clone());
            cells
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for cells in &table {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let last = header.len() - 1;
    let line = |cells: Vec<String>| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let pad = if i == last {
                0
            } else {
                widths[i] - c.chars().count()
            };
            // Text columns left-aligned, numbers right-aligned.
            if i <= 1 || i == last || i == 4 {
                s.push_str(&format!(" {c}{} |", " ".repeat(pad)));
            } else {
                s.push_str(&format!(" {}{c} |", " ".repeat(pad)));
            }
        }
        s
    };
    writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    )?;
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| "-".repeat(if i == last { 3 } else { *w }))
        .collect();
    writeln!(out, "{}", line(rule))?;
    for cells in table {
        writeln!(out, "{}", line(cells))?;
    }
    let ratios: Vec<&&Row> = rows
        .iter()
        .filter(|r| r.aof2_vs_best_peer.is_some())
        .collect();
    if !ratios.is_empty() {
        let what = if reopen {
            "reopen speed (peer ms / aof2 ms)"
        } else {
            "records/s (aof2 / peer)"
        };
        writeln!(out, "\naof2 vs best peer, {what}; > 1 = aof2 ahead:")?;
        for r in ratios {
            writeln!(
                out,
                "  {:<20} {:<18} {:>5} B {:>3} W: {:>7}x vs {}",
                r.system,
                r.operation,
                r.record_size,
                r.writers,
                ratio(r.aof2_vs_best_peer.unwrap_or(0.0)),
                r.best_peer.as_deref().unwrap_or("-")
            )?;
        }
    }
    Ok(())
}

/// Read rows written by [`write_json`].
pub fn read_json(path: &Path) -> Result<Vec<Row>> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// Write `rows` as a JSON array to `path`.
pub fn write_json(path: &Path, rows: &[Row]) -> Result<()> {
    let mut text = serde_json::to_string_pretty(rows)?;
    text.push('\n');
    std::fs::write(path, text)?;
    Ok(())
}

/// One panel of horizontal grouped bars: a bar per (label, series) with a value.
#[derive(Debug, Clone)]
struct BarPanel {
    title: String,
    labels: Vec<String>,
    /// Class of each label (colours single-series charts).
    classes: Vec<Class>,
    /// (series name, one value per label).
    series: Vec<(String, Vec<Option<f64>>)>,
}

/// One panel of lines over x.
#[derive(Debug, Clone)]
struct LinePanel {
    title: String,
    /// (series name, points).
    series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Bar colour of a class in single-series charts.
fn class_color(class: Class) -> RGBAColor {
    match class {
        Class::Aof2 => RGBColor(31, 119, 180).to_rgba(),
        Class::Peer => RGBColor(255, 127, 14).to_rgba(),
        Class::Baseline => RGBColor(160, 160, 160).to_rgba(),
    }
}

/// Range of a log axis covering `values` (positive ones).
fn log_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (lo <= hi).then(|| (lo / 2.0, hi * 2.0))
}

fn draw_bars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &BarPanel,
    unit: &str,
) -> Result<()> {
    let Some((lo, hi)) = log_range(
        panel
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().flatten().copied()),
    ) else {
        return Ok(());
    };
    let n = panel.labels.len();
    let labels = panel.labels.clone();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(190)
        .build_cartesian_2d((lo..hi).log_scale(), -0.5f64..(n as f64 - 0.5))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n + 1)
        .y_label_formatter(&move |y| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_label_formatter(&|x| si(*x))
        .x_desc(unit)
        .draw()?;
    let single = panel.series.len() == 1;
    let groups = panel.series.len().max(1) as f64;
    let height = 0.8 / groups;
    let value_style = ("sans-serif", 11)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (s, (name, values)) in panel.series.iter().enumerate() {
        let series_color = Palette99::pick(s).to_rgba();
        let bar_color = |i: usize| {
            if single {
                class_color(panel.classes.get(i).copied().unwrap_or(Class::Peer))
            } else {
                series_color
            }
        };
        let bars: Vec<(f64, f64, f64, RGBAColor)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let v = (*v).filter(|v| *v > 0.0)?;
                let top = i as f64 - 0.4 + height * s as f64;
                Some((v, top, top + height * 0.9, bar_color(i)))
            })
            .collect();
        let drawn = chart.draw_series(bars.iter().map(|&(v, top, bottom, color)| {
            Rectangle::new([(lo, top), (v, bottom)], color.filled())
        }))?;
        if !single {
            drawn.label(name.clone()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], series_color.filled())
            });
        }
        chart.draw_series(bars.iter().map(|&(v, top, bottom, _)| {
            EmptyElement::at((v, (top + bottom) / 2.0))
                + Text::new(si(v), (4, 0), value_style.clone())
        }))?;
    }
    if panel.series.len() > 1 {
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()?;
    }
    Ok(())
}

fn draw_lines(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    panel: &LinePanel,
    unit: &str,
) -> Result<()> {
    let Some((lo, hi)) = log_range(panel.series.iter().flat_map(|(_, p)| p.iter().map(|p| p.1)))
    else {
        return Ok(());
    };
    let max_x = panel
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3f64..max_x.log2() + 0.3, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(max_x.log2() as usize + 2)
        .x_label_formatter(&|x| {
            let k = x.round();
            if (x - k).abs() < 1e-6 && k >= 0.0 {
                format!("{}", 1u64 << (k as u32))
            } else {
                String::new()
            }
        })
        .x_desc("writers")
        .y_label_formatter(&|y| si(*y))
        .y_desc(unit)
        .draw()?;
    for (s, (name, points)) in panel.series.iter().enumerate() {
        let color = Palette99::pick(s).to_rgba();
        let points: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.1 > 0.0)
            .map(|&(x, y)| (x.log2(), y))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()?;
    Ok(())
}

/// A chart file: a title and panels stacked vertically.
fn chart_file<P>(
    path: &Path,
    title: &str,
    panels: &[P],
    panel_height: u32,
    colour_hint: bool,
    draw: impl Fn(&DrawingArea<SVGBackend<'_>, Shift>, &P) -> Result<()>,
) -> Result<()> {
    if panels.is_empty() {
        return Ok(());
    }
    let height = 50 + panel_height * panels.len() as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, body) = root.split_vertically(50);
    top.draw(&Text::new(
        title.to_string(),
        (20, 15),
        ("sans-serif", 20).into_font(),
    ))?;
    if colour_hint {
        top.draw(&Text::new(
            "single-metric bars: blue = aof2, orange = peer logs, grey = raw baselines".to_string(),
            (20, 36),
            ("sans-serif", 11).into_font(),
        ))?;
    }
    for (area, panel) in body.split_evenly((panels.len(), 1)).iter().zip(panels) {
        draw(area, panel)?;
    }
    root.present()?;
    Ok(())
}

fn sizes_of(rows: &[&Row]) -> Vec<usize> {
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.record_size).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    sizes
}

fn unique<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// A metric of a row, by name.
type Metric = (&'static str, fn(&Row) -> Option<f64>);

/// Bars per (system + operation) label, one series per metric, a panel per record size.
fn bar_panels(rows: &[&Row], title: &str, metrics: &[Metric]) -> Vec<BarPanel> {
    sizes_of(rows)
        .into_iter()
        .map(|size| {
            let of_size: Vec<&&Row> = rows.iter().filter(|r| r.record_size == size).collect();
            let labels = unique(of_size.iter().map(|r| label(r)));
            let classes = labels
                .iter()
                .map(|l| {
                    of_size
                        .iter()
                        .find(|r| &label(r) == l)
                        .map_or(Class::Peer, |r| r.class)
                })
                .collect();
            let series = metrics
                .iter()
                .map(|(name, metric)| {
                    let values = labels
                        .iter()
                        .map(|l| {
                            of_size
                                .iter()
                                .find(|r| &label(r) == l)
                                .and_then(|r| metric(r))
                        })
                        .collect();
                    (name.to_string(), values)
                })
                .collect();
            BarPanel {
                title: format!("{title}, {size} B records"),
                labels,
                classes,
                series,
            }
        })
        .collect()
}

fn label(row: &Row) -> String {
    match row.workload {
        Workload::W2 | Workload::W3 => row.system.clone(),
        Workload::W5 => format!("{} ({} W)", row.system, row.writers),
        _ => format!("{} {}", row.system, row.operation),
    }
}

/// Draw every chart of `rows` into `dir`; returns the files written.
pub fn write_charts(dir: &Path, rows: &[Row]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let of = |w: Workload| -> Vec<&Row> { rows.iter().filter(|r| r.workload == w).collect() };
    let rps: fn(&Row) -> Option<f64> = |r| r.records_per_sec;
    let p50: fn(&Row) -> Option<f64> = |r| r.p50_us;
    let p99: fn(&Row) -> Option<f64> = |r| r.p99_us;
    let p999: fn(&Row) -> Option<f64> = |r| r.p999_us;

    // W1: lines over writers.
    let w1 = of(Workload::W1);
    for (file, metric, unit, what) in [
        (
            "w1_throughput.svg",
            rps,
            "records/s",
            "W1 durable appends: throughput",
        ),
        (
            "w1_latency.svg",
            p99,
            "p99 µs",
            "W1 durable appends: p99 latency",
        ),
    ] {
        let panels: Vec<LinePanel> = sizes_of(&w1)
            .into_iter()
            .map(|size| {
                let of_size: Vec<&&Row> = w1.iter().filter(|r| r.record_size == size).collect();
                let names = unique(
                    of_size
                        .iter()
                        .map(|r| format!("{} {}", r.system, r.operation)),
                );
                let series = names
                    .into_iter()
                    .map(|name| {
                        let points = of_size
                            .iter()
                            .filter(|r| format!("{} {}", r.system, r.operation) == name)
                            .filter_map(|r| Some((r.writers as f64, metric(r)?)))
                            .collect();
                        (name, points)
                    })
                    .collect();
                LinePanel {
                    title: format!("{size} B records"),
                    series,
                }
            })
            .collect();
        let path = dir.join(file);
        chart_file(&path, what, &panels, 420, false, |a, p| {
            draw_lines(a, p, unit)
        })?;
        if !panels.is_empty() {
            written.push(path);
        }
    }

    // W2..W5: grouped bars.
    let latency: &[Metric] = &[("p50", p50), ("p99", p99), ("p99.9", p999)];
    let reopen: fn(&Row) -> Option<f64> = |r| r.reopen_ms;
    let charts: Vec<(Workload, &str, &str, Vec<Metric>, &str)> = vec![
        (
            Workload::W2,
            "w2_throughput.svg",
            "W2 buffered appends: throughput",
            vec![("records/s", rps)],
            "records/s (log)",
        ),
        (
            Workload::W2,
            "w2_latency.svg",
            "W2 buffered appends: latency",
            latency.to_vec(),
            "µs (log)",
        ),
        (
            Workload::W3,
            "w3_latency.svg",
            "W3 append -> visible to a following reader",
            latency.to_vec(),
            "µs (log)",
        ),
        (
            Workload::W4,
            "w4_throughput.svg",
            "W4 read-back: throughput",
            vec![("records/s", rps)],
            "records/s (log)",
        ),
        (
            Workload::W4,
            "w4_latency.svg",
            "W4 point reads: latency",
            latency.to_vec(),
            "µs (log)",
        ),
        (
            Workload::W5,
            "w5_reopen.svg",
            "W5 reopen after kill -9",
            vec![("reopen ms", reopen)],
            "ms (log)",
        ),
    ];
    for (workload, file, title, metrics, unit) in charts {
        let mut rows = of(workload);
        if file == "w4_latency.svg" {
            rows.retain(|r| r.operation == "point read");
        }
        let panels = if workload == Workload::W5 {
            // One panel per volume instead of per record size.
            let volumes = unique(rows.iter().map(|r| r.volume_bytes));
            volumes
                .into_iter()
                .flat_map(|v| {
                    let of_volume: Vec<&Row> = rows
                        .iter()
                        .copied()
                        .filter(|r| r.volume_bytes == v)
                        .collect();
                    let mut panel = bar_panels(&of_volume, title, &metrics);
                    for p in &mut panel {
                        p.title = format!("{title}, {} MiB appended", v.unwrap_or(0) >> 20);
                    }
                    panel
                })
                .collect()
        } else {
            bar_panels(&rows, title, &metrics)
        };
        let max_labels = panels.iter().map(|p| p.labels.len()).max().unwrap_or(1);
        let panel_height = 90 + 34 * max_labels as u32 * metrics.len().max(1) as u32;
        let path = dir.join(file);
        chart_file(
            &path,
            title,
            &panels,
            panel_height,
            metrics.len() == 1,
            |a, p| draw_bars(a, p, unit),
        )?;
        if !panels.is_empty() {
            written.push(path);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: SystemKind, writers: usize, rps: f64) -> Row {
        let mut r = Row::new(
            kind,
            Workload::W1,
            "append",
            1024,
            writers,
            PayloadKind::Text,
        );
        r.set_rate((rps * 2.0) as u64, 2.0);
        r
    }

    #[test]
    fn json_shape_and_ratios() {
        let mut rows = vec![
            row(SystemKind::Aof2Always, 16, 60_000.0),
            row(SystemKind::Okaywal, 16, 50_000.0),
            row(SystemKind::RaftEngineSync, 16, 40_000.0),
            row(SystemKind::RawFdatasync, 16, 100_000.0),
            row(SystemKind::Okaywal, 4, 500_000.0),
        ];
        compare_to_peers(&mut rows);
        assert_eq!(rows[0].best_peer.as_deref(), Some("okaywal"));
        assert!((rows[0].aof2_vs_best_peer.unwrap() - 1.2).abs() < 1e-9);
        assert_eq!(rows[1].aof2_vs_best_peer, None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write_json(&path, &rows).unwrap();
        assert_eq!(read_json(&path).unwrap().len(), rows.len());
        let value = serde_json::to_value(&rows).unwrap();
        let first = &value.as_array().unwrap()[0];
        for field in [
            "system",
            "workload",
            "record_size",
            "writers",
            "durable",
            "records_per_sec",
            "mb_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "fsyncs",
            "notes",
        ] {
            assert!(first.get(field).is_some(), "missing {field}");
        }
        assert_eq!(first["workload"], "w1");
        assert_eq!(first["class"], "aof2");
        assert_eq!(first["durable"], true);
        assert_eq!(first["records_per_sec"], 60_000.0);

        let mut table = Vec::new();
        write_table(&mut table, Workload::W1, &rows).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("1.20x vs okaywal"), "{table}");
    }

    #[test]
    fn charts_render() {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = vec![
            row(SystemKind::Aof2Always, 1, 9_000.0),
            row(SystemKind::Aof2Always, 16, 60_000.0),
            row(SystemKind::Okaywal, 16, 50_000.0),
        ];
        let mut w2 = row(SystemKind::Aof2None, 1, 1e6);
        w2.workload = Workload::W2;
        w2.p50_us = Some(0.1);
        w2.p99_us = Some(3.0);
        rows.push(w2);
        let files = write_charts(dir.path(), &rows).unwrap();
        assert!(files.iter().any(|f| f.ends_with("w1_throughput.svg")));
        let svg = std::fs::read_to_string(dir.path().join("w2_throughput.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("aof2 none"), "{svg}");
    }
}
