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
fn every_config_problem_is_reported_with_exit_code_1() {
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
        assert_eq!(out.status.code(), Some(1), "{cmd}: {out:?}");
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
fn a_missing_configuration_fails_with_1_and_bad_usage_exits_64() {
    let out = hookrace()
        .args(["check-config", "-c", "/nonexistent/hookrace.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/hookrace.toml"));
    let out = hookrace().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// A command run without `-c` in a directory of its own: no `$HOOKRACE_CONFIG`, and (on this
/// machine) no `/etc/hookrace/config.toml`, so the embedded default is used and said to be.
fn bare(dir: &std::path::Path) -> Command {
    let mut cmd = hookrace();
    cmd.current_dir(dir)
        .env_remove("HOOKRACE_CONFIG")
        .env_remove("HOOKRACE_CLIENT_SECRET")
        .env_remove("CREDENTIALS_DIRECTORY");
    cmd
}

/// Whether this machine has a system configuration (then a test of the rule's later steps is
/// skipped, and says so).
fn system_config_exists() -> bool {
    let exists = std::path::Path::new("/etc/hookrace/config.toml").exists();
    if exists {
        eprintln!("skipped: /etc/hookrace/config.toml exists on this machine");
    }
    exists
}

#[test]
fn a_read_only_command_never_creates_a_store_and_says_which_configuration_it_used() {
    if system_config_exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for args in [&["users", "list"][..], &["report"][..]] {
        let out = bare(dir.path()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("embedded default"), "{args:?}: {err}");
        assert!(err.contains("there is no store at"), "{args:?}: {err}");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "{args:?} created something in the current directory"
        );
    }
    // A store named directly is not created either.
    let missing = dir.path().join("race-data");
    let out = bare(dir.path())
        .args(["report", "--store"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!missing.exists());
}

#[test]
fn the_configuration_comes_from_c_then_hookrace_config_and_a_stray_one_is_named() {
    if system_config_exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[webhook]\nlisten = \"nowhere\"\n").unwrap();
    // $HOOKRACE_CONFIG is read when -c is not given, and said to be.
    let out = bare(dir.path())
        .arg("check-config")
        .env("HOOKRACE_CONFIG", &broken)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("from $HOOKRACE_CONFIG"), "{err}");
    assert!(err.contains("`webhook.listen`"), "{err}");
    // -c wins over it.
    let out = bare(dir.path())
        .args([
            "check-config",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .env("HOOKRACE_CONFIG", &broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A broken ./config.toml is not silently passed over: the user is told it was not read.
    std::fs::write(dir.path().join("config.toml"), "not toml [").unwrap();
    let out = bare(dir.path()).arg("check-config").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("./config.toml is not read unless named"),
        "{err}"
    );
}

/// A configuration for real AccessLink in `dir` with no secret in it (the client secret must
/// come from elsewhere), as docs/deploy.md writes one.
fn config_without_secrets(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[accesslink]\nclient_id = \"c\"\n[store]\npath = {:?}\n[simulator]\nenabled = false\n",
            dir.join("data")
        ),
    )
    .unwrap();
    config
}

#[test]
fn the_cli_reads_the_secrets_the_unit_hands_to_the_service_beside_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_without_secrets(dir.path());
    let check = || {
        bare(dir.path())
            .args(["check-config", "-c"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("client_secret"));
    // The file docs/deploy.md installs for LoadCredential=client_secret:/etc/hookrace/client_secret.
    std::fs::write(dir.path().join("client_secret"), "from-the-file\n").unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn a_webhook_command_on_the_simulator_configuration_says_what_to_start() {
    if system_config_exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The embedded configuration's simulator port (7070) must be free for the message to show.
    if std::net::TcpStream::connect("127.0.0.1:7070").is_ok() {
        eprintln!("skipped: something listens on 127.0.0.1:7070");
        return;
    }
    let out = bare(dir.path()).args(["webhook", "list"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("start `hookrace run`"), "{err}");
    assert!(err.contains("-c"), "{err}");
}

#[test]
fn every_option_has_a_description() {
    for cmd in [
        &["run"][..],
        &["report"],
        &["check-config"],
        &["users", "list"],
        &["users", "remove"],
        &["webhook", "create"],
        &["webhook", "update"],
        &["webhook", "delete"],
        &["notify", "test"],
        &["sim"],
        &["demo"],
        &["whatif"],
    ] {
        let out = hookrace().args(cmd).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        // clap prints a description beside its option, or (when long) on the lines below it,
        // indented deeper; an option without one stands alone.
        let lines: Vec<&str> = help.lines().collect();
        let indent = |l: &str| l.len() - l.trim_start().len();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            // Options start `-x` or `--x`; `- value` lines list an option's possible values.
            let option = t.starts_with("--")
                || (t.starts_with('-') && t[1..].starts_with(|c: char| c.is_ascii_alphabetic()));
            if !option || t.contains("  ") {
                continue;
            }
            let described_below = lines.get(i + 1).is_some_and(|next| {
                indent(next) > indent(line)
                    && !next.trim().is_empty()
                    && !next.trim().starts_with('-')
            });
            assert!(
                described_below,
                "{cmd:?}: {t:?} has no description:\n{help}"
            );
        }
    }
}

/// `demo --format json` keeps stdout for the report: the addresses and the progress go to stderr;
/// `--keep-open` keeps the dashboard up after the report until Ctrl-C; and `report --store` on the
/// kept store shows the demo's settings, not a configuration's.
#[test]
fn a_json_demo_talks_on_stderr_stays_open_and_its_store_keeps_its_settings() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("race");
    let mut child = hookrace()
        .args([
            "demo",
            "--duration",
            "2s",
            "--poll-every",
            "1s",
            "--seed",
            "1",
            "--format",
            "json",
            "--keep-open",
            "--store",
        ])
        .arg(&store)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let mut dashboard = None;
    let mut said = Vec::new();
    // Read stderr on a thread to the end (a closed pipe would fail the demo's last lines).
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    for line in rx.iter() {
        if let Some(url) = line.trim().strip_prefix("live dashboard") {
            dashboard = Some(url.trim().to_string());
        }
        let open = line.contains("Ctrl-C ends");
        said.push(line);
        if open {
            break;
        }
    }
    let url = dashboard.unwrap_or_else(|| panic!("no dashboard address on stderr: {said:?}"));
    // The report is out, and the dashboard still answers.
    let page = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&page.stdout), "200", "{url}");
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{status:?}: {said:?} {:?}",
        rx.try_iter().collect::<Vec<_>>()
    );
    let report: serde_json::Value = serde_json::from_str(&reader.join().unwrap())
        .unwrap_or_else(|e| panic!("stdout is not one JSON report: {e}"));
    assert_eq!(report["settings"]["poll_interval_s"], 1.0);
    // Read again from the kept store: the race's 1 s, not the embedded configuration's 10 s.
    let out = hookrace()
        .args(["report", "--format", "json", "--store"])
        .arg(&store)
        .env_remove("HOOKRACE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["settings"]["poll_interval_s"], 1.0);
    // The same report, not one rebuilt later: the same window (it used to grow with the clock),
    // the simulator's line and the like-for-like comparison kept.
    assert_eq!(again, report);
}

/// `sudo hookrace users list` on the service's store (owned by its dynamic user) must not open
/// it: files root wrote there would be files the service cannot write. It asks the daemon.
#[test]
fn a_store_of_another_user_is_left_to_the_daemon() {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    if me != 0 {
        eprintln!("skipped: giving a directory to another user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    std::fs::create_dir(&store).unwrap();
    // 65534: nobody, standing in for the service's dynamic user.
    let chown = std::process::Command::new("chown")
        .args(["65534:65534"])
        .arg(&store)
        .status()
        .unwrap();
    assert!(chown.success());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[accesslink]\nclient_id = \"c\"\nclient_secret = \"s\"\n[store]\npath = {store:?}\n\
             [admin]\nlisten = \"127.0.0.1:1\"\n"
        ),
    )
    .unwrap();
    let out = hookrace()
        .args(["users", "list", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("admin listener"), "{err}");
    assert!(
        std::fs::read_dir(&store).unwrap().next().is_none(),
        "the command wrote into another user's store"
    );
}

/// A secret others may read is named by `check-config` (still valid: a warning): the
/// configuration file when it holds one inline, and a secret file beside it. The ntfy token and
/// users' access tokens have environment and credential forms, so no secret need sit in the
/// configuration file; a sink over plain HTTP to another host is warned about; absurd notify
/// ceilings are refused. Before the fix all of this was accepted without a word.
#[test]
fn check_config_names_secrets_others_can_read_and_refuses_absurd_ceilings() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let write = |text: &str, mode: u32| {
        std::fs::write(&config, text).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let check = || {
        let out = bare(dir.path())
            .args(["check-config", "-c"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let store = format!(
        "[simulator]\nenabled = true\n[store]\npath = {:?}\n",
        dir.path().join("data")
    );
    // A token inline in a world-readable file.
    write(
        &format!(
            "{store}[[notify]]\nkind = \"ntfy\"\nurl = \"http://ntfy.example.org/t\"\ntoken = \"tk_inline\"\n"
        ),
        0o644,
    );
    let (code, err) = check();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("holds a secret and is readable by others (mode 644)"),
        "{err}"
    );
    assert!(err.contains("over plain HTTP"), "{err}");
    assert!(!err.contains("tk_inline"), "{err}");
    // The same token from a credential file beside the configuration, which is then secret-free.
    write(
        &format!(
            "{store}[[notify]]\nkind = \"ntfy\"\nurl = \"https://ntfy.example.org/t\"\n[[users]]\nuser_id = 475\n"
        ),
        0o644,
    );
    std::fs::write(dir.path().join("notify_ntfy_token"), "tk_file\n").unwrap();
    let (code, err) = check();
    assert_eq!(code, Some(1), "the user's token is missing: {err}");
    assert!(err.contains("HOOKRACE_USER_475_TOKEN"), "{err}");
    std::fs::write(dir.path().join("user_475_token"), "token-of-475\n").unwrap();
    let (code, err) = check();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("user_475_token is readable by others"),
        "{err}"
    );
    assert!(!err.contains("holds a secret"), "{err}");
    for f in ["user_475_token", "notify_ntfy_token"] {
        let p = dir.path().join(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (code, err) = check();
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
    // A secret file the environment names, readable by others: named too (it was not).
    let loose = dir.path().join("elsewhere").join("webhook_secret");
    std::fs::create_dir(loose.parent().unwrap()).unwrap();
    std::fs::write(&loose, "a-webhook-secret\n").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bare(dir.path())
        .args(["check-config", "-c"])
        .arg(&config)
        .env("HOOKRACE_WEBHOOK_SECRET_FILE", &loose)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("HOOKRACE_WEBHOOK_SECRET_FILE) is readable by others (mode 644)"),
        "{err}"
    );
    // Ceilings.
    write(
        &format!(
            "{store}[[notify]]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\ntimeout = \"100000h\"\ngive_up_after = \"1s\"\n"
        ),
        0o600,
    );
    let (code, err) = check();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("timeout") && err.contains("give_up_after"),
        "{err}"
    );
}

/// A what-if question that cannot be asked is a usage error (64), as every other bad argument
/// is; it exited 1 before.
#[test]
fn whatif_with_no_users_is_a_usage_error() {
    for args in [
        &["whatif", "--users", "0"][..],
        &["whatif", "--drop-rate", "2"][..],
    ] {
        let out = hookrace().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("must be"),
            "{out:?}"
        );
    }
}

/// The packaged template's placeholders (`your-client-id`, example.org addresses) pass as valid
/// but are named, so an operator does not go live with them (they passed silently before).
#[test]
fn check_config_names_the_templates_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    let out = bare(dir.path())
        .args(["check-config", "-c"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/deploy/config.toml"
        ))
        .env("HOOKRACE_CLIENT_SECRET", "a-secret")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for field in [
        "accesslink.client_id",
        "webhook.public_url",
        "accesslink.redirect_uri",
    ] {
        assert!(
            err.contains(&format!("`{field}`")) && err.contains("placeholder"),
            "{field}: {err}"
        );
    }
}

/// An empty secret file is named, with the fix (before, the error named neither).
#[test]
fn an_empty_secret_file_is_named_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_without_secrets(dir.path());
    let secret = dir.path().join("client_secret");
    std::fs::write(&secret, "\n").unwrap();
    let out = bare(dir.path())
        .args(["check-config", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the secret file {} ", secret.display()))
            && err.contains("is empty: write the secret into it"),
        "{err}"
    );
}

/// `demo --open` on a machine whose openers find no browser says so (before, an opener that
/// started and then failed, as xdg-open does without a desktop, left the person waiting).
#[test]
fn demo_open_without_a_browser_says_so() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for opener in ["xdg-open", "sensible-browser", "open"] {
        let path = bin.join(opener);
        std::fs::write(&path, "#!/bin/sh\nexit 3\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = bare(dir.path())
        .args(["demo", "--open", "--duration", "1s", "--format", "json"])
        .env("PATH", path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("no browser found to open http://127.0.0.1:"),
        "{err}"
    );
}

/// Completions and the man page come from the command line's own definition, so they name every
/// command; bash can load the script it prints; an unknown shell is a usage error.
#[test]
fn completions_and_the_man_page_are_generated_from_the_cli() {
    let run = |args: &[&str]| {
        let out = hookrace().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    for command in ["demo", "check-receiver", "whatif", "completions"] {
        assert!(bash.contains(command), "bash completion lacks {command}");
    }
    assert!(run(&["completions", "zsh"]).starts_with("#compdef hookrace"));
    assert!(run(&["completions", "fish"]).contains("complete -c hookrace"));
    let man = run(&["man"]);
    assert!(man.contains(".TH hookrace 1"), "{man}");
    assert!(
        man.contains("check\\-receiver"),
        "the man page lists the commands"
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hookrace.bash");
    std::fs::write(&script, &bash).unwrap();
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p hookrace",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&loaded.stdout).contains("-F _hookrace hookrace"),
        "{loaded:?}"
    );
    let out = hookrace().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "a usage error: {out:?}");
}

/// Every command's `--help` ends with an example, and every example is a command line the CLI
/// accepts (up to a pipe or a redirection; `sudo` aside).
#[test]
fn every_command_has_an_example_that_parses() {
    use clap::{CommandFactory, Parser};
    fn walk(cmd: &clap::Command, path: String, found: &mut Vec<(String, String)>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = format!("{path} {}", sub.get_name());
            let example = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            found.push((path.clone(), example));
            walk(sub, path, found);
        }
    }
    let mut found = Vec::new();
    walk(
        &hookrace::cli::Cli::command(),
        "hookrace".into(),
        &mut found,
    );
    assert!(found.len() > 20, "{found:?}");
    for (path, help) in found {
        let lines: Vec<&str> = help
            .strip_prefix("Example:\n")
            .unwrap_or_else(|| panic!("`{path} --help` has no example"))
            .lines()
            .collect();
        assert!(!lines.is_empty(), "{path}");
        for line in lines {
            let line = line.split(['|', '>', '#']).next().unwrap().trim();
            let line = line.strip_prefix("sudo ").unwrap_or(line);
            assert!(
                line.starts_with(&path),
                "`{path}`'s example runs another command: {line}"
            );
            let words = line.split_whitespace().map(|w| w.trim_matches('\''));
            if let Err(e) = hookrace::cli::Cli::try_parse_from(words) {
                panic!("`{path}`'s example does not parse: {line}\n{e}");
            }
        }
    }
}

/// The class's credentials file (`sim --class N --class-file F`) holds every student's secret
/// and tokens: it is its owner's only (0600), whatever the umask (it was written 0644).
#[test]
fn the_class_file_is_its_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("class.txt");
    let mut child = hookrace()
        .args([
            "sim",
            "--class",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--class-file",
        ])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !file.exists()
        || std::fs::read_to_string(&file)
            .unwrap_or_default()
            .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "no class file");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("student-01")
    );
}
