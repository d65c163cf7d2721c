//! What a run, a comparison or the history looks like to people: tables (plain text for the
//! terminal, Markdown for docs and pull requests, HTML for the report). The charts are in
//! [`super::chart`].
//!
//! Every table is built once as a [`Table`] and rendered by one of three printers, so the
//! terminal, the Markdown and the HTML always show the same numbers.

use std::fmt::Write as _;

use serde::Serialize;

use super::stats::{self, METRICS, Shift, Summary, Verdict};
use super::{Case, Run};
use crate::units::human_bytes;

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table with a title.
#[derive(Debug, Clone)]
pub struct Table {
    /// Shown above the table.
    pub title: String,
    /// Column names and alignment.
    pub columns: Vec<(&'static str, Align)>,
    /// Cells.
    pub rows: Vec<Vec<String>>,
}

/// `text` safe inside HTML (and SVG) text and attributes.
pub(crate) fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Table {
    fn new(title: impl Into<String>, columns: &[(&'static str, Align)]) -> Self {
        Self { title: title.into(), columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Aligned columns for a terminal.
    pub fn to_text(&self) -> String {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.columns[i].0.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                let sep = if i == 0 { "" } else { "  " };
                match self.columns[i].1 {
                    Align::Left => write!(out, "{sep}{cell}{}", " ".repeat(pad)),
                    Align::Right => write!(out, "{sep}{}{cell}", " ".repeat(pad)),
                }
                .expect("writing to a String");
            }
            out.trim_end().to_string()
        };
        let mut out = format!("{}\n", self.title);
        out += &line(self.columns.iter().map(|c| c.0).collect());
        out.push('\n');
        for row in &self.rows {
            out += &line(row.iter().map(String::as_str).collect());
            out.push('\n');
        }
        out
    }

    /// A GitHub-flavoured Markdown table under a bold title.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("**{}**\n\n", self.title);
        out += &format!("| {} |\n", self.columns.iter().map(|c| c.0).collect::<Vec<_>>().join(" | "));
        let rule: Vec<&str> =
            self.columns.iter().map(|c| if c.1 == Align::Right { "---:" } else { "---" }).collect();
        out += &format!("|{}|\n", rule.join("|"));
        for row in &self.rows {
            out += &format!(
                "| {} |\n",
                row.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | ")
            );
        }
        out
    }

    /// An HTML table under an `<h3>` title.
    pub fn to_html(&self) -> String {
        let class = |a: Align| if a == Align::Right { " class=\"num\"" } else { "" };
        let mut out = format!("<h3>{}</h3>\n<table>\n<tr>", html_escape(&self.title));
        for (name, align) in &self.columns {
            write!(out, "<th{}>{}</th>", class(*align), html_escape(name)).expect("writing to a String");
        }
        out += "</tr>\n";
        for row in &self.rows {
            out += "<tr>";
            for (cell, (_, align)) in row.iter().zip(&self.columns) {
                write!(out, "<td{}>{}</td>", class(*align), html_escape(cell)).expect("writing to a String");
            }
            out += "</tr>\n";
        }
        out + "</table>\n"
    }
}

/// How tables are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text.
    Text,
    /// Markdown.
    Markdown,
}

/// Renders `tables` in `format`, separated by blank lines.
pub fn render(tables: &[Table], format: Format) -> String {
    tables
        .iter()
        .map(|t| match format {
            Format::Text => t.to_text(),
            Format::Markdown => t.to_markdown(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The summary of `metric` in `case`.
pub fn summary(case: &Case, metric: &str) -> Option<Summary> {
    Summary::of(case.samples.get(metric)?)
}

/// The median of `metric` in `case`.
pub fn median(case: &Case, metric: &str) -> Option<f64> {
    summary(case, metric).map(|s| s.median)
}

/// A metric's value as people read it.
pub fn format_value(metric: &str, value: f64) -> String {
    match stats::metric(metric).map_or("", |m| m.unit) {
        "B" => human_bytes(value.max(0.0).round() as u64),
        "MB/s" => format!("{value:.0}"),
        "share" => format!("{:.0}%", value * 100.0),
        "s" => format!("{value:.3}"),
        _ => format!("{value:.3}"),
    }
}

fn cell(case: &Case, metric: &str) -> String {
    median(case, metric).map_or_else(|| "-".into(), |v| format_value(metric, v))
}

/// The per-case results, the keepsync/peer ratios, the pipeline phases and the peers that did
/// not run.
pub fn run_tables(run: &Run) -> Vec<Table> {
    use Align::{Left, Right};
    let title = format!(
        "keepsync bench run {}{} ({}, medians of {} runs)",
        run.id.map_or_else(|| "(not stored)".into(), |id| id.to_string()),
        run.tag.as_deref().map_or_else(String::new, |t| format!(" [{t}]")),
        run.started_at,
        run.settings.get("repeat").and_then(|v| v.as_u64()).unwrap_or(0)
    );
    let mut results = Table::new(
        title,
        &[
            ("workload", Left),
            ("class", Left),
            ("tool", Left),
            ("median s", Right),
            ("min..max s", Right),
            ("MAD s", Right),
            ("MB/s", Right),
            ("ratio", Right),
            ("user s", Right),
            ("sys s", Right),
            ("peak RSS", Right),
            ("read", Right),
            ("written", Right),
        ],
    );
    for case in &run.cases {
        let wall = summary(case, "wall_s");
        results.rows.push(vec![
            case.workload.clone(),
            case.size_class.clone(),
            case.command.clone(),
            wall.map_or("-".into(), |s| format!("{:.3}", s.median)),
            wall.map_or("-".into(), |s| format!("{:.3}..{:.3}", s.min, s.max)),
            wall.map_or("-".into(), |s| format!("{:.3}", s.mad)),
            cell(case, "mb_per_s"),
            cell(case, "ratio"),
            cell(case, "user_s"),
            cell(case, "sys_s"),
            cell(case, "peak_rss_bytes"),
            cell(case, "read_bytes"),
            cell(case, "written_bytes"),
        ]);
    }
    let mut tables = vec![results];
    let ratios = peer_ratios(run);
    if !ratios.is_empty() {
        let mut t = Table::new(
            "keepsync / peer (speed > 1: keepsync is faster; size < 1: keepsync's output is smaller)",
            &[
                ("workload", Left),
                ("class", Left),
                ("peer", Left),
                ("keepsync MB/s", Right),
                ("peer MB/s", Right),
                ("speed keepsync/peer", Right),
                ("size keepsync/peer", Right),
            ],
        );
        for r in &ratios {
            t.rows.push(vec![
                r.workload.clone(),
                r.size_class.clone(),
                r.peer.clone(),
                format!("{:.0}", r.keepsync_mb_per_s),
                format!("{:.0}", r.peer_mb_per_s),
                format!("{:.2}", r.speed_ratio),
                r.size_ratio.map_or("-".into(), |v| format!("{v:.2}")),
            ]);
        }
        tables.push(t);
    }
    let mut phases = Table::new(
        "keepsync: where the time goes (busy shares of the pipeline's stages; fsync = final sync + rename)",
        &[
            ("workload", Left),
            ("class", Left),
            ("read busy", Right),
            ("compute busy", Right),
            ("write busy", Right),
            ("fsync s", Right),
            ("fsync share", Right),
        ],
    );
    for case in run.cases.iter().filter(|c| c.tool == "keepsync") {
        let share = median(case, "fsync_s").zip(median(case, "wall_s")).map(|(f, w)| f / w.max(1e-9));
        phases.rows.push(vec![
            case.workload.clone(),
            case.size_class.clone(),
            cell(case, "read_busy"),
            cell(case, "compute_busy"),
            cell(case, "write_busy"),
            cell(case, "fsync_s"),
            share.map_or("-".into(), |v| format_value("read_busy", v)),
        ]);
    }
    if !phases.rows.is_empty() {
        tables.push(phases);
    }
    let absent: Vec<&super::PeerStatus> = run.peers.iter().filter(|p| p.status != super::INSTALLED).collect();
    if !absent.is_empty() {
        let mut t = Table::new("peers that did not run", &[("peer", Left), ("why", Left)]);
        t.rows = absent.iter().map(|p| vec![p.tool.clone(), p.status.clone()]).collect();
        tables.push(t);
    }
    tables
}

/// keepsync against one peer on one case.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRatio {
    /// Workload.
    pub workload: String,
    /// Size class.
    pub size_class: String,
    /// The peer's command.
    pub peer: String,
    /// keepsync's median MB/s.
    pub keepsync_mb_per_s: f64,
    /// The peer's median MB/s.
    pub peer_mb_per_s: f64,
    /// keepsync MB/s / peer MB/s.
    pub speed_ratio: f64,
    /// keepsync's output ratio / the peer's (pack only).
    pub size_ratio: Option<f64>,
}

/// keepsync/peer ratios for every peer case that has a keepsync twin.
pub fn peer_ratios(run: &Run) -> Vec<PeerRatio> {
    let mut out = Vec::new();
    for peer in run.cases.iter().filter(|c| c.tool != "keepsync") {
        let Some(ks) = run
            .cases
            .iter()
            .find(|c| c.tool == "keepsync" && c.workload == peer.workload && c.size_class == peer.size_class)
        else {
            continue;
        };
        let (Some(k), Some(p)) = (median(ks, "mb_per_s"), median(peer, "mb_per_s")) else { continue };
        out.push(PeerRatio {
            workload: peer.workload.clone(),
            size_class: peer.size_class.clone(),
            peer: peer.command.clone(),
            keepsync_mb_per_s: k,
            peer_mb_per_s: p,
            speed_ratio: k / p.max(1e-9),
            size_ratio: median(ks, "ratio").zip(median(peer, "ratio")).map(|(a, b)| a / b.max(1e-9)),
        });
    }
    out
}

/// A run as `--json` prints it: the stored run plus summaries and ratios.
#[derive(Debug, Serialize)]
pub struct RunView<'a> {
    /// The run, with raw samples.
    #[serde(flatten)]
    pub run: &'a Run,
    /// Per case, per metric: median, min, max, MAD.
    pub summaries: Vec<CaseSummary>,
    /// keepsync / peer.
    pub vs_peers: Vec<PeerRatio>,
}

/// The summaries of one case.
#[derive(Debug, Serialize)]
pub struct CaseSummary {
    /// Workload.
    pub workload: String,
    /// Size class.
    pub size_class: String,
    /// Tool.
    pub tool: String,
    /// Metric name to summary.
    pub metrics: std::collections::BTreeMap<String, Summary>,
}

impl<'a> RunView<'a> {
    /// The view of `run`.
    pub fn new(run: &'a Run) -> Self {
        let summaries = run
            .cases
            .iter()
            .map(|c| CaseSummary {
                workload: c.workload.clone(),
                size_class: c.size_class.clone(),
                tool: c.tool.clone(),
                metrics: c.samples.iter().filter_map(|(k, v)| Some((k.clone(), Summary::of(v)?))).collect(),
            })
            .collect();
        Self { run, summaries, vs_peers: peer_ratios(run) }
    }
}

/// One metric of one case compared between two runs.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    /// Workload.
    pub workload: String,
    /// Size class.
    pub size_class: String,
    /// Tool.
    pub tool: String,
    /// Metric.
    pub metric: &'static str,
    /// Whether a regression here fails `bench compare`.
    pub gates: bool,
    /// The shift.
    pub shift: Shift,
}

/// Compares every metric with a direction between `base` and `head`, for the cases both have.
pub fn compare(base: &Run, head: &Run) -> Vec<CompareRow> {
    let mut rows = Vec::new();
    for h in &head.cases {
        let Some(b) = base
            .cases
            .iter()
            .find(|b| b.workload == h.workload && b.size_class == h.size_class && b.tool == h.tool)
        else {
            continue;
        };
        for def in METRICS.iter().filter(|m| m.better != stats::Better::Neither) {
            let (Some(bs), Some(hs)) = (b.samples.get(def.name), h.samples.get(def.name)) else { continue };
            if let Some(shift) = stats::judge(def, bs, hs) {
                rows.push(CompareRow {
                    workload: h.workload.clone(),
                    size_class: h.size_class.clone(),
                    tool: h.tool.clone(),
                    metric: def.name,
                    gates: def.gates && h.tool == "keepsync",
                    shift,
                });
            }
        }
    }
    rows
}

/// Rows that fail the comparison.
pub fn regressions(rows: &[CompareRow]) -> usize {
    rows.iter().filter(|r| r.gates && r.shift.verdict == Verdict::Regression).count()
}

/// The comparison as a table.
pub fn compare_table(base: &Run, head: &Run, rows: &[CompareRow]) -> Table {
    use Align::{Left, Right};
    let name = |r: &Run| {
        format!("{}{}", r.id.unwrap_or(0), r.tag.as_deref().map_or_else(String::new, |t| format!(" [{t}]")))
    };
    let mut t = Table::new(
        format!(
            "run {} (base) -> run {} (head): |Δ median| > max(3 × 1.4826 × pooled MAD, 2% of base, resolution)",
            name(base),
            name(head)
        ),
        &[
            ("workload", Left),
            ("class", Left),
            ("tool", Left),
            ("metric", Left),
            ("base", Right),
            ("head", Right),
            ("change", Right),
            ("threshold", Right),
            ("verdict", Left),
        ],
    );
    for r in rows {
        let verdict = match (r.shift.verdict, r.gates) {
            (Verdict::Regression, true) => "REGRESSION",
            (Verdict::Regression, false) => "worse (informational)",
            (Verdict::Improvement, _) => "better",
            (Verdict::Noise, _) => "same",
        };
        t.rows.push(vec![
            r.workload.clone(),
            r.size_class.clone(),
            r.tool.clone(),
            r.metric.into(),
            format_value(r.metric, r.shift.base.median),
            format_value(r.metric, r.shift.head.median),
            if r.shift.relative.is_finite() {
                format!("{:+.1}%", r.shift.relative * 100.0)
            } else {
                "-".into()
            },
            format_value(r.metric, r.shift.threshold),
            verdict.into(),
        ]);
    }
    t
}

/// The history as a table: one row per run, keepsync's median MB/s per workload and class.
pub fn history_table(runs: &[(super::store::RunInfo, Run)]) -> Table {
    use Align::{Left, Right};
    let mut t = Table::new(
        "benchmark history (keepsync's median MB/s per workload and class)",
        &[("run", Right), ("started (UTC)", Left), ("tag", Left), ("git", Left), ("keepsync MB/s", Left)],
    );
    for (info, run) in runs {
        let figures: Vec<String> = run
            .cases
            .iter()
            .filter(|c| c.tool == "keepsync")
            .map(|c| format!("{} {} {}", c.workload, c.size_class, cell(c, "mb_per_s")))
            .collect();
        t.rows.push(vec![
            format!("{}{}", info.id, if info.baseline { " (baseline)" } else { "" }),
            info.started_at.clone(),
            info.tag.clone().unwrap_or_default(),
            info.git_rev.as_deref().unwrap_or_default().chars().take(10).collect(),
            figures.join(", "),
        ]);
    }
    t
}

/// A self-contained HTML report: run details, tables, charts, and what the metrics mean.
pub fn html(run: &Run, charts: &[(&'static str, String)]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>keepsync bench</title>\n<style>\
         body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}\
         table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px}\
         th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}\
         svg{max-width:100%;height:auto}</style></head><body>\n",
    );
    out += &format!(
        "<h1>keepsync bench, run {}</h1>\n",
        run.id.map_or_else(|| "(not stored)".into(), |i| i.to_string())
    );
    out += &format!(
        "<p>Started {} &middot; keepsync {} &middot; git {} &middot; tag {}</p>\n",
        html_escape(&run.started_at),
        html_escape(&run.version),
        html_escape(run.git_rev.as_deref().unwrap_or("unknown")),
        html_escape(run.tag.as_deref().unwrap_or("none"))
    );
    out += &format!(
        "<p>Machine: <code>{}</code><br>Settings: <code>{}</code></p>\n",
        html_escape(&run.machine.to_string()),
        html_escape(&run.settings.to_string())
    );
    for (name, svg) in charts {
        out += &format!("<figure id=\"{name}\">\n{svg}\n</figure>\n");
    }
    for table in run_tables(run) {
        out += &table.to_html();
    }
    let mut metrics = Table::new(
        "What the metrics mean",
        &[("metric", Align::Left), ("unit", Align::Left), ("meaning", Align::Left)],
    );
    metrics.rows = METRICS.iter().map(|m| vec![m.name.into(), m.unit.into(), m.about.into()]).collect();
    out += &metrics.to_html();
    out += "<p>Reading the charts: bars are medians of the timed repeats, whiskers span min..max; \
            a long whisker means a noisy measurement, so compare medians only when whiskers do not overlap. \
            Peers do not fsync their output; keepsync does (see fsync s).</p>\n</body></html>\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn case(tool: &str, workload: &str, wall: &[f64]) -> Case {
        let mut samples = BTreeMap::new();
        samples.insert("wall_s".into(), wall.to_vec());
        samples.insert("mb_per_s".into(), wall.iter().map(|w| 100.0 / w).collect());
        samples.insert("ratio".into(), vec![0.5; wall.len()]);
        if tool == "keepsync" {
            for m in ["read_busy", "compute_busy", "write_busy"] {
                samples.insert(m.into(), vec![0.5; wall.len()]);
            }
            samples.insert("fsync_s".into(), vec![0.01; wall.len()]);
        }
        Case {
            workload: workload.into(),
            size_class: "small".into(),
            tool: tool.into(),
            command: tool.into(),
            input_bytes: 100_000_000,
            files: 1,
            samples,
        }
    }

    fn run(id: i64, scale: f64) -> Run {
        let wall = [1.0, 1.01, 0.99, 1.02, 0.98].map(|w| w * scale);
        Run {
            id: Some(id),
            started_at: "2026-11-25T12:00:00Z".into(),
            unix_time: 0,
            tag: None,
            git_rev: None,
            version: "0.1.0".into(),
            settings: serde_json::json!({"repeat": 5}),
            machine: serde_json::json!({}),
            peers: vec![super::super::PeerStatus { tool: "rage".into(), status: "not installed".into() }],
            cases: vec![case("keepsync", "pack", &wall), case("zstd", "pack", &[2.0; 5])],
        }
    }

    #[test]
    fn compare_flags_a_20_percent_slowdown_of_keepsync_only() {
        let rows = compare(&run(1, 1.0), &run(2, 1.2));
        assert_eq!(regressions(&rows), 1, "{rows:#?}");
        assert_eq!(regressions(&compare(&run(1, 1.0), &run(2, 1.01))), 0);
        let table = compare_table(&run(1, 1.0), &run(2, 1.2), &rows).to_text();
        assert!(table.contains("REGRESSION") && table.contains("+20.0%"), "{table}");
    }

    #[test]
    fn tables_show_peer_ratios_and_absent_peers() {
        let r = run(1, 1.0);
        let text = render(&run_tables(&r), Format::Text);
        // keepsync 100 MB/s vs zstd 50 MB/s.
        assert!(text.contains("2.00"), "{text}");
        assert!(text.contains("rage") && text.contains("not installed"), "{text}");
        let md = render(&run_tables(&r), Format::Markdown);
        assert!(md.contains("|---|") && md.contains("---:|"), "{md}");
    }

    #[test]
    fn the_html_report_is_self_contained_with_svg_charts() {
        let r = run(3, 1.0);
        let history = vec![("pack small".to_string(), vec![(1.0, 90.0), (2.0, 95.0), (3.0, 100.0)])];
        let charts = super::super::chart::charts(&r, &history);
        assert_eq!(charts.iter().map(|c| c.0).collect::<Vec<_>>(), ["throughput", "phases", "history"]);
        let page = html(&r, &charts);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<svg").count(), 3, "{page}");
        assert!(!page.contains("chart failed"));
        // Self-contained: nothing to fetch, nothing to run.
        assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("<link"));
    }
}
