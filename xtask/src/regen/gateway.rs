//! The gateway's side of `cargo xtask regen`: from each operation of the spec — its method, path,
//! parameters, body and `x-gateway` policy — the gateway's operation table (`OPERATIONS`), the
//! check of request bodies against the generated types, and the dispatch of a validated call to
//! the generated client. Written to two files: `gateway/src/generated/operations.rs` (the table, which the
//! routes are built from) and `gateway/src/generated/dispatch.rs` (body checks and the dispatch,
//! which use `Call` — so the table, which `Call` names, does not depend on it).

use anyhow::{Context, Result, bail};
use openapiv3::{
    OpenAPI, Parameter, ParameterSchemaOrContent, ReferenceOr, SchemaKind, StringFormat, Type, VariantOrUnknownOrEmpty,
};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use serde_json::Value;

/// A parameter of an operation, as the gateway reads it.
struct Param {
    name: String,
    path: bool,
    required: bool,
    kind: Kind,
    default: Option<String>,
    maximum: Option<u64>,
}

enum Kind {
    Text,
    Date,
    Uint32,
    /// A string enum of the spec's schemas: its type name and values.
    OneOf(String, Vec<String>),
}

struct Operation {
    id: String,
    method: String,
    path: String,
    params: Vec<Param>,
    /// The request body's schema name.
    body: Option<String>,
    /// The properties of the request body's schema.
    body_fields: Vec<String>,
    policy: Value,
}

/// `projects:read` → `ProjectsRead`, `name-prefix` → `NamePrefix`, `list_projects` → `ListProjects`.
fn camel(text: &str) -> String {
    text.split([':', '-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

fn schema_name(reference: &str) -> Result<String> {
    reference
        .strip_prefix("#/components/schemas/")
        .map(str::to_string)
        .with_context(|| format!("{reference} is not a reference to a schema"))
}

fn param(spec: &OpenAPI, operation: &str, parameter: &ReferenceOr<Parameter>) -> Result<Param> {
    let ReferenceOr::Item(parameter) = parameter else {
        bail!("{operation}: parameters must be written in place, not referenced");
    };
    let (data, path) = match parameter {
        Parameter::Path { parameter_data, .. } => (parameter_data, true),
        Parameter::Query { parameter_data, .. } => (parameter_data, false),
        _ => bail!("{operation}: only path and query parameters are supported"),
    };
    let ParameterSchemaOrContent::Schema(schema) = &data.format else {
        bail!("{operation}.{}: a parameter needs a schema", data.name);
    };
    let schema = match schema {
        ReferenceOr::Item(schema) => schema.clone(),
        ReferenceOr::Reference { reference } => {
            let name = schema_name(reference)?;
            let Some(ReferenceOr::Item(target)) = spec.components.as_ref().and_then(|c| c.schemas.get(&name)) else {
                bail!("{operation}.{}: {reference} does not resolve", data.name);
            };
            let SchemaKind::Type(Type::String(string)) = &target.schema_kind else {
                bail!("{operation}.{}: only string enums may be referenced", data.name);
            };
            let values = string.enumeration.iter().flatten().cloned().collect();
            let default = target.schema_data.default.as_ref().and_then(Value::as_str).map(str::to_string);
            return Ok(Param {
                name: data.name.clone(),
                path,
                required: data.required,
                kind: Kind::OneOf(name, values),
                default,
                maximum: None,
            });
        }
    };
    let default = schema.schema_data.default.as_ref().map(|value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    });
    let (kind, maximum) = match &schema.schema_kind {
        SchemaKind::Type(Type::String(string)) => match &string.format {
            VariantOrUnknownOrEmpty::Item(StringFormat::Date) => (Kind::Date, None),
            VariantOrUnknownOrEmpty::Empty => (Kind::Text, None),
            other => bail!(
                "{operation}.{}: string format {other:?} is not supported: add it to xtask/src/regen/gateway.rs",
                data.name
            ),
        },
        SchemaKind::Type(Type::Integer(integer)) => match &integer.format {
            VariantOrUnknownOrEmpty::Unknown(format) if format == "uint32" => {
                (Kind::Uint32, integer.maximum.map(|max| max as u64))
            }
            other => bail!("{operation}.{}: integer format {other:?} is not supported (use uint32)", data.name),
        },
        other => bail!("{operation}.{}: parameter type {other:?} is not supported", data.name),
    };
    Ok(Param { name: data.name.clone(), path, required: data.required, kind, default, maximum })
}

fn operations(spec: &OpenAPI) -> Result<Vec<Operation>> {
    let mut found = Vec::new();
    for (path, item) in &spec.paths.paths {
        let ReferenceOr::Item(item) = item else { bail!("{path}: path items must be written in place") };
        for (method, operation) in item.iter() {
            let id = operation.operation_id.clone().with_context(|| format!("{method} {path} has no operationId"))?;
            let policy = operation
                .extensions
                .get("x-gateway")
                .cloned()
                .with_context(|| format!("{id} has no x-gateway policy: every operation needs one"))?;
            let params = operation.parameters.iter().map(|p| param(spec, &id, p)).collect::<Result<Vec<_>>>()?;
            let body = match &operation.request_body {
                None => None,
                Some(ReferenceOr::Item(body)) => {
                    let media = body.content.get("application/json").with_context(|| format!("{id}: a JSON body"))?;
                    match &media.schema {
                        Some(ReferenceOr::Reference { reference }) => Some(schema_name(reference)?),
                        _ => bail!("{id}: the request body's schema must be a reference to a named schema"),
                    }
                }
                Some(_) => bail!("{id}: the request body must be written in place"),
            };
            let body_fields = match &body {
                Some(name) => properties(spec, name).with_context(|| format!("{id}: the body schema {name}"))?,
                None => Vec::new(),
            };
            let method = method.to_uppercase();
            found.push(Operation { id, method, path: path.clone(), params, body, body_fields, policy });
        }
    }
    Ok(found)
}

/// The property names of a named object schema.
fn properties(spec: &OpenAPI, name: &str) -> Result<Vec<String>> {
    let schemas = spec.components.as_ref().map(|components| &components.schemas).context("no components")?;
    let Some(ReferenceOr::Item(schema)) = schemas.get(name) else { bail!("not a schema written in place") };
    match &schema.schema_kind {
        SchemaKind::Type(Type::Object(object)) => Ok(object.properties.keys().cloned().collect()),
        _ => bail!("a request body must be an object with properties"),
    }
}

fn policy(operation: &Operation) -> Result<TokenStream> {
    let id = &operation.id;
    let field = |name: &str| operation.policy.get(name).and_then(Value::as_str);
    let required = |name: &str| field(name).with_context(|| format!("{id}: x-gateway.{name} is required"));
    let scope = format_ident!("{}", camel(required("scope")?));
    let cache = match field("cache") {
        Some(class) => {
            let class = format_ident!("{}", camel(class));
            quote! { Some(CacheClass::#class) }
        }
        None => quote! { None },
    };
    let ownership = format_ident!("{}", camel(required("ownership")?));
    let owner_param = match field("owner-param") {
        Some(name) => quote! { Some(#name) },
        None => quote! { None },
    };
    let invalidates = format_ident!("{}", camel(field("invalidates").unwrap_or("nothing")));
    let priority = format_ident!("{}", camel(required("priority")?));
    let checks = operation.policy.get("checks").and_then(Value::as_array).cloned().unwrap_or_default();
    let checks = checks
        .iter()
        .map(|check| {
            let name = check.as_str().with_context(|| format!("{id}: x-gateway.checks holds names"))?;
            let name = format_ident!("{}", camel(name));
            Ok(quote! { Check::#name })
        })
        .collect::<Result<Vec<_>>>()?;
    let known = ["scope", "cache", "ownership", "owner-param", "invalidates", "priority", "checks", "base"];
    if let Some(unknown) = operation.policy.as_object().and_then(|o| o.keys().find(|k| !known.contains(&k.as_str()))) {
        bail!("{id}: x-gateway.{unknown} is not a policy field (known: {})", known.join(", "));
    }
    Ok(quote! {
        OperationPolicy {
            scope: Scope::#scope,
            cache: #cache,
            ownership: Ownership::#ownership,
            owner_param: #owner_param,
            invalidates: Invalidation::#invalidates,
            priority: Priority::#priority,
            checks: &[#(#checks),*],
        }
    })
}

fn param_spec(param: &Param) -> TokenStream {
    let name = &param.name;
    let location = if param.path {
        quote! { Location::Path }
    } else {
        quote! { Location::Query }
    };
    let kind = match &param.kind {
        Kind::Text => quote! { ParamKind::Text },
        Kind::Date => quote! { ParamKind::Date },
        Kind::Uint32 => quote! { ParamKind::Uint32 },
        Kind::OneOf(_, values) => quote! { ParamKind::OneOf(&[#(#values),*]) },
    };
    let required = param.required;
    let default = match &param.default {
        Some(default) => quote! { Some(#default) },
        None => quote! { None },
    };
    let maximum = match param.maximum {
        Some(maximum) => quote! { Some(#maximum) },
        None => quote! { None },
    };
    quote! { ParamSpec { name: #name, location: #location, kind: #kind, required: #required, default: #default, maximum: #maximum } }
}

/// The call of one operation through the generated client's builder.
fn dispatch_arm(operation: &Operation) -> TokenStream {
    let variant = format_ident!("{}", camel(&operation.id));
    let method = format_ident!("{}", operation.id);
    let setters = operation.params.iter().map(|param| {
        let name = &param.name;
        let setter = format_ident!("{}", param.name);
        let convert = match &param.kind {
            Kind::Text => quote! { value },
            Kind::Date => quote! { wire::date(value).map_err(ClientError::InvalidRequest)? },
            Kind::Uint32 => quote! { wire::uint32(value).map_err(ClientError::InvalidRequest)? },
            Kind::OneOf(type_name, _) => {
                let type_name = format_ident!("{type_name}");
                quote! { wire::parsed::<types::#type_name>(value).map_err(ClientError::InvalidRequest)? }
            }
        };
        quote! {
            if let Some(value) = call.get(#name) {
                request = request.#setter(#convert);
            }
        }
    });
    let body = operation.body.as_ref().map(|type_name| {
        let type_name = format_ident!("{type_name}");
        quote! { request = request.body(wire::body::<types::#type_name>(call).map_err(ClientError::InvalidRequest)?); }
    });
    quote! {
        Operation::#variant => {
            #[allow(unused_mut)]
            let mut request = client.#method();
            #(#setters)*
            #body
            request.send().await.map(drop)
        }
    }
}

/// The gateway's generated source texts, from the spec text: the operation table, and the body
/// checks and dispatch.
pub(super) fn generate(spec_text: &str) -> Result<(String, String)> {
    let spec: OpenAPI = serde_yaml_ng::from_str(spec_text).context("parsing the spec as OpenAPI 3.0")?;
    let operations = operations(&spec)?;
    let count = operations.len();
    let variants: Vec<_> = operations.iter().map(|op| format_ident!("{}", camel(&op.id))).collect();
    let docs: Vec<String> = operations.iter().map(|op| format!("`{} {}` (`{}`)", op.method, op.path, op.id)).collect();
    let rows = operations
        .iter()
        .zip(&variants)
        .map(|(op, variant)| {
            let id = &op.id;
            let method = format_ident!("{}", op.method);
            let path = &op.path;
            let params = op.params.iter().map(param_spec);
            let body = match &op.body {
                Some(name) => quote! { Some(#name) },
                None => quote! { None },
            };
            let body_fields = &op.body_fields;
            let policy = policy(op)?;
            let root = match op.policy.get("base").and_then(Value::as_str) {
                None | Some("dev") => false,
                Some("root") => true,
                Some(other) => bail!("{}: x-gateway.base is `dev` (the default) or `root`, not {other:?}", op.id),
            };
            Ok(quote! {
                OperationSpec {
                    operation: Operation::#variant,
                    id: #id,
                    method: Method::#method,
                    path: #path,
                    root: #root,
                    params: &[#(#params),*],
                    body: #body,
                    body_fields: &[#(#body_fields),*],
                    policy: #policy,
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let body_checks = operations.iter().zip(&variants).filter_map(|(op, variant)| {
        let type_name = format_ident!("{}", op.body.as_ref()?);
        Some(quote! { Operation::#variant => wire::check_body::<types::#type_name>(body), })
    });
    let arms = operations.iter().map(dispatch_arm);
    let table = quote! {
        use http::Method;

        use crate::policy::{
            CacheClass, Check, Invalidation, Location, OperationPolicy, Ownership, ParamKind, ParamSpec, Priority,
            Scope,
        };

        /// One row of the operation table.
        #[derive(Debug)]
        pub(crate) struct OperationSpec {
            pub(crate) operation: Operation,
            /// The spec's operationId.
            pub(crate) id: &'static str,
            pub(crate) method: Method,
            /// Path under `/dev` (or, `root`, at the domain's root), as the spec writes it.
            pub(crate) path: &'static str,
            /// At the domain's root, not under `/dev` (`x-gateway.base: root`).
            pub(crate) root: bool,
            pub(crate) params: &'static [ParamSpec],
            /// The request body's schema, for operations that take one.
            pub(crate) body: Option<&'static str>,
            /// The properties of that schema.
            pub(crate) body_fields: &'static [&'static str],
            pub(crate) policy: OperationPolicy,
        }

        /// The operations of the Console API, in the spec's order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum Operation {
            #(#[doc = #docs] #variants,)*
        }

        impl Operation {
            /// Every operation, in the order of `OPERATIONS`.
            pub(crate) const ALL: [Operation; #count] = [#(Operation::#variants),*];

            /// Its row of the table.
            pub(crate) fn spec(self) -> &'static OperationSpec {
                &OPERATIONS[self as usize]
            }

            pub(crate) fn policy(self) -> &'static OperationPolicy {
                &self.spec().policy
            }

            /// Its `operationId`.
            pub(crate) fn id(self) -> &'static str {
                self.spec().id
            }
        }

        /// One row per operation: its route, parameters, body, and policy (`x-gateway`).
        pub(crate) static OPERATIONS: [OperationSpec; #count] = [#(#rows),*];
    };
    let dispatch = quote! {
        use agora_console_client::{Client, Error as ClientError, types};

        use crate::call::Call;
        use crate::error::GatewayError;
        use crate::operations::Operation;
        use crate::wire;

        /// Checks a request body against the operation's generated type, naming the offending field.
        pub(crate) fn check_body(operation: Operation, body: &serde_json::Value) -> Result<(), GatewayError> {
            match operation {
                #(#body_checks)*
                _ => Ok(()),
            }
        }

        /// Sends a validated call through the generated client; the typed answer only says whether
        /// it matched the spec.
        pub(crate) async fn dispatch(client: &Client, call: &Call) -> Result<(), ClientError<types::ErrorBody>> {
            match call.operation {
                #(#arms)*
            }
        }
    };
    let unparse = |tokens: TokenStream| -> Result<String> {
        let file: syn::File = syn::parse2(tokens).context("the gateway's generated code does not parse")?;
        Ok(prettyplease::unparse(&file))
    };
    Ok((unparse(table)?, unparse(dispatch)?))
}
