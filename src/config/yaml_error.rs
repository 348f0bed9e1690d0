//! serde-saphyr's errors (unknown key, wrong type, syntax) in the one shape
//! of every config error: the file is read again as a tree of nodes with
//! their places, and the node the error points at gives the key path and the
//! value as written.

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{MessageFormatter, Spanned};

use super::ConfigError;
use crate::names::{excerpt, suggest};

/// A serde-saphyr error in the shape of every other config error. Its
/// errors name neither the key path nor, for a wrong type, the key: both
/// are found by reading the text again into a tree of nodes with their
/// places and taking the node the error points at.
pub(super) fn parse_error(text: &str, origin: &str, e: &serde_saphyr::Error) -> ConfigError {
    use serde_saphyr::Error as E;
    let e = e.without_snippet();
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    // Unknown and repeated keys point at the key, the rest at the value.
    let on_key = matches!(
        e,
        E::SerdeUnknownField { .. } | E::DuplicateMappingKey { .. }
    );
    let about_a_key = on_key
        || matches!(
            e,
            E::SerdeMissingField { .. }
                | E::InvalidScalar { .. }
                | E::InvalidBooleanStrict { .. }
                | E::Unexpected { .. }
                | E::SerdeInvalidType { .. }
                | E::SerdeInvalidValue { .. }
                | E::NullIntoString { .. }
        );
    let found = match (about_a_key && line > 0).then(|| Node::read(text)) {
        // Not well-formed after all, further on (`proxy: [1` is a list
        // where a mapping belongs, and an unclosed one): that comes first.
        Some(Err(syntax)) => return not_about_a_key(origin, syntax.without_snippet()),
        Some(Ok(tree)) => find(&tree, text, (line, column), on_key, &Found::root()),
        None => None,
    };
    let Some(f) = found else {
        return not_about_a_key(origin, e);
    };
    let (key, value, message) = match e {
        E::SerdeUnknownField {
            field, expected, ..
        } => {
            let hint = match suggest(field, expected.iter().copied()) {
                Some(s) => format!("did you mean {}?", join(&f.parent, s)),
                None => format!("known keys here: {}", expected.join(", ")),
            };
            (f.key, f.value, format!("unknown field `{field}`: {hint}"))
        }
        E::DuplicateMappingKey { .. } => (
            f.key,
            f.value,
            "set twice in the same mapping: keep one".to_string(),
        ),
        E::SerdeMissingField { field, .. } => (
            join(&f.key, field),
            String::new(),
            format!("missing field `{field}`: it is required"),
        ),
        _ => {
            let what = expected(e).unwrap_or_else(|| "another kind of value".into());
            (f.key, f.value, format!("`{}` takes {what}", f.leaf))
        }
    };
    // A mistyped or misplaced secret is still a secret: errors reach logs,
    // `berth check` and the reload API.
    let value = if looks_secret(&key) {
        "(hidden)".to_string()
    } else {
        value
    };
    ConfigError::Invalid {
        origin: origin.to_string(),
        line,
        column,
        // A quoted key may span lines: the error stays on one.
        key: plain(&key),
        value,
        message: plain(&message),
    }
}

/// A key whose value may be a secret (`eab_hmac`, `tsig_secret`, `token`, ...).
fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "hmac", "token", "password", "passwd"]
        .iter()
        .any(|w| k.contains(w))
}

fn not_about_a_key(origin: &str, e: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let message = match expected(e) {
        Some(what) => format!("expected {what}"),
        None => plain(&serde_saphyr::UserMessageFormatter.format_message(e)),
    };
    ConfigError::Parse {
        origin: origin.to_string(),
        line,
        column,
        message,
    }
}

/// What a value of the wrong kind should have been, in the words of the
/// file rather than of Rust.
fn expected(e: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::Error as E;
    Some(match e {
        E::InvalidScalar { ty, .. } => match *ty {
            "u8" => "a whole number from 0 to 255".into(),
            "u16" => "a whole number from 0 to 65535".into(),
            "u32" => format!("a whole number from 0 to {}", u32::MAX),
            "u64" | "usize" => format!("a whole number from 0 to {}", u64::MAX),
            "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".into(),
            "f32" | "f64" => "a number".into(),
            "bool" | "boolean" => "true or false".into(),
            ty => format!("a {ty}"),
        },
        E::InvalidBooleanStrict { .. } => "true or false".into(),
        E::Unexpected { expected, .. } if expected.contains("mapping") => {
            "a mapping (indented `key: value` lines)".into()
        }
        E::Unexpected { expected, .. } if expected.contains("sequence") => {
            "a list, e.g. [a, b]".into()
        }
        E::Unexpected { expected, .. } if expected.contains("scalar") => {
            "a single value, not a list or mapping".into()
        }
        E::Unexpected { expected, .. } => (*expected).to_string(),
        E::SerdeInvalidType { expected, .. } | E::SerdeInvalidValue { expected, .. } => {
            expected.clone()
        }
        E::NullIntoString { .. } => "a value".into(),
        _ => return None,
    })
}

/// One line, whatever the file held: control characters escaped (the
/// value is, by its `{:?}`).
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Any YAML node and its place: enough to name the key at a line and column.
enum Node {
    Scalar,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl Node {
    /// The text as a tree; an error when it is not well-formed YAML.
    /// Repeated keys are kept, so that the second one can be named.
    fn read(text: &str) -> Result<Spanned<Node>, serde_saphyr::Error> {
        let options = serde_saphyr::options! {
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        };
        serde_saphyr::from_str_with_options(text, options)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_char<E>(self, _: char) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = a.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// The key an error points at: its dotted path (`proxy.conect_timeout`,
/// `routes[0].backends[1]`), the path of the mapping it is in, its own name,
/// and its value as written.
struct Found {
    key: String,
    parent: String,
    leaf: String,
    value: String,
}

impl Found {
    fn root() -> Found {
        Found {
            key: String::new(),
            parent: String::new(),
            leaf: String::new(),
            value: String::new(),
        }
    }
}

/// The key whose name (`on_key`) or value starts at `at` (line, column),
/// below `here`.
fn find(
    node: &Spanned<Node>,
    text: &str,
    at: (u64, u64),
    on_key: bool,
    here: &Found,
) -> Option<Found> {
    let place = |n: &Spanned<Node>| (n.referenced.line(), n.referenced.column());
    if !on_key && !here.key.is_empty() && place(node) == at {
        return Some(Found {
            key: here.key.clone(),
            parent: here.parent.clone(),
            leaf: here.leaf.clone(),
            value: written(node, text),
        });
    }
    match &node.value {
        Node::Scalar => None,
        Node::Seq(items) => items.iter().enumerate().find_map(|(i, item)| {
            let below = Found {
                key: format!("{}[{i}]", here.key),
                parent: here.key.clone(),
                leaf: here.leaf.clone(),
                value: String::new(),
            };
            find(item, text, at, on_key, &below)
        }),
        Node::Map(entries) => entries.iter().find_map(|(k, v)| {
            let name = written(k, text);
            let below = Found {
                key: join(&here.key, &name),
                parent: here.key.clone(),
                leaf: name,
                value: String::new(),
            };
            if on_key && place(k) == at {
                return Some(Found {
                    value: written(v, text),
                    ..below
                });
            }
            find(v, text, at, on_key, &below)
        }),
    }
}

/// A node as the file has it: a scalar's own text (without its quotes; a
/// key `y` is not `true`), a list or mapping in flow style, cut when long.
fn written(node: &Spanned<Node>, text: &str) -> String {
    let shown = match &node.value {
        Node::Scalar => {
            let span = node.referenced.span();
            let s = span
                .byte_offset()
                .zip(span.byte_len())
                .and_then(|(at, len)| text.get(at as usize..(at + len) as usize))
                .unwrap_or("");
            let quoted = s.len() >= 2
                && (s.starts_with('"') && s.ends_with('"')
                    || s.starts_with('\'') && s.ends_with('\''));
            if quoted { &s[1..s.len() - 1] } else { s }.to_string()
        }
        Node::Seq(items) => {
            let items: Vec<String> = items.iter().map(|i| written(i, text)).collect();
            format!("[{}]", items.join(", "))
        }
        Node::Map(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", written(k, text), written(v, text)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
    };
    excerpt(&shown)
}
