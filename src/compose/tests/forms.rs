//! Every short and long form, interpolation, extensions, names.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::model::*;
use super::super::{load, Source};
use super::{check, load_with, map, ok, strings, FILE};

#[test]
fn short_and_long_forms() {
    let project = load_with(
        "\
services:
  app:
    build: ../src
    command: sh -c 'echo \"hi there\"; sleep 1'
    entrypoint: [\"/tini\", \"--\"]
    environment: {A: 1, B: true, C: , D: \"x y\"}
    env_file: [a.env, ./b.env]
    labels: [\"k=v\", flag]
    ports:
      - 80
      - target: 443
        published: \"8443\"
        host_ip: 0.0.0.0
        protocol: tcp
        mode: host
      - {target: 53, protocol: udp}
    expose: [3000, \"53/udp\"]
    volumes:
      - /cache
      - ./conf:/etc/app:ro
      - type: bind
        source: /var/run/docker.sock
        target: /var/run/docker.sock
        read_only: true
      - {type: volume, source: data, target: /data}
      - {type: tmpfs, target: /tmp}
    networks:
      default:
      edge: {aliases: [a1, a2]}
    depends_on: [db]
    healthcheck:
      test: curl -f http://localhost/ || exit 1
    restart: on-failure:3
    user: \"1000:1000\"
    working_dir: /app
  db:
    image: postgres
    healthcheck:
      disable: true
  job:
    image: busybox
    depends_on:
      db: {condition: service_completed_successfully, restart: true, required: false}
    healthcheck:
      interval: 30s
networks:
  edge: {external: true}
  named: {name: custom, driver: bridge}
volumes:
  data: {external: true}
  other: {name: shared_other}
",
        &[("C", "from-vars")],
        &[
            ("/srv/shop/a.env", "A=file\nE=e\n"),
            ("/srv/shop/b.env", "F=f\n"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let app = &project.services["app"];
    assert_eq!(
        app.build
            .as_ref()
            .map(|b| (&b.context, b.dockerfile.as_str())),
        Some((&PathBuf::from("/srv/src"), "Dockerfile"))
    );
    assert_eq!(
        app.command,
        Some(strings(&["sh", "-c", "echo \"hi there\"; sleep 1"]))
    );
    assert_eq!(app.entrypoint, Some(strings(&["/tini", "--"])));
    assert_eq!(
        app.environment,
        map(&[
            ("A", "1"),
            ("B", "true"),
            ("C", "from-vars"),
            ("D", "x y"),
            ("E", "e"),
            ("F", "f")
        ])
    );
    assert_eq!(app.labels, map(&[("k", "v"), ("flag", "")]));
    let port = |host_ip: Option<&str>, published, target, protocol: &str| Port {
        host_ip: host_ip.map(Into::into),
        published,
        target,
        protocol: protocol.into(),
    };
    assert_eq!(
        app.ports,
        vec![
            port(None, None, 80, "tcp"),
            port(Some("0.0.0.0"), Some(8443), 443, "tcp"),
            port(None, None, 53, "udp"),
        ]
    );
    assert_eq!(app.expose, strings(&["3000", "53/udp"]));
    let mount = |kind, source: Option<&str>, target: &str, read_only| Mount {
        kind,
        source: source.map(Into::into),
        target: target.into(),
        read_only,
    };
    assert_eq!(
        app.volumes,
        vec![
            mount(MountKind::Volume, None, "/cache", false),
            mount(MountKind::Bind, Some("/srv/shop/conf"), "/etc/app", true),
            mount(
                MountKind::Bind,
                Some("/var/run/docker.sock"),
                "/var/run/docker.sock",
                true
            ),
            mount(MountKind::Volume, Some("data"), "/data", false),
            mount(MountKind::Tmpfs, None, "/tmp", false),
        ]
    );
    assert_eq!(
        app.networks,
        BTreeMap::from([
            ("default".into(), ServiceNetwork::default()),
            (
                "edge".into(),
                ServiceNetwork {
                    aliases: strings(&["a1", "a2"])
                }
            ),
        ])
    );
    assert_eq!(
        app.depends_on,
        BTreeMap::from([("db".into(), Condition::ServiceStarted)])
    );
    assert_eq!(
        app.healthcheck.as_ref().map(|h| &h.test),
        Some(&strings(&[
            "CMD-SHELL",
            "curl -f http://localhost/ || exit 1"
        ]))
    );
    assert_eq!(app.restart.as_deref(), Some("on-failure:3"));
    assert_eq!(app.user.as_deref(), Some("1000:1000"));
    assert_eq!(app.working_dir.as_deref(), Some("/app"));

    let db = &project.services["db"];
    assert_eq!(
        db.healthcheck.as_ref().map(|h| &h.test),
        Some(&strings(&["NONE"]))
    );
    let job = &project.services["job"];
    assert_eq!(
        job.depends_on,
        BTreeMap::from([("db".into(), Condition::ServiceCompletedSuccessfully)])
    );
    assert_eq!(
        job.healthcheck,
        Some(Healthcheck {
            test: Vec::new(),
            interval: Some(Duration::from_secs(30)),
            timeout: None,
            retries: None,
            start_period: None,
        })
    );

    assert_eq!(project.name, "shop", "the directory's name");
    let names: Vec<(&str, &str, bool)> = project
        .networks
        .iter()
        .map(|(k, n)| (k.as_str(), n.name.as_str(), n.external))
        .collect();
    assert_eq!(
        names,
        [
            ("default", "shop_default", false),
            ("edge", "edge", true),
            ("named", "custom", false)
        ]
    );
    assert_eq!(project.networks["named"].driver.as_deref(), Some("bridge"));
    let names: Vec<(&str, &str, bool)> = project
        .volumes
        .iter()
        .map(|(k, v)| (k.as_str(), v.name.as_str(), v.external))
        .collect();
    assert_eq!(
        names,
        [("data", "data", true), ("other", "shared_other", false)]
    );
    assert_eq!(project.order, strings(&["db", "app", "job"]));
}

#[test]
fn interpolation() {
    let project = load_with(
        "\
name: ${PROJECT}
services:
  web:
    image: \"${IMAGE:-nginx}:${TAG-stable}\"
    environment:
      PRICE: $$5
      EMPTY: x${UNSET}y
      HOME_DIR: $HOME/app
",
        &[("PROJECT", "My_App"), ("TAG", ""), ("HOME", "/home/me")],
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(project.name, "my_app");
    let web = &project.services["web"];
    assert_eq!(web.image.as_deref(), Some("nginx:"));
    assert_eq!(
        web.environment,
        map(&[
            ("PRICE", "$5"),
            ("EMPTY", "xy"),
            ("HOME_DIR", "/home/me/app")
        ])
    );
}

#[test]
fn extensions_are_ignored() {
    let project = ok("\
version: \"3.8\"
x-common: {anything: [1, 2]}
services:
  web:
    image: nginx
    x-notes: free text
    ports:
      - {target: 80, x-why: public}
    healthcheck: {test: [NONE], x-note: off}
    networks:
      back: {x-tier: 2}
networks:
  back: {x-owner: ops}
");
    let web = &project.services["web"];
    assert_eq!(web.image.as_deref(), Some("nginx"));
    assert_eq!(web.ports.len(), 1);
}

#[test]
fn project_names() {
    let vars = HashMap::new();
    let read = |_: &Path| -> io::Result<String> { Err(io::ErrorKind::NotFound.into()) };
    let text = "name: From File\nservices:\n  a: {image: x}\n";
    let name = |project: Option<&str>, file: &str, text: &str| {
        load(&Source {
            file: Path::new(file),
            text,
            project,
            vars: &vars,
            read: &read,
        })
        .map(|p| p.name)
    };
    assert_eq!(
        name(Some("-My.Project_1"), FILE, text),
        Ok("myproject_1".into())
    );
    assert_eq!(name(None, FILE, text), Ok("fromfile".into()));
    assert_eq!(
        name(
            None,
            "/srv/Web App/compose.yaml",
            "services:\n  a: {image: x}\n"
        ),
        Ok("webapp".into())
    );
    let err = name(None, FILE, "name: \"!!!\"\nservices:\n  a: {image: x}\n").unwrap_err();
    check(&err, 1, 7, "name", &["\"!!!\""]);
}

#[test]
fn default_network_only_when_used() {
    let project = ok("\
services:
  a:
    image: x
    networks: [back]
networks:
  back:
");
    assert_eq!(project.networks.keys().collect::<Vec<_>>(), ["back"]);
    let project = ok("services:\n  a: {image: x}\nnetworks:\n  default: {name: shared}\n");
    assert_eq!(project.networks["default"].name, "shared");
}
