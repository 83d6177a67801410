//! Unknown fields kept exactly as written. serde's `flatten` buffers its input in a form
//! that cannot hold every JSON number as written (big integers fail, `1.50` becomes `1.5`),
//! so the document's structs only flatten on output; on input their unknown fields are
//! collected here, from the parsed `Value`, by the struct's own field names.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::{Map, Value};

/// The field names a struct derives `Deserialize` for (its flattened fields left out).
pub fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    // The derived impl names its fields to `deserialize_struct`, which records them and stops.
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

/// The entries of the object `input` whose keys are neither fields of `T` nor in `also`.
pub fn unknown<'de, T: Deserialize<'de>>(input: &Value, also: &[&str]) -> Map<String, Value> {
    let known = fields::<T>();
    input
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !known.contains(&k.as_str()) && !also.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names read")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Asserts that each value of an enum the document holds as a string displays as it is
/// written in JSON (messages and the document use the same words).
#[cfg(test)]
pub fn assert_names<T: std::fmt::Display + serde::Serialize>(cases: &[(T, &str)]) {
    for (value, text) in cases {
        assert_eq!(value.to_string(), *text);
        assert_eq!(serde_json::to_value(value).unwrap(), *text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct S {
        a: u64,
        #[serde(rename = "b.c")]
        b: Option<String>,
        #[serde(flatten, skip_deserializing)]
        extra: Map<String, Value>,
    }

    #[test]
    fn names_and_unknown_entries() {
        assert_eq!(fields::<S>(), ["a", "b.c"]);
        let input: Value =
            serde_json::from_str(r#"{"a":1,"b.c":"x","z":123456789012345678901234567890,"u":2}"#)
                .unwrap();
        let rest = unknown::<S>(&input, &["u"]);
        assert_eq!(
            Value::Object(rest),
            json!({"z": 123456789012345678901234567890u128})
        );
    }
}
