//! `load` end to end, without files: env files come from a map. Forms
//! that parse are in `forms`, errors in `errors`.

mod errors;
mod forms;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::*;
use super::{load, ComposeError, Source};

pub(super) const FILE: &str = "/srv/shop/compose.yaml";

pub(super) fn load_with(
    text: &str,
    vars: &[(&str, &str)],
    files: &[(&str, &str)],
) -> Result<Project, ComposeError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let files: HashMap<PathBuf, String> = files
        .iter()
        .map(|(k, v)| (PathBuf::from(k), v.to_string()))
        .collect();
    let read = move |path: &Path| {
        files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    };
    load(&Source {
        file: Path::new(FILE),
        text,
        project: None,
        vars: &vars,
        read: &read,
    })
}

pub(super) fn ok(text: &str) -> Project {
    load_with(text, &[], &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// The error at `line`:`column` on `key`, its message naming each of `names`.
#[track_caller]
pub(super) fn fails_at(
    text: &str,
    line: u64,
    column: u64,
    key: &str,
    names: &[&str],
) -> ComposeError {
    let err = load_with(text, &[], &[]).expect_err("an error");
    check(&err, line, column, key, names);
    err
}

#[track_caller]
pub(super) fn check(err: &ComposeError, line: u64, column: u64, key: &str, names: &[&str]) {
    assert_eq!(
        (err.file.as_str(), err.line, err.column, err.key.as_str()),
        (FILE, line, column, key),
        "{err}"
    );
    for name in names {
        assert!(err.message.contains(name), "{name:?} not in: {err}");
    }
}

fn bare(name: &str, line: u64, column: u64) -> Service {
    Service {
        name: name.to_owned(),
        image: None,
        build: None,
        command: None,
        entrypoint: None,
        environment: BTreeMap::new(),
        labels: BTreeMap::new(),
        ports: Vec::new(),
        expose: Vec::new(),
        volumes: Vec::new(),
        networks: BTreeMap::from([("default".to_owned(), ServiceNetwork::default())]),
        depends_on: BTreeMap::new(),
        healthcheck: None,
        restart: None,
        replicas: 1,
        stop_grace_period: None,
        user: None,
        working_dir: None,
        pos: Pos { line, column },
    }
}

pub(super) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const SHOP: &str = "\
name: Shop
x-defaults: &defaults
  restart: unless-stopped
services:
  web:
    <<: *defaults
    build:
      context: ./web
      dockerfile: Dockerfile.prod
      args:
        NODE_ENV: production
        GIT_SHA:
      target: runtime
    image: shop/web:${TAG:-latest}
    deploy:
      replicas: 2
    depends_on:
      db:
        condition: service_healthy
    environment:
      - DATABASE_URL=postgres://db/shop
      - API_KEY
      - MISSING
    networks: [front, back]
  api:
    image: ghcr.io/acme/api:1.4
    labels:
      berth.host: api.example.com
      berth.port: 8080
    ports:
      - \"127.0.0.1:8080:80\"
      - 9090:9090/udp
    command: [\"serve\", \"--port\", 80]
    networks:
      back:
        aliases: [backend]
  db:
    image: postgres:16
    env_file: db.env
    environment:
      POSTGRES_DB: shop
    volumes:
      - pgdata:/var/lib/postgresql/data
    healthcheck:
      test: [\"CMD\", \"pg_isready\", \"-U\", \"shop\"]
      interval: 10s
      timeout: 5s
      retries: 5
      start_period: 1m30s
    stop_grace_period: 1m
    networks: [back]
networks:
  front:
  back:
    labels: [tier=back]
volumes:
  pgdata:
";

#[test]
fn a_realistic_project() {
    let project = load_with(
        SHOP,
        &[("API_KEY", "k-123"), ("GIT_SHA", "abc123")],
        &[(
            "/srv/shop/db.env",
            "# db\nPOSTGRES_USER=shop\nPOSTGRES_DB=overridden\n",
        )],
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let mut web = bare("web", 5, 3);
    web.image = Some("shop/web:latest".into());
    web.build = Some(Build {
        context: PathBuf::from("/srv/shop/web"),
        dockerfile: "Dockerfile.prod".into(),
        args: map(&[("NODE_ENV", "production"), ("GIT_SHA", "abc123")]),
        target: Some("runtime".into()),
    });
    web.replicas = 2;
    web.restart = Some("unless-stopped".into());
    web.depends_on = BTreeMap::from([("db".into(), Condition::ServiceHealthy)]);
    web.environment = map(&[("DATABASE_URL", "postgres://db/shop"), ("API_KEY", "k-123")]);
    web.networks = BTreeMap::from([
        ("front".into(), ServiceNetwork::default()),
        ("back".into(), ServiceNetwork::default()),
    ]);

    let mut api = bare("api", 25, 3);
    api.image = Some("ghcr.io/acme/api:1.4".into());
    api.labels = map(&[("berth.host", "api.example.com"), ("berth.port", "8080")]);
    api.ports = vec![
        Port {
            host_ip: Some("127.0.0.1".into()),
            published: Some(8080),
            target: 80,
            protocol: "tcp".into(),
        },
        Port {
            host_ip: None,
            published: Some(9090),
            target: 9090,
            protocol: "udp".into(),
        },
    ];
    api.command = Some(strings(&["serve", "--port", "80"]));
    api.networks = BTreeMap::from([(
        "back".into(),
        ServiceNetwork {
            aliases: strings(&["backend"]),
        },
    )]);

    let mut db = bare("db", 37, 3);
    db.image = Some("postgres:16".into());
    db.environment = map(&[("POSTGRES_USER", "shop"), ("POSTGRES_DB", "shop")]);
    db.volumes = vec![Mount {
        kind: MountKind::Volume,
        source: Some("pgdata".into()),
        target: "/var/lib/postgresql/data".into(),
        read_only: false,
    }];
    db.healthcheck = Some(Healthcheck {
        test: strings(&["CMD", "pg_isready", "-U", "shop"]),
        interval: Some(Duration::from_secs(10)),
        timeout: Some(Duration::from_secs(5)),
        retries: Some(5),
        start_period: Some(Duration::from_secs(90)),
    });
    db.stop_grace_period = Some(Duration::from_secs(60));
    db.networks = BTreeMap::from([("back".into(), ServiceNetwork::default())]);

    let want = Project {
        name: "shop".into(),
        file: PathBuf::from(FILE),
        dir: PathBuf::from("/srv/shop"),
        services: BTreeMap::from([("web".into(), web), ("api".into(), api), ("db".into(), db)]),
        networks: BTreeMap::from([
            (
                "front".into(),
                Network {
                    name: "shop_front".into(),
                    ..Network::default()
                },
            ),
            (
                "back".into(),
                Network {
                    name: "shop_back".into(),
                    labels: map(&[("tier", "back")]),
                    ..Network::default()
                },
            ),
        ]),
        volumes: BTreeMap::from([(
            "pgdata".into(),
            Volume {
                name: "shop_pgdata".into(),
                ..Volume::default()
            },
        )]),
        order: strings(&["api", "db", "web"]),
        warnings: Vec::new(),
    };
    assert_eq!(project, want);
}

#[test]
fn an_unset_variable_is_a_warning_and_an_empty_string() {
    let p = load_with(
        "services:\n  web:\n    image: \"app:${TAG}\"\n    environment:\n      A: \"${SET}-${GONE}\"\n",
        &[("TAG", "2"), ("SET", "x")],
        &[],
    )
    .unwrap();
    assert_eq!(p.services["web"].environment["A"], "x-");
    assert_eq!(
        p.warnings,
        vec![format!(
            "{FILE}: variable GONE is not set: an empty string is used"
        )]
    );
}
