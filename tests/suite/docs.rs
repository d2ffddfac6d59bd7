//! The docs, followed literally: the shell blocks of `docs/simulator.md`'s walk-through run against
//! the real simulator and each reference receiver (the Rust example and the Python in the doc),
//! and every status the comments promise is the status curl printed; every command line the docs
//! show parses; the unit file keeps what `docs/deploy.md` says of it; relative links resolve.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap()
}

/// The fenced blocks of `lang` in `text` (a fence may be indented, inside a list item).
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut current {
            None if trimmed == format!("```{lang}") => current = Some((indent, String::new())),
            Some(_) if trimmed == "```" => out.push(current.take().unwrap().1),
            Some((ind, body)) => {
                body.push_str(line.get(*ind..).unwrap_or(line.trim_start()));
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

/// A child whose stdout is collected line by line; killed when dropped.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Running { child, lines }
    }

    fn wait_for(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The walk-through's shell, with the doc's ports replaced by free ones; the blocks that start
/// the simulator and the receiver are left out (the test starts them).
fn walkthrough(sim_port: u16, receiver_port: u16) -> (String, Vec<String>) {
    let doc = read("docs/simulator.md");
    let start = doc.find("## A student's walk through it").unwrap();
    let end = start + 3 + doc[start + 3..].find("\n## ").unwrap();
    let section = &doc[start..end];
    let script: String = blocks(section, "sh")
        .into_iter()
        .filter(|b| !b.contains("cargo run"))
        .collect::<Vec<_>>()
        .join("\n");
    let expected = script
        .lines()
        .filter_map(|l| {
            let code = l.trim().strip_prefix("# ")?.get(..3)?;
            code.chars()
                .all(|c| c.is_ascii_digit())
                .then(|| code.to_string())
        })
        .collect();
    let script = script
        .replace("127.0.0.1:7070", &format!("127.0.0.1:{sim_port}"))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{receiver_port}"));
    (script, expected)
}

/// Runs the walk-through against a receiver started by `receiver` (given its port and the
/// working directory, where `webhook_secret.txt` is written) and checks every promised status,
/// then that the receiver printed `done` (what it prints once it has the exercise).
fn follow_the_walkthrough(receiver: impl Fn(u16, &Path) -> Command, done: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (sim_port, receiver_port) = (crate::common::free_port(), crate::common::free_port());
    let _sim = Running::start({
        let mut c = Command::new(env!("CARGO_BIN_EXE_hookrace"));
        c.args(["sim", "--users", "2", "--seed", "7", "--listen"])
            .arg(format!("127.0.0.1:{sim_port}"));
        c
    });
    let rx = Running::start(receiver(receiver_port, dir.path()));
    wait_listening(sim_port);
    wait_listening(receiver_port);
    let (script, expected) = walkthrough(sim_port, receiver_port);
    assert!(expected.len() >= 12, "{expected:?}");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walk-through failed: {stderr}\n{stdout}"
    );
    // A body without a final newline runs into the next status line: look anywhere.
    let statuses: Vec<String> = stdout
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, m)| stdout.get(i + m.len()..i + m.len() + 3).map(String::from))
        .collect();
    assert_eq!(
        statuses, expected,
        "statuses printed vs promised:\n{stdout}"
    );
    // The injected exercise reached the receiver, its signature verified with the saved secret
    // (and, for the reference receiver, its data fetched with the user's token).
    assert!(
        rx.wait_for(done, Duration::from_secs(10)),
        "the receiver verified nothing: {:?}",
        rx.lines.lock().unwrap()
    );
}

#[test]
fn the_simulator_walkthrough_works_as_written_with_the_rust_receiver() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_hookrace"));
    let example = bin.parent().unwrap().join("examples").join("receiver");
    if !example.exists() {
        // `cargo test` builds the examples; `cargo test --test suite docs::` alone does not.
        let release = bin.parent().unwrap().ends_with("release");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
        build.args(["build", "--example", "receiver"]);
        if release {
            build.arg("--release");
        }
        assert!(
            build.status().unwrap().success(),
            "building the example receiver"
        );
    }
    follow_the_walkthrough(
        |port, dir| {
            let mut c = Command::new(&example);
            c.arg(format!("127.0.0.1:{port}")).current_dir(dir);
            c
        },
        "  fetched ",
    );
}

#[test]
fn the_simulator_walkthrough_works_as_written_with_the_python_receiver() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: no python3");
        return;
    }
    let doc = read("docs/simulator.md");
    let python = blocks(&doc, "python").remove(0);
    follow_the_walkthrough(
        |port, dir| {
            let code = python.replace("8000", &port.to_string());
            std::fs::write(dir.join("receiver.py"), code).unwrap();
            let mut c = Command::new("python3");
            c.args(["-u", "receiver.py"]).current_dir(dir);
            c
        },
        "verified:",
    );
}

/// Every `hookrace …` command the docs and the README show parses (options exist, values fit).
#[test]
fn every_command_line_in_the_docs_parses() {
    use clap::Parser;
    let mut checked = 0;
    for file in [
        "README.md",
        "docs/deploy.md",
        "docs/educators.md",
        "docs/simulator.md",
        "docs/notify.md",
        "docs/accesslink-setup.md",
        "docs/architecture.md",
        "docs/performance.md",
    ] {
        let text = read(file);
        // Inline code spans of the prose (fenced blocks taken out first), and the shell blocks.
        let mut prose = String::new();
        let mut fenced = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            } else if !fenced {
                prose.push_str(line);
                prose.push('\n');
            }
        }
        // A shell block holds whole commands (strict); an inline span may name an option without
        // its value (`demo --outage`), but every option and subcommand it names must exist.
        let code: Vec<(bool, String)> = blocks(&text, "sh")
            .into_iter()
            .map(|b| (true, b))
            .chain(
                prose
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(|c| (false, c.to_string())),
            )
            .collect();
        for (strict, chunk) in code {
            let joined = chunk.replace("\\\n", " ");
            for line in joined.lines() {
                if line.trim_start().starts_with('#') {
                    continue;
                }
                // A command started in the background (`… &`) is the same command.
                let line = line.split(" #").next().unwrap_or("").trim();
                let line = line.strip_suffix('&').unwrap_or(line).trim();
                let args = match (line.find("hookrace "), line.find("cargo run -- ")) {
                    (_, Some(i)) => &line[i + "cargo run -- ".len()..],
                    (Some(i), None) => &line[i + "hookrace ".len()..],
                    // The lesson's table names commands without the binary: `demo --users 50`.
                    _ if !strict && line.starts_with("demo ") => line,
                    _ => continue,
                };
                let words: Vec<&str> = args.split_whitespace().collect();
                // Only a command line: it starts with a subcommand, and holds no placeholder.
                let Some(first) = words.first() else { continue };
                let subcommands = [
                    "run",
                    "demo",
                    "whatif",
                    "report",
                    "webhook",
                    "users",
                    "notify",
                    "sim",
                    "check-config",
                ];
                if !subcommands.contains(first)
                    || args.contains(['<', '[', '…', '|', '>', '$'])
                    || args.contains("...")
                {
                    continue;
                }
                let argv = std::iter::once("hookrace").chain(words.iter().copied());
                if let Err(e) = hookrace::cli::Cli::try_parse_from(argv) {
                    use clap::error::ErrorKind as K;
                    let fatal = match e.kind() {
                        K::DisplayHelp => false,
                        K::UnknownArgument | K::InvalidSubcommand => true,
                        _ => strict,
                    };
                    assert!(!fatal, "{file}: `{line}` does not parse:\n{e}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 35, "only {checked} command lines found");
}

/// What `docs/deploy.md` says of the unit holds in the unit.
#[test]
fn the_unit_does_not_restart_a_refused_configuration_nor_pretend_to_reload() {
    let unit = read("docs/deploy/hookrace.service");
    let active = |key: &str| unit.lines().any(|l| l.trim_start().starts_with(key));
    assert!(active("RestartPreventExitStatus=1 64"));
    assert!(!active("ExecReload="));
    assert!(active(
        "LoadCredential=client_secret:/etc/hookrace/client_secret"
    ));
    // The Caddyfile: every `{` ends its line (Caddy 2.6 refuses `{ directive }` on one line).
    let deploy = read("docs/deploy.md");
    let caddy = blocks(&deploy, "")
        .into_iter()
        .find(|b| b.contains("/etc/caddy/Caddyfile"))
        .expect("the Caddyfile block");
    for line in caddy.lines() {
        if let Some(i) = line.find('{') {
            assert!(line[i + 1..].trim().is_empty(), "Caddy refuses: {line}");
        }
    }
    // Where Caddy is installed, Caddy itself reads it.
    if Command::new("caddy").arg("version").output().is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Caddyfile");
        std::fs::write(&file, &caddy).unwrap();
        let out = Command::new("caddy")
            .args(["adapt", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "caddy refuses the Caddyfile: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every variable a block uses is set before it.
    for block in blocks(&deploy, "sh") {
        if block.contains("$TOKEN") {
            assert!(block.contains("TOKEN="), "$TOKEN is never set:\n{block}");
        }
    }
}

/// Every relative link in the docs points at a file of the repository.
#[test]
fn relative_links_in_the_docs_resolve() {
    let mut files = vec![repo("README.md")];
    for entry in std::fs::read_dir(repo("docs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "md") {
            files.push(p);
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').unwrap_or(0)];
            if target.is_empty() || target.contains("://") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap();
            let resolved = file.parent().unwrap().join(path);
            assert!(
                resolved.exists(),
                "{}: link to {target} is broken",
                file.display()
            );
        }
        // The design and the AccessLink facts page live outside this repository: no citing them.
        for gone in ["`accesslink.md`", "`design.md`", "../shared/"] {
            assert!(!text.contains(gone), "{}: cites {gone}", file.display());
        }
    }
}

/// The configuration `docs/deploy.md` shows is valid as written, with the client secret from its
/// file (and `docs/deploy/config.toml`, the package's template, too).
#[test]
fn the_deploy_configuration_is_valid_as_written() {
    let deploy = read("docs/deploy.md");
    let shown = blocks(&deploy, "toml").remove(0);
    let env = |k: &str| (k == "HOOKRACE_CLIENT_SECRET").then(|| "from-the-file".to_string());
    let cfg =
        hookrace::config::parse(&shown, "docs/deploy.md", &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cfg.simulator.enabled);
    assert_eq!(cfg.store.path, Path::new("/var/lib/hookrace/data"));
    let template = read("docs/deploy/config.toml");
    hookrace::config::parse(&template, "docs/deploy/config.toml", &env)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The captured outputs (a fenced block after `<!-- captured: hookrace ARGS -->`) in the README
/// and the docs, as (file, command, block).
fn captured() -> Vec<(String, String, String)> {
    let mut files = vec![repo("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let Some(command) = line
                .strip_prefix("<!-- captured: ")
                .and_then(|l| l.strip_suffix(" -->"))
            else {
                continue;
            };
            assert_eq!(
                lines.next(),
                Some("```text"),
                "{}: {command}",
                file.display()
            );
            let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            found.push((name, command.to_string(), block.join("\n")));
        }
    }
    found
}

/// What may differ between two runs of a captured command. A demo is a race in real time: the
/// seed decides its settings (the banner, compared exactly), but what the machine's clock does
/// decides the figures: whether an item due at the last second is made before generation stops,
/// which channel came first (CI, running other tests beside it, once saw a poll beat a delayed
/// webhook), the delays and the requests. So past the banner a figure is compared by place (the
/// same lines and labels, a number where a number was); ports differ everywhere; alignment
/// follows the widths, so runs of spaces count as one.
fn normalized(output: &str) -> Vec<String> {
    let mut in_banner = true;
    output
        .trim_end()
        .lines()
        .map(|line| {
            in_banner &= !line.trim().is_empty();
            let words: Vec<&str> = line.split_whitespace().collect();
            let mut out = Vec::with_capacity(words.len());
            for w in &words {
                // "(over)" marks a projection beyond Polar's limit: a judgment of the figures.
                if !in_banner && *w == "(over)" {
                    continue;
                }
                if let Some(at) = w.find("127.0.0.1:") {
                    let rest = &w[at + "127.0.0.1:".len()..];
                    let tail = rest.trim_start_matches(|c: char| c.is_ascii_digit());
                    out.push(format!("{}127.0.0.1:PORT{tail}", &w[..at]));
                } else if !in_banner && is_figure(w) {
                    out.push("N".to_string());
                } else if out.last().is_some_and(|p| p == "N") {
                    // A counted noun follows its figure in number: "1 delivery", "2 deliveries".
                    out.push(plural(w));
                } else {
                    out.push(w.to_string());
                }
            }
            out.join(" ")
        })
        .collect()
}

/// `word` in the plural where the plural changes its ending (`delivery` → `deliveries`,
/// `entity` → `entities`), so a figure's noun compares whatever the figure was.
fn plural(word: &str) -> String {
    let (stem, tail) = word.split_at(word.trim_end_matches([',', ';', ':', ')', '.']).len());
    match stem.strip_suffix('y') {
        Some(root) if root.len() > 2 && root.chars().all(char::is_alphabetic) => {
            format!("{root}ies{tail}")
        }
        _ => word.to_string(),
    }
}

/// `7`, `5.92`, `(9.80`, `12,`, `3/6`, `98.5%`, `50s`, `24,037`, `(4,320`, `–`: a figure a race
/// measures (or projects from what it measured).
fn is_figure(word: &str) -> bool {
    // A figure with nothing to measure in this run (no entity a channel saw first) prints "–".
    if word == "–" {
        return true;
    }
    let w = word
        .trim_start_matches('(')
        .trim_end_matches([',', ')', ';', '%'])
        .trim_end_matches('s')
        .replace(',', "");
    !w.is_empty() && w.split('/').all(|n| n.parse::<f64>().is_ok())
}

/// Every captured output in the docs is what its command prints today: regenerate them with
/// `scripts/capture-docs.py` when a change moves them.
#[test]
fn captured_outputs_are_what_the_commands_print_today() {
    let blocks = captured();
    assert!(!blocks.is_empty(), "no captured output in the docs");
    let mut commands: Vec<String> = blocks.iter().map(|(_, c, _)| c.clone()).collect();
    commands.sort();
    commands.dedup();
    let runs: Vec<_> = commands
        .into_iter()
        .map(|command| {
            std::thread::spawn(move || {
                let args: Vec<&str> = command.split_whitespace().skip(1).collect();
                let out = Command::new(env!("CARGO_BIN_EXE_hookrace"))
                    .args(&args)
                    .current_dir(repo(""))
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{command}: {out:?}");
                (command, String::from_utf8(out.stdout).unwrap())
            })
        })
        .collect();
    let printed: std::collections::HashMap<String, String> =
        runs.into_iter().map(|r| r.join().unwrap()).collect();
    for (file, command, block) in blocks {
        let (want, got) = (normalized(&block), normalized(&printed[&command]));
        // A loaded machine may skip a progress tick: the lines must be there, not all of them.
        let is_progress = |l: &String| l.starts_with("N webhook N seen,");
        assert_eq!(
            want.iter().any(is_progress),
            got.iter().any(is_progress),
            "{file}: `{command}` shows progress lines in one and not the other"
        );
        let want: Vec<String> = want.into_iter().filter(|l| !is_progress(l)).collect();
        let got: Vec<String> = got.into_iter().filter(|l| !is_progress(l)).collect();
        if let Some(i) = (0..want.len().max(got.len())).find(|&i| want.get(i) != got.get(i)) {
            panic!(
                "{file}: the output of `{command}` has changed (run scripts/capture-docs.py):\n\
                 line {}: the doc shows {:?}\n         the command printed {:?}",
                i + 1,
                want.get(i),
                got.get(i)
            );
        }
    }
}
