//! The binary itself: exit codes and what a user sees for a bad configuration.

use std::process::Command;

fn hookrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hookrace"))
}

#[test]
fn check_config_accepts_the_embedded_default_and_the_repository_file() {
    let out = hookrace().arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = hookrace()
        .args([
            "check-config",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn every_config_problem_is_reported_with_exit_code_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
        [webhook]
        listen = "everywhere"
        max_body = 1
        typo = true
        [admin]
        listen = "127.0.0.1:9999"
        token = "short"
        [poller]
        every = "often"
        cron = "* * * * * *"
        [simulator]
        enabled = false
        webhook_duplicate_rate = -1
        "#,
    )
    .unwrap();
    for cmd in ["check-config", "run"] {
        let out = hookrace()
            .args([cmd, "-c"])
            .arg(&path)
            .env_remove("HOOKRACE_CLIENT_SECRET")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{cmd}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in [
            "unknown key `webhook.typo`",
            "`webhook.listen`",
            "`webhook.max_body`",
            "`admin.token`",
            "`poller.every` and `poller.cron` are exclusive",
            "`simulator.webhook_duplicate_rate`",
            "`accesslink.client_id`",
            "`accesslink.client_secret`",
        ] {
            assert!(
                err.contains(needle),
                "{cmd}: {needle:?} missing from:\n{err}"
            );
        }
    }
}

#[test]
fn a_missing_file_and_bad_usage_exit_64() {
    let out = hookrace()
        .args(["check-config", "-c", "/nonexistent/hookrace.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/hookrace.toml"));
    let out = hookrace().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}
