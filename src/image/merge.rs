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

/// What is known of the image's own changes: the old base's runtime config to compare
/// with, or what the history entries of the image's own part (`top`) and of its old
/// base's part (`base`) set.
struct Ancestry {
    old: Option<Value>,
    top: Option<Attribution>,
    base: Option<Attribution>,
}

impl Ancestry {
    fn new(ancestor: Ancestor) -> Ancestry {
        match ancestor {
            Ancestor::Config(c) => Ancestry {
                old: Some(runtime(c)),
                top: None,
                base: None,
            },
            Ancestor::History { base, top } => Ancestry {
                old: None,
                top: Some(attribute(top)),
                base: Some(attribute(base)),
            },
        }
    }

    /// Who decides a value. `changed`: whether the image's value differs from the old
    /// base's (None without the old base's config); `attributed`: the image's own history
    /// sets it; `differs`: the image's and the new base's values differ; `explained`: the
    /// new base has the value, or the old base's history set it, so the base decides it
    /// unless the image changed it.
    fn owner(
        &self,
        changed: Option<bool>,
        attributed: bool,
        differs: bool,
        explained: bool,
    ) -> Owner {
        match (changed, &self.top) {
            (Some(true), _) => Owner::Image,
            // (Some(false), _): unchanged from the old base, the last arm's new base.
            (None, _) if attributed => Owner::Image,
            (None, Some(a)) if (!a.complete || !explained) && differs => Owner::Unknown,
            _ => Owner::NewBase,
        }
    }
}

/// The merged config (a copy of the image's with the runtime config and platform merged)
/// and a report.
pub fn merge(image: &Value, new_base: &Value, ancestor: Ancestor) -> (Value, Report) {
    let mut report = Report::default();
    let mut out = image.clone();
    merge_platform(image, new_base, &mut out, &mut report);
    let sides = Sides {
        image: runtime(image),
        new_base: runtime(new_base),
        ancestry: Ancestry::new(ancestor),
    };
    let mut merged = sides.image.as_object().cloned().unwrap_or_default();
    sides.merge_fields(&mut merged, &mut report);
    for kind in [Keyed::Env, Keyed::Labels] {
        sides.merge_keyed(kind, &mut merged, &mut report);
    }
    for kind in [Entries::ExposedPorts, Entries::Volumes] {
        sides.merge_entries(kind, &mut merged, &mut report);
    }
    if (image.get("config").is_some() || !merged.is_empty())
        && let Some(obj) = out.as_object_mut()
    {
        obj.insert("config".to_string(), Value::Object(merged));
    }
    (out, report)
}

/// The platform fields come from the new base.
fn merge_platform(image: &Value, new_base: &Value, out: &mut Value, report: &mut Report) {
    let Some(obj) = out.as_object_mut() else {
        return;
    };
    for key in PLATFORM {
        let (mine, theirs) = (image.get(*key), new_base.get(*key));
        if mine != theirs {
            set(obj, key, theirs.cloned());
            report.from_new_base.push((*key).to_string());
        }
    }
}

/// The runtime config (`config`) of a config, or an empty object.
fn runtime(config: &Value) -> Value {
    config
        .get("config")
        .filter(|c| c.is_object())
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()))
}

/// The runtime configs of the image and the new base, and what is known of the image's
/// changes.
struct Sides {
    image: Value,
    new_base: Value,
    ancestry: Ancestry,
}

/// The fields merged per key: `Env` (a list of `K=V`) and `Labels` (an object).
#[derive(Clone, Copy)]
enum Keyed {
    Env,
    Labels,
}

impl Keyed {
    fn field(self) -> &'static str {
        match self {
            Keyed::Env => "Env",
            Keyed::Labels => "Labels",
        }
    }

    fn read(self, v: Option<&Value>) -> Vec<(String, Value)> {
        match self {
            Keyed::Env => env_map(v),
            Keyed::Labels => labels_map(v),
        }
    }

    /// Whether the history entries of `a` set key `k`.
    fn set_by(self, a: &Attribution, k: &str) -> bool {
        match self {
            Keyed::Env => a.env.contains(k),
            Keyed::Labels => a.labels.contains(k),
        }
    }

    fn write(self, pairs: Vec<(String, Value)>) -> Value {
        match self {
            Keyed::Env => Value::Array(
                pairs
                    .into_iter()
                    .map(|(k, v)| Value::String(format!("{k}={}", v.as_str().unwrap_or(""))))
                    .collect(),
            ),
            Keyed::Labels => Value::Object(pairs.into_iter().collect()),
        }
    }
}

/// The fields merged per entry: objects whose keys are the entries.
#[derive(Clone, Copy)]
enum Entries {
    ExposedPorts,
    Volumes,
}

impl Entries {
    fn field(self) -> &'static str {
        match self {
            Entries::ExposedPorts => "ExposedPorts",
            Entries::Volumes => "Volumes",
        }
    }

    /// The entries the history entries of `a` add.
    fn set_by(self, a: &Attribution) -> &BTreeSet<String> {
        match self {
            Entries::ExposedPorts => &a.ports,
            Entries::Volumes => &a.volumes,
        }
    }

    fn of(self, runtime: &Value) -> BTreeSet<String> {
        runtime
            .get(self.field())
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl Sides {
    /// Whole fields (everything but the keyed and entry fields).
    fn merge_fields(&self, merged: &mut Map<String, Value>, report: &mut Report) {
        let keys: BTreeSet<String> = [
            Some(&self.image),
            Some(&self.new_base),
            self.ancestry.old.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|m| m.keys().cloned())
        .filter(|k| !matches!(k.as_str(), "Env" | "Labels" | "ExposedPorts" | "Volumes"))
        .collect();
        for key in keys {
            // An empty value (`null`, `""`, `[]`) and an absent one mean the same: no
            // change between them.
            let mine = non_empty(self.image.get(&key));
            let theirs = non_empty(self.new_base.get(&key));
            let changed = self
                .ancestry
                .old
                .as_ref()
                .map(|o| mine != non_empty(o.get(&key)));
            let attributed = self
                .ancestry
                .top
                .as_ref()
                .is_some_and(|a| a.fields.contains(&key));
            match self
                .ancestry
                .owner(changed, attributed, mine != theirs, true)
            {
                Owner::Image => {}
                Owner::Unknown => report.unattributed.push(format!("config.{key}")),
                Owner::NewBase if mine != theirs => {
                    set(merged, &key, self.new_base.get(&key).cloned());
                    report.from_new_base.push(format!("config.{key}"));
                }
                Owner::NewBase => {}
            }
        }
    }

    /// `Env` or `Labels`, per key; the new base's keys first, in its order.
    fn merge_keyed(&self, kind: Keyed, merged: &mut Map<String, Value>, report: &mut Report) {
        let field = kind.field();
        let mine = kind.read(self.image.get(field));
        let theirs = kind.read(self.new_base.get(field));
        let ancestor = self.ancestry.old.as_ref().map(|o| kind.read(o.get(field)));
        let get = |list: &[(String, Value)], k: &str| {
            list.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let mut order: Vec<String> = Vec::new();
        for (k, _) in theirs.iter().chain(&mine).chain(ancestor.iter().flatten()) {
            if !order.contains(k) {
                order.push(k.clone());
            }
        }
        let mut result = Vec::new();
        for k in order {
            let (m, t) = (get(&mine, &k), get(&theirs, &k));
            let changed = ancestor.as_ref().map(|a| m != get(a, &k));
            let attributed = self
                .ancestry
                .top
                .as_ref()
                .is_some_and(|a| kind.set_by(a, &k));
            let by_base = self
                .ancestry
                .base
                .as_ref()
                .is_some_and(|a| kind.set_by(a, &k));
            let value =
                match self
                    .ancestry
                    .owner(changed, attributed, m != t, t.is_some() || by_base)
                {
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
            result.extend(value.map(|v| (k, v)));
        }
        if result == mine {
            // Unchanged: written back exactly as it was (`null` stays `null`).
            return;
        }
        // Not reached when neither side has the field: `result` is then empty, as `mine`.
        merged.insert(field.to_string(), kind.write(result));
    }

    /// `ExposedPorts` or `Volumes`, per entry.
    fn merge_entries(&self, kind: Entries, merged: &mut Map<String, Value>, report: &mut Report) {
        let field = kind.field();
        let (mine, theirs) = (kind.of(&self.image), kind.of(&self.new_base));
        let (added, removed) = self.own_entries(kind, &mine, &theirs, report);
        let result: BTreeSet<String> = theirs
            .union(&added)
            .filter(|k| !removed.contains(*k))
            .cloned()
            .collect();
        if result == mine {
            // Unchanged: written back exactly as it was (`null` stays `null`).
            return;
        }
        for k in result.symmetric_difference(&mine) {
            report.from_new_base.push(format!("config.{field}.{k}"));
        }
        if result.is_empty() && self.image.get(field).is_none() {
            merged.shift_remove(field);
        } else {
            let entries = result.into_iter().map(|k| (k, Value::Object(Map::new())));
            merged.insert(field.to_string(), Value::Object(entries.collect()));
        }
    }

    /// The entries the image added and removed on top of its old base. From history,
    /// an entry that neither the image's history nor the old base's explains (and the new
    /// base lacks) is of unknown origin: kept, and reported.
    fn own_entries(
        &self,
        kind: Entries,
        mine: &BTreeSet<String>,
        theirs: &BTreeSet<String>,
        report: &mut Report,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        match (&self.ancestry.old, &self.ancestry.top) {
            (Some(o), _) => {
                let old = kind.of(o);
                (
                    mine.difference(&old).cloned().collect(),
                    old.difference(mine).cloned().collect(),
                )
            }
            (None, Some(a)) => {
                let empty = BTreeSet::new();
                let by_base = self
                    .ancestry
                    .base
                    .as_ref()
                    .map_or(&empty, |b| kind.set_by(b));
                let mut added: BTreeSet<String> =
                    mine.intersection(kind.set_by(a)).cloned().collect();
                let unknown: Vec<String> = mine
                    .difference(theirs)
                    .filter(|k| !added.contains(*k) && (!a.complete || !by_base.contains(*k)))
                    .cloned()
                    .collect();
                for k in unknown {
                    report
                        .unattributed
                        .push(format!("config.{}.{k}", kind.field()));
                    added.insert(k);
                }
                (added, BTreeSet::new())
            }
            (None, None) => (BTreeSet::new(), BTreeSet::new()),
        }
    }
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
        let (m, report) = from_history(&image, &new, &top);
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

    fn from_history(image: &Value, new: &Value, top: &[Value]) -> (Value, Report) {
        with_history(image, new, &[], top)
    }

    fn with_history(image: &Value, new: &Value, base: &[Value], top: &[Value]) -> (Value, Report) {
        merge(image, new, Ancestor::History { base, top })
    }

    #[test]
    fn a_field_the_image_inherited_unchanged_takes_the_new_base_value() {
        let check = |test: &str| json!({"Test": [test]});
        let fields = |user: &str, dir: &str, test: &str| json!({"User": user, "WorkingDir": dir, "Healthcheck": check(test)});
        let old = cfg(&[], json!({}), fields("base", "/b", "true"));
        let new = cfg(&[], json!({}), fields("nobody", "/n", "ok"));
        let image = cfg(&[], json!({}), fields("base", "/app", "true"));
        let (m, report) = merge(&image, &new, Ancestor::Config(&old));
        assert_eq!(m["config"]["User"], "nobody");
        assert_eq!(m["config"]["Healthcheck"], check("ok"));
        assert_eq!(
            m["config"]["WorkingDir"], "/app",
            "changed by the image: kept"
        );
        assert_eq!(report.from_new_base, ["config.Healthcheck", "config.User"]);
    }

    #[test]
    fn the_new_base_ports_and_volumes_reach_an_image_that_has_none() {
        let old = cfg(&[], json!({}), json!({}));
        let new = cfg(
            &[],
            json!({}),
            json!({"ExposedPorts": {"9/tcp": {}}, "Volumes": {"/v": {}}}),
        );
        let image = cfg(&[], json!({}), json!({}));
        let (m, _) = merge(&image, &new, Ancestor::Config(&old));
        assert_eq!(m["config"]["ExposedPorts"], json!({"9/tcp": {}}));
        assert_eq!(m["config"]["Volumes"], json!({"/v": {}}));
    }

    #[test]
    fn ports_the_new_base_dropped_leave_an_empty_object() {
        let old = cfg(&[], json!({}), json!({"ExposedPorts": {"22/tcp": {}}}));
        let new = cfg(&[], json!({}), json!({}));
        let image = cfg(&[], json!({}), json!({"ExposedPorts": {"22/tcp": {}}}));
        let (m, report) = merge(&image, &new, Ancestor::Config(&old));
        assert_eq!(m["config"]["ExposedPorts"], json!({}));
        assert_eq!(report.from_new_base, ["config.ExposedPorts.22/tcp"]);
    }

    #[test]
    fn an_image_config_without_a_runtime_config_gets_the_new_base_one() {
        let new = cfg(&["PATH=/usr/bin"], json!({"v": "2"}), json!({}));
        let image = json!({"architecture": "amd64", "os": "linux"});
        let (m, _) = from_history(&image, &new, &[]);
        assert_eq!(m["config"]["Env"], json!(["PATH=/usr/bin"]));
        assert_eq!(m["config"]["Labels"], json!({"v": "2"}));
    }

    #[test]
    fn a_layer_of_unknown_text_changes_files_not_the_config() {
        let new = cfg(&["PATH=/usr/bin"], json!({}), json!({}));
        let image = cfg(&["PATH=/bin"], json!({}), json!({}));
        // A builder's text nobody knows, but it made a layer: not a config change.
        let top = [json!({"created_by": "some-builder step 3"})];
        let (m, report) = from_history(&image, &new, &top);
        assert_eq!(m["config"]["Env"], json!(["PATH=/usr/bin"]));
        assert!(report.unattributed.is_empty(), "{report:?}");
    }

    #[test]
    fn expose_and_volume_in_history_are_told_apart() {
        let new = cfg(&[], json!({}), json!({}));
        let image = cfg(
            &[],
            json!({}),
            json!({"ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}}),
        );
        let top = [
            json!({"created_by": "EXPOSE map[80/tcp:{}]", "empty_layer": true}),
            json!({"created_by": "VOLUME [/data]", "empty_layer": true}),
        ];
        let (m, report) = from_history(&image, &new, &top);
        assert_eq!(m["config"]["ExposedPorts"], json!({"80/tcp": {}}));
        assert_eq!(m["config"]["Volumes"], json!({"/data": {}}));
        assert!(report.unattributed.is_empty(), "{report:?}");
        // Swapped, neither would be explained.
        let swapped = [
            json!({"created_by": "EXPOSE map[81/tcp:{}]", "empty_layer": true}),
            json!({"created_by": "VOLUME [/data]", "empty_layer": true}),
        ];
        let (_, report) = from_history(&image, &new, &swapped);
        assert_eq!(report.unattributed, ["config.ExposedPorts.80/tcp"]);
    }

    #[test]
    fn stopsignal_healthcheck_shell_and_onbuild_entries_are_understood() {
        let new = cfg(&["PATH=/usr/bin"], json!({"v": "2"}), json!({}));
        let image = cfg(&["PATH=/bin"], json!({"v": "1"}), json!({}));
        for text in [
            "STOPSIGNAL SIGTERM",
            "HEALTHCHECK &{[\"CMD\" \"true\"] 0s 0s 0s 0}",
            "SHELL [\"/bin/bash\", \"-c\"]",
            "ONBUILD RUN make",
        ] {
            let top = [json!({"created_by": text, "empty_layer": true})];
            let (m, report) = from_history(&image, &new, &top);
            // A readable history: what it does not set comes from the new base.
            assert_eq!(m["config"]["Env"], json!(["PATH=/usr/bin"]), "{text}");
            assert_eq!(m["config"]["Labels"], json!({"v": "2"}), "{text}");
            assert!(report.unattributed.is_empty(), "{text}: {report:?}");
        }
    }

    #[test]
    fn unreadable_history_keeps_and_reports() {
        let new = cfg(&["PATH=/usr/bin"], json!({}), json!({}));
        let image = cfg(&["PATH=/bin", "X=1"], json!({}), json!({"User": "app"}));
        let top = vec![json!({"created_by": "umoci config", "empty_layer": true})];
        let (m, report) = from_history(&image, &new, &top);
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
        let (m, report) = with_history(&image, &new, &base, &top);
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
        let (m, report) = with_history(&image, &new, &base, &top);
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
