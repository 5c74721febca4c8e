//! A JSON object's members read without re-serialising them: each value stays the exact text it
//! was, so an answer the gateway edits keeps every field it does not know, where it was.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of a JSON object, in order, each value as its original text.
pub(crate) struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The members of `text`, which must be a JSON object.
    pub(crate) fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The value of member `name` (the first, if the object repeats it).
    pub(crate) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| *value)
    }

    /// A string member's value; `None` when missing or not a string.
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        serde_json::from_str(self.get(name)?.get()).ok()
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|(key, _)| key == name)
    }

    /// Writes members `range` as `"key":value` pairs, separated by commas, with `replace` giving
    /// other text for the values of some members.
    pub(crate) fn write(
        &self,
        out: &mut Vec<u8>,
        range: std::ops::Range<usize>,
        replace: impl Fn(&str) -> Option<&str>,
    ) {
        for (index, (key, value)) in self.0[range].iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            write_key(out, key);
            out.extend_from_slice(replace(key).unwrap_or(value.get()).as_bytes());
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// `"key":`, escaped as JSON.
pub(crate) fn write_key(out: &mut Vec<u8>, key: &str) {
    serde_json::to_writer(&mut *out, key).expect("a string always serializes");
    out.push(b':');
}

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_their_text_and_order() {
        let text = r#"{"b": [1, 2.50, {"x":"é"}], "a":"\u00e9", "n": null}"#;
        let members = Members::parse(text).unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members.get("b").unwrap().get(), r#"[1, 2.50, {"x":"é"}]"#);
        assert_eq!(members.string("a").as_deref(), Some("é"));
        assert_eq!(members.string("n"), None);
        let mut out = Vec::new();
        members.write(&mut out, 0..3, |key| (key == "n").then_some("0"));
        assert_eq!(String::from_utf8(out).unwrap(), r#""b":[1, 2.50, {"x":"é"}],"a":"\u00e9","n":0"#);
        assert!(Members::parse("[1]").is_err());
    }
}
