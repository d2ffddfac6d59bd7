//! A recorded trace: the traffic a store saw, as JSON lines another tool (or `hookrace whatif
//! --trace`, `hookrace replay`, `hookrace sim --replay`) can read. It owns the format, version
//! 1, and its checks; `export.rs` writes one from a store.
//!
//! The first line is the [`Header`]; every other line is one entity ([`TracedEntity`]), sorted
//! by when its data was made. Ids are keyed hashes unless the exporter kept them, so a trace
//! can be shared: the same user (or entity) has the same pseudonym throughout one trace, and no
//! id can be read back from it without the key. The format is documented in `docs/trace.md`.

use std::io::{BufRead, Write};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod export;

/// The `format` every trace's header names.
pub const FORMAT: &str = "hookrace-trace";
/// The version this hookrace writes and reads.
pub const VERSION: u32 = 1;

/// The first line of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for this hookrace; another is refused, not guessed at.
    pub version: u32,
    /// When the trace was written.
    pub exported_at: DateTime<Utc>,
    /// Where the recording starts: when the store began (its daemon's first poll cycle ran then)
    /// or `--since`.
    pub origin: DateTime<Utc>,
    /// Where it ends: a demo's measured window, the last sighting, or `--until`.
    pub until: DateTime<Utc>,
    /// `pseudonymous` (keyed hashes) or `kept` (the ids as AccessLink gave them).
    pub ids: IdKind,
    /// Users: those connected to the recording client, or those with an entity if more.
    pub users: u64,
    /// Entity lines after the header.
    pub entities: u64,
    /// The poll interval the recording ran with, when it had a fixed one (a demo's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_every_s: Option<f64>,
}

/// How a trace names users and entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdKind {
    Pseudonymous,
    Kept,
}

/// Where an entity's `made_at` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MadeFrom {
    /// The data's own time (`upload-time`, `created`), once fetched or polled.
    Source,
    /// The first delivery's `timestamp`: the data was never read.
    Delivery,
    /// Neither was known: the first sighting stands in (its delay reads as zero).
    Sighting,
}

/// The channel that saw an entity first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstBy {
    Webhook,
    Poll,
}

/// One entity of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracedEntity {
    /// The event type, as AccessLink names it (`EXERCISE`, `SLEEP`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    pub user: String,
    pub entity: String,
    /// When the data was made, as known (see `made_from`).
    pub made_at: DateTime<Utc>,
    pub made_from: MadeFrom,
    /// When each valid delivery arrived, oldest first: the first, then duplicates and updates
    /// (at most 33 kept per entity; `deliveries_total` counts them all).
    #[serde(default)]
    pub deliveries: Vec<DateTime<Utc>>,
    #[serde(default)]
    pub deliveries_total: u32,
    /// When polling first saw it, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polled_at: Option<DateTime<Utc>>,
    pub first: FirstBy,
}

/// A whole trace, read and checked.
#[derive(Debug, Clone)]
pub struct Trace {
    pub header: Header,
    pub entities: Vec<TracedEntity>,
}

impl Trace {
    /// Reads a trace from JSON lines, checking what a reader relies on: the format and version,
    /// each line's shape, entities sorted by `made_at`, deliveries in order, and the header's
    /// count. The error names the line.
    pub fn read(input: impl BufRead, name: &str) -> anyhow::Result<Trace> {
        let mut lines = input.lines().enumerate();
        let (_, first) = lines
            .next()
            .with_context(|| format!("{name} is empty: a trace starts with its header line"))?;
        let first = first.with_context(|| format!("reading {name}"))?;
        let header = read_header(&first).with_context(|| format!("{name}, line 1"))?;
        let mut entities: Vec<TracedEntity> =
            Vec::with_capacity(crate::units::usize_saturating(header.entities.min(1 << 20)));
        for (i, line) in lines {
            let line = line.with_context(|| format!("reading {name}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let e: TracedEntity = serde_json::from_str(&line)
                .with_context(|| format!("{name}, line {}: not an entity of a trace", i + 1))?;
            check_entity(&e, entities.last()).with_context(|| format!("{name}, line {}", i + 1))?;
            entities.push(e);
        }
        anyhow::ensure!(
            entities.len() as u64 == header.entities,
            "{name}: the header announces {} entities and {} follow (a cut file?)",
            header.entities,
            entities.len()
        );
        Ok(Trace { header, entities })
    }

    /// Reads the trace in the file at `path`.
    pub fn read_file(path: &std::path::Path) -> anyhow::Result<Trace> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening the trace {}", path.display()))?;
        Trace::read(std::io::BufReader::new(file), &path.display().to_string())
    }

    /// Writes the trace as JSON lines.
    pub fn write(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        serde_json::to_writer(&mut *out, &self.header)?;
        out.write_all(b"\n")?;
        for e in &self.entities {
            serde_json::to_writer(&mut *out, e)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }

    /// Seconds from the origin to `t`.
    pub fn offset_s(&self, t: DateTime<Utc>) -> f64 {
        (t - self.header.origin).as_seconds_f64()
    }

    /// Seconds the trace covers.
    pub fn span_s(&self) -> f64 {
        self.offset_s(self.header.until)
    }
}

impl Trace {
    /// The simulator's replay of this trace at `speed` times: each entity at its offset from the
    /// origin (divided by `speed`), for the n-th user by order of appearance, dropped when no
    /// delivery announced it, delivered after its recorded delay (at most ten minutes).
    pub fn schedule(&self, speed: f64) -> anyhow::Result<Vec<crate::sim::settings::Replayed>> {
        use std::time::Duration;
        anyhow::ensure!(
            speed > 0.0 && speed.is_finite(),
            "--speed must be above zero"
        );
        let mut users: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut out = Vec::with_capacity(self.entities.len());
        for e in &self.entities {
            let next = users.len();
            let user = *users.entry(&e.user).or_insert(next);
            let delay = e.deliveries.first().map(|d| {
                let s = (*d - e.made_at).as_seconds_f64().clamp(0.0, 600.0);
                Duration::from_secs_f64(s)
            });
            out.push(crate::sim::settings::Replayed {
                after: Duration::from_secs_f64(self.offset_s(e.made_at).max(0.0) / speed),
                user,
                kind: crate::accesslink::identity::EventType::parse(&e.kind),
                delivered: !e.deliveries.is_empty(),
                delay,
            });
        }
        Ok(out)
    }
}

fn read_header(line: &str) -> anyhow::Result<Header> {
    let v: serde_json::Value =
        serde_json::from_str(line).context("the header is not a JSON object")?;
    anyhow::ensure!(
        v.get("format").and_then(|f| f.as_str()) == Some(FORMAT),
        "not a hookrace trace (its first line has no \"format\": \"{FORMAT}\")"
    );
    let version = v.get("version").and_then(|n| n.as_u64());
    anyhow::ensure!(
        version == Some(u64::from(VERSION)),
        "trace version {} is not one this hookrace reads (it reads version {VERSION})",
        version.map_or("missing".to_string(), |n| n.to_string())
    );
    let h: Header = serde_json::from_value(v).context("the header's fields")?;
    anyhow::ensure!(
        h.until >= h.origin,
        "the header's until ({}) is before its origin ({})",
        h.until,
        h.origin
    );
    Ok(h)
}

fn check_entity(e: &TracedEntity, previous: Option<&TracedEntity>) -> anyhow::Result<()> {
    if let Some(p) = previous {
        anyhow::ensure!(
            e.made_at >= p.made_at,
            "made_at {} is before the line above's ({}): a trace is sorted by made_at",
            e.made_at,
            p.made_at
        );
    }
    anyhow::ensure!(
        e.deliveries.windows(2).all(|w| w[0] <= w[1]),
        "the deliveries are not oldest first"
    );
    anyhow::ensure!(
        e.deliveries.is_empty() || e.deliveries_total as usize >= e.deliveries.len(),
        "deliveries_total ({}) is less than the deliveries listed ({})",
        e.deliveries_total,
        e.deliveries.len()
    );
    anyhow::ensure!(
        !e.deliveries.is_empty() || e.polled_at.is_some(),
        "an entity no channel saw (no delivery, never polled)"
    );
    Ok(())
}

/// Keyed pseudonyms: HMAC-SHA256 of the id under a key, cut to 12 bytes, with a prefix saying
/// what it names. The same id always gives the same pseudonym under one key.
pub struct Pseudonyms {
    key: Vec<u8>,
}

impl Pseudonyms {
    /// Under a fresh random key, dropped with the value: nobody can recompute the pseudonyms.
    pub fn random() -> Pseudonyms {
        use rand::RngExt;
        let key: [u8; 32] = rand::rng().random();
        Pseudonyms { key: key.to_vec() }
    }

    /// Under `key` (so two exports of one store can be joined by whoever holds it).
    pub fn keyed(key: &[u8]) -> Pseudonyms {
        Pseudonyms { key: key.to_vec() }
    }

    /// `prefix-` and 24 hex digits.
    pub fn of(&self, prefix: &str, id: &str) -> String {
        use hmac::{KeyInit, Mac};
        // An HMAC takes a key of any length: `new_from_slice` cannot fail for it.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        mac.update(prefix.as_bytes());
        mac.update(b"\0");
        mac.update(id.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("{prefix}-{}", hex::encode(&digest[..12]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn entity(made: i64) -> TracedEntity {
        TracedEntity {
            kind: "EXERCISE".into(),
            user: "u-1".into(),
            entity: format!("e-{made}"),
            made_at: at(made),
            made_from: MadeFrom::Source,
            deliveries: vec![at(made + 1)],
            deliveries_total: 1,
            polled_at: None,
            first: FirstBy::Webhook,
        }
    }

    fn trace(entities: Vec<TracedEntity>) -> Trace {
        Trace {
            header: Header {
                format: FORMAT.into(),
                version: VERSION,
                exported_at: at(100),
                origin: at(0),
                until: at(100),
                ids: IdKind::Pseudonymous,
                users: 1,
                entities: entities.len() as u64,
                poll_every_s: None,
            },
            entities,
        }
    }

    fn text(t: &Trace) -> String {
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_trace_reads_back_as_written() {
        let t = trace(vec![entity(1), entity(5), entity(5)]);
        let back = Trace::read(text(&t).as_bytes(), "t").unwrap();
        assert_eq!(back.header, t.header);
        assert_eq!(back.entities, t.entities);
    }

    #[test]
    fn a_bad_trace_is_refused_with_its_line() {
        let good = text(&trace(vec![entity(5), entity(9)]));
        let cases = [
            (
                good.replace("\"version\":1", "\"version\":2"),
                "trace version 2",
            ),
            (good.replace(FORMAT, "other"), "not a hookrace trace"),
            (text(&trace(vec![entity(9), entity(5)])), "line 3: made_at"),
            (
                good.lines().take(2).collect::<Vec<_>>().join("\n"),
                "announces 2",
            ),
            (format!("{good}{{\"type\": 1}}\n"), "line 4: not an entity"),
            (String::new(), "is empty"),
        ];
        for (input, want) in cases {
            let e = format!("{:#}", Trace::read(input.as_bytes(), "t").unwrap_err());
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn pseudonyms_are_stable_under_a_key_and_differ_between_keys() {
        let a = Pseudonyms::keyed(b"k1");
        assert_eq!(a.of("u", "10001"), a.of("u", "10001"));
        assert_ne!(a.of("u", "10001"), a.of("u", "10002"));
        assert_ne!(a.of("u", "10001"), a.of("e", "10001"));
        assert_ne!(
            a.of("u", "10001"),
            Pseudonyms::keyed(b"k2").of("u", "10001")
        );
        assert_eq!(a.of("u", "1").len(), "u-".len() + 24);
    }
}
