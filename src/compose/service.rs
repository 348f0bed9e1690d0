//! One service's raw keys into a [`Service`]: short forms expanded, env
//! files read, values checked. Every error names the dotted key under
//! `services.<name>` and where it is.

use std::collections::BTreeMap;
use std::time::Duration;

use super::model::{Build, Condition, Healthcheck, Pos, Service, ServiceNetwork};
use super::project::{labels, pos, Ctx};
use super::raw::{self, Ext, KeyValues, ListOrMap, ShortOrLong, StrOrList, Text};
use super::values::{parse_duration, resolve, split_key_value, split_words};
use super::{mounts, parse_dotenv, ports, ComposeError};
use serde_saphyr::Spanned;

/// The service, and where each of its dependencies is named (for a cycle
/// found later).
pub(super) fn service(
    ctx: &Ctx,
    key: &Text,
    raw: raw::Service,
) -> Result<(Service, BTreeMap<String, Pos>), ComposeError> {
    let name = key.value.clone();
    let path = format!("services.{name}");
    let at = |field: &str| format!("{path}.{field}");

    let image = match raw.image {
        Some(i) if i.value.trim().is_empty() => {
            return Err(ctx.fail(pos(&i), at("image"), "the image is empty"))
        }
        i => i.map(|i| i.value),
    };
    let build = raw.build.map(|b| build(ctx, &at("build"), b)).transpose()?;
    if image.is_none() && build.is_none() {
        return Err(ctx.fail(
            pos(key),
            path,
            format!("service {name:?} has neither image nor build"),
        ));
    }

    let mut environment = BTreeMap::new();
    if let Some(files) = &raw.env_file {
        for (file, file_at, key) in list(files, &at("env_file")) {
            let full = resolve(&ctx.dir, &file);
            let text = (ctx.read)(&full).map_err(|e| {
                ctx.fail(
                    file_at,
                    key,
                    format!("cannot read env file {:?}: {e}", full.display()),
                )
            })?;
            environment.extend(parse_dotenv(&full.display().to_string(), &text)?);
        }
    }
    if let Some(env) = &raw.environment {
        environment.extend(from_vars(ctx, key_values(ctx, &at("environment"), env)?));
    }

    let mut port_list = Vec::new();
    for (i, p) in raw.ports.iter().flatten().enumerate() {
        let key = format!("{path}.ports[{i}]");
        port_list.push(match &p.value {
            ShortOrLong::Short(s) => ports::short(s).map_err(|m| ctx.fail(pos(p), &key, m))?,
            ShortOrLong::Long(l) => ports::long(l).map_err(|e| e.locate(ctx, &key, pos(p)))?,
        });
    }
    let mut expose = Vec::new();
    for (i, e) in raw.expose.iter().flatten().enumerate() {
        let key = format!("{path}.expose[{i}]");
        expose.push(ports::expose(&e.value).map_err(|m| ctx.fail(pos(e), key, m))?);
    }

    let scope = mounts::Scope {
        dir: &ctx.dir,
        volumes: &ctx.volumes,
        vars: ctx.vars,
    };
    let mut volumes = Vec::new();
    for (i, v) in raw.volumes.iter().flatten().enumerate() {
        let key = format!("{path}.volumes[{i}]");
        volumes.push(match &v.value {
            ShortOrLong::Short(s) => {
                mounts::short(s, &scope).map_err(|m| ctx.fail(pos(v), &key, m))?
            }
            ShortOrLong::Long(l) => {
                mounts::long(l, &scope).map_err(|e| e.locate(ctx, &key, pos(v)))?
            }
        });
    }

    let networks = networks(ctx, &at("networks"), raw.networks)?;
    let (depends_on, dependency_at) = depends_on(ctx, &at("depends_on"), raw.depends_on)?;
    let healthcheck = raw
        .healthcheck
        .map(|h| healthcheck(ctx, &at("healthcheck"), h.0))
        .transpose()?;

    if let Some(r) = &raw.restart {
        if !is_restart_policy(&r.value) {
            return Err(ctx.fail(
                pos(r),
                at("restart"),
                format!(
                    "{:?} is not a restart policy (no, always, on-failure, \
                     on-failure:N, unless-stopped)",
                    r.value
                ),
            ));
        }
    }
    let replicas = match raw.deploy.and_then(|d| d.0.replicas) {
        Some(r) => r.value.parse::<usize>().map_err(|_| {
            ctx.fail(
                pos(&r),
                at("deploy.replicas"),
                format!("{:?} is not a number of replicas", r.value),
            )
        })?,
        None => 1,
    };

    let service = Service {
        name,
        image,
        build,
        command: raw
            .command
            .map(|c| words(ctx, &at("command"), c))
            .transpose()?,
        entrypoint: raw
            .entrypoint
            .map(|c| words(ctx, &at("entrypoint"), c))
            .transpose()?,
        environment,
        labels: match &raw.labels {
            Some(kv) => labels(ctx, &at("labels"), kv)?,
            None => BTreeMap::new(),
        },
        ports: port_list,
        expose,
        volumes,
        networks,
        depends_on,
        healthcheck,
        restart: raw.restart.map(|r| r.value),
        replicas,
        stop_grace_period: duration(ctx, &at("stop_grace_period"), raw.stop_grace_period)?,
        user: raw.user.map(|u| u.value),
        working_dir: raw.working_dir.map(|w| w.value),
        pos: pos(key),
    };
    Ok((service, dependency_at))
}

fn build(
    ctx: &Ctx,
    key: &str,
    spec: Spanned<ShortOrLong<raw::Build>>,
) -> Result<Build, ComposeError> {
    let at = pos(&spec);
    let (context, context_key, dockerfile, args, target) = match spec.value {
        ShortOrLong::Short(context) => (context, at, None, None, None),
        ShortOrLong::Long(b) => {
            let (context, context_at) = match b.context {
                Some(c) => {
                    let p = pos(&c);
                    (c.value, p)
                }
                None => (".".to_owned(), at),
            };
            (context, context_at, b.dockerfile, b.args, b.target)
        }
    };
    if context.contains("://") || context.starts_with("git@") {
        return Err(ctx.fail(
            context_key,
            key,
            format!("berth builds from a local directory, not {context:?}"),
        ));
    }
    let args = match &args {
        Some(kv) => from_vars(ctx, key_values(ctx, &format!("{key}.args"), kv)?),
        None => BTreeMap::new(),
    };
    Ok(Build {
        context: resolve(&ctx.dir, &context),
        dockerfile: dockerfile.map_or_else(|| "Dockerfile".to_owned(), |d| d.value),
        args,
        target: target.map(|t| t.value),
    })
}

/// The entries of an environment-like table, `None` where no value is given.
pub(super) fn key_values(
    ctx: &Ctx,
    key: &str,
    kv: &KeyValues,
) -> Result<Vec<(String, Option<String>)>, ComposeError> {
    match kv {
        ListOrMap::Map(entries) => Ok(entries
            .iter()
            .map(|(k, v)| (k.value.clone(), v.as_ref().map(|v| v.value.clone())))
            .collect()),
        ListOrMap::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match split_key_value(&item.value) {
                ("", _) => Err(ctx.fail(
                    pos(item),
                    format!("{key}[{i}]"),
                    format!("{:?} has no name before \"=\"", item.value),
                )),
                (k, v) => Ok((k.to_owned(), v.map(str::to_owned))),
            })
            .collect(),
    }
}

/// A name without a value takes it from the interpolation variables, and
/// is left out when they have none (as compose does).
fn from_vars(ctx: &Ctx, entries: Vec<(String, Option<String>)>) -> BTreeMap<String, String> {
    entries
        .into_iter()
        .filter_map(|(k, v)| match v {
            Some(v) => Some((k, v)),
            None => ctx.vars.get(&k).map(|v| (k, v.clone())),
        })
        .collect()
}

/// A string (or one-item list) or a list, each item with its key and position.
fn list(spec: &Spanned<StrOrList>, key: &str) -> Vec<(String, Pos, String)> {
    match &spec.value {
        StrOrList::Str(s) => vec![(s.clone(), pos(spec), key.to_owned())],
        StrOrList::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, t)| (t.value.clone(), pos(t), format!("{key}[{i}]")))
            .collect(),
    }
}

/// `command:` / `entrypoint:`: a string split as a shell would, or a list.
fn words(ctx: &Ctx, key: &str, spec: Spanned<StrOrList>) -> Result<Vec<String>, ComposeError> {
    match &spec.value {
        StrOrList::Str(s) => split_words(s).map_err(|m| ctx.fail(pos(&spec), key, m)),
        StrOrList::List(items) => Ok(items.iter().map(|t| t.value.clone()).collect()),
    }
}

fn networks(
    ctx: &Ctx,
    key: &str,
    spec: Option<ListOrMap<Option<Ext<raw::Attach>>>>,
) -> Result<BTreeMap<String, ServiceNetwork>, ComposeError> {
    let entries: Vec<(Text, Option<Ext<raw::Attach>>)> = match spec {
        None => {
            return Ok(BTreeMap::from([(
                "default".to_owned(),
                ServiceNetwork::default(),
            )]))
        }
        Some(ListOrMap::List(names)) => names.into_iter().map(|n| (n, None)).collect(),
        Some(ListOrMap::Map(entries)) => entries,
    };
    let mut networks = BTreeMap::new();
    for (name, attach) in entries {
        if name.value != "default" && !ctx.networks.contains_key(&name.value) {
            return Err(ctx.fail(
                pos(&name),
                format!("{key}.{}", name.value),
                format!(
                    "network {:?} is not defined under the top-level networks:",
                    name.value
                ),
            ));
        }
        let aliases = attach.and_then(|a| a.0.aliases).unwrap_or_default();
        let aliases = aliases.into_iter().map(|a| a.value).collect();
        networks.insert(name.value, ServiceNetwork { aliases });
    }
    Ok(networks)
}

type Dependencies = (BTreeMap<String, Condition>, BTreeMap<String, Pos>);

fn depends_on(
    ctx: &Ctx,
    key: &str,
    spec: Option<ListOrMap<Option<Ext<raw::Dependency>>>>,
) -> Result<Dependencies, ComposeError> {
    let entries: Vec<(Text, Option<Ext<raw::Dependency>>)> = match spec {
        None => Vec::new(),
        Some(ListOrMap::List(names)) => names.into_iter().map(|n| (n, None)).collect(),
        Some(ListOrMap::Map(entries)) => entries,
    };
    let (mut conditions, mut positions) = (BTreeMap::new(), BTreeMap::new());
    for (name, dep) in entries {
        if !ctx.services.contains(&name.value) {
            return Err(ctx.fail(
                pos(&name),
                key,
                format!("{:?} is not a service in this file", name.value),
            ));
        }
        let condition = match dep.and_then(|d| d.0.condition) {
            None => Condition::ServiceStarted,
            Some(c) => match c.value.as_str() {
                "service_started" => Condition::ServiceStarted,
                "service_healthy" => Condition::ServiceHealthy,
                "service_completed_successfully" => Condition::ServiceCompletedSuccessfully,
                other => {
                    return Err(ctx.fail(
                        pos(&c),
                        format!("{key}.{}.condition", name.value),
                        format!(
                            "{other:?} is not a condition (service_started, \
                             service_healthy, service_completed_successfully)"
                        ),
                    ))
                }
            },
        };
        positions.insert(name.value.clone(), pos(&name));
        conditions.insert(name.value, condition);
    }
    Ok((conditions, positions))
}

fn healthcheck(ctx: &Ctx, key: &str, h: raw::Healthcheck) -> Result<Healthcheck, ComposeError> {
    let disabled = h.disable.as_ref().filter(|d| d.value);
    let test = match (h.test, disabled) {
        (Some(_), Some(d)) => {
            return Err(ctx.fail(
                pos(d),
                format!("{key}.disable"),
                "disable: true and a test together; keep one",
            ))
        }
        (None, Some(_)) => vec!["NONE".to_owned()],
        // Empty: the image's own healthcheck, with these timings.
        (None, None) => Vec::new(),
        (Some(t), None) => match t.value {
            StrOrList::Str(s) => vec!["CMD-SHELL".to_owned(), s],
            StrOrList::List(items) => {
                if let Some(first) = items.first() {
                    if !matches!(first.value.as_str(), "CMD" | "CMD-SHELL" | "NONE") {
                        return Err(ctx.fail(
                            pos(first),
                            format!("{key}.test[0]"),
                            format!(
                                "{:?} must be CMD, CMD-SHELL or NONE (or write the test \
                                 as one string to run it in a shell)",
                                first.value
                            ),
                        ));
                    }
                }
                items.into_iter().map(|t| t.value).collect()
            }
        },
    };
    let retries = match h.retries {
        Some(r) => Some(r.value.parse::<u32>().map_err(|_| {
            ctx.fail(
                pos(&r),
                format!("{key}.retries"),
                format!("{:?} is not a number of retries", r.value),
            )
        })?),
        None => None,
    };
    Ok(Healthcheck {
        test,
        interval: duration(ctx, &format!("{key}.interval"), h.interval)?,
        timeout: duration(ctx, &format!("{key}.timeout"), h.timeout)?,
        retries,
        start_period: duration(ctx, &format!("{key}.start_period"), h.start_period)?,
    })
}

fn duration(ctx: &Ctx, key: &str, text: Option<Text>) -> Result<Option<Duration>, ComposeError> {
    text.map(|t| parse_duration(&t.value).map_err(|m| ctx.fail(pos(&t), key, m)))
        .transpose()
}

fn is_restart_policy(policy: &str) -> bool {
    matches!(policy, "no" | "always" | "on-failure" | "unless-stopped")
        || policy
            .strip_prefix("on-failure:")
            .is_some_and(|n| n.parse::<u32>().is_ok())
}
