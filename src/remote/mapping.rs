//! How our series look in a Prometheus-compatible engine (docs/remote.md):
//!
//! * metric name: the target's `metric_prefix` and our metric, with `.`
//!   and `-` (allowed in our names, not in Prometheus's) written `_`:
//!   `cpu` is `pulse_cpu`, `disk.read` is `pulse_disk_read`;
//! * labels: `resource_type` and `resource_id`, nothing else, so a rename
//!   or a migration never starts a new series;
//! * what is known about a resource (name, node, instance, status,
//!   template, tags) goes into one info series per resource,
//!   `pulse_resource_info{resource_type, resource_id, name, node, ...} 1`,
//!   sent when it changes and every few minutes.

use super::proto::Label;
use crate::model::SeriesKey;
use crate::store::Resource;

pub const TYPE_LABEL: &str = "resource_type";
pub const ID_LABEL: &str = "resource_id";
/// The info series' name after the prefix.
pub const INFO_METRIC: &str = "resource_info";

/// The engine's metric name for our `metric`.
pub fn metric_name(prefix: &str, metric: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + metric.len());
    out.push_str(prefix);
    out.extend(
        metric
            .chars()
            .map(|c| if c == '.' || c == '-' { '_' } else { c }),
    );
    out
}

/// Our metric for an engine metric name (`None`: not one of ours). Names
/// written with `.` or `-` come back with `_`.
pub fn our_metric<'a>(prefix: &str, name: &'a str) -> Option<&'a str> {
    name.strip_prefix(prefix)
        .filter(|m| !m.is_empty() && *m != INFO_METRIC)
}

/// The label set of a series, sorted by name as remote write requires.
pub fn series_labels(prefix: &str, key: &SeriesKey) -> Vec<Label> {
    vec![
        label("__name__", metric_name(prefix, &key.metric)),
        label(ID_LABEL, key.resource_id.clone()),
        label(TYPE_LABEL, key.resource_type.clone()),
    ]
}

/// The label set of a resource's info series (empty fields left out; tags
/// joined with `,`).
pub fn info_labels(prefix: &str, r: &Resource) -> Vec<Label> {
    let m = &r.meta;
    let mut labels = vec![
        label("__name__", format!("{prefix}{INFO_METRIC}")),
        label(ID_LABEL, r.resource_id.clone()),
        label(TYPE_LABEL, r.resource_type.clone()),
    ];
    let fields = [
        ("name", m.name.clone()),
        ("node", m.node.clone()),
        ("instance", m.instance.clone()),
        ("status", m.status.clone()),
        ("template", m.template.map(|t| t.to_string())),
        ("tags", m.tags.as_ref().map(|t| t.join(","))),
    ];
    for (name, value) in fields {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            labels.push(label(name, v));
        }
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

fn label(name: &str, value: String) -> Label {
    Label {
        name: name.to_string(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ResourceMeta;

    #[test]
    fn names_and_labels() {
        assert_eq!(metric_name("pulse_", "cpu"), "pulse_cpu");
        assert_eq!(metric_name("pulse_", "disk.read-x"), "pulse_disk_read_x");
        assert_eq!(our_metric("pulse_", "pulse_netin"), Some("netin"));
        assert_eq!(our_metric("pulse_", "pulse_resource_info"), None);
        assert_eq!(our_metric("pulse_", "node_cpu"), None);
        let labels = series_labels("pulse_", &SeriesKey::new("vm", "pve1:101", "cpu"));
        let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "resource_id", "resource_type"]);
        let r = Resource::new(
            "vm",
            "pve1:101",
            ResourceMeta {
                name: Some("web01".into()),
                node: Some("pve2".into()),
                tags: Some(vec!["a".into(), "b".into()]),
                template: Some(false),
                ..ResourceMeta::default()
            },
        );
        let info = info_labels("pulse_", &r);
        let got: Vec<(&str, &str)> = info
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("__name__", "pulse_resource_info"),
                ("name", "web01"),
                ("node", "pve2"),
                ("resource_id", "pve1:101"),
                ("resource_type", "vm"),
                ("tags", "a,b"),
                ("template", "false"),
            ]
        );
    }
}
