//! One entity's journey can be followed in the real binary's log: every line about it carries
//! its key in the span of the step that wrote it (`docs/architecture.md`).

use crate::common;

use std::time::Duration;

use common::{SECRET, binary, exercise};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_entity_is_followed_through_the_log_by_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = binary::write_config(dir.path());
    let binary::Started {
        mut child,
        webhook_url,
        log,
    } = binary::start(binary::hookrace(), &config);
    let http = hookrace::http::plain_client();
    let res = binary::post_signed(&http, &webhook_url, SECRET, exercise(1, "followed-1"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The fetcher tries the data (user 1 has no token here: it gives up, saying so in its span).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(child.wait().unwrap().success());
    let lines = log.join().unwrap();
    let key = "EXERCISE/1/followed-1";
    let about: Vec<&String> = lines.iter().filter(|l| l.contains(key)).collect();
    assert!(
        about
            .iter()
            .any(|l| l.contains(&format!("delivery{{entity={key}}}"))),
        "the delivery's line in its span:\n{lines:#?}"
    );
    assert!(
        about
            .iter()
            .any(|l| l.contains(&format!("fetch{{entity={key}"))),
        "the fetch's line in its span:\n{lines:#?}"
    );
}

/// The first log line of `hookrace ARGS sim` (which logs as it starts listening), with its
/// stderr a file; `journal` sets `$JOURNAL_STREAM` to that file's `DEV:INODE`, as systemd does
/// for a service whose stderr is the journal.
fn first_log_line(args: &[&str], journal: bool, env: &[(&str, &str)]) -> String {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stderr");
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let mut cmd = binary::hookrace();
    cmd.args(args)
        .args(["sim", "--listen", "127.0.0.1:0", "--users", "0"])
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(file);
    if journal {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        let text = std::fs::read_to_string(&path).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains("simulator listening")) {
            break line.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no log line: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    line
}

#[test]
fn the_log_takes_the_shape_its_reader_expects() {
    // For a log shipper: one JSON object per line.
    let line = first_log_line(&["--log-format", "json"], false, &[]);
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["level"], "INFO", "{line}");
    assert_eq!(v["message"], "AccessLink simulator listening", "{line}");
    assert!(v["timestamp"].is_string(), "{line}");
    // Under journald: the priority first (6 is info), no timestamp of its own, no colour.
    let line = first_log_line(&[], true, &[]);
    assert!(line.starts_with("<6>"), "{line}");
    assert!(!line.contains("Z "), "no timestamp: {line}");
    assert!(!line.contains('\u{1b}'), "{line}");
    // A JOURNAL_STREAM that is not our stderr (a child that redirected it) is ignored.
    let line = first_log_line(&[], false, &[("JOURNAL_STREAM", "1:1")]);
    assert!(!line.starts_with('<'), "{line}");
    // Colour: never on a file unless asked, and --color never wins over a request for it.
    assert!(!first_log_line(&[], false, &[]).contains('\u{1b}'));
    assert!(first_log_line(&["--color", "always"], false, &[]).contains('\u{1b}'));
    assert!(!first_log_line(&["--color", "never"], false, &[]).contains('\u{1b}'));
}
