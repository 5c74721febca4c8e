//! Project answers — a project list, or one project as an object or a one-element array — split
//! once, as they came, into the text around the projects and each project pre-rendered with and
//! without its App certificate. A tenant's view is then those bytes joined: its projects only,
//! `sign_key` null without `projects:secrets`, and every other field as Agora wrote it.

use bytes::{BufMut, Bytes, BytesMut};

use super::json::{Members, write_key};

/// One project of a project answer.
#[derive(Debug)]
pub(crate) struct ProjectItem {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) vendor_key: String,
    /// The project as Agora sent it.
    pub(crate) full: Bytes,
    /// The same with `sign_key: null` (the same bytes when it has no `sign_key`).
    pub(crate) redacted: Bytes,
}

impl ProjectItem {
    /// Whether it is the project a `get_project` asks for: the `id` and the `name` given (at least
    /// one of them, checked by the routes) both match.
    pub(crate) fn is_asked_for(&self, id: Option<&str>, name: Option<&str>) -> bool {
        id.is_none_or(|id| id == self.id) && name.is_none_or(|name| name == self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `"project": {...}` (the live service's writes).
    Object,
    /// `"projects": [...]`, `"project": [...]` (lists, and the document's single projects).
    Array,
}

/// A project answer, split for cutting down to a tenant.
#[derive(Debug)]
pub(crate) struct ProjectsView {
    /// Everything before the projects: `{` ... `"projects":`.
    head: Bytes,
    /// Everything after them: ... `}`.
    tail: Bytes,
    shape: Shape,
    pub(crate) items: Vec<ProjectItem>,
}

/// Why an answer cannot be cut down to a tenant, in words for the 502.
fn unusable(detail: impl std::fmt::Display) -> String {
    format!("the upstream's answer cannot be cut down to the tenant: {detail}")
}

impl ProjectsView {
    /// The projects under `field` of `body`. `Ok(None)` when `body` has no such member and it is
    /// not `required`; an error names what is missing or malformed.
    pub(crate) fn parse(body: &[u8], field: &str, required: bool) -> Result<Option<Self>, String> {
        let text = std::str::from_utf8(body).map_err(|_| unusable("it is not UTF-8 text"))?;
        let members = Members::parse(text).map_err(|error| unusable(format!("it is not a JSON object ({error})")))?;
        let Some(position) = members.position(field) else {
            return if required { Err(unusable(format!("it has no `{field}`"))) } else { Ok(None) };
        };
        let value = members.get(field).expect("the member at its position").get();
        let (shape, raw_items) = match value.trim_start().as_bytes().first() {
            Some(b'[') => {
                let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(value)
                    .map_err(|error| unusable(format!("`{field}` is not an array of projects ({error})")))?;
                (Shape::Array, items)
            }
            Some(b'{') => (Shape::Object, vec![members.get(field).expect("present")]),
            _ => return Err(unusable(format!("`{field}` is neither an object nor an array"))),
        };
        let items = raw_items
            .iter()
            .enumerate()
            .map(|(index, raw)| project_item(raw.get()).map_err(|what| unusable(format!("{field}[{index}] {what}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut head = b"{".to_vec();
        members.write(&mut head, 0..position, |_| None);
        if position > 0 {
            head.push(b',');
        }
        write_key(&mut head, field);
        let mut tail = Vec::new();
        if position + 1 < members.len() {
            tail.push(b',');
            members.write(&mut tail, position + 1..members.len(), |_| None);
        }
        tail.push(b'}');
        Ok(Some(Self { head: head.into(), tail: tail.into(), shape, items }))
    }

    /// The answer with only `visible` projects (all of them for a single project), redacted
    /// unless `secrets`.
    pub(crate) fn render(&self, visible: &[&ProjectItem], secrets: bool) -> Bytes {
        let size = self.head.len() + self.tail.len() + visible.iter().map(|item| item.full.len() + 1).sum::<usize>();
        let mut out = BytesMut::with_capacity(size + 2);
        out.put_slice(&self.head);
        let item = |item: &&ProjectItem| if secrets { item.full.clone() } else { item.redacted.clone() };
        match self.shape {
            Shape::Object => {
                if let Some(first) = visible.first() {
                    out.put_slice(&item(first));
                } else {
                    out.put_slice(b"null");
                }
            }
            Shape::Array => {
                out.put_u8(b'[');
                for (index, one) in visible.iter().enumerate() {
                    if index > 0 {
                        out.put_u8(b',');
                    }
                    out.put_slice(&item(one));
                }
                out.put_u8(b']');
            }
        }
        out.put_slice(&self.tail);
        out.freeze()
    }

    /// Bytes held, for the cache's bound.
    pub(crate) fn weight(&self) -> usize {
        let items: usize = self
            .items
            .iter()
            .map(|item| item.full.len() + item.redacted.len() + item.id.len() + item.name.len() + item.vendor_key.len())
            .sum();
        self.head.len() + self.tail.len() + items + 96 * self.items.len()
    }
}

/// One project from its text; what is wrong with it otherwise.
fn project_item(text: &str) -> Result<ProjectItem, String> {
    let members = Members::parse(text).map_err(|_| "is not an object".to_string())?;
    let field = |name: &str| members.string(name).ok_or_else(|| format!("has no string `{name}`"));
    let (id, name, vendor_key) = (field("id")?, field("name")?, field("vendor_key")?);
    let full = Bytes::copy_from_slice(text.as_bytes());
    let redacted = if members.get("sign_key").is_some() {
        let mut out = b"{".to_vec();
        members.write(&mut out, 0..members.len(), |key| (key == "sign_key").then_some("null"));
        out.push(b'}');
        Bytes::from(out)
    } else {
        full.clone()
    };
    Ok(ProjectItem { id, name, vendor_key, full, redacted })
}

/// `get_project`'s answer built from a project list's entry (the document's shape).
pub(crate) fn single(item: &ProjectItem, secrets: bool) -> Bytes {
    let project = if secrets { &item.full } else { &item.redacted };
    let mut out = BytesMut::with_capacity(project.len() + 14);
    out.put_slice(b"{\"project\":[");
    out.put_slice(project);
    out.put_slice(b"]}");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn json_of(bytes: &Bytes) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn a_list_keeps_every_field_it_does_not_know_in_place() {
        let body = br#"{"total":2,"projects":[
            {"id":"a","name":"acme-x","vendor_key":"k1","sign_key":"s1","company_id":7,"nested":{"deep":[1,2]}},
            {"id":"b","name":"other","vendor_key":"k2","sign_key":"s2"}],"request_id":"r-1"}"#;
        let view = ProjectsView::parse(body, "projects", true).unwrap().unwrap();
        assert_eq!(view.items.len(), 2);
        let mine = view.render(&[&view.items[0]], false);
        let text = String::from_utf8(mine.to_vec()).unwrap();
        assert!(text.starts_with(r#"{"total":2,"projects":[{"id":"a""#), "{text}");
        assert!(text.ends_with(r#"],"request_id":"r-1"}"#), "{text}");
        assert_eq!(
            json_of(&mine),
            json!({"total": 2, "projects": [{"id": "a", "name": "acme-x", "vendor_key": "k1", "sign_key": null,
                    "company_id": 7, "nested": {"deep": [1, 2]}}], "request_id": "r-1"})
        );
        assert_eq!(json_of(&view.render(&[&view.items[1]], true))["projects"][0]["sign_key"], "s2");
    }

    #[test]
    fn one_project_as_an_object_or_an_array() {
        let object = br#"{"project":{"id":"a","name":"n","vendor_key":"k","sign_key":"s"}}"#;
        let view = ProjectsView::parse(object, "project", true).unwrap().unwrap();
        assert_eq!(
            json_of(&view.render(&[&view.items[0]], false)),
            json!({"project": {"id": "a", "name": "n", "vendor_key": "k", "sign_key": null}})
        );
        let array = br#"{"project":[{"id":"a","name":"n","vendor_key":"k","sign_key":"s"}]}"#;
        let view = ProjectsView::parse(array, "project", true).unwrap().unwrap();
        assert_eq!(
            json_of(&view.render(&[&view.items[0]], true)),
            json!({"project": [{"id": "a", "name": "n", "vendor_key": "k", "sign_key": "s"}]})
        );
    }

    #[test]
    fn what_cannot_be_cut_down_is_named() {
        let missing = br#"{"projects":[{"id":"a","name":"n"}]}"#;
        let error = ProjectsView::parse(missing, "projects", true).unwrap_err();
        assert!(error.contains("projects[0] has no string `vendor_key`"), "{error}");
        assert!(ProjectsView::parse(br#"{"items":[]}"#, "projects", true).unwrap_err().contains("has no `projects`"));
        assert!(ProjectsView::parse(br#"{"success":true}"#, "project", false).unwrap().is_none());
        assert!(ProjectsView::parse(br#"{"project":"x"}"#, "project", false).is_err());
        assert!(ProjectsView::parse(b"<html>", "projects", true).is_err());
    }
}
