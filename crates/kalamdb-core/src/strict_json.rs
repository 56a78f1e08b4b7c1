//! Strict reading of free-form JSON (a message's `metadata`): serde_json's own `Value` keeps the
//! last of two equal keys without a word and nests as deep as its recursion limit. Here a
//! duplicate key is an error, and so is nesting deeper than [`MAX_DEPTH`].

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The deepest nesting of objects and arrays metadata may have (the metadata object is level 1).
pub const MAX_DEPTH: usize = 32;

/// Reads a JSON object strictly; for `#[serde(deserialize_with)]`.
pub fn object<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Map<String, Value>, D::Error> {
    deserializer.deserialize_map(ObjectVisitor { depth: 1 })
}

struct ValueSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor { depth: self.depth })
    }
}

fn too_deep<E: de::Error>() -> E {
    E::custom(format!("nests deeper than {MAX_DEPTH} levels"))
}

struct ObjectVisitor {
    depth: usize,
}

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if self.depth > MAX_DEPTH {
            return Err(too_deep());
        }
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("has the key {key:?} twice")));
            }
            let value = map.next_value_seed(ValueSeed {
                depth: self.depth + 1,
            })?;
            object.insert(key, value);
        }
        Ok(object)
    }
}

struct ValueVisitor {
    depth: usize,
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("holds a number JSON cannot represent"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth > MAX_DEPTH {
            return Err(too_deep());
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ValueSeed {
            depth: self.depth + 1,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        ObjectVisitor { depth: self.depth }
            .visit_map(map)
            .map(Value::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "object")]
        metadata: Map<String, Value>,
    }

    fn read(json: &str) -> Result<Map<String, Value>, String> {
        serde_json::from_str::<Holder>(json)
            .map(|h| h.metadata)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let json = r#"{"metadata": {"a": [1, -2, 3.5, "x", null, true, {"b": {}}]}}"#;
        let expected: Value = serde_json::from_str(json).unwrap();
        assert_eq!(Value::Object(read(json).unwrap()), expected["metadata"]);
    }

    #[test]
    fn refuses_a_duplicate_key_at_any_depth() {
        assert!(read(r#"{"metadata": {"a": 1, "a": 2}}"#)
            .unwrap_err()
            .contains("\"a\" twice"));
        assert!(read(r#"{"metadata": {"x": [{"k": 1, "k": 1}]}}"#)
            .unwrap_err()
            .contains("\"k\" twice"));
    }

    #[test]
    fn refuses_nesting_past_the_limit() {
        // Level 1 is the metadata object; each array adds one.
        let at_limit = format!(
            r#"{{"metadata": {{"k": {}{}}}}}"#,
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(read(&at_limit).is_ok());
        let over = format!(
            r#"{{"metadata": {{"k": {}{}}}}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(read(&over).unwrap_err().contains("deeper than 32"));
    }

    #[test]
    fn only_an_object_is_metadata() {
        assert!(read(r#"{"metadata": [1]}"#).is_err());
        assert!(read(r#"{"metadata": "x"}"#).is_err());
    }
}
