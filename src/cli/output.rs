//! Output conventions: one JSON document with a `schema` field first, or plain text.

use serde::Serialize;

/// The schema name every JSON document carries.
pub const SCHEMA: &str = "keyroll/1";

pub struct Context {
    pub json: bool,
    pub verbose: bool,
}

impl Context {
    /// Print `value` as JSON under `--json`, or run `text` to print it for people.
    pub fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce(&T)) {
        if self.json {
            json(value);
        } else {
            text(value);
        }
    }
}

/// `value` as one JSON document with `"schema"` first.
pub fn document<T: Serialize>(value: &T) -> serde_json::Value {
    // Every output type is plain data (strings, numbers, maps): serialising it cannot fail.
    let v = serde_json::to_value(value).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
    let mut out = serde_json::Map::new();
    out.insert("schema".into(), SCHEMA.into());
    match v {
        serde_json::Value::Object(map) => out.extend(map),
        other => {
            out.insert("value".into(), other);
        }
    }
    serde_json::Value::Object(out)
}

/// Print `value` as one JSON document with `"schema"` first.
pub fn json<T: Serialize>(value: &T) {
    println!("{:#}", document(value));
}
