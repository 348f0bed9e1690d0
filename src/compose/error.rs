//! The one error a compose file can produce: where (file, line, column,
//! dotted key) and what (a message naming the bad value). YAML and serde
//! errors are turned into it here, with the key path recovered from the
//! error's position by [`super::locate`].

use std::fmt;

use serde_saphyr::{DefaultMessageFormatter, MessageFormatter};

use super::locate;
use super::model::Pos;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeError {
    /// The file as the user named it (the compose file, or an env file).
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: u64,
    pub column: u64,
    /// Dotted path of the offending key, e.g. `services.web.ports[0]`;
    /// empty when the YAML itself is malformed.
    pub key: String,
    /// Names the bad value, e.g. `"80a" is not a port number`.
    pub message: String,
}

impl ComposeError {
    pub(super) fn new(
        file: &str,
        pos: Pos,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ComposeError {
            file: file.to_owned(),
            line: pos.line,
            column: pos.column,
            key: key.into(),
            message: message.into(),
        }
    }

    /// A YAML syntax, type or interpolation error from serde-saphyr. `text`
    /// is parsed a second time only to name the key at the error's position.
    pub(super) fn from_yaml(file: &str, text: &str, err: &serde_saphyr::Error) -> Self {
        let err = err.without_snippet();
        let pos = err
            .location()
            .map(|l| Pos {
                line: l.line(),
                column: l.column(),
            })
            .unwrap_or_default();
        let key = if pos.line > 0 {
            locate::key_at(text, pos)
        } else {
            String::new()
        };
        // An alias wraps the error raised where the anchor was defined; the
        // position stays the alias's, the message is the inner one.
        let inner = match err {
            serde_saphyr::Error::AliasError { error, .. } => error.without_snippet(),
            other => other,
        };
        let message = match inner {
            serde_saphyr::Error::SerdeUnknownField {
                field, expected, ..
            } => unknown_key(&key, field, expected),
            serde_saphyr::Error::PropertyRequiredButUnset { name, message, .. } => {
                with_hint(format!("variable {name} is not set"), message)
            }
            serde_saphyr::Error::PropertyRequiredButEmpty { name, message, .. } => {
                with_hint(format!("variable {name} is empty"), message)
            }
            serde_saphyr::Error::InvalidPropertyName { name, .. } => {
                format!("{name:?} is not a valid variable reference")
            }
            serde_saphyr::Error::Unexpected { expected, .. } => match *expected {
                "sequence start" => "expected a list".to_owned(),
                "mapping start" => "expected a mapping".to_owned(),
                other => format!("expected {other}"),
            },
            other => DefaultMessageFormatter.format_message(other).into_owned(),
        };
        ComposeError {
            file: file.to_owned(),
            line: pos.line,
            column: pos.column,
            key,
            message,
        }
    }
}

fn with_hint(message: String, hint: &str) -> String {
    if hint.is_empty() {
        message
    } else {
        format!("{message}: {hint}")
    }
}

/// Every table rejects keys it does not know; a few compose keys get a
/// reason instead of the list of accepted ones.
fn unknown_key(path: &str, field: &str, expected: &[&str]) -> String {
    let segments: Vec<&str> = path.split('.').collect();
    // serde-saphyr hides a key it reads with interpolation on behind this
    // phrase; the located path ends with the key as written.
    let field = match (field, segments.last()) {
        ("an interpolated field", Some(last)) if !last.is_empty() => last,
        _ => field,
    };
    let in_service = segments.len() == 3 && segments[0] == "services";
    let parent = segments.len().checked_sub(2).map(|i| segments[i]);
    match field {
        "container_name" if in_service => {
            "container_name is not supported: berth names containers itself so it can run \
             replicas side by side"
                .to_owned()
        }
        "hostname" if in_service => "hostname is not supported: replicas would share one \
             hostname; other services reach this one by its service name"
            .to_owned(),
        _ if parent == Some("deploy") => {
            format!("deploy.{field} is not supported: berth reads only deploy.replicas")
        }
        _ => {
            let hint = crate::names::suggest(field, expected.iter().copied())
                .map(|s| format!("did you mean {s}? "))
                .unwrap_or_default();
            format!(
                "unknown or unsupported key {field:?}; {hint}berth accepts: {}",
                expected.join(", ")
            )
        }
    }
}

impl fmt::Display for ComposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ComposeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_drops_an_unknown_position() {
        let mut e = ComposeError::new(
            "/p/compose.yaml",
            Pos { line: 3, column: 7 },
            "services.web.ports[0]",
            "\"80a\" is not a port number",
        );
        assert_eq!(
            e.to_string(),
            "/p/compose.yaml:3:7: services.web.ports[0]: \"80a\" is not a port number"
        );
        e.line = 0;
        assert_eq!(
            e.to_string(),
            "/p/compose.yaml: services.web.ports[0]: \"80a\" is not a port number"
        );
    }
}
