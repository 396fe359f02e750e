//! Configuration files as the binary loads them: each kind of mistake is a
//! startup error (exit 2) naming the key; good files take effect.

mod cli_support;

use cli_support::Sandbox;

/// Runs `maintain` (which creates the database) and then `stats` with
/// `--config <file>`, and returns the first failure or the stats.
fn stats_with(sb: &Sandbox, name: &str, content: &str) -> cli_support::Out {
    let cfg = sb.write(name, content);
    let made = sb.run(&["--config", cfg.to_str().unwrap(), "maintain"]);
    if made.code != 0 {
        return made;
    }
    sb.run(&["--config", cfg.to_str().unwrap(), "stats"])
}

/// `command` run as `maintain` (which creates the database), then as
/// `stats`, whose outcome is returned.
fn created_then_stats(
    sb: &Sandbox,
    command: impl Fn(&str) -> std::process::Command,
) -> cli_support::Out {
    sb.run_with(command("maintain"), None).ok();
    sb.run_with(command("stats"), None)
}

#[track_caller]
fn refused(sb: &Sandbox, name: &str, content: &str, key: &str, reason: &str) {
    let out = stats_with(sb, name, content).fails(2);
    assert!(
        out.stderr.contains(&format!("`{key}`")),
        "error does not name {key}:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(reason),
        "error does not say {reason:?}:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(name),
        "error does not name the file:\n{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn each_kind_of_mistake_names_its_key() {
    let sb = Sandbox::new();
    let db = sb.path("d/m.db");
    let db = db.display();
    refused(
        &sb,
        "a.yaml",
        "metrix:\n  enabled: true\n",
        "metrix",
        "unknown key",
    );
    refused(
        &sb,
        "b.yaml",
        "metrics:\n  retention:\n    raw: 2h\n    weekly: 30d\n",
        "metrics.retention.weekly",
        "unknown key",
    );
    refused(
        &sb,
        "c.yaml",
        "collectors:\n  proxmox:\n    instances:\n      - name: pve1\n        adress: x\n",
        "collectors.proxmox.instances[0].adress",
        "unknown key",
    );
    refused(
        &sb,
        "d.yaml",
        "metrics:\n  retention:\n    hourly: a week\n",
        "metrics.retention.hourly",
        "not a duration",
    );
    refused(
        &sb,
        "e.yaml",
        "metrics:\n  rollup_interval: 300\n",
        "metrics.rollup_interval",
        "no unit",
    );
    refused(
        &sb,
        "f.yaml",
        &format!("metrics:\n  database_path: {db}\n  retention:\n    raw: 5m\n"),
        "metrics.retention.raw",
        "rollup interval",
    );
    refused(
        &sb,
        "g.yaml",
        &format!("metrics:\n  database_path: {db}\n  retention:\n    minute: 30m\n"),
        "metrics.retention.minute",
        "1h",
    );
    refused(
        &sb,
        "h.yaml",
        &format!("metrics:\n  database_path: {db}\n  write_buffer: 0\n"),
        "metrics.write_buffer",
        "between 1 and",
    );
    refused(
        &sb,
        "i.yaml",
        &format!("metrics:\n  database_path: {db}\n  flush_interval: 0s\n"),
        "metrics.flush_interval",
        "between",
    );
    refused(
        &sb,
        "j.json",
        &format!(
            r#"{{"metrics": {{"database_path": "{db}"}}, "server": {{"listen": "everywhere"}}}}"#
        ),
        "server.listen",
        "host:port",
    );
    refused(
        &sb,
        "k.yaml",
        &format!("metrics:\n  database_path: {db}\ncollectors:\n  host:\n    interval: 500ms\n"),
        "collectors.host.interval",
        "between 1s",
    );
    refused(
        &sb,
        "l.yaml",
        &format!(
            "metrics:\n  database_path: {db}\ncollectors:\n  proxmox:\n    enabled: true\n    instances:\n      - {{name: pve1, url: \"pve1:8006\", token_id: \"root@pam!p\", token_secret: s}}\n"
        ),
        "collectors.proxmox.instances[0].url",
        "https://",
    );
    // An enabled cluster meets the collector's own rules at load (one set
    // of rules, config::rules), not only when it starts polling.
    refused(
        &sb,
        "l2.yaml",
        &format!(
            "metrics:\n  database_path: {db}\ncollectors:\n  proxmox:\n    enabled: true\n    instances:\n      - {{name: pve1, url: \"https://pve1:8006/?x=1\", token_id: \"root@pam!p\", token_secret: s}}\n"
        ),
        "collectors.proxmox.instances[0].url",
        "must not have a query",
    );
    refused(
        &sb,
        "m.yaml",
        "server:\n  api_token: ${PM_CFG_TEST_UNSET}\n",
        "server.api_token",
        "PM_CFG_TEST_UNSET",
    );
    refused(&sb, "n.yaml", "metrics: [1, 2\n", "metrics", "");
    refused(&sb, "o.json", "{\"metrics\": ", "(file)", "JSON");
    assert!(
        !sb.default_db().exists(),
        "a refused config must not create the store"
    );
}

#[test]
fn a_database_directory_that_cannot_be_created_is_a_config_error() {
    let sb = Sandbox::new();
    let blocker = sb.write("blocker", "a plain file where a directory should be");
    let path = blocker.join("sub/metrics.db");
    let content = format!("metrics:\n  database_path: {}\n", path.display());
    refused(
        &sb,
        "p.yaml",
        &content,
        "metrics.database_path",
        "cannot create",
    );
    // The same through --db.
    let out = sb
        .run(&["--db", path.to_str().unwrap(), "maintain"])
        .fails(2);
    assert!(
        out.stderr.contains("metrics.database_path"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_file_itself_must_exist_and_say_its_format() {
    let sb = Sandbox::new();
    let out = sb.run(&["--config", "missing.yaml", "stats"]).fails(2);
    assert!(out.stderr.contains("missing.yaml"), "{}", out.stderr);
    let cfg = sb.write("c.toml", "[metrics]\n");
    let out = sb
        .run(&["--config", cfg.to_str().unwrap(), "stats"])
        .fails(2);
    assert!(out.stderr.contains(".yaml"), "{}", out.stderr);
}

#[test]
fn no_file_means_defaults_under_pulse_data_dir() {
    let sb = Sandbox::new();
    let s = created_then_stats(&sb, |cmd| sb.command(&[cmd]))
        .ok()
        .json();
    assert_eq!(s["dbPath"], "./data/metrics.db");
    assert!(sb.default_db().exists());

    let elsewhere = sb.path("elsewhere");
    let s = created_then_stats(&sb, |cmd| {
        let mut c = sb.command(&[cmd]);
        c.env("PULSE_DATA_DIR", &elsewhere);
        c
    })
    .ok()
    .json();
    assert_eq!(
        s["dbPath"].as_str().unwrap(),
        elsewhere.join("metrics.db").to_str().unwrap()
    );
}

#[test]
fn variables_are_expanded_in_yaml_and_json() {
    let sb = Sandbox::new();
    let dir = sb.path("from-env");
    for (name, content) in [
        (
            "v.yaml",
            "metrics:\n  database_path: ${PM_CFG_DIR}/a.db\n  write_buffer: ${PM_CFG_BUF}\n  retention:\n    raw: \"${PM_CFG_RAW}\"\n",
        ),
        (
            "v.json",
            r#"{"metrics": {"database_path": "${PM_CFG_DIR}/b.db", "write_buffer": "${PM_CFG_BUF}", "retention": {"raw": "${PM_CFG_RAW}"}}}"#,
        ),
    ] {
        let cfg = sb.write(name, content);
        let s = created_then_stats(&sb, |cmd| {
            let mut c = sb.command(&["--config", cfg.to_str().unwrap(), cmd]);
            c.env("PM_CFG_DIR", &dir)
                .env("PM_CFG_BUF", "250")
                .env("PM_CFG_RAW", "3h");
            c
        })
        .ok()
        .json();
        let want = dir.join(if name.ends_with("yaml") {
            "a.db"
        } else {
            "b.db"
        });
        assert_eq!(s["dbPath"].as_str().unwrap(), want.to_str().unwrap());
        assert!(want.exists());
    }
    // ${PULSE_DATA_DIR} defaults to ./data when unset.
    let s = stats_with(
        &sb,
        "w.yaml",
        "metrics:\n  database_path: ${PULSE_DATA_DIR}/x.db\n",
    )
    .ok()
    .json();
    assert_eq!(s["dbPath"], "./data/x.db");
    assert!(sb.path("data/x.db").exists());
}

#[test]
fn the_config_file_can_come_from_the_environment_and_db_overrides_it() {
    let sb = Sandbox::new();
    let cfg = sb.write(
        "env.yml",
        format!(
            "metrics:\n  database_path: {}\n",
            sb.path("cfg.db").display()
        ),
    );
    let s = created_then_stats(&sb, |cmd| {
        let mut c = sb.command(&[cmd]);
        c.env("PULSE_METRICS_CONFIG", &cfg);
        c
    })
    .ok()
    .json();
    assert_eq!(
        s["dbPath"].as_str().unwrap(),
        sb.path("cfg.db").to_str().unwrap()
    );

    let other = sb.path("other.db");
    let s = created_then_stats(&sb, |cmd| {
        let mut c = sb.command(&["--db", other.to_str().unwrap(), cmd]);
        c.env("PULSE_METRICS_CONFIG", &cfg);
        c
    })
    .ok()
    .json();
    assert_eq!(s["dbPath"].as_str().unwrap(), other.to_str().unwrap());

    // A bad file named by the environment is refused like one given by flag.
    let bad = sb.write("bad.yaml", "nonsense: 1\n");
    let mut c = sb.command(&["stats"]);
    c.env("PULSE_METRICS_CONFIG", &bad);
    let out = sb.run_with(c, None).fails(2);
    assert!(out.stderr.contains("`nonsense`"), "{}", out.stderr);
}

#[test]
fn a_full_contract_example_loads() {
    let sb = Sandbox::new();
    let content = r#"
metrics:
  enabled: true
  database_path: "${PULSE_DATA_DIR}/metrics.db"
  retention: { raw: 2h, minute: 24h, hourly: 168h, daily: 2160h }
  write_buffer: 100        # pending points that trigger a flush
  flush_interval: 5s       # longest a written point waits before it is flushed
  rollup_interval: 5m
  retention_interval: 1h   # pruning
  vacuum_interval: 168h    # space reclaim + optimize
server:
  listen: 127.0.0.1:7656
  api_token: ""            # when set, every /api route needs it
collectors:
  host: { enabled: true, interval: 5s }
  proxmox:
    enabled: false
    interval: 10s
    instances:             # one entry per cluster
      - { name: pve1, url: "https://pve1:8006", token_id: "root@pam!pulse", token_secret: "${PVE_TOKEN}", fingerprint: "" }
"#;
    let cfg = sb.write("pulse-metrics.yaml", content);
    let s = created_then_stats(&sb, |cmd| {
        let mut c = sb.command(&["--config", cfg.to_str().unwrap(), cmd]);
        c.env("PVE_TOKEN", "secret");
        c
    })
    .ok()
    .json();
    assert_eq!(s["dbPath"], "./data/metrics.db");
    // Without PVE_TOKEN the reference cannot be expanded: named, refused.
    let out = sb
        .run(&["--config", cfg.to_str().unwrap(), "stats"])
        .fails(2);
    assert!(
        out.stderr
            .contains("collectors.proxmox.instances[0].token_secret")
            && out.stderr.contains("PVE_TOKEN"),
        "{}",
        out.stderr
    );
}
