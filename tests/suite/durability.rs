//! A 200 means the delivery reached the device: the real binary runs under `strace`, which delays
//! every `fdatasync` by 1.5 s, and a delivery's 200 must not arrive before that sync returned.
//!
//! sled's own `flush()` ends in `sync_file_range` on Linux, which survives a killed process but not
//! a power cut; without the group commit's `fdatasync` this delivery is answered in milliseconds.
//! Needs `strace` (Debian's package; `.ci/run` installs it and sets `HOOKRACE_REQUIRE_STRACE=1`).

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{SECRET, binary, exercise};

/// How long each `fdatasync` is held back.
const SYNC_DELAY: Duration = Duration::from_millis(1500);

fn strace_available() -> bool {
    let found = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var_os("HOOKRACE_REQUIRE_STRACE").is_some() {
        panic!("HOOKRACE_REQUIRE_STRACE is set but strace is not installed");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_waits_for_the_fdatasync_of_its_commit() {
    if !strace_available() {
        eprintln!("skipped: strace is not installed (apt-get install strace)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = binary::write_config(dir.path());
    let delay_us = SYNC_DELAY.as_micros().to_string();
    let mut strace = Command::new("strace");
    strace
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=fdatasync",
            "-e",
        ])
        .arg(format!("inject=fdatasync:delay_exit={delay_us}"))
        .arg(env!("CARGO_BIN_EXE_hookrace"));
    let binary::Started {
        mut child,
        webhook_url: url,
        ..
    } = binary::start(strace, &config);

    let http = hookrace::http::plain_client();
    for id in ["sync-1", "sync-2"] {
        let body = exercise(1, id);
        let sent = Instant::now();
        let res = binary::post_signed(&http, &url, SECRET, body)
            .await
            .unwrap();
        let took = sent.elapsed();
        assert_eq!(res.status(), 200);
        // A lower bound only: the answer may come later on a loaded machine, never sooner.
        assert!(
            took >= SYNC_DELAY - Duration::from_millis(100),
            "{id} was answered 200 after {took:?}, before its fdatasync (held {SYNC_DELAY:?}) returned"
        );
    }
    // strace holds SIGTERM back while it runs a command: stop hookrace itself, its only child.
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let hookrace = std::fs::read_to_string(&children).expect("strace's child list");
    let pid = hookrace
        .split_whitespace()
        .next()
        .expect("hookrace runs under strace");
    let _ = Command::new("kill").args(["-TERM", pid]).status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "hookrace under strace exited with {status}"
    );
}
