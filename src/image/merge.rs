//! The config of a rebased image: a three-way merge of the runtime config with the old
//! base as the common ancestor. A field the image did not change from its old base takes
//! the new base's value; a field it changed keeps the image's value; `Env` and `Labels`
//! merge per key, `ExposedPorts` and `Volumes` per entry. When the old base's config is
//! not at hand, the image's own changes are read from its history. Pure logic.

use crate::image::history::{self, Instruction};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Platform fields that always come from the new base.
const PLATFORM: &[&str] = &["os", "architecture", "variant", "os.version", "os.features"];

/// What the image changed on top of its old base.
pub enum Ancestor<'a> {
    /// The old base's config: compare against it.
    Config(&'a Value),
    /// The old base is not at hand: the image's history entries, split into the old
    /// base's part and the image's own (top) part.
    History { base: &'a [Value], top: &'a [Value] },
}

/// What the merge did, for the user.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Fields (`os`, `config.Env.PATH`, ...) whose value now comes from the new base and
    /// differs from the image's.
    pub from_new_base: Vec<String>,
    /// Fields where the image differs from the new base but the history does not say
    /// whether the image or its old base set them: the image's value was kept.
    pub unattributed: Vec<String>,
}

/// Changes read from history entries.
#[derive(Default)]
struct Attribution {
    /// Every entry that can change the config was readable.
    complete: bool,
    fields: BTreeSet<String>,
    env: BTreeSet<String>,
    labels: BTreeSet<String>,
    ports: BTreeSet<String>,
    volumes: BTreeSet<String>,
}

fn attribute(top_history: &[Value]) -> Attribution {
    let mut a = Attribution {
        complete: true,
        ..Default::default()
    };
    for entry in top_history {
        match history::parse(entry) {
            Instruction::Env(keys) => a.env.extend(keys),
            Instruction::Label(pairs) => a.labels.extend(pairs.into_iter().map(|(k, _)| k)),
            Instruction::Expose(ports) => a.ports.extend(ports),
            Instruction::Volume(paths) => a.volumes.extend(paths),
            Instruction::Fields(fields) => a.fields.extend(fields.into_iter().map(str::to_string)),
            Instruction::NoConfig => {}
            // An entry that created a layer changes files, not the config.
            Instruction::Unknown if !crate::image::is_empty_layer(entry) => {}
            Instruction::Unknown => a.complete = false,
        }
    }
    a
}

/// Who decides a value: the image (it changed it), the new base, or unknown.
enum Owner {
    Image,
    NewBase,
    Unknown,
}

/// The merged config (a copy of the image's with the runtime config and platform merged)
/// and a report.
pub fn merge(image: &Value, new_base: &Value, ancestor: Ancestor) -> (Value, Report) {
    let mut report = Report::default();
    let mut out = image.clone();
    // From history: what the image's own entries set, and what the old base's entries
    // set (a key that neither sets, and the new base lacks, is of unknown origin).
    let (attribution, base_attribution) = match ancestor {
        Ancestor::History { base, top } => (Some(attribute(top)), Some(attribute(base))),
        Ancestor::Config(_) => (None, None),
    };
    let old = match ancestor {
        Ancestor::Config(c) => Some(c),
        Ancestor::History { .. } => None,
    };

    if let Some(obj) = out.as_object_mut() {
        for key in PLATFORM {
            let (mine, theirs) = (image.get(*key), new_base.get(*key));
            if mine != theirs {
                set(obj, key, theirs.cloned());
                report.from_new_base.push((*key).to_string());
            }
        }
    }

    let empty = Value::Object(Map::new());
    let rt = |v: &Value| {
        v.get("config")
            .filter(|c| c.is_object())
            .cloned()
            .unwrap_or_else(|| empty.clone())
    };
    let (img_rt, new_rt) = (rt(image), rt(new_base));
    let old_rt = old.map(rt);
    let mut merged = img_rt.as_object().cloned().unwrap_or_default();

    // `explained`: the new base has the value, or the old base's history set it, so the
    // base decides it unless the image changed it.
    let owner = |changed_by_image: Option<bool>,
                 attributed: bool,
                 differs: bool,
                 explained: bool|
     -> Owner {
        match (changed_by_image, &attribution) {
            (Some(true), _) => Owner::Image,
            (Some(false), _) => Owner::NewBase,
            (None, _) if attributed => Owner::Image,
            (None, Some(a)) if (!a.complete || !explained) && differs => Owner::Unknown,
            _ => Owner::NewBase,
        }
    };

    // Whole fields.
    let keys: BTreeSet<String> = img_rt
        .as_object()
        .into_iter()
        .chain(new_rt.as_object())
        .chain(old_rt.as_ref().and_then(Value::as_object))
        .flat_map(|m| m.keys().cloned())
        .filter(|k| !matches!(k.as_str(), "Env" | "Labels" | "ExposedPorts" | "Volumes"))
        .collect();
    for key in keys {
        // An empty value (`null`, `""`, `[]`) and an absent one mean the same: no change
        // between them.
        let (mine, theirs) = (non_empty(img_rt.get(&key)), non_empty(new_rt.get(&key)));
        let changed = old_rt.as_ref().map(|o| mine != non_empty(o.get(&key)));
        let attributed = attribution
            .as_ref()
            .is_some_and(|a| a.fields.contains(&key));
        match owner(changed, attributed, mine != theirs, true) {
            Owner::Image => {}
            Owner::Unknown => report.unattributed.push(format!("config.{key}")),
            Owner::NewBase => {
                if mine != theirs {
                    set(&mut merged, &key, new_rt.get(&key).cloned());
                    report.from_new_base.push(format!("config.{key}"));
                }
            }
        }
    }

    // Env and Labels, per key.
    for (field, as_map) in [
        ("Env", env_map as fn(Option<&Value>) -> Vec<(String, Value)>),
        ("Labels", labels_map),
    ] {
        let mine = as_map(img_rt.get(field));
        let theirs = as_map(new_rt.get(field));
        let ancestor = old_rt.as_ref().map(|o| as_map(o.get(field)));
        let get = |list: &[(String, Value)], k: &str| {
            list.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let mut order: Vec<String> = theirs.iter().map(|(k, _)| k.clone()).collect();
        for (k, _) in &mine {
            if !order.contains(k) {
                order.push(k.clone());
            }
        }
        if let Some(a) = &ancestor {
            for (k, _) in a {
                if !order.contains(k) {
                    order.push(k.clone());
                }
            }
        }
        let mut result = Vec::new();
        for k in order {
            let (m, t) = (get(&mine, &k), get(&theirs, &k));
            let changed = ancestor.as_ref().map(|a| m != get(a, &k));
            let sets = |a: &Attribution| match field {
                "Env" => a.env.contains(&k),
                _ => a.labels.contains(&k),
            };
            let attributed = attribution.as_ref().is_some_and(sets);
            let explained = t.is_some() || base_attribution.as_ref().is_some_and(sets);
            let value = match owner(changed, attributed, m != t, explained) {
                Owner::Image => m,
                Owner::Unknown => {
                    report.unattributed.push(format!("config.{field}.{k}"));
                    m
                }
                Owner::NewBase => {
                    if m != t {
                        report.from_new_base.push(format!("config.{field}.{k}"));
                    }
                    t
                }
            };
            if let Some(v) = value {
                result.push((k, v));
            }
        }
        if result == mine {
            // Unchanged: written back exactly as it was (`null` stays `null`).
            continue;
        }
        let present = img_rt.get(field).is_some() || new_rt.get(field).is_some();
        let value = match field {
            "Env" => Value::Array(
                result
                    .into_iter()
                    .map(|(k, v)| Value::String(format!("{k}={}", v.as_str().unwrap_or(""))))
                    .collect(),
            ),
            _ => Value::Object(result.into_iter().collect()),
        };
        if present
            || value.as_array().is_some_and(|a| !a.is_empty())
            || value.as_object().is_some_and(|o| !o.is_empty())
        {
            merged.insert(field.to_string(), value);
        }
    }

    // ExposedPorts and Volumes, per entry.
    for field in ["ExposedPorts", "Volumes"] {
        let keys = |v: &Value| -> BTreeSet<String> {
            v.get(field)
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        let (mine, theirs) = (keys(&img_rt), keys(&new_rt));
        let (added, removed): (BTreeSet<String>, BTreeSet<String>) = match (&old_rt, &attribution) {
            (Some(o), _) => {
                let old = keys(o);
                (
                    mine.difference(&old).cloned().collect(),
                    old.difference(&mine).cloned().collect(),
                )
            }
            (None, Some(a)) => {
                let entries = |a: &Attribution| {
                    if field == "ExposedPorts" {
                        a.ports.clone()
                    } else {
                        a.volumes.clone()
                    }
                };
                let by_base = base_attribution.as_ref().map(entries).unwrap_or_default();
                let mut added: BTreeSet<String> = mine.intersection(&entries(a)).cloned().collect();
                // Neither the image's history nor the old base's explains it: unknown
                // origin, kept.
                let unknown: Vec<String> = mine
                    .difference(&theirs)
                    .filter(|k| !added.contains(*k) && (!a.complete || !by_base.contains(*k)))
                    .cloned()
                    .collect();
                for k in unknown {
                    report.unattributed.push(format!("config.{field}.{k}"));
                    added.insert(k);
                }
                (added, BTreeSet::new())
            }
            (None, None) => (BTreeSet::new(), BTreeSet::new()),
        };
        let result: BTreeSet<String> = theirs
            .union(&added)
            .filter(|k| !removed.contains(*k))
            .cloned()
            .collect();
        if result == mine {
            // Unchanged: written back exactly as it was (`null` stays `null`).
            continue;
        }
        for k in result.symmetric_difference(&mine) {
            report.from_new_base.push(format!("config.{field}.{k}"));
        }
        if result.is_empty() && img_rt.get(field).is_none() {
            merged.shift_remove(field);
        } else {
            merged.insert(
                field.to_string(),
                Value::Object(
                    result
                        .into_iter()
                        .map(|k| (k, Value::Object(Map::new())))
                        .collect(),
                ),
            );
        }
    }

    if (image.get("config").is_some() || !merged.is_empty())
        && let Some(obj) = out.as_object_mut()
    {
        obj.insert("config".to_string(), Value::Object(merged));
    }
    (out, report)
}

/// `v`, or `None` when it is absent or empty (`null`, `false`, `""`, `[]`, `{}`: what
/// Docker's config writes for an unset field).
fn non_empty(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) => true,
    })
}

fn set(obj: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(v) => {
            obj.insert(key.to_string(), v);
        }
        None => {
            // Not `remove`, which moves the last key into its place.
            obj.shift_remove(key);
        }
    }
}

fn env_map(v: Option<&Value>) -> Vec<(String, Value)> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), Value::String(v.to_string())),
            None => (e.to_string(), Value::String(String::new())),
        })
        .collect()
}

fn labels_map(v: Option<&Value>) -> Vec<(String, Value)> {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(env: &[&str], labels: Value, extra: Value) -> Value {
        let mut c = json!({"architecture": "amd64", "os": "linux", "config": {"Env": env, "Labels": labels}});
        for (k, v) in extra.as_object().unwrap() {
            c["config"][k] = v.clone();
        }
        c
    }

    #[test]
    fn three_way_with_the_old_base_config() {
        let old = cfg(
            &["PATH=/bin", "JAVA_HOME=/j1"],
            json!({"version": "1", "vendor": "x"}),
            json!({"Cmd": ["sh"], "ExposedPorts": {"22/tcp": {}}}),
        );
        let new = cfg(
            &["PATH=/usr/bin:/bin", "JAVA_HOME=/j2", "NEW=1"],
            json!({"version": "2", "vendor": "x"}),
            json!({"Cmd": ["bash"], "ExposedPorts": {"22/tcp": {}, "9/tcp": {}}}),
        );
        let mut image = cfg(
            &["PATH=/bin", "JAVA_HOME=/j1", "APP=1"],
            json!({"version": "1", "vendor": "x", "app": "yes"}),
            json!({"Cmd": ["/app"], "ExposedPorts": {"22/tcp": {}, "80/tcp": {}}, "WorkingDir": "/srv"}),
        );
        image["created"] = json!("2020-01-01T00:00:00Z");
        image["x-unknown"] = json!(7);
        let (m, report) = merge(&image, &new, Ancestor::Config(&old));
        assert_eq!(
            m["config"]["Env"],
            json!(["PATH=/usr/bin:/bin", "JAVA_HOME=/j2", "NEW=1", "APP=1"])
        );
        assert_eq!(
            m["config"]["Labels"],
            json!({"version": "2", "vendor": "x", "app": "yes"})
        );
        assert_eq!(m["config"]["Cmd"], json!(["/app"]), "the app's CMD stays");
        assert_eq!(m["config"]["WorkingDir"], "/srv");
        assert_eq!(
            m["config"]["ExposedPorts"],
            json!({"22/tcp": {}, "80/tcp": {}, "9/tcp": {}})
        );
        assert_eq!(m["created"], "2020-01-01T00:00:00Z");
        assert_eq!(m["x-unknown"], 7);
        assert!(
            report
                .from_new_base
                .contains(&"config.Env.PATH".to_string()),
            "{report:?}"
        );
        assert!(
            report
                .from_new_base
                .contains(&"config.Labels.version".to_string())
        );
        assert!(!report.from_new_base.iter().any(|f| f.contains("Cmd")));
        assert!(report.unattributed.is_empty());
    }

    #[test]
    fn platform_comes_from_the_new_base() {
        let old = json!({"os": "linux", "architecture": "arm", "variant": "v6"});
        let new = json!({"os": "linux", "architecture": "arm", "variant": "v7"});
        let image = json!({"os": "linux", "architecture": "arm", "variant": "v6"});
        let (m, r) = merge(&image, &new, Ancestor::Config(&old));
        assert_eq!(m["variant"], "v7");
        assert_eq!(r.from_new_base, vec!["variant".to_string()]);
        assert!(m.get("config").is_none(), "no config object invented");
    }

    #[test]
    fn from_readable_history() {
        let new = cfg(
            &["PATH=/usr/bin:/bin", "JAVA_HOME=/j2"],
            json!({"version": "2"}),
            json!({"Cmd": ["bash"]}),
        );
        let image = cfg(
            &["PATH=/bin", "JAVA_HOME=/j1", "APP=1"],
            json!({"version": "1", "FROM": "base:v1"}),
            json!({"Cmd": ["sh"], "Entrypoint": ["/app"]}),
        );
        let top = vec![
            json!({"created_by": "LABEL FROM=base:v1", "empty_layer": true}),
            json!({"created_by": "/bin/sh -c #(nop)  ENV APP=1", "empty_layer": true}),
            json!({"created_by": "COPY . /app # buildkit"}),
            json!({"created_by": "ENTRYPOINT [\"/app\"]", "empty_layer": true}),
        ];
        let (m, report) = merge(
            &image,
            &new,
            Ancestor::History {
                base: &[],
                top: &top,
            },
        );
        assert_eq!(
            m["config"]["Env"],
            json!(["PATH=/usr/bin:/bin", "JAVA_HOME=/j2", "APP=1"])
        );
        assert_eq!(
            m["config"]["Labels"],
            json!({"version": "2", "FROM": "base:v1"})
        );
        assert_eq!(m["config"]["Entrypoint"], json!(["/app"]));
        assert_eq!(
            m["config"]["Cmd"],
            json!(["sh"]),
            "ENTRYPOINT attributes Cmd to the app"
        );
        assert!(report.unattributed.is_empty(), "{report:?}");
    }

    #[test]
    fn unreadable_history_keeps_and_reports() {
        let new = cfg(&["PATH=/usr/bin"], json!({}), json!({}));
        let image = cfg(&["PATH=/bin", "X=1"], json!({}), json!({"User": "app"}));
        let top = vec![json!({"created_by": "umoci config", "empty_layer": true})];
        let (m, report) = merge(
            &image,
            &new,
            Ancestor::History {
                base: &[],
                top: &top,
            },
        );
        assert_eq!(m["config"]["Env"], json!(["PATH=/bin", "X=1"]));
        assert_eq!(m["config"]["User"], "app");
        assert_eq!(
            report.unattributed,
            vec!["config.User", "config.Env.PATH", "config.Env.X"]
        );
    }

    #[test]
    fn keys_no_history_explains_keep_the_image_value() {
        // `podman commit` adds Env entries that no history entry set: neither the image's
        // own entries nor the old base's explain them, and the new base lacks them.
        let new = cfg(
            &["PATH=/v2/bin", "GONE_FROM_V1=x"],
            json!({"v": "2"}),
            json!({}),
        );
        let mut image = cfg(
            &[
                "PATH=/v1/bin",
                "OLD=1",
                "TERM=xterm",
                "container=podman",
                "COMMITTED=1",
            ],
            json!({"v": "1", "committed": "yes"}),
            json!({"Volumes": {"/base": {}, "/data": {}}}),
        );
        image["config"]["Env"].as_array_mut().unwrap().remove(1);
        let base = vec![
            json!({"created_by": "/bin/sh -c #(nop) ADD file:x in /"}),
            json!({"created_by": "/bin/sh -c #(nop)  ENV PATH=/v1/bin OLD=1", "empty_layer": true}),
            json!({"created_by": "/bin/sh -c #(nop)  VOLUME [/base]", "empty_layer": true}),
            json!({"created_by": "LABEL v=1", "empty_layer": true}),
        ];
        let top = vec![json!({"created_by": "/bin/sh", "comment": "FROM base:v1"})];
        let (m, report) = merge(
            &image,
            &new,
            Ancestor::History {
                base: &base,
                top: &top,
            },
        );
        assert_eq!(
            m["config"]["Env"],
            json!([
                "PATH=/v2/bin",
                "GONE_FROM_V1=x",
                "TERM=xterm",
                "container=podman",
                "COMMITTED=1"
            ])
        );
        assert_eq!(m["config"]["Labels"], json!({"v": "2", "committed": "yes"}));
        assert_eq!(
            m["config"]["Volumes"],
            json!({"/data": {}}),
            "/base was the old base's"
        );
        assert_eq!(
            report.unattributed,
            vec![
                "config.Env.TERM",
                "config.Env.container",
                "config.Env.COMMITTED",
                "config.Labels.committed",
                "config.Volumes./data"
            ]
        );
        assert!(
            !report.from_new_base.iter().any(|f| f.contains("TERM")),
            "{report:?}"
        );

        // An old base key that the old base's history set and the new base dropped goes.
        let image = cfg(&["PATH=/v1/bin", "OLD=1"], json!({}), json!({}));
        let (m, report) = merge(
            &image,
            &new,
            Ancestor::History {
                base: &base,
                top: &top,
            },
        );
        assert_eq!(
            m["config"]["Env"],
            json!(["PATH=/v2/bin", "GONE_FROM_V1=x"])
        );
        assert!(report.unattributed.is_empty(), "{report:?}");
    }

    #[test]
    fn unchanged_fields_are_written_back_as_they_were() {
        // Classic docker writes `null` for empty fields; key order is kept.
        let text = r#"{"architecture":"amd64","config":{"Hostname":"","Env":["PATH=/bin","APP=1"],"Cmd":["sh"],"Image":"sha256:x","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null},"os":"linux"}"#;
        let image: Value = serde_json::from_str(text).unwrap();
        let old = json!({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Image": "sha256:x"}});
        let top = vec![json!({"created_by": "/bin/sh -c #(nop)  ENV APP=1", "empty_layer": true})];
        let base =
            vec![json!({"created_by": "/bin/sh -c #(nop)  ENV PATH=/bin", "empty_layer": true})];
        for ancestor in [
            Ancestor::Config(&old),
            Ancestor::History {
                base: &base,
                top: &top,
            },
        ] {
            let (m, report) = merge(&image, &old, ancestor);
            assert_eq!(serde_json::to_string(&m).unwrap(), text, "{report:?}");
            assert!(
                report.from_new_base.is_empty() && report.unattributed.is_empty(),
                "{report:?}"
            );
        }
        // A changed field is written; the unchanged ones around it stay as they were.
        let new = json!({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["sh"], "Image": "sha256:x", "Volumes": {"/v": {}}}});
        let (m, _) = merge(&image, &new, Ancestor::Config(&old));
        assert_eq!(m["config"]["Env"], json!(["PATH=/usr/bin", "APP=1"]));
        assert_eq!(m["config"]["Volumes"], json!({"/v": {}}));
        assert_eq!(m["config"]["Labels"], Value::Null);
        assert_eq!(m["config"]["Entrypoint"], Value::Null);
        // A value taken from the new base is its value as written (`null`, not absent).
        let with_entrypoint = json!({"config": {"Entrypoint": ["/e"]}});
        let new = json!({"config": {"Entrypoint": null}});
        let (e, _) = merge(&with_entrypoint, &new, Ancestor::Config(&with_entrypoint));
        assert_eq!(e["config"], json!({"Entrypoint": null}));
        let keys: Vec<&String> = m["config"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "Hostname",
                "Env",
                "Cmd",
                "Image",
                "Volumes",
                "WorkingDir",
                "Entrypoint",
                "OnBuild",
                "Labels"
            ]
        );
    }
}
