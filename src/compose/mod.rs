//! Compose files: text in, a validated [`model::Project`] out. Pure but for
//! reading `env_file`s, which goes through [`Source::read`]; each unset
//! variable the file uses is a warning in the project (compose warns too).
//!
//! Layout, in the order the data goes through it:
//! - `raw`: the file as serde reads it, unknown keys refused, `${VAR}`
//!   interpolated by serde-saphyr from [`Source::vars`].
//! - `project`: name, top-level networks and volumes, start order
//!   (`order`); each service through `service`, which uses `ports`,
//!   `mounts`, `values` and `env`.
//! - `error`: every failure as a [`ComposeError`] naming file, line,
//!   column and key (`locate` finds the key of a YAML error).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use serde_saphyr::options::PropertySyntax;
use serde_saphyr::Options;

mod env;
mod error;
mod locate;
pub mod model;
mod mounts;
mod order;
mod ports;
mod project;
mod raw;
mod service;
mod values;

#[cfg(test)]
mod tests;

pub use env::parse_dotenv;
pub use error::ComposeError;

/// What to load: the compose text and where it came from.
pub struct Source<'a> {
    /// The compose file path as the user named it (for errors); absolute
    /// preferred, a relative one is taken from the current directory.
    pub file: &'a Path,
    pub text: &'a str,
    /// `--project NAME` if given.
    pub project: Option<&'a str>,
    /// Interpolation variables: berth's env store + the project's `.env`
    /// (the caller merges them; see [`parse_dotenv`]).
    pub vars: &'a HashMap<String, String>,
    /// Reads an env_file (a function so tests need no files): path → contents.
    pub read: &'a dyn Fn(&Path) -> io::Result<String>,
}

/// Parses, interpolates, validates and normalises a compose file.
pub fn load(src: &Source) -> Result<model::Project, ComposeError> {
    let given = src.file.display().to_string();
    let file = if src.file.is_absolute() {
        src.file.to_path_buf()
    } else {
        std::path::absolute(src.file).map_err(|e| {
            ComposeError::new(
                &given,
                model::Pos::default(),
                "",
                format!("cannot make the path absolute: {e}"),
            )
        })?
    };
    let dir = file
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);

    let mut options = Options::default().with_properties(src.vars.clone());
    options.property_syntax = PropertySyntax::DockerCompose;
    // Errors become ComposeErrors; a rendered snippet would be dropped.
    options.with_snippet = false;
    let parsed: raw::Ext<raw::File> = serde_saphyr::from_str_with_options(src.text, options)
        .map_err(|e| ComposeError::from_yaml(&given, src.text, &e))?;
    let warnings: Vec<String> = env::unset_variables(src.text, src.vars)
        .into_iter()
        .map(|name| format!("{given}: variable {name} is not set: an empty string is used"))
        .collect();

    let input = project::Input {
        given,
        file,
        dir,
        project: src.project,
        vars: src.vars,
        read: src.read,
    };
    let mut project = project::build(input, parsed.0)?;
    project.warnings = warnings;
    Ok(project)
}
