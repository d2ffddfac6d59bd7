//! A full disk slows hookrace down; it never wedges it behind a healthy face. On an 8 MB tmpfs:
//! while the disk is full deliveries get 500 (never a 200 for data not stored); a failed commit
//! makes the store report itself unhealthy (`/healthz` 503 naming it, so the systemd watchdog
//! restarts the daemon), because sled's write error is sticky: before the fix `/healthz` said ok
//! the whole time while every delivery got 500, even after space came back. A stop after the
//! error still exits cleanly, and the restarted daemon on the same store takes deliveries again.
//!
//! Mounting a tmpfs needs root (CI runs as root and sets `HOOKRACE_REQUIRE_MOUNT=1`, which turns a
//! refused mount into a failure); elsewhere the test says it was skipped.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{exercise, spawn_with, test_config};

/// A tmpfs of `size` mounted at `at`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok && std::env::var_os("HOOKRACE_REQUIRE_MOUNT").is_some() {
            panic!("HOOKRACE_REQUIRE_MOUNT is set but a tmpfs could not be mounted");
        }
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: sled's flusher thread may still hold a file for a moment.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system at `dir` with one file, leaving nothing free.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.write_all(&[0u8; 512]);
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_store_unhealthy_and_a_restart_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mnt) = Tmpfs::mount(&dir.path().join("mnt"), "8m") else {
        eprintln!("skipped: a tmpfs could not be mounted (the test needs root)");
        return;
    };
    let store = mnt.0.join("store");
    let app = spawn_with(test_config(&store)).await;
    assert_eq!(app.deliver(&exercise(1, "before")).await.status(), 200);
    let healthz = |app: &common::App| {
        let (http, url) = (app.http.clone(), format!("{}/healthz", app.admin_base));
        async move {
            let res = http.get(url).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    assert_eq!(healthz(&app).await.0, 200);

    let filler = fill(&mnt.0);
    let mut refused = 0;
    for i in 0..200 {
        let status = app
            .deliver(&exercise(2, &format!("full-{i}")))
            .await
            .status();
        assert!(status == 200 || status == 500, "{status}");
        if status == 500 {
            refused += 1;
            break;
        }
    }
    assert_eq!(refused, 1, "a full disk refuses deliveries (500)");
    let (status, text) = healthz(&app).await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("store unhealthy") && text.contains("restart"),
        "{text}"
    );

    // Space comes back: the open store stays broken (sled's error is sticky), and says so.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(healthz(&app).await.0, 503);

    // A stop after the error still ends, with a clear message (the binary exits 1 with it), and
    // the restarted daemon on the same store recovers.
    app.shutdown.cancel();
    let stopped = app.running.wait().await;
    let message = format!(
        "{:#}",
        stopped.expect_err("the final commit cannot succeed")
    );
    assert!(
        message.contains("final commit") && message.contains("No space left"),
        "{message}"
    );
    let app = spawn_with(test_config(&store)).await;
    assert_eq!(healthz(&app).await.0, 200);
    assert_eq!(app.deliver(&exercise(3, "after")).await.status(), 200);
    let s = app.status().await;
    assert!(s["entities"]["total"].as_u64().unwrap() >= 2, "{s}");
    app.stop().await;
}
