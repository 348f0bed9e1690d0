//! Each error names its file, line, column, key and the bad value.

use super::{check, fails_at, load_with};

#[test]
fn a_required_variable_names_itself() {
    let text = "services:\n  web:\n    image: app\n    environment:\n      DB: ${DB_URL:?set DB_URL in berth env}\n";
    fails_at(
        text,
        5,
        11,
        "services.web.environment.DB",
        &["DB_URL", "is not set", "set DB_URL in berth env"],
    );
    let text = "services:\n  web:\n    image: ${IMAGE?}\n";
    fails_at(text, 3, 12, "services.web.image", &["IMAGE"]);
}

#[test]
fn unknown_keys_everywhere() {
    let cases: &[(&str, u64, u64, &str, &str)] = &[
        ("configs: {}\nservices:\n  a: {image: x}\n", 1, 1, "configs", "\"configs\""),
        ("services:\n  a:\n    image: x\n    cap_add: [NET_ADMIN]\n", 4, 5, "services.a.cap_add", "\"cap_add\""),
        ("services:\n  a:\n    build:\n      context: .\n      secrets: [s]\n", 5, 7, "services.a.build.secrets", "\"secrets\""),
        ("services:\n  a:\n    image: x\n    healthcheck:\n      test: [\"NONE\"]\n      start_interval: 1s\n", 6, 7, "services.a.healthcheck.start_interval", "\"start_interval\""),
        ("services:\n  a:\n    image: x\n    deploy:\n      replicas: 2\n      resources: {}\n", 6, 7, "services.a.deploy.resources", "deploy.resources is not supported"),
        ("services:\n  a:\n    image: x\n    ports:\n      - target: 80\n        app_protocol: http\n", 6, 9, "services.a.ports[0].app_protocol", "\"app_protocol\""),
        ("services:\n  a:\n    image: x\n    volumes:\n      - {type: volume, target: /d, volume: {nocopy: true}}\n", 5, 36, "services.a.volumes[0].volume", "\"volume\""),
        ("services:\n  a: {image: x}\nnetworks:\n  n:\n    internal: true\n", 5, 5, "networks.n.internal", "\"internal\""),
        ("services:\n  a: {image: x}\nvolumes:\n  v:\n    driver_opts: {}\n", 5, 5, "volumes.v.driver_opts", "\"driver_opts\""),
        ("services:\n  a:\n    image: x\n    networks:\n      default: {ipv4_address: 10.0.0.2}\n", 5, 17, "services.a.networks.default.ipv4_address", "\"ipv4_address\""),
    ];
    for (text, line, column, key, name) in cases {
        fails_at(text, *line, *column, key, &[name]);
    }
}

#[test]
fn an_unknown_key_is_named_as_written_with_a_suggestion() {
    for text in [
        "services:\n  web:\n    image: x\n    envfile: .env\n",
        "services:\n  web:\n    image: \"${TAG:-x}\"\n    envfile: \"${F:-.env}\"\n",
    ] {
        fails_at(
            text,
            4,
            5,
            "services.web.envfile",
            &["\"envfile\"", "did you mean env_file?"],
        );
    }
}

#[test]
fn container_name_and_hostname_are_refused() {
    fails_at(
        "services:\n  web:\n    image: x\n    container_name: shop-web\n",
        4,
        5,
        "services.web.container_name",
        &["container_name", "replicas side by side"],
    );
    fails_at(
        "services:\n  web:\n    image: x\n    hostname: web1\n",
        4,
        5,
        "services.web.hostname",
        &["hostname"],
    );
}

#[test]
fn a_bad_port_names_the_value() {
    fails_at(
        "services:\n  web:\n    image: x\n    ports:\n      - \"8080:80\"\n      - \"80a:80\"\n",
        6,
        9,
        "services.web.ports[1]",
        &["\"80a\" is not a port number", "\"80a:80\""],
    );
    fails_at(
        "services:\n  web:\n    image: x\n    ports:\n      - target: 80\n        published: 99999\n",
        6,
        20,
        "services.web.ports[0].published",
        &["\"99999\" is not a port number"],
    );
    fails_at(
        "services:\n  web:\n    image: x\n    ports:\n      - published: 80\n",
        5,
        9,
        "services.web.ports[0]",
        &["target is missing"],
    );
    fails_at(
        "services:\n  web:\n    image: x\n    expose: [\"80-81\"]\n",
        4,
        14,
        "services.web.expose[0]",
        &["port ranges", "\"80-81\""],
    );
}

#[test]
fn undefined_volumes_and_networks() {
    fails_at(
        "services:\n  db:\n    image: x\n    volumes:\n      - pgdata:/var/lib/db\n",
        5,
        9,
        "services.db.volumes[0]",
        &["volume \"pgdata\" is not defined"],
    );
    fails_at(
        "services:\n  db:\n    image: x\n    volumes:\n      - {type: volume, source: pg, target: /d}\n",
        5,
        32,
        "services.db.volumes[0].source",
        &["volume \"pg\" is not defined"],
    );
    fails_at(
        "services:\n  db:\n    image: x\n    networks: [back]\n",
        4,
        16,
        "services.db.networks.back",
        &["network \"back\" is not defined"],
    );
}

#[test]
fn dependencies_must_exist_and_not_cycle() {
    fails_at(
        "services:\n  web:\n    image: x\n    depends_on: [cache]\n",
        4,
        18,
        "services.web.depends_on",
        &["\"cache\" is not a service"],
    );
    fails_at(
        "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on:\n      c: {condition: service_started}\n  c:\n    image: x\n    depends_on: [a]\n",
        4,
        18,
        "services.a.depends_on",
        &["dependency cycle: a -> b -> c -> a"],
    );
    fails_at(
        "services:\n  a:\n    image: x\n  b:\n    image: x\n    depends_on:\n      a: {condition: service_ready}\n",
        7,
        22,
        "services.b.depends_on.a.condition",
        &["\"service_ready\" is not a condition"],
    );
}

#[test]
fn service_checks() {
    fails_at(
        "services:\n  web:\n    restart: always\n",
        2,
        3,
        "services.web",
        &["\"web\" has neither image nor build"],
    );
    fails_at(
        "services:\n  _web:\n    image: x\n",
        2,
        3,
        "services._web",
        &["\"_web\" is not a service name"],
    );
    fails_at(
        "services:\n  web:\n    image: x\n    restart: sometimes\n",
        4,
        14,
        "services.web.restart",
        &["\"sometimes\" is not a restart policy"],
    );
    fails_at(
        "services:\n  web:\n    image: x\n    healthcheck:\n      interval: 10\n",
        5,
        17,
        "services.web.healthcheck.interval",
        &["\"10\" is not a duration"],
    );
    fails_at(
        "services:\n  web:\n    image: x\n    deploy: {replicas: two}\n",
        4,
        24,
        "services.web.deploy.replicas",
        &["\"two\" is not a number of replicas"],
    );
    fails_at(
        "services:\n  web:\n    image: x\n    command: echo 'unclosed\n",
        4,
        14,
        "services.web.command",
        &["unclosed '"],
    );
    fails_at(
        "services:\n  web:\n    image: x\n    replicas: 2\n",
        4,
        5,
        "services.web.replicas",
        &["\"replicas\""],
    );
    fails_at("services: {}\n", 1, 11, "services", &["no services"]);
    fails_at(
        "services:\n  web:\n    image: [x]\n",
        3,
        12,
        "services.web.image",
        &["string"],
    );
}

#[test]
fn env_files_are_read_and_checked() {
    let text =
        "services:\n  db:\n    image: x\n    env_file:\n      - db.env\n      - missing.env\n";
    let err = load_with(text, &[], &[("/srv/shop/db.env", "A=1\n")]).unwrap_err();
    check(
        &err,
        6,
        9,
        "services.db.env_file[1]",
        &["\"/srv/shop/missing.env\"", "no such file"],
    );
    let err = load_with(text, &[], &[("/srv/shop/db.env", "A=1\nB\n")]).unwrap_err();
    assert_eq!(
        (err.file.as_str(), err.line, err.column),
        ("/srv/shop/db.env", 2, 1)
    );
    assert!(err.message.contains("\"B\""), "{err}");
}

#[test]
fn yaml_errors_keep_their_position() {
    let err = load_with("services:\n  web:\n    image: x\n    image: y\n", &[], &[]).unwrap_err();
    check(&err, 4, 5, "services.web.image", &["duplicate"]);
    let err = load_with("services: [\n", &[], &[]).unwrap_err();
    assert_eq!((err.line > 0, err.key.as_str()), (true, ""), "{err}");
}
