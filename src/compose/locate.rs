//! Names the key at a position in a YAML text: serde errors carry a line and
//! column but no path, so on an error the text is read again as a plain tree
//! of positioned keys and values, and the deepest node starting at or before
//! the error's position gives its dotted path.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::options::DuplicateKeyPolicy;
use serde_saphyr::{Options, Spanned};

use super::model::Pos;

/// `services.web.ports[0]` for a position inside that entry; empty when the
/// text does not parse as YAML at all.
pub(super) fn key_at(text: &str, at: Pos) -> String {
    // No property map: interpolation is off, so an interpolation error
    // cannot stop this pass. Duplicates pass through so a duplicate key
    // still gets its path.
    let mut options = Options::default();
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    let Ok(root) = serde_saphyr::from_str_with_options::<Spanned<Node>>(text, options) else {
        return String::new();
    };
    let mut marks = Vec::new();
    walk(&root, String::new(), 0, &mut marks);
    marks
        .into_iter()
        .filter(|m| (m.pos.line, m.pos.column) <= (at.line, at.column))
        .max_by_key(|m| (m.pos.line, m.pos.column, m.depth))
        .map(|m| m.path)
        .unwrap_or_default()
}

struct Mark {
    pos: Pos,
    depth: usize,
    path: String,
}

fn pos_of<T>(node: &Spanned<T>) -> Pos {
    Pos {
        line: node.referenced.line(),
        column: node.referenced.column(),
    }
}

fn walk(node: &Spanned<Node>, path: String, depth: usize, marks: &mut Vec<Mark>) {
    match &node.value {
        Node::Leaf => {}
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                marks.push(Mark {
                    pos: pos_of(item),
                    depth: depth + 1,
                    path: path.clone(),
                });
                walk(item, path, depth + 1, marks);
            }
        }
        Node::Map(entries) => {
            for (key, value) in entries {
                let path = if path.is_empty() {
                    key.value.0.clone()
                } else {
                    format!("{path}.{}", key.value.0)
                };
                marks.push(Mark {
                    pos: pos_of(key),
                    depth: depth + 1,
                    path: path.clone(),
                });
                marks.push(Mark {
                    pos: pos_of(value),
                    depth: depth + 1,
                    path: path.clone(),
                });
                walk(value, path, depth + 1, marks);
            }
        }
    }
}

/// Any YAML value, keeping only the shape and the positions.
enum Node {
    Leaf,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Key>, Spanned<Node>)>),
}

/// A mapping key as written: read as a string so `n` stays `n`, not the
/// YAML 1.1 boolean.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Key)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, line: u64, column: u64) -> String {
        key_at(text, Pos { line, column })
    }

    #[test]
    fn names_keys_values_and_list_items() {
        let text = "services:\n  web:\n    image: x\n    ports:\n      - \"80\"\n      - {target: 81, bad: 1}\n";
        assert_eq!(at(text, 1, 1), "services");
        assert_eq!(at(text, 3, 5), "services.web.image");
        assert_eq!(at(text, 3, 12), "services.web.image");
        assert_eq!(at(text, 5, 9), "services.web.ports[0]");
        assert_eq!(at(text, 6, 28), "services.web.ports[1].bad");
    }

    #[test]
    fn malformed_yaml_has_no_key() {
        assert_eq!(at("a: [\n", 1, 4), "");
    }
}
