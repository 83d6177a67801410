//! Reading Dockerfile instructions back out of config history entries, for the builders
//! whose text allows it: classic docker (`/bin/sh -c #(nop)  ENV A=b`), BuildKit and
//! kaniko (`ENV A=b`), buildah (`/bin/sh -c #(nop) ENV A=b`). Pure logic.

use serde_json::Value;

/// What one history entry did to the image config.
#[derive(Debug, PartialEq, Eq)]
pub enum Instruction {
    /// `ENV`: the keys it set.
    Env(Vec<String>),
    /// `LABEL`: the keys and values it set.
    Label(Vec<(String, String)>),
    /// `EXPOSE`: the ports it added, as `80/tcp`.
    Expose(Vec<String>),
    /// `VOLUME`: the paths it added.
    Volume(Vec<String>),
    /// An instruction that sets whole config fields (`CMD`, `USER`, ...): their names.
    Fields(Vec<&'static str>),
    /// Changes no config field (RUN, COPY, ADD, ARG, ...).
    NoConfig,
    /// Text this module cannot read.
    Unknown,
}

/// The instruction text of an entry: `created_by` without the shell prefix.
fn instruction_text(entry: &Value) -> Option<&str> {
    let text = entry.get("created_by")?.as_str()?.trim();
    if let Some(i) = text.find("#(nop)") {
        return Some(text[i + "#(nop)".len()..].trim());
    }
    Some(text)
}

/// Parses the instruction a history entry records.
pub fn parse(entry: &Value) -> Instruction {
    let Some(text) = instruction_text(entry) else {
        return Instruction::Unknown;
    };
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let rest = rest.trim();
    match word.to_ascii_uppercase().as_str() {
        "ENV" => Instruction::Env(env_keys(rest)),
        "LABEL" => Instruction::Label(
            words(rest)
                .iter()
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        "EXPOSE" => Instruction::Expose(ports(rest)),
        "VOLUME" => Instruction::Volume(
            rest.split(|c: char| c.is_whitespace() || "[],\"".contains(c))
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        ),
        "CMD" => Instruction::Fields(vec!["Cmd", "ArgsEscaped"]),
        // Docker clears an inherited CMD when ENTRYPOINT is set.
        "ENTRYPOINT" => Instruction::Fields(vec!["Entrypoint", "Cmd", "ArgsEscaped"]),
        "WORKDIR" => Instruction::Fields(vec!["WorkingDir"]),
        "USER" => Instruction::Fields(vec!["User"]),
        "STOPSIGNAL" => Instruction::Fields(vec!["StopSignal"]),
        "HEALTHCHECK" => Instruction::Fields(vec!["Healthcheck"]),
        "SHELL" => Instruction::Fields(vec!["Shell"]),
        "ONBUILD" => Instruction::Fields(vec!["OnBuild"]),
        "RUN" | "COPY" | "ADD" | "ARG" | "MAINTAINER" => Instruction::NoConfig,
        // Classic docker writes a RUN as the bare shell command.
        _ if !text.contains("#(nop)") && entry_text_is_shell(entry) => Instruction::NoConfig,
        _ => Instruction::Unknown,
    }
}

/// The keys an ENV instruction sets.
fn env_keys(rest: &str) -> Vec<String> {
    let pairs = words(rest);
    if !pairs.is_empty() && !pairs[0].contains('=') {
        // Legacy `ENV KEY value with spaces`.
        return vec![pairs[0].clone()];
    }
    pairs
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(k, _)| k.to_string())
        .collect()
}

/// The ports an EXPOSE instruction (or its `map[80/tcp:{}]` form) names, with `/tcp`
/// when it names no protocol.
fn ports(rest: &str) -> Vec<String> {
    rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '-'))
        .filter(|p| p.starts_with(|c: char| c.is_ascii_digit()))
        .map(|p| {
            if p.contains('/') {
                p.to_string()
            } else {
                format!("{p}/tcp")
            }
        })
        .collect()
}

fn entry_text_is_shell(entry: &Value) -> bool {
    entry
        .get("created_by")
        .and_then(Value::as_str)
        .is_some_and(|t| {
            (t.starts_with("/bin/sh -c ") || t.starts_with("|")) && !t.contains("#(nop)")
        })
}

/// Splits `a=b "c d"=e f="g h"` into words, honouring double quotes and backslashes, and
/// dropping the quotes.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut chars = text.chars();
    let mut started = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                started = true;
            }
            '"' => {
                in_quotes = !in_quotes;
                started = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

/// Index of the last history entry that set label `name`, and the value it set.
pub fn find_label(history: &[Value], name: &str) -> Option<(usize, String)> {
    history
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, h)| match parse(h) {
            Instruction::Label(pairs) => pairs
                .into_iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| (i, v)),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(text: &str) -> Instruction {
        parse(&json!({ "created_by": text }))
    }

    #[test]
    fn reads_each_builders_text() {
        use Instruction::*;
        let cases = [
            (
                "/bin/sh -c #(nop)  ENV PATH=/usr/bin:/bin LANG=C",
                Env(vec!["PATH".into(), "LANG".into()]),
            ),
            ("ENV JAVA_HOME=/opt/java", Env(vec!["JAVA_HOME".into()])),
            ("/bin/sh -c #(nop) ENV A b c", Env(vec!["A".into()])),
            (
                "/bin/sh -c #(nop)  LABEL FROM=base:v1",
                Label(vec![("FROM".into(), "base:v1".into())]),
            ),
            (
                "LABEL FROM=base:v1 \"a b\"=\"c d\"",
                Label(vec![
                    ("FROM".into(), "base:v1".into()),
                    ("a b".into(), "c d".into()),
                ]),
            ),
            (
                "/bin/sh -c #(nop)  EXPOSE 8080",
                Expose(vec!["8080/tcp".into()]),
            ),
            (
                "EXPOSE map[53/udp:{} 80/tcp:{}]",
                Expose(vec!["53/udp".into(), "80/tcp".into()]),
            ),
            (
                "/bin/sh -c #(nop)  VOLUME [/data]",
                Volume(vec!["/data".into()]),
            ),
            (
                "VOLUME [\"/a\", \"/b\"]",
                Volume(vec!["/a".into(), "/b".into()]),
            ),
            (
                "/bin/sh -c #(nop)  CMD [\"sh\"]",
                Fields(vec!["Cmd", "ArgsEscaped"]),
            ),
            (
                "ENTRYPOINT [\"/app\"]",
                Fields(vec!["Entrypoint", "Cmd", "ArgsEscaped"]),
            ),
            ("WORKDIR /srv", Fields(vec!["WorkingDir"])),
            ("/bin/sh -c #(nop) USER app", Fields(vec!["User"])),
            ("STOPSIGNAL SIGTERM", Fields(vec!["StopSignal"])),
            (
                "/bin/sh -c #(nop)  HEALTHCHECK &{[\"CMD\" \"true\"] 0s 0s 0s 0}",
                Fields(vec!["Healthcheck"]),
            ),
            ("SHELL [\"/bin/bash\", \"-c\"]", Fields(vec!["Shell"])),
            (
                "/bin/sh -c #(nop)  ONBUILD RUN make",
                Fields(vec!["OnBuild"]),
            ),
            ("RUN /bin/sh -c make # buildkit", NoConfig),
            ("/bin/sh -c apt-get update", NoConfig),
            ("|1 X=y /bin/sh -c make", NoConfig),
            ("COPY file:abc in / ", NoConfig),
            ("/bin/sh -c #(nop) ADD file:abc in / ", NoConfig),
            ("umoci config", Unknown),
            ("", Unknown),
        ];
        for (text, want) in cases {
            assert_eq!(p(text), want, "{text}");
        }
        assert_eq!(parse(&json!({"comment": "no created_by"})), Unknown);
    }

    #[test]
    fn finds_the_last_entry_that_set_a_label() {
        let h = vec![
            json!({"created_by": "/bin/sh -c #(nop) ADD file:x in /"}),
            json!({"created_by": "/bin/sh -c #(nop)  LABEL FROM=ubuntu:22.04", "empty_layer": true}),
            json!({"created_by": "/bin/sh -c #(nop)  CMD [\"bash\"]", "empty_layer": true}),
            json!({"created_by": "LABEL FROM=base:v1", "comment": "buildkit.dockerfile.v0", "empty_layer": true}),
            json!({"created_by": "LABEL from=other", "empty_layer": true}),
        ];
        assert_eq!(find_label(&h, "FROM"), Some((3, "base:v1".into())));
        assert_eq!(find_label(&h, "from"), Some((4, "other".into())));
        assert_eq!(find_label(&h, "BASE"), None);
    }
}
