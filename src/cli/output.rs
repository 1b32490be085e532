//! Output conventions: a JSON document with a `schema` field, or plain text.

use serde::Serialize;

/// The schema name every JSON document carries.
pub const SCHEMA: &str = "keyroll/1";

pub struct Context {
    pub json: bool,
    pub verbose: bool,
}

/// Print `value` as one JSON document with `"schema"` first.
pub fn json<T: Serialize>(value: &T) {
    let mut v = serde_json::to_value(value).expect("output serializes");
    if let serde_json::Value::Object(map) = &mut v {
        let mut out = serde_json::Map::new();
        out.insert("schema".into(), SCHEMA.into());
        out.extend(std::mem::take(map));
        v = serde_json::Value::Object(out);
    }
    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
}
