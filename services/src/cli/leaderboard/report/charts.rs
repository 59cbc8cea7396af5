//! The report's charts, drawn with plotters' SVG backend into strings and inlined in the
//! page: no script, no font files, nothing loaded from elsewhere. Every chart reads the
//! metrics object the text output prints, so its bars are the tables' numbers.

use anyhow::Context;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use super::escape;

/// The drawing area of one chart.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// What drawing on it can fail with (the SVG backend writes into a string).
type Drawn = Result<(), DrawingAreaErrorKind<std::io::Error>>;

const FONT: &str = "sans-serif";
const BLUE_: RGBColor = RGBColor(0x2b, 0x6c, 0xb0);
const ORANGE: RGBColor = RGBColor(0xe0, 0x8a, 0x1e);
const GREEN_: RGBColor = RGBColor(0x2e, 0x8b, 0x57);
const RED_: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
const PALETTE: [RGBColor; 6] = [
    BLUE_,
    ORANGE,
    GREEN_,
    RED_,
    RGBColor(0x7d, 0x3c, 0x98),
    RGBColor(0x55, 0x55, 0x55),
];

/// Draws one chart of `size` pixels and returns it as an `<svg>` element whose id is `id`
/// and whose accessible name is `label`.
fn svg(
    id: &str,
    label: &str,
    size: (u32, u32),
    draw: impl FnOnce(&Area) -> Drawn,
) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE)
            .and_then(|_| draw(&root))
            .and_then(|_| root.present())
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot draw the chart `{id}`"))?;
    }
    let attributes = format!(
        "<svg id=\"{}\" class=\"chart\" role=\"img\" aria-label=\"{}\" ",
        escape(id),
        escape(label)
    );
    anyhow::ensure!(
        out.starts_with("<svg "),
        "plotters wrote no <svg> for `{id}`"
    );
    Ok(out.replacen("<svg ", &attributes, 1))
}

/// An axis of `n` unit-wide category slots centred on 0, 1, ... n-1, so that plotters'
/// own tick placement (`x_labels(n)`: steps of one) lands a tick on every category.
fn slots(n: usize) -> std::ops::Range<f64> {
    -0.5..n as f64 - 0.5
}

/// The name of the category a tick stands on (ticks between categories get none).
fn slot_name(names: &[String], x: f64) -> String {
    let i = x.round();
    if (x - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    names.get(i as usize).cloned().unwrap_or_default()
}

fn legend(color: RGBColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
}

/// Agreement and consistency (percent) per scenario group and overall, as horizontal bars.
/// `m` is the pairwise metrics object.
pub fn groups(m: &Value) -> anyhow::Result<String> {
    let mut rows: Vec<(String, &Value)> = m["groups"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(g, v)| (g.clone(), v))
        .collect();
    rows.push(("overall".into(), &m["overall"]));
    rows.reverse(); // plotters' y grows upwards: the first group on top
    let names: Vec<String> = rows.iter().map(|(n, _)| n.clone()).collect();
    let n = rows.len();
    let height = 90 + 36 * n as u32;
    svg(
        "chart-groups",
        "agreement and consistency by scenario group",
        (760, height),
        |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(
                    "Agreement and consistency by scenario group (%)",
                    (FONT, 18),
                )
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(170)
                .build_cartesian_2d(0f64..100f64, slots(n))?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(n)
                .y_label_formatter(&|y| slot_name(&names, *y))
                .draw()?;
            let series = [("agreement", BLUE_, 0.52), ("consistency", ORANGE, 0.12)];
            for (key, color, offset) in series {
                let bars: Vec<Rectangle<(f64, f64)>> = rows
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, v))| {
                        let x = v[key].as_f64()?;
                        let y = i as f64 - 0.5 + offset;
                        Some(Rectangle::new([(0.0, y), (x, y + 0.36)], color.filled()))
                    })
                    .collect();
                if bars.is_empty() {
                    continue;
                }
                chart.draw_series(bars)?.label(key).legend(legend(color));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
        },
    )
}

/// A matrix of counts as a heat map with each count written in its cell: `m` holds
/// `counts` and the row and column names under `rows_key` and `cols_key`.
pub fn matrix(
    id: &str,
    caption: &str,
    m: &Value,
    (rows_key, cols_key): (&str, &str),
) -> anyhow::Result<String> {
    let names = |k: &str| -> Vec<String> {
        let list = m[k].as_array().into_iter().flatten();
        list.map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (mut row_names, col_names) = (names(rows_key), names(cols_key));
    let cell = |r: usize, c: usize| m["counts"][r][c].as_u64().unwrap_or(0);
    let (nr, nc) = (row_names.len(), col_names.len());
    let max = (0..nr)
        .flat_map(|r| (0..nc).map(move |c| (r, c)))
        .map(|(r, c)| cell(r, c))
        .max()
        .unwrap_or(0)
        .max(1);
    row_names.reverse();
    let x_desc = format!("{cols_key} verdict");
    let y_desc = rows_key.to_string();
    svg(id, caption, (620, 120 + 60 * nr as u32), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(caption, (FONT, 18))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(120)
            .build_cartesian_2d(slots(nc), slots(nr))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(nc)
            .y_labels(nr)
            .x_desc(x_desc.as_str())
            .y_desc(y_desc.as_str())
            .x_label_formatter(&|x| slot_name(&col_names, *x))
            .y_label_formatter(&|y| slot_name(&row_names, *y))
            .draw()?;
        let centre = Pos::new(HPos::Center, VPos::Center);
        for r in 0..nr {
            for c in 0..nc {
                let k = cell(r, c);
                let shade = k as f64 / max as f64;
                let fill = RGBColor(
                    (255.0 - 212.0 * shade) as u8,
                    (255.0 - 147.0 * shade) as u8,
                    (255.0 - 79.0 * shade) as u8,
                );
                let (x, y) = (c as f64, (nr - 1 - r) as f64);
                let corners = [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)];
                chart.draw_series([Rectangle::new(corners, fill.filled())])?;
                let ink = if shade > 0.55 { WHITE } else { BLACK };
                let style = TextStyle::from((FONT, 17).into_font())
                    .color(&ink)
                    .pos(centre);
                chart.draw_series([Text::new(k.to_string(), (x, y), style)])?;
            }
        }
        Ok(())
    })
}

/// The confidence histogram: verdicts per tenth of the probability the judge gave its own
/// verdict, right ones and wrong ones stacked. `c` is the metrics' `confidence` object.
pub fn confidence(c: &Value) -> anyhow::Result<String> {
    let counts = |k: &str| -> Vec<u64> {
        c[k].as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_u64().unwrap_or(0))
            .collect()
    };
    let (right, wrong) = (counts("correct"), counts("wrong"));
    let bins = right.len();
    anyhow::ensure!(
        bins > 0 && wrong.len() == bins,
        "the confidence histogram has {} and {} bins",
        bins,
        wrong.len()
    );
    let top = right
        .iter()
        .zip(&wrong)
        .map(|(a, b)| a + b)
        .max()
        .unwrap_or(0)
        .max(1);
    svg(
        "chart-confidence",
        "probability of the verdict",
        (760, 380),
        |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(
                    "Probability the judge gave its verdict (original order)",
                    (FONT, 18),
                )
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..1f64, 0f64..(top as f64 * 1.15))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(bins + 1)
                .x_desc("probability of the verdict")
                .y_desc("verdicts")
                .x_label_formatter(&|x| format!("{x:.1}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()?;
            let width = 1.0 / bins as f64;
            let bar = |i: usize, from: u64, to: u64, color: RGBColor| {
                let x = i as f64 * width;
                let corners = [(x + 0.1 * width, from as f64), (x + 0.9 * width, to as f64)];
                Rectangle::new(corners, color.filled())
            };
            let lower = (0..bins).map(|i| bar(i, 0, right[i], GREEN_));
            chart
                .draw_series(lower)?
                .label("verdict = gold label")
                .legend(legend(GREEN_));
            let upper = (0..bins).map(|i| bar(i, right[i], right[i] + wrong[i], RED_));
            chart
                .draw_series(upper)?
                .label("verdict != gold label")
                .legend(legend(RED_));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
        },
    )
}

/// The distribution of ratings 1-10 of each model, side by side. `m` is the single-rating
/// metrics object.
pub fn ratings(m: &Value) -> anyhow::Result<String> {
    let models: Vec<(String, Vec<u64>)> = m["models"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, s)| {
            let dist = (1..=10).map(|b| s["distribution"][b.to_string()].as_u64().unwrap_or(0));
            (name.clone(), dist.collect())
        })
        .collect();
    let top = models
        .iter()
        .flat_map(|(_, d)| d.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let k = models.len().max(1) as f64;
    svg(
        "chart-ratings",
        "distribution of ratings per model",
        (760, 400),
        |root| {
            let mut chart = ChartBuilder::on(root)
                .caption("Ratings per model", (FONT, 18))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(50)
                .build_cartesian_2d(0.5f64..10.5f64, 0f64..(top as f64 * 1.15))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(10)
                .x_desc("rating")
                .y_desc("rows")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()?;
            for (j, (name, dist)) in models.iter().enumerate() {
                let color = PALETTE[j % PALETTE.len()];
                let bars = dist.iter().enumerate().map(|(b, &n)| {
                    let x = b as f64 + 1.0 - 0.4 + 0.8 * j as f64 / k;
                    Rectangle::new([(x, 0.0), (x + 0.8 / k, n as f64)], color.filled())
                });
                chart
                    .draw_series(bars)?
                    .label(name.as_str())
                    .legend(legend(color));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
        },
    )
}
