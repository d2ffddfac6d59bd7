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
