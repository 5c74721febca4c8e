//! The Console routes matched ahead of axum's router (`app.rs`): a request whose method and path
//! are an operation's, exactly as axum would match them — under `/dev` (or at the domain's root),
//! with or without one trailing slash, each parameter a non-empty segment, percent-decoded to
//! UTF-8 — goes straight to its handler. Anything else (another method on a Console path, `HEAD`,
//! a parameter that does not decode, unknown paths) is left to the router, which answers it as it
//! always has: the same routes are registered there.

use axum::http::Method;
use percent_encoding::percent_decode_str;

use crate::operations::{OPERATIONS, Operation};

/// The operation table's routes, in its order.
#[derive(Clone)]
pub(crate) struct Table {
    routes: Vec<Route>,
}

#[derive(Clone)]
struct Route {
    method: Method,
    operation: Operation,
    /// At the domain's root rather than under `/dev`.
    root: bool,
    /// Does the operation take a body.
    body: bool,
    segments: Vec<Segment>,
}

#[derive(Clone)]
enum Segment {
    Literal(&'static str),
    Param(&'static str),
}

/// The operation a request is for, and its path's parameters by name.
pub(crate) struct Found {
    pub(crate) operation: Operation,
    pub(crate) body: bool,
    pub(crate) values: Vec<(String, String)>,
}

impl Table {
    pub(crate) fn new() -> Self {
        let routes = OPERATIONS
            .iter()
            .map(|spec| Route {
                method: spec.method.clone(),
                operation: spec.operation,
                root: spec.root,
                body: spec.body.is_some(),
                segments: (spec.path.strip_prefix('/').unwrap_or(spec.path))
                    .split('/')
                    .map(|segment| match segment.strip_prefix('{').and_then(|name| name.strip_suffix('}')) {
                        Some(name) => Segment::Param(name),
                        None => Segment::Literal(segment),
                    })
                    .collect(),
            })
            .collect();
        Self { routes }
    }

    /// The route of `method` and `path`, if it is one of the table's and its parameters decode.
    pub(crate) fn find(&self, method: &Method, path: &str) -> Option<Found> {
        let path = path.strip_suffix('/').filter(|rest| !rest.is_empty()).unwrap_or(path);
        let under_dev = path.strip_prefix("/dev");
        self.routes.iter().filter(|route| route.method == *method).find_map(|route| {
            let rest = if route.root { path } else { under_dev? };
            route.capture(rest.strip_prefix('/')?)
        })
    }
}

impl Route {
    fn capture(&self, rest: &str) -> Option<Found> {
        let mut given = rest.split('/');
        let mut values = Vec::new();
        for segment in &self.segments {
            let part = given.next()?;
            match segment {
                Segment::Literal(literal) if *literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => {
                    let value = percent_decode_str(part).decode_utf8().ok()?;
                    values.push((name.to_string(), value.into_owned()));
                }
            }
        }
        given.next().is_none().then_some(Found { operation: self.operation, body: self.body, values })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_found_as_axum_matches_them() {
        let table = Table::new();
        let found = |method: Method, path: &str| table.find(&method, path).map(|found| (found.operation, found.values));
        assert_eq!(found(Method::GET, "/dev/v1/projects"), Some((Operation::ListProjects, vec![])));
        assert_eq!(found(Method::GET, "/dev/v1/projects/"), Some((Operation::ListProjects, vec![])));
        assert_eq!(found(Method::POST, "/dev/v1/project"), Some((Operation::CreateProject, vec![])));
        let users = found(Method::GET, "/dev/v1/channel/user/app%20one/r%C3%A9union/").unwrap();
        assert_eq!(users.0, Operation::ListChannelUsers);
        assert_eq!(users.1, [("appid".into(), "app one".into()), ("cname".into(), "réunion".into())]);
        assert_eq!(found(Method::GET, "/v2/ncs/ip").map(|found| found.0), Some(Operation::GetNcsIps));
        // Left to the router: not a route, or not one this table answers the same way.
        for (method, path) in [
            (Method::GET, "/dev/v1/projects//"),
            (Method::GET, "/v1/projects"),
            (Method::GET, "/dev/v2/ncs/ip"),
            (Method::HEAD, "/dev/v1/projects"),
            (Method::PATCH, "/dev/v1/projects"),
            (Method::GET, "/dev/v1/channel/user//c"),
            (Method::GET, "/dev/v1/channel/user/app/%FF"),
            (Method::GET, "/dev/v1/channel/user/app/c/extra"),
            (Method::GET, "/dev/v1/Projects"),
            (Method::GET, "/devv1/projects"),
            (Method::GET, "/"),
        ] {
            assert!(table.find(&method, path).is_none(), "{method} {path}");
        }
    }
}
