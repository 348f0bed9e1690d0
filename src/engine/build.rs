//! Image builds through the engine's build API, with the classic builder (the
//! engines berth targets may lack BuildKit). A directory becomes the tar that
//! `docker build` would send (its `.dockerignore` honoured); the engine's
//! output goes to the caller line by line. Ignore rules and the tar are pure
//! of the engine; only [`Engine::build`] and the image calls talk to it.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::{BuildInfo, ImageId};
use bollard::query_parameters::{BuildImageOptions, BuilderVersion, TagImageOptions};
use futures_util::StreamExt;

use super::{call_error, Engine};
use crate::error::CallError;

/// A context over this is refused: the engine would unpack it all before the
/// first step, and it is most likely a `.dockerignore` that is missing.
const MAX_CONTEXT_BYTES: u64 = 1 << 30;
/// How long the engine may take to answer a build request. It answers only
/// once the whole context has arrived and been unpacked, so the usual call
/// timeout is far too short; the steps themselves are not bounded.
const BUILD_ANSWER_SECS: u64 = 600;
/// Lines of build output a failure carries.
const TAIL_LINES: usize = 20;

/// A `.dockerignore`: which paths of a build context stay out of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
    /// Lines that are no valid pattern; Docker refuses such a context.
    problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    /// Cleaned, without its `!`: the walker compares it as text (see
    /// [`DockerIgnore::may_keep_under`]).
    text: String,
    /// A `!` line: what it matches is sent after all.
    exception: bool,
    glob: Vec<Tok>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Char(char),
    /// `?`: one character other than `/`.
    One,
    /// `[...]`: one character other than `/`, in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `*`: any run of characters without `/`.
    Star,
    /// `**/`: zero or more whole directories.
    Dirs,
    /// `**` anywhere else: anything, `/` included (so `**.log` is any `.log`).
    Any,
}

impl DockerIgnore {
    /// Docker's reading: a UTF-8 BOM dropped, `#` opens a comment only as a
    /// line's first character, lines trimmed, blank ones skipped, `!` marks an
    /// exception, and each pattern is cleaned (`./`, `//`, `..`, a leading `/`).
    pub fn parse(text: &str) -> DockerIgnore {
        let mut out = DockerIgnore::default();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (n, raw) in text.lines().enumerate() {
            if raw.starts_with('#') {
                continue;
            }
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let (exception, rest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if rest.is_empty() {
                out.problems.push(format!(
                    "line {}: {line:?}: a lone ! excepts nothing",
                    n + 1
                ));
                continue;
            }
            let text = match clean(rest) {
                c if c.len() > 1 && c.starts_with('/') => c[1..].to_string(),
                c => c,
            };
            match glob(&text) {
                Ok(glob) => out.patterns.push(Pattern {
                    text,
                    exception,
                    glob,
                }),
                Err(why) => out
                    .problems
                    .push(format!("line {}: {line:?}: {why}", n + 1)),
            }
        }
        out
    }

    /// Whether `rel_path` (relative to the context, `/`-separated) stays out.
    /// A pattern matches a path when it matches the path or one of its parent
    /// directories; the last pattern that matches decides.
    pub fn excluded(&self, rel_path: &str) -> bool {
        let cleaned = clean(rel_path);
        let path = cleaned.trim_start_matches('/');
        // As Docker: the context itself is never excluded.
        if path.is_empty() || path == "." {
            return false;
        }
        let prefixes = path
            .match_indices('/')
            .map(|(i, _)| &path[..i])
            .chain(std::iter::once(path));
        self.patterns
            .iter()
            .rev()
            .find(|p| prefixes.clone().any(|pre| matches(&p.glob, pre)))
            .is_some_and(|p| !p.exception)
    }

    /// The lines that are no valid pattern (`line 3: "[a-": unclosed [`).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Whether the walk must still look inside the excluded directory `dir`:
    /// Docker descends only when an exception's text starts with `dir/`, so
    /// `!*/keep` does not bring back `dir/keep`. Kept as is, so that berth
    /// sends what `docker build` sends.
    fn may_keep_under(&self, dir: &str) -> bool {
        let dir = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exception && format!("{}/", p.text).starts_with(&dir))
    }

    /// Sends `rel_path` whatever the file says (the Dockerfile, the ignore
    /// file: the engine reads both), as the docker CLI does.
    fn keep(&mut self, rel_path: &str) {
        self.patterns.push(Pattern {
            text: rel_path.to_string(),
            exception: true,
            glob: rel_path.chars().map(Tok::Char).collect(),
        });
    }
}

/// Go's `path.Clean`: no empty or `.` elements, `..` resolved where it can
/// be, no trailing `/`; `.` for nothing.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            s => parts.push(s),
        }
    }
    match (rooted, parts.join("/")) {
        (true, p) => format!("/{p}"),
        (false, p) if p.is_empty() => ".".to_string(),
        (false, p) => p,
    }
}

/// A pattern in Go's `filepath.Match` syntax plus `**`, as tokens.
fn glob(pattern: &str) -> Result<Vec<Tok>, String> {
    let cs: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(&c) = cs.get(i) {
        i += 1;
        match c {
            '*' if cs.get(i) == Some(&'*') => {
                i += 1;
                let slash = cs.get(i) == Some(&'/');
                if slash {
                    i += 1;
                }
                toks.push(if slash && i < cs.len() {
                    Tok::Dirs
                } else {
                    Tok::Any
                });
            }
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::One),
            '\\' => {
                let &next = cs.get(i).ok_or("a trailing \\ escapes nothing")?;
                toks.push(Tok::Char(next));
                i += 1;
            }
            '[' => {
                let (tok, next) = class(&cs, i)?;
                toks.push(tok);
                i = next;
            }
            c => toks.push(Tok::Char(c)),
        }
    }
    Ok(toks)
}

/// The class opened just before `i`; the token and where the pattern goes on.
fn class(cs: &[char], mut i: usize) -> Result<(Tok, usize), String> {
    let negated = cs.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if cs.get(i) == Some(&']') && !ranges.is_empty() {
            return Ok((Tok::Class { negated, ranges }, i + 1));
        }
        let (lo, next) = class_char(cs, i)?;
        i = next;
        let mut hi = lo;
        if cs.get(i) == Some(&'-') {
            (hi, i) = class_char(cs, i + 1)?;
            if hi < lo {
                return Err(format!("the range {lo}-{hi} is backwards"));
            }
        }
        ranges.push((lo, hi));
    }
}

fn class_char(cs: &[char], i: usize) -> Result<(char, usize), String> {
    match cs.get(i) {
        None => Err("unclosed [".into()),
        Some('-') | Some(']') => Err("a [ class needs a character before - or ]".into()),
        Some('\\') => cs
            .get(i + 1)
            .map(|&c| (c, i + 2))
            .ok_or_else(|| "unclosed [".into()),
        Some(&c) => Ok((c, i + 1)),
    }
}

/// Whether the whole of `path` matches. Dynamic programming over (token,
/// character) rather than backtracking, so no pattern can make it slow.
fn matches(glob: &[Tok], path: &str) -> bool {
    let s: Vec<char> = path.chars().collect();
    let n = s.len();
    // rest[c]: whether the tokens after the current one match s[c..].
    let mut rest: Vec<bool> = (0..=n).map(|c| c == n).collect();
    for tok in glob.iter().rev() {
        let mut here = vec![false; n + 1];
        // For `**/`: some `/` at or after c ends a run the rest follows.
        let mut dirs = false;
        for c in (0..=n).rev() {
            let ch = s.get(c).copied();
            let not_slash = ch.is_some_and(|h| h != '/');
            here[c] = match tok {
                Tok::Char(x) => ch == Some(*x) && rest[c + 1],
                Tok::One => not_slash && rest[c + 1],
                Tok::Class { negated, ranges } => {
                    not_slash
                        && ch.is_some_and(|h| {
                            ranges.iter().any(|&(lo, hi)| lo <= h && h <= hi) != *negated
                        })
                        && rest[c + 1]
                }
                Tok::Star => rest[c] || (not_slash && here[c + 1]),
                Tok::Any => rest[c] || (ch.is_some() && here[c + 1]),
                Tok::Dirs => {
                    dirs |= ch == Some('/') && rest[c + 1];
                    rest[c] || dirs
                }
            };
        }
        rest = here;
    }
    rest[0]
}

/// The Dockerfile's path inside the context, cleaned (`Dockerfile` when
/// none is named): the engine only reads one from the context it was sent.
fn dockerfile_in_context(dockerfile: &str) -> Result<String, String> {
    let name = if dockerfile.trim().is_empty() {
        "Dockerfile"
    } else {
        dockerfile
    };
    let cleaned = clean(name);
    if cleaned == "." || cleaned == ".." || cleaned.starts_with('/') || cleaned.starts_with("../") {
        return Err(format!(
            "dockerfile {name:?} must be a file inside the build context"
        ));
    }
    Ok(cleaned)
}

/// A tar of the build context `dir` as `docker build` sends it: what its
/// `.dockerignore` excludes left out (the Dockerfile and the ignore file are
/// always in), symlinks as symlinks, modes and mtimes kept, owners root, in
/// sorted order so that the same tree gives the same bytes.
pub fn context_tar(dir: &Path, dockerfile: &str) -> Result<Vec<u8>, String> {
    context_tar_capped(dir, dockerfile, MAX_CONTEXT_BYTES)
}

/// What decides a build's result, short of the base image: every file the
/// context sends (path, mode, content or link target, never its mtime: a
/// fresh checkout of the same commit is the same source), the Dockerfile's
/// path, the build args and the target. sha256, hex.
pub fn source_digest(
    dir: &Path,
    dockerfile: &str,
    args: &std::collections::BTreeMap<String, String>,
    target: Option<&str>,
) -> Result<String, String> {
    digest_tar(&context_tar(dir, dockerfile)?, dockerfile, args, target)
        .map_err(|e| format!("build context {}: {e}", dir.display()))
}

/// [`source_digest`] of a context already made by [`context_tar`] (a
/// deploy digests the tar it then sends, one walk of the context).
pub fn digest_tar(
    tar: &[u8],
    dockerfile: &str,
    args: &std::collections::BTreeMap<String, String>,
    target: Option<&str>,
) -> Result<String, String> {
    use ring::digest::{Context, SHA256};
    let mut ctx = Context::new(&SHA256);
    let mut archive = tar::Archive::new(tar);
    let what = |e: std::io::Error| e.to_string();
    for entry in archive.entries().map_err(what)? {
        let mut entry = entry.map_err(what)?;
        let path = entry.path().map_err(what)?.display().to_string();
        let mode = entry.header().mode().map_err(what)?;
        let link = entry
            .link_name()
            .map_err(what)?
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut body).map_err(what)?;
        for part in [
            path.as_bytes(),
            &mode.to_be_bytes(),
            link.as_bytes(),
            &(body.len() as u64).to_be_bytes(),
            &body,
        ] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
    }
    ctx.update(dockerfile.as_bytes());
    for (k, v) in args {
        ctx.update(format!("\0arg\0{k}\0{v}").as_bytes());
    }
    ctx.update(format!("\0target\0{}", target.unwrap_or("")).as_bytes());
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn context_tar_capped(dir: &Path, dockerfile: &str, cap: u64) -> Result<Vec<u8>, String> {
    let at = |what: String| format!("build context {}: {what}", dir.display());
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(at("not a directory".into())),
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(at("directory not found".into())),
        Err(e) => return Err(at(e.to_string())),
    }
    let dockerfile = dockerfile_in_context(dockerfile).map_err(at)?;
    match fs::metadata(dir.join(&dockerfile)) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(at(format!("{dockerfile} is not a file"))),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(at(format!("{dockerfile} not found")))
        }
        Err(e) => return Err(at(format!("{dockerfile}: {e}"))),
    }
    let mut ignore = match fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => DockerIgnore::parse(&text),
        Err(e) if e.kind() == ErrorKind::NotFound => DockerIgnore::default(),
        Err(e) => return Err(at(format!(".dockerignore: {e}"))),
    };
    if let Some(problem) = ignore.problems().first() {
        return Err(at(format!(".dockerignore {problem}")));
    }
    for kept in [".dockerignore", dockerfile.as_str()] {
        if ignore.excluded(kept) {
            ignore.keep(kept);
        }
    }
    let mut walk = Walk {
        root: dir,
        ignore: &ignore,
        tar: tar::Builder::new(Vec::new()),
        size: 0,
        cap,
    };
    walk.dir("").map_err(at)?;
    walk.tar
        .into_inner()
        .map_err(|e| at(format!("writing the tar: {e}")))
}

/// The walk of a context into its tar.
struct Walk<'a> {
    root: &'a Path,
    ignore: &'a DockerIgnore,
    tar: tar::Builder<Vec<u8>>,
    /// File bytes so far, against `cap`.
    size: u64,
    cap: u64,
}

impl Walk<'_> {
    /// Adds what is under `rel` (`""`: the root), names in byte order.
    fn dir(&mut self, rel: &str) -> Result<(), String> {
        let shown = if rel.is_empty() { "." } else { rel };
        let mut names = fs::read_dir(self.root.join(rel))
            .and_then(|entries| {
                entries
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|e| format!("reading {shown}: {e}"))?;
        names.sort();
        for name in names {
            let name = name.into_string().map_err(|n| {
                format!(
                    "{}: the name is not UTF-8",
                    Path::new(rel).join(n).display()
                )
            })?;
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let full = self.root.join(&path);
            let meta = fs::symlink_metadata(&full).map_err(|e| format!("{path}: {e}"))?;
            let excluded = self.ignore.excluded(&path);
            let kind = meta.file_type();
            if kind.is_dir() {
                if excluded && !self.ignore.may_keep_under(&path) {
                    continue;
                }
                if !excluded {
                    let mut h = header(&meta, tar::EntryType::Directory, 0);
                    self.tar
                        .append_data(&mut h, format!("{path}/"), std::io::empty())
                        .map_err(|e| format!("{path}: {e}"))?;
                }
                self.dir(&path)?;
            } else if excluded {
                continue;
            } else if kind.is_symlink() {
                let target = fs::read_link(&full).map_err(|e| format!("{path}: {e}"))?;
                let mut h = header(&meta, tar::EntryType::Symlink, 0);
                self.tar
                    .append_link(&mut h, &path, &target)
                    .map_err(|e| format!("{path}: {e}"))?;
            } else if kind.is_file() {
                self.file(&path, &full, &meta)?;
            }
            // Sockets, fifos and devices have no content a build could use.
        }
        Ok(())
    }

    fn file(&mut self, path: &str, full: &Path, meta: &fs::Metadata) -> Result<(), String> {
        let too_big = |size: u64| {
            (size > self.cap).then(|| {
                format!(
                    "more than {} to send (reached at {path}): leave out what the image does not need in .dockerignore",
                    bytes_text(self.cap)
                )
            })
        };
        // Checked before reading too, so that one huge file is never read.
        if let Some(e) = too_big(self.size.saturating_add(meta.len())) {
            return Err(e);
        }
        let data = fs::read(full).map_err(|e| format!("{path}: {e}"))?;
        let size = self.size.saturating_add(data.len() as u64);
        if let Some(e) = too_big(size) {
            return Err(e);
        }
        self.size = size;
        let mut h = header(meta, tar::EntryType::Regular, data.len() as u64);
        self.tar
            .append_data(&mut h, path, data.as_slice())
            .map_err(|e| format!("{path}: {e}"))
    }
}

fn bytes_text(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n => format!("{n} bytes"),
    }
}

/// A tar header with the entry's mode and mtime, owned by root as the docker
/// CLI sends it (so the tar does not depend on who runs berth).
fn header(meta: &fs::Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.permissions().mode() & 0o7777);
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h
}

/// What to build and how to tag it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// `--build-arg`s.
    pub args: BTreeMap<String, String>,
    /// The stage to stop at.
    pub target: Option<String>,
    /// `repo:tag` given to the built image.
    pub tag: String,
    pub labels: BTreeMap<String, String>,
}

/// A build that did not produce an image: a failed step, a bad context or an
/// engine error, with the build's last lines of output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BuildFailure {
    pub message: String,
    /// The last (up to 20) lines the build printed.
    pub log_tail: Vec<String>,
}

/// The build's output cut into lines, its last lines kept for a failure.
/// Pure: the caller hands each line on.
#[derive(Debug, Default)]
struct Transcript {
    /// Output after the last newline: the engine cuts `stream` text anywhere.
    partial: String,
    tail: VecDeque<String>,
}

impl Transcript {
    /// The lines `text` completes, without their line ends.
    fn push(&mut self, text: &str) -> Vec<String> {
        self.partial.push_str(text);
        let mut lines = Vec::new();
        while let Some(n) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=n).collect();
            lines.push(self.keep(line.trim_end_matches(['\n', '\r'])));
        }
        lines
    }

    /// A `status` message (pulls of a missing base image) as one line; the
    /// many progress updates are left out.
    fn status(&mut self, info: &BuildInfo) -> Option<String> {
        let status = info.status.as_deref().filter(|s| !s.is_empty())?;
        if info
            .progress_detail
            .as_ref()
            .is_some_and(|p| p.current.is_some())
        {
            return None;
        }
        Some(match info.id.as_deref() {
            Some(id) if !id.is_empty() => self.keep(&format!("{id}: {status}")),
            _ => self.keep(status),
        })
    }

    /// What is left after the last newline, once the output has ended.
    fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.partial);
        Some(self.keep(rest.trim_end_matches('\r')))
    }

    fn keep(&mut self, line: &str) -> String {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        line.to_string()
    }

    fn failure(&mut self, message: String) -> BuildFailure {
        BuildFailure {
            message,
            log_tail: self.tail.iter().cloned().collect(),
        }
    }
}

/// Hands on the output's last line, even without its newline.
fn flush(out: &mut Transcript, log: &mut (dyn FnMut(&str) + Send)) {
    if let Some(line) = out.finish() {
        log(&line);
    }
}

impl Engine {
    /// Builds `spec` from its context `tar` (made by [`context_tar`]) with
    /// the classic builder, handing each line of output
    /// to `log` as it comes; returns the image id (`sha256:...`).
    pub async fn build_tar(
        &self,
        spec: &BuildSpec,
        tar: Vec<u8>,
        log: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, BuildFailure> {
        let mut out = Transcript::default();
        let tag = &spec.tag;
        let dockerfile = dockerfile_in_context(&spec.dockerfile)
            .map_err(|e| out.failure(format!("build context {}: {e}", spec.context.display())))?;
        let docker = self
            .docker()
            .map_err(|e| out.failure(e.message))?
            .with_timeout(Duration::from_secs(BUILD_ANSWER_SECS));
        let options = BuildImageOptions {
            dockerfile,
            t: Some(tag.clone()),
            buildargs: Some(spec.args.clone().into_iter().collect()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            target: spec.target.clone().unwrap_or_default(),
            rm: true,
            forcerm: true,
            // BuildKit would need a session (and bollard's buildkit feature);
            // the classic builder works on every engine.
            version: BuilderVersion::BuilderV1,
            ..Default::default()
        };
        let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
        let mut id = None;
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                // bollard turns the engine's `errorDetail` (a failed step) into this.
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    flush(&mut out, log);
                    return Err(out.failure(error));
                }
                Err(e) => {
                    flush(&mut out, log);
                    return Err(out.failure(call_error(format!("build {tag}"), e).message));
                }
            };
            for line in out.push(info.stream.as_deref().unwrap_or_default()) {
                log(&line);
            }
            if let Some(line) = out.status(&info) {
                log(&line);
            }
            if let Some(ImageId { id: Some(built) }) = info.aux {
                id = Some(built);
            }
            // An error without a message gets past bollard's check above.
            if let Some(detail) = info.error_detail {
                flush(&mut out, log);
                let code = detail
                    .code
                    .map_or(String::new(), |c| format!(" (code {c})"));
                return Err(out.failure(format!("build {tag} failed{code}")));
            }
        }
        flush(&mut out, log);
        if let Some(id) = id {
            return Ok(id);
        }
        match self.image_id(tag).await {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(out.failure(format!(
                "build {tag}: the engine reported no error but has no image {tag}"
            ))),
            Err(e) => Err(out.failure(e.message)),
        }
    }

    /// The local image id of `reference`; `None` when the engine has no such image.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, CallError> {
        match self.docker()?.inspect_image(reference).await {
            Ok(image) => image.id.map(Some).ok_or_else(|| {
                CallError::unreached(format!("inspect image {reference}: the engine sent no id"))
            }),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(call_error(format!("inspect image {reference}"), e)),
        }
    }

    /// Tags `id_or_ref` as `repo:tag` (`latest` when `tag` is empty).
    pub async fn tag_image(&self, id_or_ref: &str, repo: &str, tag: &str) -> Result<(), CallError> {
        let options = TagImageOptions {
            repo: Some(repo.to_string()),
            tag: (!tag.is_empty()).then(|| tag.to_string()),
        };
        self.docker()?
            .tag_image(id_or_ref, Some(options))
            .await
            .map_err(|e| call_error(format!("tag {id_or_ref} as {repo}:{tag}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    #[test]
    fn dockerignore_follows_dockers_rules() {
        // (the file, a path, whether it stays out)
        let cases: &[(&str, &str, bool)] = &[
            ("*.log", "a.log", true),
            ("*.log", "sub/a.log", false),
            ("**/*.log", "sub/deep/a.log", true),
            ("**/*.log", "a.log", true),
            ("**.log", "x/y.log", true),
            ("sub", "sub", true),
            ("sub", "sub/x/y", true),
            ("sub", "subway", false),
            ("sub/", "sub/x", true),
            ("/sub", "sub/x", true),
            ("./sub", "sub", true),
            ("a/../b", "b", true),
            ("a//b/./c", "a/b/c", true),
            ("../x", "x", false),
            ("s?b", "sub", true),
            ("s?b", "s/b", false),
            ("s*b", "s/b", false),
            ("file[0-9].txt", "file5.txt", true),
            ("file[0-9].txt", "fileA.txt", false),
            ("file[^0-9].txt", "fileA.txt", true),
            ("file[^0-9].txt", "file5.txt", false),
            ("file[^0-9].txt", "file/.txt", false),
            ("[a-c]*", "b/x", true),
            ("a/**", "a/b/c", true),
            ("a/**", "a", false),
            ("a/**/z", "a/z", true),
            ("a/**/z", "a/b/c/z", true),
            ("a/**/z", "a/bz", false),
            ("**", "anything/at/all", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("a\\?", "a?", true),
            ("a\\?", "ab", false),
            ("*\n!keep.txt", "keep.txt", false),
            ("*\n!keep.txt", "other", true),
            ("!keep.txt\n*", "keep.txt", true),
            ("sub\n!sub/keep", "sub/keep", false),
            ("sub\n!sub/keep", "sub/keep/inner", false),
            ("sub\n!sub/keep", "sub/other", true),
            ("! /sub/keep \nsub", "sub/keep", true),
            ("# comment\n\n  x  ", "x", true),
            ("# comment", "# comment", false),
            (" #x", "#x", true),
            ("\u{feff}x", "x", true),
            ("x\r\ny\r\n", "y", true),
            ("*", ".", false),
            ("*", "", false),
            ("", "a", false),
        ];
        for &(file, path, want) in cases {
            let ig = DockerIgnore::parse(file);
            assert!(ig.problems().is_empty(), "{file:?}: {:?}", ig.problems());
            assert_eq!(ig.excluded(path), want, "{file:?} on {path:?}");
        }
    }

    #[test]
    fn bad_patterns_are_reported_and_the_rest_still_apply() {
        for bad in ["[a-", "[]", "[a-]", "a\\", "!", "[z-a]", "x[^"] {
            let ig = DockerIgnore::parse(&format!("ok\n{bad}\n"));
            assert_eq!(ig.problems().len(), 1, "{bad:?}");
            assert!(
                ig.problems()[0].starts_with("line 2: "),
                "{:?}",
                ig.problems()
            );
            assert!(ig.excluded("ok"), "{bad:?}");
        }
    }

    #[test]
    fn the_walk_enters_an_excluded_dir_only_for_an_exception_under_it() {
        let ig = DockerIgnore::parse("sub\nother\n!sub/keep\n!*/keep");
        assert!(ig.may_keep_under("sub"));
        assert!(!ig.may_keep_under("other"), "as Docker: no glob expansion");
        assert!(!ig.may_keep_under("su"));
    }

    #[test]
    fn output_is_cut_into_lines_and_its_tail_kept() {
        let mut t = Transcript::default();
        assert_eq!(t.push("Step 1/2 : FROM x\n ---> ab"), ["Step 1/2 : FROM x"]);
        assert_eq!(t.push("c\r\n"), [" ---> abc"]);
        assert!(t.push("").is_empty());
        assert_eq!(t.push("hi"), Vec::<String>::new());
        assert_eq!(t.finish().as_deref(), Some("hi"));
        assert_eq!(t.finish(), None);
        let pull = BuildInfo {
            status: Some("Pulling fs layer".into()),
            id: Some("abc".into()),
            ..Default::default()
        };
        assert_eq!(t.status(&pull).as_deref(), Some("abc: Pulling fs layer"));
        let progress = BuildInfo {
            progress_detail: Some(ProgressDetail {
                current: Some(1),
                total: Some(2),
            }),
            ..pull
        };
        assert_eq!(t.status(&progress), None, "progress updates are left out");
        let f = t.failure("boom".into());
        assert_eq!(
            f.log_tail,
            [
                "Step 1/2 : FROM x",
                " ---> abc",
                "hi",
                "abc: Pulling fs layer"
            ]
        );
        assert_eq!(f.to_string(), "boom");

        let mut t = Transcript::default();
        let text: String = (0..25).map(|i| format!("line {i}\n")).collect();
        assert_eq!(t.push(&text).len(), 25);
        let tail = t.failure(String::new()).log_tail;
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.first().map(String::as_str), Some("line 5"));
        assert_eq!(tail.last().map(String::as_str), Some("line 24"));
    }

    /// A directory under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("berth-build-{name}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).expect("the temp dir is writable");
            TempDir(p)
        }

        fn write(&self, rel: &str, text: &str, mode: u32) {
            let p = self.0.join(rel);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).expect("the temp dir is writable");
            }
            fs::write(&p, text).expect("the temp dir is writable");
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .expect("the temp dir is ours");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_source_digest_follows_content_args_and_target_not_mtimes() {
        let t = TempDir::new("digest");
        t.write("Dockerfile", "FROM scratch\n", 0o644);
        t.write("app/main.sh", "echo hi\n", 0o755);
        t.write(".dockerignore", "*.log\n", 0o644);
        let args: std::collections::BTreeMap<String, String> =
            [("A".to_string(), "1".to_string())].into();
        let d = || source_digest(&t.0, "Dockerfile", &args, None).unwrap();
        let first = d();
        assert_eq!(first.len(), 64);
        // The same content with another mtime, and an ignored file added.
        let f = fs::File::options()
            .write(true)
            .open(t.0.join("app/main.sh"))
            .unwrap();
        f.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        t.write("debug.log", "noise", 0o644);
        assert_eq!(d(), first, "same content, same digest");
        t.write("app/main.sh", "echo bye\n", 0o755);
        let changed = d();
        assert_ne!(changed, first);
        let other: std::collections::BTreeMap<String, String> =
            [("A".to_string(), "2".to_string())].into();
        assert_ne!(
            source_digest(&t.0, "Dockerfile", &other, None).unwrap(),
            changed
        );
        assert_ne!(
            source_digest(&t.0, "Dockerfile", &args, Some("prod")).unwrap(),
            changed
        );
    }

    /// (path without a trailing `/`, type, mode, mtime, link target, content)
    type Row = (String, tar::EntryType, u32, u64, Option<String>, String);

    fn entries(tar: &[u8]) -> Vec<Row> {
        let mut archive = tar::Archive::new(tar);
        let mut rows = Vec::new();
        for e in archive.entries().expect("a tar") {
            let mut e = e.expect("an entry");
            let mut content = String::new();
            std::io::Read::read_to_string(&mut e, &mut content).expect("text");
            let h = e.header();
            rows.push((
                e.path()
                    .expect("a path")
                    .display()
                    .to_string()
                    .trim_end_matches('/')
                    .to_string(),
                h.entry_type(),
                h.mode().expect("a mode"),
                h.mtime().expect("an mtime"),
                e.link_name()
                    .expect("a link name")
                    .map(|l| l.display().to_string()),
                content,
            ));
        }
        rows
    }

    #[test]
    fn the_context_tar_honours_dockerignore_and_keeps_modes_links_and_times() {
        let t = TempDir::new("ctx");
        t.write("Dockerfile", "FROM scratch\n", 0o644);
        t.write(
            ".dockerignore",
            "*.log\nsecret\n!secret/keep\nbuild/\nDockerfile\n.dockerignore\n",
            0o644,
        );
        t.write("a.txt", "a", 0o640);
        t.write("run.sh", "#!/bin/sh\n", 0o755);
        t.write("x.log", "x", 0o644);
        t.write("sub/b.txt", "b", 0o644);
        t.write("sub/c.log", "c", 0o644);
        t.write("secret/key", "k", 0o600);
        t.write("secret/keep", "kept", 0o644);
        t.write("build/out", "o", 0o644);
        std::os::unix::fs::symlink("a.txt", t.0.join("link")).expect("a symlink");
        let then = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        fs::File::options()
            .write(true)
            .open(t.0.join("a.txt"))
            .and_then(|f| f.set_modified(then))
            .expect("an mtime can be set");

        let tar = context_tar(&t.0, "./Dockerfile").expect("a tar");
        let rows = entries(&tar);
        let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            names,
            [
                ".dockerignore",
                "Dockerfile",
                "a.txt",
                "link",
                "run.sh",
                "secret/keep",
                "sub",
                "sub/b.txt",
                "sub/c.log"
            ]
        );
        let row = |name: &str| rows.iter().find(|r| r.0 == name).expect(name);
        let a = row("a.txt");
        assert_eq!(
            (a.1, a.2, a.3, a.5.as_str()),
            (tar::EntryType::Regular, 0o640, 1_000_000_000, "a")
        );
        assert_eq!(row("run.sh").2, 0o755);
        let link = row("link");
        assert_eq!(
            (link.1, link.4.as_deref()),
            (tar::EntryType::Symlink, Some("a.txt"))
        );
        assert_eq!(row("sub").1, tar::EntryType::Directory);
        assert_eq!(row("secret/keep").5, "kept");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        assert!(
            row("sub/b.txt").3.abs_diff(now) < 3600,
            "mtimes are the files' own"
        );

        assert_eq!(
            context_tar(&t.0, "Dockerfile").expect("a tar"),
            tar,
            "same tree, same bytes"
        );
    }

    #[test]
    fn a_dockerfile_in_an_excluded_dir_is_sent_alone() {
        let t = TempDir::new("sub-dockerfile");
        t.write("docker/Dockerfile", "FROM scratch\n", 0o644);
        t.write("docker/other", "o", 0o644);
        t.write("app", "a", 0o644);
        t.write(".dockerignore", "docker\n", 0o644);
        let tar = context_tar(&t.0, "docker/Dockerfile").expect("a tar");
        let names: Vec<String> = entries(&tar).into_iter().map(|r| r.0).collect();
        assert_eq!(names, [".dockerignore", "app", "docker/Dockerfile"]);
    }

    #[test]
    fn context_errors_name_the_path() {
        let t = TempDir::new("errors");
        let shown = t.0.display();
        let missing = t.0.join("web");
        assert_eq!(
            context_tar(&missing, "Dockerfile"),
            Err(format!(
                "build context {}: directory not found",
                missing.display()
            ))
        );
        assert_eq!(
            context_tar(&t.0, "Dockerfile.prod"),
            Err(format!("build context {shown}: Dockerfile.prod not found"))
        );
        for outside in ["../Dockerfile", "/etc/Dockerfile", "."] {
            let e = context_tar(&t.0, outside).expect_err(outside);
            assert!(
                e.contains("inside the build context") && e.contains(outside),
                "{e}"
            );
        }
        t.write("Dockerfile", "FROM scratch\n", 0o644);
        t.write("big", "0123456789", 0o644);
        let e = context_tar_capped(&t.0, "", 20).expect_err("over the cap");
        assert!(
            e.contains("reached at big") && e.contains(".dockerignore"),
            "{e}"
        );
        t.write(".dockerignore", "ok\n[a-\n", 0o644);
        assert_eq!(
            context_tar(&t.0, "Dockerfile"),
            Err(format!(
                "build context {shown}: .dockerignore line 2: \"[a-\": unclosed ["
            ))
        );
    }
}
