//! The parsed file ([`raw::File`]) into a [`Project`]: the project name,
//! the top-level networks and volumes with their engine names, every
//! service (see [`super::service`]), and the start order. Cross-service
//! checks (unknown dependencies, cycles) live here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::model::{Network, Pos, Project, Volume};
use super::raw::{self, KeyValues};
use super::{order, service, ComposeError};

/// What every part of a service is checked against.
pub(super) struct Ctx<'a> {
    /// The compose file as the user named it, for errors.
    pub file: String,
    pub dir: PathBuf,
    pub vars: &'a HashMap<String, String>,
    pub read: &'a dyn Fn(&Path) -> io::Result<String>,
    pub services: BTreeSet<String>,
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
}

impl Ctx<'_> {
    pub fn fail(
        &self,
        at: Pos,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ComposeError {
        ComposeError::new(&self.file, at, key, message)
    }
}

pub(super) fn pos<T>(value: &Spanned<T>) -> Pos {
    Pos {
        line: value.referenced.line(),
        column: value.referenced.column(),
    }
}

/// An error in a long-form entry: the field at fault (with where it is),
/// or the entry as a whole.
pub(super) struct FieldError {
    pub field: Option<(&'static str, Pos)>,
    pub message: String,
}

impl FieldError {
    pub fn at(field: &'static str, at: Pos, message: String) -> Self {
        FieldError {
            field: Some((field, at)),
            message,
        }
    }

    pub fn whole(message: &str) -> Self {
        FieldError {
            field: None,
            message: message.to_owned(),
        }
    }

    /// Into a [`ComposeError`] for the entry at `key`, found at `entry`.
    pub fn locate(self, ctx: &Ctx, key: &str, entry: Pos) -> ComposeError {
        match self.field {
            Some((field, at)) => ctx.fail(at, format!("{key}.{field}"), self.message),
            None => ctx.fail(entry, key, self.message),
        }
    }
}

pub(super) struct Input<'a> {
    pub given: String,
    pub file: PathBuf,
    pub dir: PathBuf,
    pub project: Option<&'a str>,
    pub vars: &'a HashMap<String, String>,
    pub read: &'a dyn Fn(&Path) -> io::Result<String>,
}

pub(super) fn build(input: Input, file: raw::File) -> Result<Project, ComposeError> {
    let mut ctx = Ctx {
        file: input.given,
        dir: input.dir,
        vars: input.vars,
        read: input.read,
        services: BTreeSet::new(),
        networks: BTreeMap::new(),
        volumes: BTreeMap::new(),
    };
    let name = project_name(&ctx, input.project, file.name.as_ref())?;
    for (key, def) in file.networks.map(|n| n.0).unwrap_or_default() {
        let (external, name, driver, labels) = definition(&ctx, &name, "networks", &key, def)?;
        let network = Network {
            external,
            name,
            driver,
            labels,
        };
        ctx.networks.insert(key.value, network);
    }
    for (key, def) in file.volumes.map(|v| v.0).unwrap_or_default() {
        let (external, name, driver, labels) = definition(&ctx, &name, "volumes", &key, def)?;
        let volume = Volume {
            external,
            name,
            driver,
            labels,
        };
        ctx.volumes.insert(key.value, volume);
    }

    let Some(services) = file.services else {
        return Err(ctx.fail(Pos::default(), "services", "the file defines no services"));
    };
    if services.value.0.is_empty() {
        return Err(ctx.fail(pos(&services), "services", "the file defines no services"));
    }
    for (key, _) in &services.value.0 {
        if !is_service_name(&key.value) {
            return Err(ctx.fail(
                pos(key),
                format!("services.{}", key.value),
                format!(
                    "{:?} is not a service name: letters, digits, _ . - only, \
                     starting with a letter or digit",
                    key.value
                ),
            ));
        }
        ctx.services.insert(key.value.clone());
    }

    let mut built = BTreeMap::new();
    let mut dependency_at = BTreeMap::new();
    for (key, raw) in services.value.0 {
        let (service, deps_at) = service::service(&ctx, &key, raw.0)?;
        dependency_at.insert(key.value.clone(), deps_at);
        built.insert(key.value, service);
    }

    let deps = built
        .iter()
        .map(|(name, s)| (name.clone(), s.depends_on.keys().cloned().collect()))
        .collect();
    let order = order::start_order(&deps).map_err(|cycle| {
        let from = cycle.first().cloned().unwrap_or_default();
        let at = cycle
            .get(1)
            .and_then(|to| dependency_at.get(&from)?.get(to))
            .copied()
            .unwrap_or_default();
        ctx.fail(
            at,
            format!("services.{from}.depends_on"),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        )
    })?;

    // Compose creates `default` only when a service is on it.
    let mut networks = ctx.networks;
    if built.values().any(|s| s.networks.contains_key("default")) {
        networks
            .entry("default".to_owned())
            .or_insert_with(|| Network {
                name: format!("{name}_default"),
                ..Network::default()
            });
    }
    Ok(Project {
        name,
        file: input.file,
        dir: ctx.dir,
        services: built,
        networks,
        volumes: ctx.volumes,
        order,
        warnings: Vec::new(),
    })
}

/// `--project`, else `name:`, else the directory's name; normalised as
/// compose does: lowercase, `[a-z0-9_-]` kept, leading `_` and `-` dropped.
fn project_name(
    ctx: &Ctx,
    project: Option<&str>,
    name: Option<&raw::Text>,
) -> Result<String, ComposeError> {
    let (given, from, at) = match (project, name) {
        (Some(p), _) => (p.to_owned(), "--project", Pos::default()),
        (None, Some(n)) => (n.value.clone(), "name:", pos(n)),
        (None, None) => {
            let dir = ctx
                .dir
                .file_name()
                .map(|d| d.to_string_lossy().into_owned());
            (
                dir.unwrap_or_default(),
                "the directory's name",
                Pos::default(),
            )
        }
    };
    let normal: String = given
        .to_lowercase()
        .chars()
        .filter(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
        .collect();
    let normal = normal.trim_start_matches(['_', '-']).to_owned();
    if normal.is_empty() {
        return Err(ctx.fail(
            at,
            "name",
            format!("{given:?} (from {from}) gives no project name: it needs a letter or digit"),
        ));
    }
    Ok(normal)
}

type Definition = (bool, String, Option<String>, BTreeMap<String, String>);

/// A top-level network or volume: (external, engine name, driver, labels).
fn definition(
    ctx: &Ctx,
    project: &str,
    section: &str,
    key: &raw::Text,
    def: Option<raw::Ext<raw::Definition>>,
) -> Result<Definition, ComposeError> {
    let path = format!("{section}.{}", key.value);
    let Some(raw::Ext(def)) = def else {
        return Ok((
            false,
            format!("{project}_{}", key.value),
            None,
            BTreeMap::new(),
        ));
    };
    let external = def.external.is_some_and(|e| e.value);
    let name = match def.name {
        Some(n) if n.value.is_empty() => {
            return Err(ctx.fail(pos(&n), format!("{path}.name"), "the name is empty"))
        }
        Some(n) => n.value,
        None if external => key.value.clone(),
        None => format!("{project}_{}", key.value),
    };
    let labels = match &def.labels {
        Some(kv) => labels(ctx, &format!("{path}.labels"), kv)?,
        None => BTreeMap::new(),
    };
    Ok((external, name, def.driver.map(|d| d.value), labels))
}

/// `labels:` as a mapping or `K=V` list; a label without a value is empty.
pub(super) fn labels(
    ctx: &Ctx,
    key: &str,
    kv: &KeyValues,
) -> Result<BTreeMap<String, String>, ComposeError> {
    Ok(service::key_values(ctx, key, kv)?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, compose's rule.
fn is_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
