//! One validator for the objects of our kinds, derived from the CRDs themselves ([`super::crds`]):
//! what the apiserver checks before it stores an OsImage or a SwitchProfile, for the places that
//! read manifests without an apiserver (standalone mode, `ztpctl`).
//!
//! It walks the structural OpenAPI v3 schema of the CRD (types, required fields, lengths, item
//! counts, enums, patterns, formats, `nullable`, list-type uniqueness) and evaluates every CEL rule
//! (`x-kubernetes-validations`) with `self` bound to the value it guards, with the `cel` crate and
//! its strings extension (`lowerAscii`), as the apiserver does with cel-go. Fields the schema does
//! not declare are refused, as `kubectl apply` (field validation `Strict`, its default) refuses
//! them; the apiserver itself would prune them silently under `Ignore`. Transition rules (those
//! using `oldSelf`) have no old object to compare with here and are not evaluated, as the
//! apiserver does not evaluate them on create; our CRDs have one kind only, `self == oldSelf`
//! (an immutable field, a test says so), which a manifest read once cannot break.
//!
//! Not checked here (the apiserver does it outside the schema): `metadata` beyond the name and
//! namespace, defaulting (defaults always pass the schema), the status (reset on create for kinds
//! with a status subresource, as ours are).
//!
//! Errors read like the apiserver's: a field path and a message, CEL messages verbatim.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, OnceLock};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool, ValidationRule,
};
use serde_json::Value;

/// One thing wrong with an object, as the apiserver would word it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where, e.g. `spec.source` or `spec.ztp.sections[0].content`.
    pub path: String,
    /// What, e.g. `Required value` or a CEL rule's message.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why an object would be refused by the apiserver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// `apiVersion`/`kind` name a kind or version this operator does not serve.
    #[error("no kind {kind:?} is served in version {api_version:?}: {GROUP_KINDS}")]
    UnknownKind { api_version: String, kind: String },
    /// The object does not pass the CRD's schema and rules.
    #[error("{kind} {name:?} is invalid: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Schema { kind: String, name: String, errors: Vec<FieldError> },
}

const GROUP_KINDS: &str = "ztp.netops.dev/v1alpha1 serves OsImage, SwitchProfile and Switch";

impl Invalid {
    /// The individual field errors (empty for an unknown kind).
    pub fn errors(&self) -> &[FieldError] {
        match self {
            Invalid::UnknownKind { .. } => &[],
            Invalid::Schema { errors, .. } => errors,
        }
    }
}

/// The kinds of our API group, with their schemas, read once from [`super::crds`].
struct Kinds {
    by_kind: BTreeMap<String, JSONSchemaProps>,
}

fn kinds() -> &'static Kinds {
    static KINDS: OnceLock<Kinds> = OnceLock::new();
    KINDS.get_or_init(|| Kinds { by_kind: schemas(&super::crds()) })
}

/// The served version's `openAPIV3Schema` of each CRD, by kind.
fn schemas(crds: &[CustomResourceDefinition]) -> BTreeMap<String, JSONSchemaProps> {
    let mut out = BTreeMap::new();
    for crd in crds {
        for v in &crd.spec.versions {
            if v.name == super::VERSION
                && let Some(schema) = v.schema.as_ref().and_then(|s| s.open_api_v3_schema.clone())
            {
                out.insert(crd.spec.names.kind.clone(), schema);
            }
        }
    }
    out
}

/// Whether a document claims to be one of our objects: our API group, or one of our kind names
/// (a `kind: OsImage` under another group is a typo far more often than someone else's kind).
pub fn is_ours(doc: &Value) -> bool {
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    api_version.split('/').next() == Some(super::GROUP) || kinds().by_kind.contains_key(kind)
}

/// Validates one object of our kinds as the apiserver would on create (field validation
/// `Strict`). The status is not looked at.
pub fn validate(doc: &Value) -> Result<(), Invalid> {
    validate_in(&kinds().by_kind, doc)
}

/// Validates one object as [`validate`] does, against the given CRD instead of ours: for a kind
/// whose CRD is not (yet) served, and its tests.
pub fn validate_against(crd: &CustomResourceDefinition, doc: &Value) -> Result<(), Invalid> {
    validate_in(&schemas(std::slice::from_ref(crd)), doc)
}

fn validate_in(by_kind: &BTreeMap<String, JSONSchemaProps>, doc: &Value) -> Result<(), Invalid> {
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    let schema = by_kind
        .get(kind)
        .filter(|_| api_version == format!("{}/{}", super::GROUP, super::VERSION))
        .ok_or_else(|| Invalid::UnknownKind { api_version: api_version.to_owned(), kind: kind.to_owned() })?;
    let mut errors = Vec::new();
    let name = metadata_errors(doc.get("metadata"), &mut errors);
    let Some(obj) = doc.as_object() else {
        return Err(Invalid::UnknownKind { api_version: api_version.to_owned(), kind: kind.to_owned() });
    };
    // The apiserver declares apiVersion, kind and metadata itself; the CRD declares the rest.
    let mut body = obj.clone();
    for k in ["apiVersion", "kind", "metadata", "status"] {
        body.remove(k);
    }
    let mut root = schema.clone();
    if let Some(p) = root.properties.as_mut() {
        p.remove("status");
    }
    check(&root, &Value::Object(body), "", &mut errors);
    if errors.is_empty() { Ok(()) } else { Err(Invalid::Schema { kind: kind.to_owned(), name, errors }) }
}

/// `metadata.name` (a DNS-1123 subdomain, required) and `metadata.namespace` (a DNS-1123 label),
/// as the apiserver checks them for custom resources. Returns the name, for messages.
fn metadata_errors(meta: Option<&Value>, errors: &mut Vec<FieldError>) -> String {
    let err = |path: &str, message: String| FieldError { path: path.into(), message };
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default().to_owned();
    if name.is_empty() {
        errors.push(err("metadata.name", "Required value: name is required".into()));
    } else if !is_dns_subdomain(&name) {
        errors.push(err(
            "metadata.name",
            format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                 characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    if let Some(ns) = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str)
        && !(ns.len() <= 63 && is_dns_subdomain(ns) && !ns.contains('.'))
    {
        errors.push(err("metadata.namespace", format!("Invalid value: {ns:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")));
    }
    name
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") }
}

/// JSON's name for a value, as the apiserver prints it in a type error.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as the apiserver shows it after "Invalid value:": scalars as JSON, containers by type.
fn shown(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => format!("{:?}", type_name(v)),
        other => other.to_string(),
    }
}

/// The value with null fields that are not `nullable` dropped, as the apiserver prunes them before
/// validating (a `nullable` null is kept).
fn without_pruned_nulls(schema: &JSONSchemaProps, v: &Value) -> Value {
    match v {
        Value::Object(map) if schema.properties.is_some() => Value::Object(
            map.iter()
                .filter(|(k, v)| {
                    !v.is_null() || property(schema, k).is_some_and(|s| s.nullable == Some(true))
                })
                .map(|(k, v)| {
                    (k.clone(), property(schema, k).map_or_else(|| v.clone(), |s| without_pruned_nulls(s, v)))
                })
                .collect(),
        ),
        Value::Array(items) => match &schema.items {
            Some(JSONSchemaPropsOrArray::Schema(s)) => {
                Value::Array(items.iter().map(|i| without_pruned_nulls(s, i)).collect())
            }
            _ => v.clone(),
        },
        Value::Object(map) => match &schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(s)) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), without_pruned_nulls(s, v))).collect())
            }
            _ => v.clone(),
        },
        other => other.clone(),
    }
}

fn property<'a>(schema: &'a JSONSchemaProps, key: &str) -> Option<&'a JSONSchemaProps> {
    schema.properties.as_ref().and_then(|p| p.get(key))
}

/// Checks `v` (at `path`) against `schema`, appending what is wrong to `errors`.
fn check(schema: &JSONSchemaProps, v: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let v = &without_pruned_nulls(schema, v);
    let before = errors.len();
    let err = |message: String| FieldError { path: path.to_owned(), message };
    if v.is_null() {
        if schema.nullable != Some(true) {
            errors.push(err(format!(
                "Invalid value: \"null\": {path} in body must be of type {}",
                type_of(schema)
            )));
        }
        return;
    }
    let ty = type_of(schema);
    let type_ok = match (ty, v) {
        (_, _) if schema.x_kubernetes_int_or_string == Some(true) => {
            v.is_string() || v.is_i64() || v.is_u64()
        }
        ("", _) => true,
        ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("string", Value::String(_))
        | ("boolean", Value::Bool(_))
        | ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    if !type_ok {
        errors.push(err(format!(
            "Invalid value: {:?}: {path} in body must be of type {ty}: {:?}",
            type_name(v),
            type_name(v)
        )));
        return;
    }
    if let Some(allowed) = &schema.enum_
        && !allowed.iter().any(|a| a.0 == *v)
    {
        let list = allowed.iter().map(|a| a.0.to_string()).collect::<Vec<_>>().join(", ");
        errors.push(err(format!("Unsupported value: {}: supported values: {list}", shown(v))));
    }
    match v {
        Value::String(s) => check_string(schema, s, path, errors),
        Value::Number(n) => check_number(schema, n, path, errors),
        Value::Array(items) => check_array(schema, items, path, errors),
        Value::Object(map) => check_object(schema, map, path, errors),
        Value::Bool(_) | Value::Null => {}
    }
    // The apiserver skips the CEL rules of a value whose schema checks failed (they could not
    // be evaluated on a value of the wrong shape).
    if errors.len() == before {
        for rule in schema.x_kubernetes_validations.iter().flatten() {
            if let Some(e) = evaluate(rule, v, path) {
                errors.push(e);
            }
        }
    }
}

fn type_of(schema: &JSONSchemaProps) -> &str {
    schema.type_.as_deref().unwrap_or_default()
}

fn check_string(schema: &JSONSchemaProps, s: &str, path: &str, errors: &mut Vec<FieldError>) {
    let err = |message: String| FieldError { path: path.to_owned(), message };
    let len = s.chars().count() as i64;
    if let Some(max) = schema.max_length
        && len > max
    {
        errors.push(err(format!("Too long: may not be more than {max} bytes")));
    }
    if let Some(min) = schema.min_length
        && len < min
    {
        errors.push(err(format!("Invalid value: {s:?}: {path} in body should be at least {min} chars long")));
    }
    if let Some(p) = &schema.pattern {
        match regex::Regex::new(p) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => errors.push(err(format!("Invalid value: {s:?}: {path} in body should match '{p}'"))),
            Err(e) => errors.push(err(format!("the CRD's pattern {p:?} does not compile: {e}"))),
        }
    }
    if schema.format.as_deref() == Some("date-time")
        && serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>(Value::String(
            s.into(),
        ))
        .is_err()
    {
        errors.push(err(format!("Invalid value: {s:?}: {path} in body must be of type date-time: {s:?}")));
    }
}

fn check_number(schema: &JSONSchemaProps, n: &serde_json::Number, path: &str, errors: &mut Vec<FieldError>) {
    let err = |message: String| FieldError { path: path.to_owned(), message };
    let f = n.as_f64().unwrap_or(f64::NAN);
    if schema.format.as_deref() == Some("int32") && n.as_i64().and_then(|i| i32::try_from(i).ok()).is_none() {
        errors.push(err(format!("Invalid value: {n}: {path} in body must be of type int32: \"{n}\"")));
    }
    if schema.format.as_deref() == Some("int64") && n.as_i64().is_none() {
        errors.push(err(format!("Invalid value: {n}: {path} in body must be of type int64: \"{n}\"")));
    }
    if let Some(min) = schema.minimum
        && f < min
    {
        errors.push(err(format!(
            "Invalid value: {n}: {path} in body should be greater than or equal to {min}"
        )));
    }
    if let Some(max) = schema.maximum
        && f > max
    {
        errors.push(err(format!("Invalid value: {n}: {path} in body should be less than or equal to {max}")));
    }
}

fn check_array(schema: &JSONSchemaProps, items: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    let err = |message: String| FieldError { path: path.to_owned(), message };
    let n = items.len() as i64;
    if let Some(max) = schema.max_items
        && n > max
    {
        errors.push(err(format!("Too many: {n}: must have at most {max} items")));
    }
    if let Some(min) = schema.min_items
        && n < min
    {
        errors.push(err(format!("Invalid value: {n}: {path} in body should have at least {min} items")));
    }
    match schema.x_kubernetes_list_type.as_deref() {
        Some("set") => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    errors.push(FieldError {
                        path: format!("{path}[{i}]"),
                        message: format!("Duplicate value: {item}"),
                    });
                }
            }
        }
        Some("map") => {
            let keys = schema.x_kubernetes_list_map_keys.clone().unwrap_or_default();
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let key: Vec<String> =
                    keys.iter().map(|k| item.get(k).map(ToString::to_string).unwrap_or_default()).collect();
                if !seen.insert(key.clone()) {
                    errors.push(FieldError {
                        path: format!("{path}[{i}]"),
                        message: format!(
                            "Duplicate value: map[{}]",
                            keys.iter()
                                .zip(&key)
                                .map(|(k, v)| format!("{k}:{v}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    });
                }
            }
        }
        _ => {}
    }
    if let Some(JSONSchemaPropsOrArray::Schema(item_schema)) = &schema.items {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
}

fn check_object(
    schema: &JSONSchemaProps,
    map: &serde_json::Map<String, Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let err = |message: String| FieldError { path: path.to_owned(), message };
    for r in schema.required.iter().flatten() {
        if !map.contains_key(r) {
            errors.push(FieldError { path: join(path, r), message: "Required value".into() });
        }
    }
    let n = map.len() as i64;
    if let Some(max) = schema.max_properties
        && n > max
    {
        errors.push(err(format!("Too many: {n}: must have at most {max} items")));
    }
    if let Some(min) = schema.min_properties
        && n < min
    {
        errors.push(err(format!("Invalid value: {n}: {path} in body should have at least {min} properties")));
    }
    let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
    for (k, v) in map {
        if let Some(p) = property(schema, k) {
            check(p, v, &join(path, k), errors);
        } else if let Some(JSONSchemaPropsOrBool::Schema(s)) = &schema.additional_properties {
            check(s, v, &format!("{path}[{k}]"), errors);
        } else if !preserve && schema.additional_properties.is_none() {
            errors.push(FieldError {
                path: String::new(),
                message: format!("unknown field {:?}", join(path, k)),
            });
        }
    }
}

/// The CEL environment: the standard library plus the strings extension (`lowerAscii`, …), as
/// Kubernetes offers them. Built once.
fn cel_env() -> Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        env.add_extension(cel::extensions::strings)
            .expect("the strings extension declares no overload twice");
        Arc::new(env)
    })
    .clone()
}

/// Whether the CEL rule is a transition rule (it compares with the old object, which a create has
/// not got: the apiserver does not evaluate it on create either).
pub fn is_transition_rule(rule: &ValidationRule) -> bool {
    rule.rule.contains("oldSelf")
}

/// Evaluates one CEL rule on `v`: `None` when it holds, else the apiserver-like error.
fn evaluate(rule: &ValidationRule, v: &Value, path: &str) -> Option<FieldError> {
    if is_transition_rule(rule) {
        return None;
    }
    let err = |message: String| {
        let path = match &rule.field_path {
            Some(f) => format!("{path}{f}"),
            None => path.to_owned(),
        };
        Some(FieldError { path, message })
    };
    let failed = || rule.message.clone().unwrap_or_else(|| format!("failed rule: {}", rule.rule));
    let env = cel_env();
    let program = match env.compile(&rule.rule) {
        Ok(p) => p,
        Err(e) => return err(format!("the CRD's rule {:?} does not compile: {e}", rule.rule)),
    };
    let mut ctx = cel::Context::with_env(env);
    if let Err(e) = ctx.add_variable("self", v) {
        return err(format!("Internal error: {e}"));
    }
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(true)) => None,
        Ok(cel::Value::Bool(false)) => err(format!("Invalid value: {}: {}", shown(v), failed())),
        Ok(other) => {
            err(format!("Invalid value: {}: rule {:?} gave {other:?}, not a bool", shown(v), rule.rule))
        }
        Err(e) => err(format!("Invalid value: {}: {}: {e}", shown(v), failed())),
    }
}

/// Every CEL rule of our CRDs, with the schema path it guards (for tests and `kubectl explain`-like
/// listings).
pub fn all_rules() -> Vec<(String, String, ValidationRule)> {
    fn walk(s: &JSONSchemaProps, kind: &str, path: &str, out: &mut Vec<(String, String, ValidationRule)>) {
        for r in s.x_kubernetes_validations.iter().flatten() {
            out.push((kind.to_owned(), path.to_owned(), r.clone()));
        }
        for (k, p) in s.properties.iter().flatten() {
            walk(p, kind, &join(path, k), out);
        }
        if let Some(JSONSchemaPropsOrArray::Schema(i)) = &s.items {
            walk(i, kind, &format!("{path}[]"), out);
        }
        if let Some(JSONSchemaPropsOrBool::Schema(i)) = &s.additional_properties {
            walk(i, kind, &format!("{path}[*]"), out);
        }
    }
    let mut out = Vec::new();
    for (kind, s) in &kinds().by_kind {
        walk(s, kind, "", &mut out);
    }
    out
}

#[cfg(test)]
mod tests;
