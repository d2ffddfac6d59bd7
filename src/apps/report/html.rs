//! The report as one self-contained page (`--format html`): no network, no script. The tables of
//! the terminal report and four charts drawn as inline SVG with plotters: the timeline (a dot per
//! entity per channel) and the delay histograms, as the dashboard draws them, the requests over
//! time (from the demo's samples), and the what-if curve at the race's own settings with the
//! measured point marked on it.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::render::{
    duration_text, explanations, header, rows, safety_net_lines, settings_line, theory_rows,
    truth_line,
};
use super::{Report, Sighting};

const WEBHOOK: RGBColor = RGBColor(31, 119, 180);
const POLL: RGBColor = RGBColor(255, 127, 14);

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn err(e: impl std::fmt::Display) -> String {
    format!(
        "<p class=\"error\">chart not drawn: {}</p>",
        esc(&e.to_string())
    )
}

fn table(out: &mut String, head: &[String], rows: &[Vec<String>]) {
    out.push_str("<table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

/// Draws one chart into an SVG string; a drawing error becomes a visible note instead.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    match result {
        Ok(()) => out,
        Err(e) => err(e),
    }
}

/// A dot per entity per channel over time: webhook above, poll below.
fn timeline(s: &[Sighting]) -> String {
    let end = s
        .iter()
        .flat_map(|x| [x.webhook_s, x.poll_s])
        .flatten()
        .fold(1.0_f64, f64::max);
    svg((960, 220), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..end * 1.02, -0.5..1.5)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(2)
            .y_label_formatter(&|y: &f64| match crate::units::round_i64(*y) {
                1 => "webhook".into(),
                0 => "poll".into(),
                _ => String::new(),
            })
            .x_desc("seconds since the start")
            .draw()
            .map_err(|e| e.to_string())?;
        for (lane, color, at) in [
            (
                1.0,
                WEBHOOK,
                s.iter().filter_map(|x| x.webhook_s).collect::<Vec<_>>(),
            ),
            (0.0, POLL, s.iter().filter_map(|x| x.poll_s).collect()),
        ] {
            chart
                .draw_series(
                    at.iter()
                        .map(|t| Circle::new((*t, lane), 3, color.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// The delay from availability to each channel's sighting, as two histograms.
fn delays(s: &[Sighting]) -> String {
    let of = |pick: fn(&Sighting) -> Option<f64>| -> Vec<f64> {
        s.iter()
            .filter_map(|x| pick(x).map(|t| (t - x.available_s).max(0.0)))
            .collect()
    };
    let (w, p) = (of(|x| x.webhook_s), of(|x| x.poll_s));
    let max = w.iter().chain(&p).fold(0.001_f64, |a, b| a.max(*b));
    const BINS: usize = 24;
    let width = max / BINS as f64;
    let count = |v: &[f64]| {
        let mut bins = [0u32; BINS];
        for d in v {
            bins[crate::units::floor_usize(d / width).min(BINS - 1)] += 1;
        }
        bins
    };
    let (bw, bp) = (count(&w), count(&p));
    let top = bw.iter().chain(&bp).copied().max().unwrap_or(1).max(1);
    svg((960, 300), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max * 1.02, 0u32..top + 1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("delay from availability (seconds)")
            .y_desc("entities")
            .draw()
            .map_err(|e| e.to_string())?;
        for (bins, color, label, shift) in [(bw, WEBHOOK, "webhook", 0.0), (bp, POLL, "poll", 0.5)]
        {
            chart
                .draw_series(
                    bins.iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(|(i, n)| {
                            let x0 = (i as f64 + shift * 0.5) * width;
                            Rectangle::new([(x0, 0), (x0 + width * 0.5, *n)], color.filled())
                        }),
                )
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// Requests each channel had made, over time, as the demo sampled them.
fn requests(samples: &[(f64, u64, u64)]) -> String {
    let end = samples.last().map_or(1.0, |s| s.0.max(1.0));
    let top = samples
        .iter()
        .map(|s| s.1.max(s.2))
        .max()
        .unwrap_or(1)
        .max(1);
    svg((960, 300), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..end * 1.02, 0u64..top + top / 10 + 1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds since the start")
            .y_desc("HTTP requests so far")
            .draw()
            .map_err(|e| e.to_string())?;
        for (color, label, pick) in [
            (
                WEBHOOK,
                "webhook",
                (|s: &(f64, u64, u64)| s.1) as fn(&_) -> u64,
            ),
            (POLL, "poll", |s| s.2),
        ] {
            chart
                .draw_series(LineSeries::new(
                    samples.iter().map(|s| (s.0, pick(s))),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// The what-if curve at the race's settings (fixed polling only: it needs one interval), with
/// the race's own poll marked.
fn whatif(r: &Report) -> Option<String> {
    use crate::apps::whatif::{chart, model};
    let s = r.settings.as_ref()?;
    let interval = s.poll_interval_s?;
    let drop_rate = r
        .truth
        .as_ref()
        .filter(|t| t.deliveries_decided > 0)
        .map_or(0.02, |t| {
            t.deliveries_dropped as f64 / t.deliveries_decided as f64
        });
    let poll_every = [0.25, 0.5, 1.0, 2.0, 4.0, 16.0]
        .iter()
        .map(|f| std::time::Duration::from_secs_f64((interval * f).max(1.0)))
        .collect();
    let w = model::run(&model::Model {
        scenario: model::Scenario {
            users: s.users.max(1),
            items_per_user_day: s.item_rate_per_user_s.values().sum::<f64>() * 86_400.0,
            drop_rate,
            // The simulator's default delivery delay, 20–400 ms.
            webhook_delay_s: (0.02, 0.4),
            days: 1.0,
            seed: 1,
        },
        poll_every,
        adaptive_max_every: None,
        mode: s.poll_mode,
    })
    .ok()?;
    let measured = (
        "this race's poll (measured)".to_string(),
        r.poll.delay_ms.mean? / 1000.0,
        r.poll.requests as f64 * 86_400.0 / r.measured_for_s.max(1.0),
    );
    Some(chart::svg(&w, Some(&measured)).unwrap_or_else(err))
}

/// The page's head: its content security policy (no script, inline styles, images as data)
/// and its style.
const HEAD: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'\">\
         <title>hookrace: webhooks versus polling</title><style>\
         body{font-family:sans-serif;margin:2em auto;max-width:1000px;color:#222}\
         table{border-collapse:collapse;margin:1em 0}td,th{padding:.25em .8em;border-bottom:1px solid #ddd}\
         td:not(:first-child),th:not(:first-child){text-align:right}figure{margin:1.5em 0}\
         figcaption{font-weight:bold;margin-bottom:.3em}pre{background:#f6f6f6;padding:.6em}\
         .error{color:#b00}</style></head><body>\n";

/// The page.
pub(super) fn page(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(HEAD);
    let _ = write!(
        out,
        "<h1>hookrace: webhooks versus polling, {}</h1><p>{}</p>",
        esc(&duration_text(r)),
        esc(&settings_line(r))
    );
    table(&mut out, &header(r), &rows(r));
    if let Some(line) = truth_line(r) {
        let _ = write!(out, "<p>Simulator: {}.</p>", esc(&line));
    }
    for line in explanations(r) {
        let _ = write!(out, "<p>{}</p>", esc(&line));
    }
    let net = safety_net_lines(r);
    if !net.is_empty() {
        let _ = write!(out, "<pre>{}</pre>", esc(&net.join("\n")));
    }
    let theory_head = ["measured versus expected", "measured", "expected"].map(String::from);
    table(&mut out, &theory_head, &theory_rows(r));
    let figure = |out: &mut String, id: &str, caption: &str, body: &str| {
        let _ = write!(
            out,
            "<figure id=\"{id}\"><figcaption>{}</figcaption>{body}</figure>",
            esc(caption)
        );
    };
    if r.sightings.is_empty() {
        out.push_str("<p>No entities to draw.</p>");
    } else {
        figure(
            &mut out,
            "timeline",
            "Timeline: a dot per entity per channel",
            &timeline(&r.sightings),
        );
        figure(
            &mut out,
            "delays",
            "Delay from availability to each channel",
            &delays(&r.sightings),
        );
    }
    if r.samples.is_empty() {
        out.push_str(
            "<p>Requests over time are sampled by <code>hookrace demo</code> while it runs (a demo's <code>--store</code> keeps them with its report); a report rebuilt from a store or a running daemon has none.</p>",
        );
    } else {
        figure(
            &mut out,
            "requests",
            "HTTP requests over time",
            &requests(&r.samples),
        );
    }
    match whatif(r) {
        Some(chart) => figure(
            &mut out,
            "whatif",
            "Every poll interval at this race's settings (hookrace whatif), this race marked",
            &chart,
        ),
        None => out.push_str(
            "<p>The what-if curve needs one poll interval (a fixed schedule) and the race's data rate.</p>",
        ),
    }
    out.push_str("</body></html>\n");
    out
}
