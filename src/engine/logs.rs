//! Container logs as berth serves them: chunks cut into whole lines per
//! stream (stdout and stderr apart), each prefixed with its container. Pure.

use bollard::container::LogOutput;
use bytes::Bytes;

/// Cuts log chunks into prefixed lines, one buffer per stream.
pub(super) struct Lines {
    pub(super) prefix: String,
    /// stdout (and console), stderr.
    pub(super) partial: [Vec<u8>; 2],
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
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend(buf.drain(..=n));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_chunks_become_whole_prefixed_lines_per_stream() {
        let mut l = Lines {
            prefix: "web-1 | ".into(),
            partial: [Vec::new(), Vec::new()],
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
}
