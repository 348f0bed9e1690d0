//! A service's `volumes:` entries, short (`data:/var/lib/x:ro`) or long,
//! as [`Mount`]s: bind sources made absolute, named volumes checked
//! against the top-level `volumes:`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::model::{Mount, MountKind, Pos, Volume};
use super::project::{pos, FieldError};
use super::raw;
use super::values::resolve;

/// What a mount's source is checked and resolved against.
pub(super) struct Scope<'a> {
    pub dir: &'a Path,
    pub volumes: &'a BTreeMap<String, Volume>,
    /// For `~`: `HOME` from here, else from berth's own environment.
    pub vars: &'a HashMap<String, String>,
}

/// `/path` (an anonymous volume), `source:/path`, `source:/path:ro`.
pub(super) fn short(spec: &str, scope: &Scope) -> Result<Mount, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] => (Some(*source), *target, None),
        [source, target, options] => (Some(*source), *target, Some(*options)),
        _ => return Err(format!("{spec:?} is not source:target[:ro|rw]")),
    };
    let mut read_only = false;
    for option in options.into_iter().flat_map(|o| o.split(',')) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            other => {
                return Err(format!(
                    "{other:?} in {spec:?} is not a mount option berth supports (ro, rw)"
                ))
            }
        }
    }
    let target = target_path(target)?;
    let (kind, source) = match source {
        None => (MountKind::Volume, None),
        Some("") => return Err(format!("{spec:?} has an empty source")),
        Some(s) if s.starts_with(['.', '/', '~']) => {
            (MountKind::Bind, Some(bind_source(s, scope)?))
        }
        Some(name) => (MountKind::Volume, Some(named_volume(name, scope)?)),
    };
    Ok(Mount {
        kind,
        source,
        target,
        read_only,
    })
}

/// `type` (volume, bind, tmpfs), `source`, `target`, `read_only`.
pub(super) fn long(spec: &raw::Volume, scope: &Scope) -> Result<Mount, FieldError> {
    let field = |name: &'static str, at: Pos| move |message| FieldError::at(name, at, message);
    let kind = spec
        .kind
        .as_ref()
        .ok_or_else(|| FieldError::whole("type is missing (volume, bind or tmpfs)"))?;
    let target = spec
        .target
        .as_ref()
        .ok_or_else(|| FieldError::whole("target is missing"))?;
    let target = target_path(&target.value).map_err(field("target", pos(target)))?;
    let source = spec.source.as_ref();
    let source_error = |message| FieldError {
        field: source.map(|s| ("source", pos(s))),
        message,
    };
    let (kind, source) = match (kind.value.as_str(), source.map(|s| s.value.as_str())) {
        ("volume", None) => (MountKind::Volume, None),
        ("volume", Some(name)) => (
            MountKind::Volume,
            Some(named_volume(name, scope).map_err(source_error)?),
        ),
        ("bind", Some(path)) if !path.is_empty() => (
            MountKind::Bind,
            Some(bind_source(path, scope).map_err(source_error)?),
        ),
        ("bind", _) => return Err(FieldError::whole("a bind mount needs a source")),
        ("tmpfs", None) => (MountKind::Tmpfs, None),
        ("tmpfs", Some(s)) => {
            return Err(source_error(format!(
                "a tmpfs mount takes no source, found {s:?}"
            )))
        }
        (other, _) => {
            return Err(field("type", pos(kind))(format!(
                "{other:?} is not a mount type berth supports (volume, bind, tmpfs)"
            )))
        }
    };
    Ok(Mount {
        kind,
        source,
        target,
        read_only: spec.read_only.as_ref().is_some_and(|r| r.value),
    })
}

fn target_path(target: &str) -> Result<String, String> {
    if target.starts_with('/') {
        Ok(target.to_owned())
    } else {
        Err(format!(
            "{target:?} is not an absolute path inside the container"
        ))
    }
}

fn named_volume(name: &str, scope: &Scope) -> Result<String, String> {
    if scope.volumes.contains_key(name) {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "volume {name:?} is not defined under the top-level volumes: \
             (a host path starts with ./, / or ~)"
        ))
    }
}

fn bind_source(path: &str, scope: &Scope) -> Result<String, String> {
    let path = match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let home = scope
                .vars
                .get("HOME")
                .cloned()
                .or_else(|| std::env::var("HOME").ok())
                .ok_or_else(|| format!("{path:?} starts with ~ but HOME is not set"))?;
            format!("{home}{rest}")
        }
        Some(_) => return Err(format!("{path:?}: ~user paths are not supported")),
        None => path.to_owned(),
    };
    Ok(resolve(scope.dir, &path).to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(kind: MountKind, source: Option<&str>, target: &str, read_only: bool) -> Mount {
        Mount {
            kind,
            source: source.map(str::to_owned),
            target: target.to_owned(),
            read_only,
        }
    }

    #[test]
    fn short_forms() {
        let volumes = BTreeMap::from([("data".to_owned(), Volume::default())]);
        let vars = HashMap::from([("HOME".to_owned(), "/home/me".to_owned())]);
        let scope = Scope {
            dir: Path::new("/srv/app"),
            volumes: &volumes,
            vars: &vars,
        };
        for (spec, want) in [
            ("/cache", mount(MountKind::Volume, None, "/cache", false)),
            (
                "data:/var/lib/db",
                mount(MountKind::Volume, Some("data"), "/var/lib/db", false),
            ),
            (
                "./conf:/etc/app:ro",
                mount(MountKind::Bind, Some("/srv/app/conf"), "/etc/app", true),
            ),
            (
                "/etc/tz:/etc/tz:ro,rw",
                mount(MountKind::Bind, Some("/etc/tz"), "/etc/tz", false),
            ),
            (
                "~/.ssh:/root/.ssh",
                mount(MountKind::Bind, Some("/home/me/.ssh"), "/root/.ssh", false),
            ),
            (
                "../up:/up",
                mount(MountKind::Bind, Some("/srv/up"), "/up", false),
            ),
        ] {
            assert_eq!(short(spec, &scope), Ok(want), "{spec}");
        }
        for (spec, needle) in [
            ("nope:/x", r#"volume "nope" is not defined"#),
            ("data:rel", r#""rel" is not an absolute path"#),
            ("data:/x:z", r#""z" in "data:/x:z" is not a mount option"#),
            ("a:b:c:d", r#""a:b:c:d" is not source:target"#),
        ] {
            let err = short(spec, &scope).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }
}
