//! Plain data as JavaScript and JSON know it, for the values that cross the boundary: the
//! progress object, results, the guest API's messages and the `SessionResponse` rules.
//!
//! The pure core builds and reads these; `crate::web::convert` turns them into JavaScript
//! values and back in one small function each. A serde data format would do the same job,
//! but its generic (de)serialisers, and the float formatting its error paths pull in, were
//! most of the wasm's size: widgets ship chunkup to every visitor, so the few shapes
//! chunkup exchanges are written out by hand.

/// A JSON-like value. Two objects are equal when they have the same entries in any order,
/// as in JSON.
#[derive(Debug, Clone)]
pub enum Value {
    /// `null` (and, coming from JavaScript, `undefined`).
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number (JavaScript has only doubles).
    Number(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object's entries, in order.
    Object(Vec<(String, Value)>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => a == b,
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| other.get(k) == Some(v))
            }
            _ => false,
        }
    }
}

impl Value {
    /// The value of `key` when this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, when this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements, when this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The entries, when this is an object.
    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(entries) => Some(entries),
            _ => None,
        }
    }

    /// `key`'s string, if present and a string.
    pub fn str_at(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// `key`'s number, if present and a number.
    pub fn f64_at(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        // Sizes and offsets: files stay far below 2^53 bytes, which doubles hold exactly.
        Value::Number(n as f64)
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Number(f64::from(n))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(items: Vec<T>) -> Self {
        Value::Array(items.into_iter().map(Into::into).collect())
    }
}

/// Builds an object from `(key, value)` pairs: `object([("a", 1u32.into())])`.
pub fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    // The building code once, not once per object size: only the move of the array into a
    // Vec is per size (wasm bytes).
    object_from(Vec::from(entries))
}

fn object_from(entries: Vec<(&str, Value)>) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

#[cfg(test)]
pub(crate) mod testing {
    //! JSON text to [`Value`] through serde_json (a dev-dependency only), for tests.
    use super::Value;

    /// Parses `json` into a [`Value`]; `None` when it is not JSON.
    pub fn parse(json: &str) -> Option<Value> {
        serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .map(from_serde)
    }

    /// Converts a serde_json value.
    pub fn from_serde(value: serde_json::Value) -> Value {
        match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(items) => {
                Value::Array(items.into_iter().map(from_serde).collect())
            }
            serde_json::Value::Object(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, from_serde(v)))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_values() {
        let v = testing::parse(r#"{"a":{"b":[1,"x",true,null]},"n":2.5,"s":"t"}"#).unwrap();
        assert_eq!(v.f64_at("n"), Some(2.5));
        assert_eq!(v.str_at("s"), Some("t"));
        assert_eq!(v.str_at("n"), None);
        let items = v
            .get("a")
            .and_then(|a| a.get("b"))
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(
            items,
            &[Value::Number(1.0), "x".into(), true.into(), Value::Null]
        );
        assert_eq!(Value::Null.get("a"), None);
        assert!(testing::parse("not json").is_none());
    }

    #[test]
    fn builds_objects() {
        let v = object([
            ("a", 1u32.into()),
            ("b", Some("x").into()),
            ("c", None::<&str>.into()),
        ]);
        assert_eq!(v, testing::parse(r#"{"a":1,"b":"x","c":null}"#).unwrap());
        assert_eq!(Value::from(vec![1u64, 2]), testing::parse("[1,2]").unwrap());
        assert_eq!(
            testing::parse(r#"{"a":1,"b":2}"#),
            testing::parse(r#"{"b":2,"a":1}"#)
        );
        assert_ne!(
            testing::parse(r#"{"a":1}"#),
            testing::parse(r#"{"a":1,"b":2}"#)
        );
        assert_ne!(testing::parse("[1,2]"), testing::parse("[2,1]"));
    }
}
