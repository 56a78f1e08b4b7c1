//! Strict reading of free-form JSON (a message's `metadata`): serde_json's own `Value` keeps the
//! last of two equal keys without a word and nests as deep as its recursion limit. Here a
//! duplicate key is an error, and so is nesting deeper than [`MAX_DEPTH`].
//!
//! Also whole numbers as JSON Schema reads them ([`optional_whole`], [`exact_whole`]): `50.0` is
//! an integer there, and `docs/openapi.yaml` promises clients what JSON Schema says.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The deepest nesting of objects and arrays metadata may have (the metadata object is level 1).
pub const MAX_DEPTH: usize = 32;

/// The largest whole number an `f64` holds exactly: past it, `9007199254740993.0` already reads
/// as `9007199254740992`.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// `v` as a whole number, when it is one that was surely written exactly: JSON Schema's
/// `integer` admits `50.0`, so a client may send a count or an id that way. Above 2^53 the
/// digits written and the `f64` read may differ, so such a number is refused rather than
/// silently changed.
pub fn exact_whole(v: f64) -> Option<u64> {
    // The range check also refuses NaN; serde_json never yields an infinity.
    if (0.0..=MAX_EXACT_FLOAT).contains(&v) && v.fract() == 0.0 {
        // Exact: a whole f64 in this range converts without rounding.
        Some(v as u64)
    } else {
        None
    }
}

/// Reads an optional non-negative whole number, also written with a zero fraction (`50.0`);
/// `null` is `None`. For `#[serde(default, deserialize_with)]` on an `Option<u64>`.
pub fn optional_whole<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct WholeVisitor;

    impl Visitor<'_> for WholeVisitor {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a non-negative whole number")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            exact_whole(v)
                .map(Some)
                .ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(WholeVisitor)
}

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

    #[derive(Debug, serde::Deserialize)]
    struct Count {
        #[serde(default, deserialize_with = "optional_whole")]
        limit: Option<u64>,
    }

    fn count(json: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<Count>(json)
            .map(|c| c.limit)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_whole_number_may_be_written_with_a_zero_fraction() {
        assert_eq!(count(r#"{"limit": 50}"#), Ok(Some(50)));
        assert_eq!(count(r#"{"limit": 50.0}"#), Ok(Some(50)));
        assert_eq!(count(r#"{"limit": 5e1}"#), Ok(Some(50)));
        assert_eq!(count(r#"{"limit": null}"#), Ok(None));
        assert_eq!(count("{}"), Ok(None));
        for bad in ["50.5", "-1", "-1.0", "1e300", "\"50\"", "true", "[50]"] {
            let err = count(&format!(r#"{{"limit": {bad}}}"#)).unwrap_err();
            assert!(err.contains("non-negative whole number"), "{bad}: {err}");
        }
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
