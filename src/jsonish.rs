//! Test-only strategies for what a hostile or broken service may answer: arbitrary bytes,
//! JSON-ish documents built from the keys our parsers look for (nested, mistyped, huge
//! numbers, JSON inside strings), and such documents cut short.

use proptest::prelude::*;
use serde_json::Value;

/// Cases per property: `PROPTEST_CASES` when set (a longer run: `PROPTEST_CASES=20000`),
/// else `default`, what every test run can afford.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The keys the answer parsers read, and a few near misses.
const KEYS: &[&str] = &[
    "error",
    "code",
    "message",
    "Message",
    "_version",
    "innerError",
    "id",
    "value",
    "@odata.nextLink",
    "@odata.count",
    "access_token",
    "token_type",
    "expires_in",
    "ext_expires_in",
    "error_description",
    "serialNumber",
    "target",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            any::<f64>(),
            Just(1e308),
            Just(-0.5),
            Just(f64::MIN_POSITIVE)
        ]
        .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
        // Intune's JSON inside a message, well formed or not.
        ".{0,8}".prop_map(|m| Value::String(format!(r#"{{"_version":3,"Message":"{m}"}}"#))),
        prop_oneof![
            Just(" 3599 "),
            Just("NaN"),
            Just("1e999"),
            Just("-1"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

/// A JSON document of the shapes the parsers meet, a few levels deep.
pub fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![4 => prop::sample::select(KEYS).prop_map(String::from), 1 => ".{0,6}"],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An answer's body: arbitrary bytes, a JSON-ish document, or one cut short.
pub fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json().prop_map(|v| v.to_string().into_bytes()),
        (json(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let mut bytes = v.to_string().into_bytes();
            let at = cut.index(bytes.len() + 1);
            bytes.truncate(at);
            bytes
        }),
    ]
}
