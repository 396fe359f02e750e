//! `/api/charts` and `/api/metrics-store/series` by page: a type filter, a
//! search, a sort and `limit`/`offset` over resources, with the totals in
//! `page`; and without those parameters, every resource as before.

mod common;

use common::{TestServer, ago, point, test_config};
use serde_json::{Value, json};

/// A small fleet with names, nodes and tags; the newest cpu of each VM is
/// known. `docker`, `oci-container` and storage `usage` are Pulse's names.
async fn fleet() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(test_config(dir.path())).await;
    let mut points = Vec::new();
    let resources = [
        ("node", "pve1:node1", Some("node1"), None, vec![]),
        ("node", "pve1:node2", Some("node2"), None, vec![]),
        (
            "vm",
            "pve1:101",
            Some("web01"),
            Some("node1"),
            vec!["prod", "web"],
        ),
        ("vm", "pve1:102", Some("web02"), Some("node2"), vec!["prod"]),
        ("vm", "pve1:103", Some("db01"), Some("node2"), vec![]),
        ("vm", "pve1:110", Some("Batch"), Some("node1"), vec![]),
        ("vm", "pve1:104", None, None, vec![]),
        (
            "oci-container",
            "pve1:200",
            Some("proxy"),
            Some("node1"),
            vec![],
        ),
        ("container", "pve1:201", Some("dns"), Some("node2"), vec![]),
        ("storage", "pve1:ceph", Some("ceph"), None, vec![]),
        ("docker", "c1", None, None, vec![]),
        ("pbs", "backup1", None, None, vec![]),
    ];
    let mut records = Vec::new();
    for (i, (t, id, name, node, tags)) in resources.iter().enumerate() {
        let metrics: &[&str] = match *t {
            "storage" => &["usage"],
            "vm" => &["cpu", "memory"],
            _ => &["cpu"],
        };
        for m in metrics {
            for k in 0..6 {
                // VM cpu: the newest value is 10 x the VMID's last digit.
                let last = (id.bytes().last().unwrap() - b'0') as f64 * 10.0;
                let v = if k == 5 { last } else { i as f64 + k as f64 };
                points.push(point(t, id, m, v, ago(300 - k * 60)));
            }
        }
        if name.is_some() {
            records.push(json!({"resourceType": t, "resourceId": id, "name": name,
                "node": node, "instance": "pve1", "tags": tags}));
        }
    }
    s.write_sync(json!(points)).await;
    // Metadata of a resource without series: listed by /series' meta only.
    records.push(json!({"resourceType": "vm", "resourceId": "pve1:999", "name": "gone"}));
    let (st, body) = s
        .post_json(
            "/api/metrics-store/write?sync=true",
            &json!({ "resources": records }),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    (dir, s)
}

fn items(v: &Value) -> Vec<String> {
    v["page"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["resourceId"].as_str().unwrap().to_string())
        .collect()
}

/// The ids of every resource with series in a charts answer, whatever map.
fn answered(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = [
        "data",
        "nodeData",
        "storageData",
        "dockerData",
        "dockerHostData",
    ]
    .iter()
    .flat_map(|m| {
        v[m].as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    })
    .chain(
        v["resources"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|m| m.as_object().unwrap().keys().cloned().collect::<Vec<_>>()),
    )
    .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

const ORDER: [&str; 12] = [
    "pve1:node1",
    "pve1:node2",
    "pve1:104", // no name: "104", digits before letters
    "pve1:110", // Batch
    "pve1:103", // db01
    "pve1:101", // web01
    "pve1:102", // web02
    "pve1:201", // dns
    "pve1:200", // proxy
    "pve1:ceph",
    "c1",
    "backup1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_paging_parameters_every_resource_is_answered_as_before() {
    let (_dir, s) = fleet().await;
    let (st, v) = s.get("/api/charts?range=1h").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(answered(&v).len(), 12, "{v}");
    assert_eq!(v["data"]["pve1:101"]["cpu"].as_array().unwrap().len(), 6);
    assert_eq!(v["data"]["pve1:200"]["cpu"].as_array().unwrap().len(), 6);
    assert_eq!(v["guestTypes"]["pve1:200"], "container");
    assert_eq!(
        v["storageData"]["pve1:ceph"]["disk"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(v["meta"]["vm"]["pve1:101"]["name"], "web01");
    assert_eq!(v["meta"]["container"]["pve1:200"]["name"], "proxy");
    assert_eq!(v["stats"]["pointCount"], 6 * (12 + 5));
    // The page says how many and in which order the dashboard shows them.
    assert_eq!(v["page"]["total"], 12);
    assert_eq!(v["page"]["offset"], 0);
    assert_eq!(v["page"]["limit"], Value::Null);
    assert_eq!(items(&v), ORDER);
    let groups: Vec<(String, u64, u64)> = v["page"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["resourceType"].as_str().unwrap().into(),
                g["start"].as_u64().unwrap(),
                g["total"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("node".into(), 0, 2),
            ("vm".into(), 2, 5),
            ("container".into(), 7, 2),
            ("storage".into(), 9, 1),
            ("dockerContainer".into(), 10, 1),
            ("pbs".into(), 11, 1)
        ]
    );
    assert_eq!(v["page"]["groups"][1]["metrics"], json!(["cpu", "memory"]));
    assert_eq!(v["page"]["groups"][3]["metrics"], json!(["disk"]));

    let (st, v) = s.get("/api/metrics-store/series").await;
    assert_eq!(st, 200, "{v}");
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 17);
    let keys: Vec<(String, String, String)> = series
        .iter()
        .map(|s| {
            (
                s["resourceType"].as_str().unwrap().into(),
                s["resourceId"].as_str().unwrap().into(),
                s["metric"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut in_order = keys.clone();
    in_order.sort();
    assert_eq!(keys, in_order, "series in key order, as before");
    assert_eq!(v["meta"]["vm"]["pve1:999"]["name"], "gone", "all metadata");
    assert_eq!(v["meta"]["oci-container"]["pve1:200"]["name"], "proxy");
    assert_eq!(v["page"]["total"], 12);
    assert_eq!(items(&v), ORDER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_holds_its_resources_whole_and_nothing_else() {
    let (_dir, s) = fleet().await;
    let mut seen = Vec::new();
    for offset in [0, 5, 10] {
        let (st, v) = s
            .get(&format!(
                "/api/charts?range=1h&maxPoints=3&limit=5&offset={offset}"
            ))
            .await;
        assert_eq!(st, 200, "{v}");
        let page = items(&v);
        assert_eq!(page, ORDER[offset..(offset + 5).min(12)], "offset {offset}");
        assert_eq!(answered(&v), sorted(page.clone()), "only the page's series");
        assert_eq!(v["page"]["total"], 12);
        assert_eq!(
            (v["page"]["offset"].as_u64(), v["page"]["limit"].as_u64()),
            (Some(offset as u64), Some(5))
        );
        // Metadata of the page's resources only.
        let meta: usize = v["meta"]
            .as_object()
            .unwrap()
            .values()
            .map(|m| m.as_object().unwrap().len())
            .sum();
        let named = page
            .iter()
            .filter(|id| !["pve1:104", "c1", "backup1"].contains(&id.as_str()))
            .count();
        assert_eq!(meta, named, "{}", v["meta"]);
        // Every metric of a resource comes with it.
        for id in &page {
            if let Some(vm) = v["data"].get(id).filter(|_| id.starts_with("pve1:1")) {
                assert_eq!(vm.as_object().unwrap().len(), 2, "{id}: cpu and memory");
                // maxPoints applies: 6 points a minute apart fall in one of
                // the three 20-minute buckets.
                assert_eq!(vm["cpu"].as_array().unwrap().len(), 1);
            }
        }
        seen.extend(page);
    }
    assert_eq!(seen, ORDER, "the pages in turn hold every resource once");
    let (_, past) = s.get("/api/charts?range=1h&limit=5&offset=40").await;
    assert_eq!(answered(&past), Vec::<String>::new());
    assert_eq!(past["page"]["total"], 12);
    // limit=0: the totals alone.
    let (_, counts) = s.get("/api/charts?range=1h&limit=0").await;
    assert_eq!(answered(&counts), Vec::<String>::new());
    assert_eq!(counts["page"]["groups"].as_array().unwrap().len(), 6);

    // /series by page: the page's series and metadata.
    let (st, v) = s.get("/api/metrics-store/series?limit=3&offset=2").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(items(&v), ORDER[2..5]);
    let ids: Vec<&str> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["resourceId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "pve1:103", "pve1:103", "pve1:104", "pve1:104", "pve1:110", "pve1:110"
        ]
    );
    assert_eq!(
        v["meta"],
        json!({"vm": {
        "pve1:103": {"name": "db01", "node": "node2", "instance": "pve1"},
        "pve1:110": {"name": "Batch", "node": "node1", "instance": "pve1"}}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_filter_and_search_find_what_the_dashboard_filter_found() {
    let (_dir, s) = fleet().await;
    for (query, want) in [
        (
            "type=vm",
            &["pve1:104", "pve1:110", "pve1:103", "pve1:101", "pve1:102"][..],
        ),
        (
            "type=node,storage",
            &["pve1:node1", "pve1:node2", "pve1:ceph"],
        ),
        // Pulse's names of a type find what is stored under any of them.
        ("type=system-container", &["pve1:201", "pve1:200"]),
        ("type=docker", &["c1"]),
        ("search=web", &["pve1:101", "pve1:102"]),
        ("search=WEB01", &["pve1:101"]),
        ("search=prod", &["pve1:101", "pve1:102"]),
        (
            "search=node2",
            &["pve1:node2", "pve1:103", "pve1:102", "pve1:201"],
        ),
        (
            "search=pve1:10",
            &["pve1:104", "pve1:103", "pve1:101", "pve1:102"],
        ),
        ("search=backup", &["backup1"]),
        ("search=node1&type=container", &["pve1:200"]),
        ("search=zebra", &[]),
    ] {
        for endpoint in ["/api/charts?range=1h&", "/api/metrics-store/series?"] {
            let (st, v) = s.get(&format!("{endpoint}{query}")).await;
            assert_eq!(st, 200, "{query}: {v}");
            assert_eq!(items(&v), want, "{endpoint}{query}");
            assert_eq!(v["page"]["total"], want.len(), "{query}");
        }
    }
    let (_, v) = s
        .get("/api/charts?range=1h&search=web&limit=1&offset=1")
        .await;
    assert_eq!(items(&v), ["pve1:102"]);
    assert_eq!(v["page"]["total"], 2);
    assert_eq!(answered(&v), ["pve1:102"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_by_the_newest_value_of_a_metric() {
    let (_dir, s) = fleet().await;
    // VM cpu ends at 10 x the VMID's last digit: 110 -> 0, 101 -> 10, ...
    let (st, v) = s
        .get("/api/charts?range=1h&maxPoints=120&type=vm&sort=vm:cpu:desc")
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        items(&v),
        ["pve1:104", "pve1:103", "pve1:102", "pve1:101", "pve1:110"]
    );
    let (_, v) = s
        .get("/api/charts?range=1h&type=vm&sort=cpu:asc&limit=2")
        .await;
    assert_eq!(items(&v), ["pve1:110", "pve1:101"]);
    let (_, v) = s
        .get("/api/charts?range=1h&sort=vm:name:desc,node:name:desc&limit=4")
        .await;
    assert_eq!(
        items(&v),
        ["pve1:node2", "pve1:node1", "pve1:102", "pve1:101"]
    );
    // A storage's `usage` sorts as its `disk`; a type without the metric keeps its rows.
    let (st, v) = s
        .get("/api/metrics-store/series?sort=memory:desc&type=vm,node")
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        items(&v)[..2],
        ["pve1:node1", "pve1:node2"],
        "nodes have no memory: by name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paging_parameters_are_refused_naming_them() {
    let (_dir, s) = fleet().await;
    for (query, word) in [
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("offset=1.5", "offset"),
        ("type=v%20m", "type"),
        ("sort=vm:cpu:up:desc", "sort"),
        ("sort=v%20m:cpu", "sort"),
    ] {
        for endpoint in ["/api/charts?range=1h&", "/api/metrics-store/series?"] {
            let (st, v) = s.get(&format!("{endpoint}{query}")).await;
            assert_eq!(st, 400, "{endpoint}{query}: {v}");
            let msg = v["error"].as_str().unwrap();
            assert!(msg.starts_with(&format!("{word}: ")), "{query}: {msg}");
        }
    }
    let long = "x".repeat(300);
    let (st, v) = s.get(&format!("/api/charts?search={long}")).await;
    assert_eq!(st, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("search: 300 bytes"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_new_series_renames_and_merges_at_once() {
    let (_dir, s) = fleet().await;
    let (_, v) = s.get("/api/charts?range=1h&type=vm&limit=10").await;
    assert_eq!(v["page"]["total"], 5);
    // A new VM and a new metric of a known one.
    s.write_sync(json!([
        point("vm", "pve1:105", "cpu", 1.0, ago(10)),
        point("vm", "pve1:101", "netin", 1.0, ago(10))
    ]))
    .await;
    let (_, v) = s.get("/api/charts?range=1h&type=vm&limit=10").await;
    assert_eq!(
        items(&v),
        [
            "pve1:104", "pve1:105", "pve1:110", "pve1:103", "pve1:101", "pve1:102"
        ]
    );
    assert_eq!(
        v["page"]["groups"][0]["metrics"],
        json!(["cpu", "memory", "netin"])
    );
    // A rename moves a resource in the order and to what a search finds.
    let (st, body) = s
        .post_json(
            "/api/metrics-store/write?sync=true",
            &json!({"resources": [{"resourceType": "vm", "resourceId": "pve1:105", "name": "zz-last"}]}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (_, v) = s.get("/api/charts?range=1h&type=vm&limit=10").await;
    assert_eq!(items(&v).last().unwrap(), "pve1:105");
    let (_, v) = s.get("/api/charts?range=1h&search=zz-la").await;
    assert_eq!(items(&v), ["pve1:105"]);
    // A merge into a resource that exists leaves one row.
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || store.merge_resource("vm", "pve1:104", "pve1:103"))
        .await
        .unwrap()
        .unwrap();
    let (_, v) = s.get("/api/charts?range=1h&type=vm&limit=10").await;
    assert_eq!(
        items(&v),
        ["pve1:110", "pve1:103", "pve1:101", "pve1:102", "pve1:105"]
    );
}
