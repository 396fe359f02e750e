//! Case 8: `/api/charts` over every series was built whole in memory
//! however large (119 MB for 12,750 series over 1h; 2.18 GB for 12 at
//! once). An answer over `server.max_answer_points` is now a 400 saying
//! what to do instead.

use super::{JSON, Sandbox, ago, get, points, request, service};

#[test]
fn a_chart_answer_over_the_cap_is_refused_with_advice() {
    let sb = Sandbox::new();
    let svc = service(&sb, "server:\n  max_answer_points: 1000\n", None);
    // 20 series x 60 one-second points = 1,200 points, a minute long.
    let t0 = ago(120);
    let ids: Vec<String> = (0..20).map(|i| format!("vm{i}")).collect();
    let mut list = Vec::new();
    for id in &ids {
        for s in 0..60 {
            list.push((id.as_str(), s as f64, t0 + s * 1000));
        }
    }
    let r = request(
        &svc,
        "POST",
        "/api/metrics-store/write?sync=true",
        &[JSON],
        &points(&list),
    );
    assert_eq!(r.status, 200, "{r:?}");

    let r = get(&svc, "/api/charts?range=1h");
    assert_eq!(r.status, 400, "{r:?}");
    let msg = r.json()["error"].as_str().unwrap().to_string();
    for needle in [
        "1200 points",
        "20 series",
        "server.max_answer_points",
        "add maxPoints (at most 50",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
    let window = format!("start={t0}&end={}", t0 + 60_000);
    // maxPoints that keeps the answer under the cap: answered.
    let r = get(&svc, &format!("/api/charts?{window}&maxPoints=30"));
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.json();
    assert_eq!(body["stats"]["pointCount"], 600, "{}", body["stats"]);
    assert_eq!(body["data"]["vm7"]["cpu"].as_array().unwrap().len(), 30);
    // maxPoints too generous to help: told how far to lower it.
    let r = get(&svc, &format!("/api/charts?{window}&maxPoints=500"));
    assert_eq!(r.status, 400, "{r:?}");
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("lower maxPoints from 500 to at most 50"),
        "{msg}"
    );
    // A range holding fewer points is answered in full.
    let r = get(&svc, &format!("/api/charts?start={t0}&end={}", t0 + 39_999));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["stats"]["pointCount"], 800);
    assert_eq!(svc.stop(), 0);
}
