//! The SVG chart: server CPU µs per request, grouped by route, one bar per app.

use std::path::Path;

use plotters::prelude::*;

use crate::plan::Route;
use crate::report::Row;
use crate::Fallible;

const PALETTE: [RGBColor; 9] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(140, 86, 75),
];

pub(crate) fn draw(rows: &[Row], baseline: Option<f64>, path: &Path) -> Fallible {
    let mut apps: Vec<&str> = Vec::new();
    for row in rows {
        if !apps.contains(&row.app.as_str()) {
            apps.push(&row.app);
        }
    }
    let max = rows.iter().map(|row| row.cpu.max).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Server CPU µs per request (median, whiskers: min–max; CPU 1 only)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..Route::ALL.len() as f64, 0f64..max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(Route::ALL.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let slot = *x - x.floor();
            if (slot - 0.5).abs() < 0.01 {
                Route::ALL.get(x.floor() as usize).map(|r| r.label().to_owned()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("µs / request")
        .draw()?;
    let width = 0.8 / apps.len().max(1) as f64;
    for (i, app) in apps.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let bars: Vec<&Row> = rows.iter().filter(|row| row.app == *app).collect();
        chart
            .draw_series(bars.iter().map(|row| {
                let x0 = row.route as usize as f64 + 0.1 + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, row.cpu.median)], color.filled())
            }))?
            .label(*app)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart.draw_series(bars.iter().filter(|row| row.cpu.n > 1).map(|row| {
            let x = row.route as usize as f64 + 0.1 + (i as f64 + 0.45) * width;
            PathElement::new(vec![(x, row.cpu.min), (x, row.cpu.max)], BLACK.stroke_width(1))
        }))?;
    }
    if let Some(baseline) = baseline {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, baseline), (Route::ALL.len() as f64, baseline)],
                BLACK.mix(0.5).stroke_width(1),
            )))?
            .label("bare /hello (baseline)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 10, y)], BLACK.mix(0.5)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
