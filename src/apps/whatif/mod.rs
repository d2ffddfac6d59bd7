//! `hookrace whatif`: the whole delay-versus-cost curve instead of the race's one point. For each
//! poll interval (and for webhooks alone, and webhooks with the adaptive net) the model
//! (`model.rs`: a seeded simulation in simulated time) gives the delay, the empty polls, the
//! requests per day and whether Polar's limits hold, next to the closed forms; `--svg` draws the
//! chart (`chart.rs`). With `--trace FILE` the same rows come from recorded traffic instead
//! (`trace.rs`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

pub mod chart;
pub mod model;
pub mod trace;

pub use model::{Model, Row, Scenario, WhatIf};

use crate::apps::report::Format;

/// Options of `hookrace whatif`.
#[derive(Debug, Clone, clap::Args)]
pub struct WhatifArgs {
    /// Connected users (Polar's limits grow with them).
    #[arg(long, default_value_t = 1)]
    pub users: u64,
    /// New items (exercises, days of activity…) per user per day.
    #[arg(long, default_value_t = 3.0)]
    pub items_per_day: f64,
    /// The poll intervals to compare, comma-separated.
    #[arg(long, visible_alias = "every", default_value = "10s,30s,1m,5m,15m,1h", value_delimiter = ',', value_parser = humantime::parse_duration)]
    pub poll_every: Vec<Duration>,
    /// Replay this trace (`hookrace trace export`) instead of modelling: its own users, items,
    /// delays and lost deliveries, polled exactly as the schedules would have.
    #[arg(long, conflicts_with_all = ["users", "items_per_day", "drop_rate", "webhook_delay", "days", "seed"])]
    pub trace: Option<PathBuf>,
    /// How polling reads AccessLink: transactions (the types it offers them for) or a list per
    /// user (exercises only).
    #[arg(long, value_enum, default_value_t = crate::config::PollMode::Transactions)]
    pub mode: crate::config::PollMode,
    /// Share of webhook deliveries lost.
    #[arg(long, default_value_t = 0.02)]
    pub drop_rate: f64,
    /// Delivery delay range.
    #[arg(long, default_value = "20ms..400ms")]
    pub webhook_delay: String,
    /// Also model webhooks with the adaptive net (`adaptive`), between the fastest interval and
    /// `--max-every`.
    #[arg(long, value_enum, default_value_t = crate::config::StrategyKind::Adaptive)]
    pub strategy: crate::config::StrategyKind,
    /// The adaptive net's slowest interval.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub max_every: Duration,
    /// Simulated days.
    #[arg(long, default_value_t = 7.0)]
    pub days: f64,
    /// Seed of the simulated arrivals, delays and losses.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `html`: the table and the chart as one page.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Draw the delay-versus-cost chart into this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// What is wrong with the arguments, if anything (a usage error: exit code 64).
pub fn invalid(args: &WhatifArgs) -> Option<String> {
    let check = || -> anyhow::Result<()> {
        anyhow::ensure!(args.users >= 1, "--users must be at least 1");
        anyhow::ensure!(
            args.items_per_day > 0.0 && args.items_per_day.is_finite(),
            "--items-per-day must be above zero"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&args.drop_rate),
            "--drop-rate must be between 0 and 1"
        );
        anyhow::ensure!(
            args.days > 0.0 && args.days <= 366.0,
            "--days must be above zero and at most 366"
        );
        anyhow::ensure!(
            args.poll_every.iter().all(|d| *d >= Duration::from_secs(1)),
            "--poll-every: every interval must be at least 1s"
        );
        anyhow::ensure!(
            !args.poll_every.is_empty(),
            "--poll-every: give an interval"
        );
        Ok(())
    };
    check().err().map(|e| e.to_string())
}

/// Runs the model for `args`.
pub fn compute(args: &WhatifArgs) -> anyhow::Result<WhatIf> {
    if let Some(problem) = invalid(args) {
        anyhow::bail!(problem);
    }
    let (lo, hi) = crate::config::parse_delay_range(&args.webhook_delay)
        .map_err(|e| anyhow::anyhow!("--webhook-delay {:?}: {e}", args.webhook_delay))?;
    let scenario = Scenario {
        users: args.users,
        items_per_user_day: args.items_per_day,
        drop_rate: args.drop_rate,
        webhook_delay_s: (lo.as_secs_f64(), hi.as_secs_f64()),
        days: args.days,
        seed: args.seed,
    };
    let adaptive_max_every =
        (args.strategy == crate::config::StrategyKind::Adaptive).then_some(args.max_every);
    if let Some(path) = &args.trace {
        let recorded = crate::trace::Trace::read_file(path)?;
        let name = path.display().to_string();
        return trace::run(
            &recorded,
            &name,
            &args.poll_every,
            args.mode,
            adaptive_max_every,
        );
    }
    model::run(&Model {
        scenario,
        poll_every: args.poll_every.clone(),
        adaptive_max_every,
        mode: args.mode,
    })
}

/// `hookrace whatif`: prints the table (or JSON, Markdown) and writes the chart when asked.
pub fn run(args: &WhatifArgs, out: &mut dyn Write) -> anyhow::Result<WhatIf> {
    let w = compute(args)?;
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&w)?)?,
        Format::Markdown => write!(out, "{}", render(&w, true))?,
        Format::Table => write!(out, "{}", render(&w, false))?,
        Format::Html => write!(out, "{}", page(&w)?)?,
    }
    if let Some(path) = &args.svg {
        let svg = chart::svg(&w, None)?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "chart written to {}", path.display())?;
    }
    Ok(w)
}

/// The table and the chart as one self-contained page.
fn page(w: &WhatIf) -> anyhow::Result<String> {
    let table = render(w, false)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    Ok(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>hookrace what-if</title>\
         <style>body{{font-family:sans-serif;margin:2em}}pre{{font-size:12px}}</style></head>\
         <body><h1>hookrace what-if</h1><pre>{table}</pre>{}</body></html>\n",
        chart::svg(w, None)?
    ))
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 60_000.0 => format!("{:.1} min", v / 60_000.0),
        Some(v) if v >= 1000.0 => format!("{:.1} s", v / 1000.0),
        Some(v) => format!("{v:.0} ms"),
    }
}

fn count(v: f64) -> String {
    let s = format!("{v:.0}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One strategy's cells: measured in the model, with the closed form after a slash.
fn row_cells(r: &Row) -> Vec<String> {
    let th = r.theory.as_ref();
    vec![
        r.label.clone(),
        match th {
            Some(t) => format!("{} / {}", ms(r.delay_ms.mean), ms(Some(t.mean_delay_ms))),
            None => ms(r.delay_ms.mean),
        },
        ms(r.delay_ms.p95),
        match (r.empty_share, th) {
            (Some(e), Some(t)) => {
                format!("{:.1}% / {:.1}%", e * 100.0, t.empty_share * 100.0)
            }
            (Some(e), None) => format!("{:.1}%", e * 100.0),
            _ => "–".into(),
        },
        match th {
            Some(t) => format!(
                "{} / {}",
                count(r.requests_per_day),
                count(t.requests_per_day)
            ),
            None => count(r.requests_per_day),
        },
        count(r.received_per_day),
        if r.over_limit { "YES" } else { "no" }.into(),
        match r.catch_delay_ms.count {
            0 => r.lost.to_string(),
            _ => format!("{}; mean {}", r.lost, ms(r.catch_delay_ms.mean)),
        },
    ]
}

/// `rows` under `header` as aligned plain text: the first column left, the others right.
fn aligned(header: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut l = String::from(" ");
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            l.push_str(&match i {
                0 => format!(" {c:<w$}"),
                _ => format!("   {c:>w$}"),
            });
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    out.push_str(&format!(
        "  {}\n",
        "─".repeat(widths.iter().sum::<usize>() + 3 * (widths.len() - 1))
    ));
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// The table (or Markdown): measured in the model, with the closed form after a slash.
fn render(w: &WhatIf, markdown: bool) -> String {
    let s = &w.scenario;
    let mut out = String::new();
    let title = match &w.trace {
        Some(t) => format!(
            "what if, on the trace {}: {} entities of {} user(s) over {}, {:.1}% never delivered, polled in {} mode",
            t.name,
            t.entities,
            t.users,
            humantime::format_duration(Duration::from_secs(crate::units::round_u64(t.span_s))),
            s.drop_rate * 100.0,
            t.mode.as_str()
        ),
        None => format!(
            "what if: {} user(s), {} new items per user per day, {:.0}% of deliveries lost, {} simulated day(s) (seed {})",
            s.users,
            s.items_per_user_day,
            s.drop_rate * 100.0,
            s.days,
            s.seed
        ),
    };
    let header = [
        "strategy",
        "mean delay (model / T/2)",
        "p95 delay",
        "empty polls (model / e^(−λT))",
        "requests/day to Polar (model / formula)",
        "received/day",
        "over Polar's limit",
        "lost; lost deliveries found after",
    ];
    let rows: Vec<Vec<String>> = w.rows.iter().map(row_cells).collect();
    if markdown {
        out.push_str(&format!("### {title}\n\n| {} |\n|---|", header.join(" | ")));
        out.push_str(&"---:|".repeat(header.len() - 1));
        out.push('\n');
        for r in &rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
    } else {
        out.push_str(&format!("{title}\n\n"));
        out.push_str(&aligned(&header.map(String::from), &rows));
    }
    out.push_str(&format!(
        "\nPolar's limits for {} user(s): {} requests per 15 minutes, {} per day (requests hookrace makes: polls and fetches; deliveries it receives do not count).\n",
        s.users,
        count(w.polar_limit_15m as f64),
        count(w.polar_limit_day as f64)
    ));
    out
}
