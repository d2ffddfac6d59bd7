//! The delay-versus-cost chart as SVG (plotters' SVG backend; text is left to the browser, so no
//! font files are needed): requests per day to Polar (log) against mean delay (log), one point per
//! poll interval joined as a curve, webhooks alone and the adaptive net as labelled points,
//! Polar's daily limit as a line, and (from a race) the measured point.

use plotters::prelude::*;

use super::model::{Row, WhatIf};

/// A measured point to mark: (label, mean delay in seconds, requests per day).
pub type Measured = (String, f64, f64);

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

/// A point of the chart: mean delay (s), requests per day, its label.
type Point = (f64, f64, String);

/// The chart's drawing context: log mean delay against log requests per day.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<LogCoord<f64>, LogCoord<f64>>>;

/// The fixed intervals' curve and the other rows (webhooks alone, the adaptive net) as points.
fn points(w: &WhatIf) -> (Vec<Point>, Vec<Point>) {
    let point = |r: &Row| {
        r.delay_ms
            .mean
            .map(|ms| ((ms / 1000.0).max(0.001), r.requests_per_day.max(0.1)))
    };
    let curve = w
        .rows
        .iter()
        .filter(|r| r.interval_s.is_some())
        .filter_map(|r| point(r).map(|(x, y)| (x, y, r.label.replace("poll every ", ""))))
        .collect();
    let others = w
        .rows
        .iter()
        .filter(|r| r.interval_s.is_none())
        .filter_map(|r| point(r).map(|(x, y)| (x, y, r.label.clone())))
        .collect();
    (curve, others)
}

/// The smallest and largest of `values`.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// The chart as an SVG document.
pub fn svg(w: &WhatIf, measured: Option<&Measured>) -> anyhow::Result<String> {
    let (curve, others) = points(w);
    let limit = w.polar_limit_day as f64;
    let all = || curve.iter().chain(&others);
    let (x_lo, x_hi) = span(all().map(|p| p.0).chain(measured.map(|m| m.1)));
    let (y_lo, y_hi) = span(
        all()
            .map(|p| p.1)
            .chain(measured.map(|m| m.2))
            .chain([limit]),
    );
    let x_range = (x_lo / 3.0)..(x_hi * 3.0);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (960, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let s = &w.scenario;
        let caption = format!(
            "Delay versus cost: {} user(s), {} new items per user per day",
            s.users, s.items_per_user_day
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 22))
            .margin(24)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(
                x_range.clone().log_scale(),
                ((y_lo / 3.0)..(y_hi * 3.0)).log_scale(),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| match *x {
                x if x < 1.0 => format!("{x:.1}"),
                x => format!("{x:.0}"),
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc("mean delay from availability to sighting (seconds, log)")
            .y_desc("requests per day to Polar (log)")
            .draw()
            .map_err(err)?;
        draw_curve(&mut chart, &curve)?;
        draw_others(&mut chart, &others)?;
        draw_limit(&mut chart, x_range, w.polar_limit_day)?;
        if let Some((label, x, y)) = measured {
            let orange = RGBColor(255, 127, 14);
            chart
                .draw_series([Cross::new((*x, *y), 8, orange.stroke_width(3))])
                .map_err(err)?
                .label(label.clone())
                .legend(move |(x, y)| Cross::new((x + 10, y), 5, orange.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// Fixed polling: one labelled point per interval, joined as a curve.
fn draw_curve(chart: &mut Chart<'_, '_>, curve: &[Point]) -> anyhow::Result<()> {
    let blue = RGBColor(31, 119, 180);
    chart
        .draw_series(LineSeries::new(
            curve.iter().map(|(x, y, _)| (*x, *y)),
            blue.stroke_width(2),
        ))
        .map_err(err)?
        .label("fixed polling, one point per interval")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue));
    chart
        .draw_series(
            curve
                .iter()
                .map(|(x, y, _)| Circle::new((*x, *y), 4, blue.filled())),
        )
        .map_err(err)?;
    chart
        .draw_series(curve.iter().map(|(x, y, l)| {
            Text::new(
                format!("every {l}"),
                (*x * 1.08, *y * 1.15),
                ("sans-serif", 13),
            )
        }))
        .map_err(err)?;
    Ok(())
}

/// Webhooks alone and with the adaptive net: labelled points.
fn draw_others(chart: &mut Chart<'_, '_>, others: &[Point]) -> anyhow::Result<()> {
    let green = RGBColor(44, 160, 44);
    chart
        .draw_series(
            others
                .iter()
                .map(|(x, y, _)| Circle::new((*x, *y), 6, green.filled())),
        )
        .map_err(err)?
        .label("webhooks (alone, and with the adaptive net)")
        .legend(move |(x, y)| Circle::new((x + 10, y), 5, green.filled()));
    chart
        .draw_series(
            others
                .iter()
                .map(|(x, y, l)| Text::new(l.clone(), (*x * 1.08, *y * 0.72), ("sans-serif", 13))),
        )
        .map_err(err)?;
    Ok(())
}

/// Polar's daily limit as a line across the chart.
fn draw_limit(
    chart: &mut Chart<'_, '_>,
    x_range: std::ops::Range<f64>,
    limit_day: u64,
) -> anyhow::Result<()> {
    let red = RGBColor(214, 39, 40);
    let limit = limit_day as f64;
    chart
        .draw_series(LineSeries::new(
            [(x_range.start, limit), (x_range.end, limit)],
            red.stroke_width(2),
        ))
        .map_err(err)?
        .label(format!("Polar's daily limit ({limit_day} requests)"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red));
    Ok(())
}
