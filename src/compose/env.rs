//! Variables: `.env` and `env_file` files, read the way docker compose
//! reads them (`KEY=VALUE` lines, `#` comments, an optional `export `,
//! quoted values that may span lines; `${VAR}` inside values is not
//! expanded), and the unset variables a compose file refers to.

use std::collections::{BTreeSet, HashMap};

use super::model::Pos;
use super::ComposeError;

/// The variables of a `.env`-style file, in file order (a later duplicate
/// wins when collected into a map). `name` is only used in errors.
pub fn parse_dotenv(name: &str, text: &str) -> Result<Vec<(String, String)>, ComposeError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut vars = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let number = i as u64 + 1;
        let fail = |column: usize, key: &str, message: String| {
            ComposeError::new(
                name,
                Pos {
                    line: number,
                    column: column as u64 + 1,
                },
                key,
                message,
            )
        };
        let line = lines[i];
        i += 1;
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let body = body
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(body);
        let Some((key, rest)) = body.split_once('=') else {
            return Err(fail(
                indent,
                "",
                format!("{:?} is not KEY=VALUE", body.trim_end()),
            ));
        };
        let key = key.trim_end();
        if key.is_empty() || !key.chars().all(is_key_char) {
            return Err(fail(indent, "", format!("{key:?} is not a variable name")));
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                // The value runs to the matching quote, on this line or a
                // later one.
                let mut raw = rest[1..].to_owned();
                let (end, after) = loop {
                    if let Some(end) = closing_quote(&raw, quote) {
                        let after = raw[end + 1..].trim();
                        break (end, after.to_owned());
                    }
                    let Some(next) = lines.get(i) else {
                        return Err(fail(
                            line.len() - rest.len(),
                            key,
                            format!("the value of {key} has no closing {quote}"),
                        ));
                    };
                    raw.push('\n');
                    raw.push_str(next);
                    i += 1;
                };
                if !after.is_empty() && !after.starts_with('#') {
                    return Err(fail(
                        line.len() - rest.len(),
                        key,
                        format!("unexpected {after:?} after the quoted value of {key}"),
                    ));
                }
                if quote == '"' {
                    unescape(&raw[..end])
                } else {
                    raw[..end].to_owned()
                }
            }
            _ => strip_comment(rest).trim_end().to_owned(),
        };
        vars.push((key.to_owned(), value));
    }
    Ok(vars)
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Where the quote closing `s` is: in double quotes a backslash escapes it.
fn closing_quote(s: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote == '"' => escaped = true,
            c if c == quote => return Some(i),
            _ => {}
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(c @ ('\\' | '"' | '$')) => out.push(c),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// An unquoted value ends at ` #`; a `#` inside a word is kept.
fn strip_comment(value: &str) -> &str {
    if value.starts_with('#') {
        return "";
    }
    let mut prev_space = false;
    for (i, c) in value.char_indices() {
        if c == '#' && prev_space {
            return &value[..i];
        }
        prev_space = c == ' ' || c == '\t';
    }
    value
}

/// Variables the compose text uses as plain `${NAME}` or `$NAME` that
/// `vars` lacks: compose replaces them with an empty string and warns.
/// References with an operator (`${NAME:-default}`) are skipped whole, and
/// so are comments (a `#` at a line's start or after a space; one inside a
/// quoted value cuts the scan short, never invents a variable).
pub(super) fn unset_variables(text: &str, vars: &HashMap<String, String>) -> BTreeSet<String> {
    let mut unset = BTreeSet::new();
    for line in text.lines() {
        let line = match line.find('#') {
            Some(0) => "",
            Some(_) => line.split(" #").next().unwrap_or(line),
            None => line,
        };
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            rest = &rest[at + 1..];
            if let Some(after) = rest.strip_prefix('$') {
                rest = after;
                continue;
            }
            let braced = rest.strip_prefix('{');
            let body = braced.unwrap_or(rest);
            let end = body
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(body.len());
            let name = &body[..end];
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let plain = braced.is_none() || body[end..].starts_with('}');
            if plain && !vars.contains_key(name) {
                unset.insert(name.to_owned());
            }
            rest = &body[end..];
        }
    }
    unset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<(String, String)> {
        parse_dotenv(".env", text).expect("valid .env")
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_the_compose_forms() {
        let text = "# a comment\n\
                    \n\
                    PLAIN=value\n\
                    export EXPORTED=yes\n\
                    SPACED =  padded value   \n\
                    COMMENTED=abc # note\n\
                    HASH=a#b\n\
                    EMPTY=\n\
                    SINGLE='lit $X \\n' # note\n\
                    DOUBLE=\"a\\nb \\\"q\\\"\"\n\
                    MULTI=\"one\n\
                    two\"\n";
        assert_eq!(
            parse(text),
            pairs(&[
                ("PLAIN", "value"),
                ("EXPORTED", "yes"),
                ("SPACED", "padded value"),
                ("COMMENTED", "abc"),
                ("HASH", "a#b"),
                ("EMPTY", ""),
                ("SINGLE", "lit $X \\n"),
                ("DOUBLE", "a\nb \"q\""),
                ("MULTI", "one\ntwo"),
            ])
        );
    }

    #[test]
    fn finds_unset_variables() {
        let vars = HashMap::from([("SET".to_owned(), "1".to_owned())]);
        let text = "a: ${SET} ${PLAIN} $BARE-x $$ESCAPED ${DEF:-x} ${REQ:?m}\n\
                    # $COMMENTED\n\
                    b: x # ${TRAILING}\n\
                    c: ${9} $ {NOPE}\n";
        let unset: Vec<String> = unset_variables(text, &vars).into_iter().collect();
        assert_eq!(unset, ["BARE", "PLAIN"]);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_dotenv("/p/db.env", "A=1\nNOT A PAIR\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 1));
        assert_eq!(err.file, "/p/db.env");
        assert!(err.message.contains("\"NOT A PAIR\""), "{err}");

        let err = parse_dotenv("/p/db.env", "A=1\n\nB=\"open\nstill open\n").unwrap_err();
        assert_eq!((err.line, err.column), (3, 3));
        assert!(err.message.contains("B has no closing \""), "{err}");

        let err = parse_dotenv(".env", "  BAD KEY=1\n").unwrap_err();
        assert_eq!((err.line, err.column), (1, 3));
        assert!(err.message.contains("\"BAD KEY\""), "{err}");

        let err = parse_dotenv(".env", "Q='a' b\n").unwrap_err();
        assert_eq!((err.line, err.column), (1, 3));
        assert!(err.message.contains("\"b\""), "{err}");
    }
}
