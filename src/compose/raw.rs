//! The compose file as serde reads it: every table with the keys berth
//! supports and no others, scalars kept as positioned text, short and long
//! forms side by side. [`super::project`] turns this into the model; no
//! meaning is given to values here.
//!
//! The either-or fields have small visitors instead of `#[serde(untagged)]`:
//! untagged enums lose `Spanned` positions and give vague errors.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{
    self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess,
    Visitor,
};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A scalar as written (numbers and booleans as their text), with its position.
pub(super) type Text = Spanned<String>;

/// `environment`, `labels`, `build.args`: a mapping (a null value: none
/// given) or a list of `KEY=VALUE` / `KEY`.
pub(super) type KeyValues = ListOrMap<Option<Text>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub name: Option<Text>,
    pub services: Option<Spanned<Entries<Ext<Service>>>>,
    pub networks: Option<Entries<Option<Ext<Definition>>>>,
    pub volumes: Option<Entries<Option<Ext<Definition>>>>,
    /// Obsolete; compose accepts and ignores it.
    #[serde(rename = "version")]
    pub _version: Option<IgnoredAny>,
}

/// A top-level network or volume.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Definition {
    pub external: Option<Spanned<bool>>,
    pub name: Option<Text>,
    pub driver: Option<Text>,
    pub labels: Option<KeyValues>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Service {
    pub image: Option<Text>,
    pub build: Option<Spanned<ShortOrLong<Build>>>,
    pub command: Option<Spanned<StrOrList>>,
    pub entrypoint: Option<Spanned<StrOrList>>,
    pub environment: Option<KeyValues>,
    pub env_file: Option<Spanned<StrOrList>>,
    pub labels: Option<KeyValues>,
    pub ports: Option<Vec<Spanned<ShortOrLong<Port>>>>,
    pub expose: Option<Vec<Text>>,
    pub volumes: Option<Vec<Spanned<ShortOrLong<Volume>>>>,
    pub networks: Option<ListOrMap<Option<Ext<Attach>>>>,
    pub depends_on: Option<ListOrMap<Option<Ext<Dependency>>>>,
    pub healthcheck: Option<Ext<Healthcheck>>,
    pub restart: Option<Text>,
    pub deploy: Option<Ext<Deploy>>,
    pub stop_grace_period: Option<Text>,
    pub user: Option<Text>,
    pub working_dir: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Build {
    pub context: Option<Text>,
    pub dockerfile: Option<Text>,
    pub args: Option<KeyValues>,
    pub target: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Port {
    pub target: Option<Text>,
    pub published: Option<Text>,
    pub host_ip: Option<Text>,
    pub protocol: Option<Text>,
    pub mode: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Volume {
    #[serde(rename = "type")]
    pub kind: Option<Text>,
    pub source: Option<Text>,
    pub target: Option<Text>,
    pub read_only: Option<Spanned<bool>>,
}

/// How a service joins a network (the long form of `networks:`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Attach {
    pub aliases: Option<Vec<Text>>,
}

/// The long form of a `depends_on` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Dependency {
    pub condition: Option<Text>,
    /// Restart the dependent with its dependency: berth does not; accepted.
    #[serde(rename = "restart")]
    pub _restart: Option<bool>,
    /// Accepted; berth requires every dependency.
    #[serde(rename = "required")]
    pub _required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Healthcheck {
    pub test: Option<Spanned<StrOrList>>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub retries: Option<Text>,
    pub start_period: Option<Text>,
    pub disable: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Deploy {
    pub replicas: Option<Text>,
}

/// A mapping with its keys' positions, in file order.
#[derive(Debug)]
pub(super) struct Entries<V>(pub Vec<(Text, V)>);

/// A table that also takes compose extension keys (`x-...`, allowed in
/// any table), skipped before the derived struct sees them so
/// `deny_unknown_fields` holds for everything else.
#[derive(Debug)]
pub(super) struct Ext<T>(pub T);

/// A scalar, or a mapping of the long form (which may hold `x-...` keys).
#[derive(Debug)]
pub(super) enum ShortOrLong<L> {
    Short(String),
    Long(L),
}

/// A scalar or a list of scalars (`command`, `env_file`, `healthcheck.test`).
#[derive(Debug)]
pub(super) enum StrOrList {
    Str(String),
    List(Vec<Text>),
}

/// A list of scalars or a mapping (`environment`, `networks`, `depends_on`).
#[derive(Debug)]
pub(super) enum ListOrMap<V> {
    List(Vec<Text>),
    Map(Vec<(Text, V)>),
}

/// Visits a scalar of any YAML type as its text.
macro_rules! scalar_as_text {
    ($wrap:path) => {
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok($wrap(v.to_owned()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok($wrap(v.to_string()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok($wrap(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok($wrap(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok($wrap(v.to_string()))
        }
    };
}

fn read_entries<'de, A: MapAccess<'de>, V: Deserialize<'de>>(
    mut map: A,
) -> Result<Vec<(Text, V)>, A::Error> {
    let mut entries = Vec::new();
    while let Some(key) = map.next_key::<Text>()? {
        entries.push((key, map.next_value()?));
    }
    Ok(entries)
}

fn read_list<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<Text>, A::Error> {
    let mut items = Vec::new();
    while let Some(item) = seq.next_element()? {
        items.push(item);
    }
    Ok(items)
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Entries<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                read_entries(map).map(Entries)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ext<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ext<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(SkipExtensions(map))).map(Ext)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// Hands on every entry but `x-...` ones.
struct SkipExtensions<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkipExtensions<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.0.next_key::<String>()? {
            if key.starts_with("x-") {
                self.0.next_value::<IgnoredAny>()?;
                continue;
            }
            return seed.deserialize(key.into_deserializer()).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

impl<'de, L: Deserialize<'de>> Deserialize<'de> for ShortOrLong<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<L>(PhantomData<L>);
        impl<'de, L: Deserialize<'de>> Visitor<'de> for V<L> {
            type Value = ShortOrLong<L>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a mapping")
            }
            scalar_as_text!(ShortOrLong::Short);
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                L::deserialize(MapAccessDeserializer::new(SkipExtensions(map)))
                    .map(ShortOrLong::Long)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de> Deserialize<'de> for StrOrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            scalar_as_text!(StrOrList::Str);
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                read_list(seq).map(StrOrList::List)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ListOrMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = ListOrMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list or a mapping")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                read_list(seq).map(ListOrMap::List)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                read_entries(map).map(ListOrMap::Map)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}
