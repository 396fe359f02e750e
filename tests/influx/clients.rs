//! Clients nobody here wrote: PyPI's `influxdb-client` on `/api/v2/write`
//! and curl on `/write`, stored by the generic mapping.

use super::*;
use std::process::Command;

fn python_client_installed() -> bool {
    Command::new("python3")
        .args(["-c", "import influxdb_client"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_influxdb_client_writes_to_v2() {
    if !require(
        "python3 with influxdb-client",
        python_client_installed(),
        "python3 -m pip install influxdb-client",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Service::with_token(dir.path()).await;
    let ts = pulse_metrics::model::now_ms() / 1000 - 60;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/influx/client.py");
    let base = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args([&base, TOKEN, "scripts", &ts.to_string()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "client.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = s.points().await;
    let ms = ts * 1000;
    assert_eq!(
        stored.get("room", "scripts:sensor=kitchen", "temperature"),
        [(ms, 21.5), (ms + 10_000, 22.5)]
    );
    assert_eq!(
        stored.get("room", "scripts:sensor=kitchen", "humidity"),
        [(ms, 40.0)]
    );
    assert_eq!(
        stored.get("room", "scripts:sensor=living room, north", "temperature"),
        [(ms, 19.25)]
    );
    assert_eq!(
        stored.get("ups", "scripts:host=nas", "load"),
        [(ms, 12.0), (ms + 10_000, 14.5)]
    );
    assert_eq!(stored.get("ups", "scripts:host=nas", "online"), [(ms, 1.0)]);
    // The string field is not a number: not stored.
    assert_eq!(stored.count(), 7, "{:?}", stored.keys());

    // A wrong token is refused, and the client says so.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/influx/client.py");
    let base = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args([&base, "wrong", "scripts", &ts.to_string()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_data_binary_to_v1() {
    let curl = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !require("curl", curl, "apt-get install curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Service::with_token(dir.path()).await;
    let ts = pulse_metrics::model::now_ms() / 1000 - 30;
    let file = dir.path().join("points.lp");
    std::fs::write(
        &file,
        format!(
            "# from a shell script\ndisk,host=nas,mount=/srv used_percent=71.5,inodes_used=1200i {ts}\nload,host=nas avg1=0.75 {ts}\n"
        ),
    )
    .unwrap();
    let url = s.url("/write?db=scripts&precision=s");
    let data = format!("@{}", file.display());
    let user = format!("curl:{TOKEN}");
    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || Command::new("curl").args(args).output().unwrap())
            .await
            .unwrap()
    };
    let out = run([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        &data,
        "-u",
        &user,
        &url,
    ]
    .map(String::from)
    .to_vec())
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204", "{out:?}");
    let stored = s.points().await;
    let ms = ts * 1000;
    assert_eq!(
        stored.get("disk", "scripts:host=nas,mount=/srv", "used_percent"),
        [(ms, 71.5)]
    );
    assert_eq!(
        stored.get("disk", "scripts:host=nas,mount=/srv", "inodes_used"),
        [(ms, 1200.0)]
    );
    assert_eq!(stored.get("load", "scripts:host=nas", "avg1"), [(ms, 0.75)]);

    // Without the token: 401 and nothing more stored.
    let out = run([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data-binary",
        &data,
        &url,
    ]
    .map(String::from)
    .to_vec())
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    assert_eq!(s.points().await.count(), 3);
    s.stop().await;
}
