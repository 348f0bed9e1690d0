//! Container logs as berth serves them: chunks cut into whole lines per
//! stream (stdout and stderr apart), each prefixed with its container. Pure.

use bollard::container::LogOutput;
use bytes::Bytes;

/// Cuts log chunks into prefixed lines, one buffer per stream.
pub(super) struct Lines {
    pub(super) prefix: String,
    /// stdout (and console), stderr.
    pub(super) partial: [Vec<u8>; 2],
    /// With the engine's timestamps on: lines before this time (unix
    /// seconds, nanoseconds) are dropped, and the timestamp is cut off.
    pub(super) after: Option<(i64, u32)>,
}

impl Lines {
    pub(super) fn push(&mut self, chunk: &LogOutput) -> Bytes {
        let (i, data) = match chunk {
            LogOutput::StdErr { message } => (1, message),
            LogOutput::StdOut { message }
            | LogOutput::Console { message }
            | LogOutput::StdIn { message } => (0, message),
        };
        let buf = &mut self.partial[i];
        buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(n) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=n).collect();
            let Some(after) = self.after else {
                out.extend_from_slice(self.prefix.as_bytes());
                out.extend(line);
                continue;
            };
            let (stamp, text) = match line.iter().position(|&b| b == b' ') {
                Some(sp) => (&line[..sp], &line[sp + 1..]),
                None => (&line[..0], &line[..]),
            };
            let at = std::str::from_utf8(stamp).ok().and_then(unix_time);
            if at.is_some_and(|at| at < after) {
                continue;
            }
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(text);
        }
        Bytes::from(out)
    }

    pub(super) fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        for buf in &mut self.partial {
            if !buf.is_empty() {
                out.extend_from_slice(self.prefix.as_bytes());
                out.append(buf);
                out.push(b'\n');
            }
        }
        Bytes::from(out)
    }
}

/// Unix seconds and nanoseconds of an RFC 3339 time as the engine writes
/// it (`2026-12-01T02:39:55.123456789Z`, or with a `+01:00` offset).
/// `None` when it is not one.
pub fn unix_time(rfc3339: &str) -> Option<(i64, u32)> {
    let b = rfc3339.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| rfc3339.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // The offset, after an optional fraction.
    let rest = rfc3339[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let fraction = &rfc3339[19..rfc3339.len() - rest.len()];
    let nanos = match fraction.strip_prefix('.') {
        None if fraction.is_empty() => 0,
        Some(digits) if (1..=9).contains(&digits.len()) && !digits.contains('.') => {
            format!("{digits:0<9}").parse::<u32>().ok()?
        }
        _ => return None,
    };
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the date (proleptic Gregorian calendar).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + s - offset, nanos))
}

/// A log line with the engine's time of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// Unix seconds, nanoseconds; (0, 0) when the engine gave none.
    pub at: (i64, u32),
    /// The line, newline included, without its timestamp.
    pub text: Bytes,
}

/// Lines as the engine sends them with timestamps (`TIME text\n`) →
/// stamped lines.
pub fn stamped(lines: &[u8]) -> Vec<Stamped> {
    lines
        .split_inclusive(|&b| b == b'\n')
        .map(|line| {
            let split = line.iter().position(|&b| b == b' ').and_then(|sp| {
                let at = std::str::from_utf8(&line[..sp]).ok().and_then(unix_time)?;
                Some((at, &line[sp + 1..]))
            });
            // A line without a time stays whole, first.
            let (at, text) = split.unwrap_or(((0, 0), line));
            Stamped {
                at,
                text: Bytes::copy_from_slice(text),
            }
        })
        .collect()
}

/// Several containers' lines (each with its prefix) as one log, in the
/// order they were written; lines of the same time keep their container's
/// order.
pub fn merge(logs: &[(String, Vec<Stamped>)]) -> Bytes {
    let mut all: Vec<(&(i64, u32), usize, usize)> = logs
        .iter()
        .enumerate()
        .flat_map(|(c, (_, lines))| lines.iter().enumerate().map(move |(i, l)| (&l.at, c, i)))
        .collect();
    all.sort();
    let mut out = Vec::new();
    for (_, c, i) in all {
        let (prefix, lines) = &logs[c];
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&lines[i].text);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_chunks_become_whole_prefixed_lines_per_stream() {
        let mut l = Lines {
            prefix: "web-1 | ".into(),
            partial: [Vec::new(), Vec::new()],
            after: None,
        };
        let out = |m: &str| LogOutput::StdOut {
            message: Bytes::from(m.to_string()),
        };
        let err = |m: &str| LogOutput::StdErr {
            message: Bytes::from(m.to_string()),
        };
        assert_eq!(l.push(&out("one\ntw")), "web-1 | one\n");
        assert_eq!(l.push(&err("oops\n")), "web-1 | oops\n", "stderr apart");
        assert_eq!(l.push(&out("o\nthree")), "web-1 | two\n");
        assert_eq!(
            l.finish(),
            "web-1 | three\n",
            "the last line without newline"
        );
        assert_eq!(l.finish(), "");
    }

    #[test]
    fn a_new_run_drops_the_lines_before_it_and_the_timestamps() {
        let mut l = Lines {
            prefix: "web-1 | ".into(),
            partial: [Vec::new(), Vec::new()],
            after: Some((1_796_092_795, 500_000_000)),
        };
        let out = |m: &str| LogOutput::StdOut {
            message: Bytes::from(m.to_string()),
        };
        assert_eq!(
            l.push(&out(
                "2026-12-01T02:39:55.4Z before\n2026-12-01T02:39:55.6Z after\n"
            )),
            "web-1 | after\n"
        );
        assert_eq!(
            l.push(&out("no stamp\n")),
            "web-1 | stamp\n",
            "the first word goes"
        );
    }

    #[test]
    fn engine_times_to_unix_time() {
        assert_eq!(unix_time("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            unix_time("2026-12-01T02:39:55.123456789Z"),
            Some((1_796_092_795, 123_456_789))
        );
        assert_eq!(
            unix_time("2026-12-01T02:39:55.5Z"),
            Some((1_796_092_795, 500_000_000))
        );
        assert_eq!(
            unix_time("2024-02-29T12:00:00+01:00"),
            Some((1_709_204_400, 0))
        );
        assert_eq!(
            unix_time("2000-03-01T00:00:00-00:30"),
            Some((951_870_600, 0))
        );
        for bad in [
            "",
            "0001-01-01",
            "2026-13-01T00:00:00Z",
            "2026-12-01 02:39:55Z",
            "2026-12-01T02:39:55",
            "2026-12-01T02:39:55.Z",
            "2026-12-01T02:39:55.1234567891Z",
        ] {
            assert_eq!(unix_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn replicas_logs_merge_by_time() {
        let a = stamped(b"2026-12-01T02:00:01Z a one\n2026-12-01T02:00:03Z a two\nno stamp\n");
        assert_eq!(a[0].at, (1_796_090_401, 0));
        assert_eq!(&a[1].text[..], b"a two\n");
        assert_eq!(a[2].at, (0, 0));
        let b = stamped(b"2026-12-01T02:00:02.5Z b one\n2026-12-01T02:00:03Z b two\n");
        let merged = merge(&[("a | ".into(), a), ("b | ".into(), b)]);
        assert_eq!(
            String::from_utf8_lossy(&merged),
            "a | no stamp\na | a one\nb | b one\na | a two\nb | b two\n"
        );
    }
}
