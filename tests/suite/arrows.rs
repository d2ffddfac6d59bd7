//! The architecture as the compiler holds it: which of hookrace's crates may depend on which
//! (`docs/architecture.md` draws the same arrows), read from `cargo metadata`, and every source
//! file of a crate declared as a module by its parent (so the layout a `lib.rs` lists is the
//! layout there is).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Each crate of the workspace and the crates of ours it may depend on (normal, dev or build).
/// A new crate must be added here, with its arrows, before the test passes.
const ALLOWED: &[(&str, &[&str])] = &[
    // Polar's API, the shared types and the client: depends on nothing of ours.
    ("hookrace-accesslink", &[]),
    // The measurement model: pure, over AccessLink's identities.
    ("hookrace-race", &["hookrace-accesslink"]),
    // The simulator stands beside the application and talks to it only over HTTP.
    ("hookrace-sim", &["hookrace-accesslink"]),
    // The application and its binary.
    (
        "hookrace",
        &["hookrace-accesslink", "hookrace-race", "hookrace-sim"],
    ),
];

fn metadata() -> Value {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Each workspace package and the workspace packages it depends on, of any kind.
fn arrows(meta: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let packages = meta["packages"].as_array().unwrap();
    let ours: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|name| ours.contains(name))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

#[test]
fn crates_depend_only_along_the_allowed_arrows() {
    let found = arrows(&metadata());
    let allowed: BTreeMap<String, BTreeSet<String>> = ALLOWED
        .iter()
        .map(|(name, deps)| {
            let deps = deps.iter().map(|d| d.to_string()).collect();
            (name.to_string(), deps)
        })
        .collect();
    let names: BTreeSet<&String> = found.keys().collect();
    assert_eq!(
        names,
        allowed.keys().collect(),
        "the workspace's crates are not the ones this test knows: add the new crate's arrows"
    );
    for (name, deps) in &found {
        let extra: Vec<&String> = deps.difference(&allowed[name]).collect();
        assert!(
            extra.is_empty(),
            "{name} depends on {extra:?}, which the architecture does not allow"
        );
    }
}

/// The module names a Rust file declares (`mod x;` / `pub mod x;`, not inline `mod x { }`).
fn declared_modules(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .map(str::trim)
        .filter_map(|line| {
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .or_else(|| line.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(str::to_string)
        })
        .collect()
}

/// Every `.rs` file and module folder in `dir` must be declared by `parent` (the folder's
/// `lib.rs`, `main.rs` or `mod.rs`), and so on down.
fn check_folder(dir: &Path, parent: &Path, missing: &mut Vec<PathBuf>) {
    let declared = declared_modules(parent);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            let inner = [path.join("mod.rs"), dir.join(format!("{stem}.rs"))]
                .into_iter()
                .find(|p| p.exists());
            match inner {
                Some(inner) if declared.contains(&stem) => check_folder(&path, &inner, missing),
                _ => missing.push(path),
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let is_root = ["lib", "main", "mod"].contains(&stem.as_str());
            if !is_root && !declared.contains(&stem) {
                missing.push(path);
            }
        }
    }
}

#[test]
fn every_source_file_is_a_declared_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = vec![root.join("src")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        sources.push(entry.unwrap().path().join("src"));
    }
    let mut missing = Vec::new();
    for src in sources {
        check_folder(&src, &src.join("lib.rs"), &mut missing);
    }
    missing.retain(|p| !p.ends_with("src/main.rs"));
    assert!(
        missing.is_empty(),
        "not declared by their parent module: {missing:?}"
    );
}

/// The application's `lib.rs` says in its layout what each of its modules is for: every module it
/// declares or re-exports is named there as [`name`].
#[test]
fn the_layout_names_every_module() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let doc: String = lib
        .lines()
        .filter(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let unnamed: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("pub use "))?
                .strip_suffix(';')
        })
        .map(|path| path.rsplit("::").next().unwrap_or(path))
        .filter(|name| !doc.contains(&format!("[`{name}`]")))
        .collect();
    assert!(
        unnamed.is_empty(),
        "src/lib.rs's layout does not name {unnamed:?}"
    );
}
