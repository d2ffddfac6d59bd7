//! Backup and restore of a whole store, while the daemon runs: every tree, key by key, in one
//! stream (`hookrace backup` writes it to a file, from the store or through the running
//! daemon's `GET /backup`), and a new store made from such a stream (`hookrace restore`).
//!
//! The stream is read from the live store, not from a frozen instant, so two trees may be
//! copied a write apart; the copy also carries the store's "open" mark, so the restored store
//! is opened as after an unclean stop: its indexes are repaired from the records and its
//! counters recounted, exactly what a crash at that moment would have left. The restored store
//! continues the sequence numbers past the backed-up ones, so new records sort after old ones.
//!
//! Format (big-endian): the magic `hookrace-backup\n`, a `u32` version, the `u64` next
//! sequence; then items, each a tag byte: `T` a tree (`u32` name length, name), `K` a key and
//! value (`u32` length and bytes, twice) of the last tree, `E` the end (`u64` count of keys): a
//! stream cut short has no end and is refused.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};

use super::Store;

const MAGIC: &[u8] = b"hookrace-backup\n";
const VERSION: u32 = 1;

/// What a backup held, or a restore wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    pub trees: u64,
    pub keys: u64,
    pub bytes: u64,
}

/// Writes the whole of `store` to `out` (blocking: run it where blocking is allowed).
pub fn write(store: &Store, out: &mut dyn Write) -> anyhow::Result<Copied> {
    let db = &store.db;
    let mut copied = Copied::default();
    let mut put = |bytes: &[u8], copied: &mut Copied| -> anyhow::Result<()> {
        out.write_all(bytes).context("writing the backup")?;
        copied.bytes += bytes.len() as u64;
        Ok(())
    };
    // Sequences handed out from here on are after every record copied below.
    let next = db.generate_id().context("reading the store's sequence")?;
    put(MAGIC, &mut copied)?;
    put(&VERSION.to_be_bytes(), &mut copied)?;
    put(&next.to_be_bytes(), &mut copied)?;
    for name in db.tree_names() {
        let tree = db
            .open_tree(&name)
            .with_context(|| format!("opening tree {}", String::from_utf8_lossy(&name)))?;
        put(b"T", &mut copied)?;
        put(&len(&name)?, &mut copied)?;
        put(&name, &mut copied)?;
        copied.trees += 1;
        for kv in tree.iter() {
            let (k, v) = kv.context("reading the store for the backup")?;
            put(b"K", &mut copied)?;
            for part in [&k, &v] {
                put(&len(part)?, &mut copied)?;
                put(part, &mut copied)?;
            }
            copied.keys += 1;
        }
    }
    put(b"E", &mut copied)?;
    put(&copied.keys.to_be_bytes(), &mut copied)?;
    out.flush().context("writing the backup")?;
    Ok(copied)
}

fn len(bytes: &[u8]) -> anyhow::Result<[u8; 4]> {
    let n = u32::try_from(bytes.len()).context("a key or value over 4 GiB")?;
    Ok(n.to_be_bytes())
}

/// Makes a new store at `into` (which must not exist, or be an empty directory) from the backup
/// `from`, then opens it once as hookrace does (repairing what a live copy needs) and closes it.
pub fn restore(from: &mut dyn Read, into: &Path) -> anyhow::Result<Copied> {
    if let Ok(mut entries) = std::fs::read_dir(into) {
        if entries.next().is_some() {
            bail!(
                "{} is not empty: restore into a new directory (a store is never overwritten)",
                into.display()
            );
        }
    }
    let copied = import(from, into).with_context(|| {
        format!(
            "restoring into {} (remove it before trying again)",
            into.display()
        )
    })?;
    let store = Store::open(into).map_err(anyhow::Error::from)?;
    store.close()?;
    Ok(copied)
}

/// Reads a whole backup without writing anything: what it holds, or why it is damaged.
pub fn check(from: &mut dyn Read) -> anyhow::Result<Copied> {
    Ok(read_items(from, &mut |_| Ok(()))?.1)
}

/// Reads the stream into a fresh sled database at `into`.
fn import(from: &mut dyn Read, into: &Path) -> anyhow::Result<Copied> {
    let db = sled::Config::new()
        .path(into)
        .open()
        .with_context(|| format!("creating a store at {}", into.display()))?;
    let mut tree: Option<sled::Tree> = None;
    let (next, copied) = read_items(from, &mut |item| {
        match item {
            Item::Tree(name) => tree = Some(db.open_tree(name).context("creating a tree")?),
            Item::Key(k, v) => {
                let Some(t) = &tree else {
                    bail!("the backup is damaged: a key before any tree");
                };
                t.insert(k, v).context("writing the restored store")?;
            }
        }
        Ok(())
    })?;
    while db.generate_id().context("continuing the sequence")? < next {}
    db.flush().context("writing the restored store to disk")?;
    Ok(copied)
}

/// One item of the stream: a tree begins, or a key and value of the last tree.
enum Item {
    Tree(Vec<u8>),
    Key(Vec<u8>, Vec<u8>),
}

/// Reads the header and every item, handing each on; the next sequence and what was read.
fn read_items(
    from: &mut dyn Read,
    on_item: &mut dyn FnMut(Item) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, Copied)> {
    let mut r = Reader { from, bytes: 0 };
    if r.exact::<16>()? != MAGIC {
        bail!("not a hookrace backup (it does not start with {MAGIC:?})");
    }
    let version = u32::from_be_bytes(r.exact()?);
    if version != VERSION {
        bail!("a backup of format {version}: this hookrace reads format {VERSION}");
    }
    let next = u64::from_be_bytes(r.exact()?);
    let mut copied = Copied::default();
    loop {
        match r.exact::<1>()? {
            [b'T'] => {
                on_item(Item::Tree(r.chunk()?))?;
                copied.trees += 1;
            }
            [b'K'] => {
                let (k, v) = (r.chunk()?, r.chunk()?);
                on_item(Item::Key(k, v))?;
                copied.keys += 1;
            }
            [b'E'] => {
                let count = u64::from_be_bytes(r.exact()?);
                if count != copied.keys {
                    bail!(
                        "the backup is damaged: it says {count} keys, it holds {}",
                        copied.keys
                    );
                }
                break;
            }
            [other] => bail!("the backup is damaged: an item tagged {other:#04x}"),
        }
    }
    copied.bytes = r.bytes;
    Ok((next, copied))
}

/// Reads the stream's parts, counting bytes; the end of the stream mid-item is an error.
struct Reader<'a> {
    from: &'a mut dyn Read,
    bytes: u64,
}

impl Reader<'_> {
    fn exact<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.from
            .read_exact(&mut buf)
            .context("the backup ends too soon (cut short?)")?;
        self.bytes += N as u64;
        Ok(buf)
    }

    fn chunk(&mut self) -> anyhow::Result<Vec<u8>> {
        let n = u64::from(u32::from_be_bytes(self.exact()?));
        // Read as it comes rather than allocated from the length: a damaged length cannot ask
        // for gigabytes up front.
        let mut buf = Vec::new();
        (&mut *self.from)
            .take(n)
            .read_to_end(&mut buf)
            .context("reading the backup")?;
        if buf.len() as u64 != n {
            bail!("the backup ends too soon (cut short?)");
        }
        self.bytes += n;
        Ok(buf)
    }
}
