//! The web UI in a real browser: runs `ui-tests/run.mjs` (node's test runner,
//! playwright-core driving Debian's headless Chromium) against this build's
//! `pulse-metrics` binary on a temporary database.
//!
//! Needs `node`, Chromium (`/usr/bin/chromium`, or `$CHROMIUM`) and
//! `ui-tests/node_modules` (`npm ci --prefix ui-tests`). When one is missing
//! the test fails under CI (`$CI` set) and is skipped loudly elsewhere.
//! Screenshots land in `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn node_version() -> Option<String> {
    let out = Command::new("node").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn web_ui_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = root.join("ui-tests");
    let mut missing = Vec::new();
    let node = node_version();
    if node.is_none() {
        missing.push("node (apt-get install nodejs npm)".to_string());
    }
    let browser = chromium();
    if browser.is_none() {
        missing.push(
            "Chromium at /usr/bin/chromium or $CHROMIUM (apt-get install chromium chromium-driver)"
                .into(),
        );
    }
    if !tests.join("node_modules/playwright-core").is_dir() {
        missing.push("ui-tests/node_modules (npm ci --prefix ui-tests)".into());
    }
    if !missing.is_empty() {
        let what = missing.join("; ");
        if std::env::var_os("CI").is_some() {
            panic!("the browser tests cannot run in CI: missing {what}. .ci/run installs them.");
        }
        eprintln!();
        eprintln!("==================================================================");
        eprintln!("SKIP web_ui_in_headless_chromium: missing {what}");
        eprintln!("(under CI this is a failure; `bash .ci/run` installs them)");
        eprintln!("==================================================================");
        eprintln!();
        return;
    }
    let browser = browser.expect("checked above");
    eprintln!(
        "running ui-tests/run.mjs with node {} and {}",
        node.unwrap_or_default(),
        browser.display()
    );
    let output = Command::new("node")
        .arg("--test-reporter=spec")
        .arg("run.mjs")
        .current_dir(&tests)
        .env("PULSE_METRICS_BIN", env!("CARGO_BIN_EXE_pulse-metrics"))
        .env("CHROMIUM", &browser)
        .env("UI_SCREENSHOTS", root.join("target").join("ui-screenshots"))
        .output()
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the browser tests failed ({}): see the output above and target/ui-screenshots/",
        output.status
    );
}
