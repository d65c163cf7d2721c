//! The report's charts, drawn with plotters into SVG strings (its SVG backend only: no
//! fonts, no native libraries, and the SVG embeds in HTML and Markdown as it is).

use plotters::prelude::*;

use super::Case;
use super::Run;
use super::report::{html_escape, median, summary};

/// The y axis reaches this many times the highest value, so the legend (upper right, up to
/// seven entries) sits above the bars and lines instead of over them.
const HEADROOM: f64 = 1.6;

/// Every chart's size in pixels (the SVG scales; this sets the proportions and text size).
const SIZE: (u32, u32) = (960, 420);

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// Runs `paint` on a white SVG canvas and returns the document. Drawing errors (which the SVG
/// backend only reports for impossible layouts) give an SVG that says so, not a panic.
fn svg(paint: impl FnOnce(&Area<'_>) -> Drawn) -> String {
    let mut svg = String::new();
    let drawn = (|| -> Drawn {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        paint(&root)?;
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => svg,
        Err(e) => format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\"><text>chart failed: {}</text></svg>",
            html_escape(&e.to_string())
        ),
    }
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One bar series of a grouped bar chart: a name and, per group, (median, min, max).
pub type BarSeries = (String, Vec<Option<(f64, f64, f64)>>);

/// A grouped bar chart with min..max whiskers, as an SVG document.
pub fn grouped_bars(title: &str, y_desc: &str, groups: &[String], series: &[BarSeries]) -> String {
    svg(|root| {
        let top =
            series.iter().flat_map(|s| s.1.iter().flatten().map(|v| v.2)).fold(0.0f64, f64::max).max(1e-9);
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..groups.len().max(1) as f64, 0f64..top * HEADROOM)?;
        chart.configure_mesh().disable_x_mesh().x_labels(0).y_desc(y_desc).draw()?;
        let slot = 0.8 / series.len().max(1) as f64;
        for (i, (name, values)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let bars = values.iter().enumerate().filter_map(|(g, v)| {
                let (median, _, _) = (*v)?;
                let x0 = g as f64 + 0.1 + i as f64 * slot;
                Some(Rectangle::new([(x0, 0.0), (x0 + slot * 0.9, median)], color.filled()))
            });
            chart
                .draw_series(bars)?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
            let whiskers = values.iter().enumerate().filter_map(|(g, v)| {
                let (_, lo, hi) = (*v)?;
                let x = g as f64 + 0.1 + i as f64 * slot + slot * 0.45;
                Some(PathElement::new(vec![(x, lo), (x, hi)], BLACK.stroke_width(1)))
            });
            chart.draw_series(whiskers)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        for (g, label) in groups.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            let style =
                TextStyle::from(("sans-serif", 14).into_font()).pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ));
            root.draw(&Text::new(label.as_str(), (x, y + 8), style))?;
        }
        Ok(())
    })
}

/// One line of a line chart: a name and its (x, y) points.
pub type Line = (String, Vec<(f64, f64)>);

/// A line chart (x: run id), as an SVG document.
pub fn lines(title: &str, y_desc: &str, series: &[Line]) -> String {
    svg(|root| {
        let points = series.iter().flat_map(|s| s.1.iter());
        let (x_min, x_max, y_max) =
            points.fold((f64::MAX, f64::MIN, 0.0f64), |(a, b, c), &(x, y)| (a.min(x), b.max(x), c.max(y)));
        let (x_min, x_max) = if x_min > x_max { (0.0, 1.0) } else { (x_min - 0.5, x_max + 0.5) };
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x_min..x_max, 0f64..y_max.max(1e-9) * HEADROOM)?;
        chart
            .configure_mesh()
            .x_desc("run")
            .y_desc(y_desc)
            .x_label_formatter(&|x| if x.fract() == 0.0 { format!("{x:.0}") } else { String::new() })
            .draw()?;
        for (i, (name, data)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            chart.draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// The charts of a run: throughput per size class, keepsync's phases, and (given the history
/// series) throughput over time. Returns (file stem, SVG).
pub fn charts(run: &Run, history: &[Line]) -> Vec<(&'static str, String)> {
    let mut groups: Vec<(String, String)> = Vec::new();
    let mut tools: Vec<String> = Vec::new();
    for c in &run.cases {
        let g = (c.workload.clone(), c.size_class.clone());
        if !groups.contains(&g) {
            groups.push(g);
        }
        if !tools.contains(&c.tool) {
            tools.push(c.tool.clone());
        }
    }
    let labels: Vec<String> = groups.iter().map(|(w, c)| format!("{w} {c}")).collect();
    let find = |tool: &str, (w, c): &(String, String)| {
        run.cases.iter().find(|x| x.tool == tool && &x.workload == w && &x.size_class == c)
    };
    let spread = |case: Option<&Case>, metric: &str| summary(case?, metric).map(|s| (s.median, s.min, s.max));
    let throughput: Vec<BarSeries> = tools
        .iter()
        .map(|t| (t.clone(), groups.iter().map(|g| spread(find(t, g), "mb_per_s")).collect()))
        .collect();
    let ks_groups: Vec<(String, String)> = groups
        .iter()
        .filter(|g| find("keepsync", g).is_some_and(|c| c.samples.contains_key("read_busy")))
        .cloned()
        .collect();
    let phase_labels: Vec<String> = ks_groups.iter().map(|(w, c)| format!("{w} {c}")).collect();
    let mut phases: Vec<BarSeries> = ["read_busy", "compute_busy", "write_busy"]
        .iter()
        .map(|m| (m.replace('_', " "), ks_groups.iter().map(|g| spread(find("keepsync", g), m)).collect()))
        .collect();
    phases.push((
        "fsync share of wall".into(),
        ks_groups
            .iter()
            .map(|g| {
                let case = find("keepsync", g)?;
                let share = median(case, "fsync_s")? / median(case, "wall_s")?.max(1e-9);
                Some((share, share, share))
            })
            .collect(),
    ));
    let mut out = vec![(
        "throughput",
        grouped_bars(
            "Throughput by workload and size class (median, whiskers min..max)",
            "MB/s",
            &labels,
            &throughput,
        ),
    )];
    if !ks_groups.is_empty() {
        out.push((
            "phases",
            grouped_bars("keepsync pipeline: busy share per stage", "share of run", &phase_labels, &phases),
        ));
    }
    out.push(("history", lines("keepsync throughput over runs (median)", "MB/s", history)));
    out
}
