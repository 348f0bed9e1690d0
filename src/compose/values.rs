//! Scalar formats compose gives meaning to: durations (`1m30s`), command
//! strings split like a shell would, and paths relative to the project.
//! Errors are messages naming the value; callers add where it was.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// A compose duration: Go's format, one or more `<number><unit>` with
/// units `h`, `m`, `s`, `ms`, `us` (or `µs`), `ns`, e.g. `1m30s`, `1.5s`;
/// a bare `0` is zero.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (like 10s, 1m30s, 500ms)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total: u128 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut part = whole.checked_mul(nanos_per).ok_or_else(bad)?;
        // Digits past the nanosecond are dropped, as Go does.
        let mut scale = nanos_per;
        for digit in fraction.chars() {
            let digit = digit.to_digit(10).ok_or_else(bad)?;
            scale /= 10;
            part += u128::from(digit) * scale;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    // The remainder is below 1e9, so it fits.
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Splits a command string into words as a POSIX shell would, without
/// expanding anything: `'...'` is literal, `"..."` honours `\"`, `\\`,
/// `\$` and `` \` ``, and a backslash outside quotes escapes the next
/// character.
pub(super) fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("{text:?} has an unclosed '")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("{text:?} has an unclosed \"")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("{text:?} has an unclosed \"")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => word.push('\\'),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `rel` taken from `dir` (itself absolute), with `.` and `..` resolved
/// lexically so the result reads like the path the user meant.
pub(super) fn resolve(dir: &Path, rel: &str) -> PathBuf {
    let joined = dir.join(rel);
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `KEY=VALUE` → (`KEY`, Some(`VALUE`)); `KEY` → (`KEY`, None).
pub(super) fn split_key_value(entry: &str) -> (&str, Option<&str>) {
    match entry.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (entry, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("0", ms(0)),
            ("10s", ms(10_000)),
            ("1m30s", ms(90_000)),
            ("500ms", ms(500)),
            ("1h", ms(3_600_000)),
            ("1.5s", ms(1_500)),
            ("2h0m1s", ms(7_201_000)),
            ("250us", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for text in ["", "10", "s", "1x", "-1s", "1.2.3s", "1 s"] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn words() {
        let split = |s: &str| split_words(s).expect("valid words");
        assert_eq!(split("a  b\tc"), ["a", "b", "c"]);
        assert_eq!(
            split(r#"sh -c 'echo "$HOME"; exit 1'"#),
            ["sh", "-c", r#"echo "$HOME"; exit 1"#]
        );
        assert_eq!(
            split(r#"a "b \"c\" \$d" e\ f ''"#),
            ["a", r#"b "c" $d"#, "e f", ""]
        );
        assert_eq!(split(""), Vec::<String>::new());
        assert!(split_words("echo 'open")
            .unwrap_err()
            .contains("unclosed '"));
        assert!(split_words("echo \"open")
            .unwrap_err()
            .contains("unclosed \""));
    }

    #[test]
    fn paths() {
        let dir = Path::new("/srv/app");
        assert_eq!(resolve(dir, "."), PathBuf::from("/srv/app"));
        assert_eq!(resolve(dir, "./data/x"), PathBuf::from("/srv/app/data/x"));
        assert_eq!(resolve(dir, "../shared"), PathBuf::from("/srv/shared"));
        assert_eq!(resolve(dir, "/etc/x"), PathBuf::from("/etc/x"));
    }
}
