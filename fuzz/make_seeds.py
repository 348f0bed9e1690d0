#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/seeds/<target>/, from
the examples of berth's unit tests. The fuzzers start from them and from
fuzz/corpus/<target>/ (what earlier runs found, minimised); regress-* files
beside them are inputs that once failed. Idempotent: a seed is named by its
content."""

import hashlib
import os
import re
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "seeds")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# labels: `key=value` lines, `\n` for a newline in a value, `---` between
# successive label sets of one service.
LABELS = [
    "berth.host=blog.example.com, www.blog.example.com\nberth.port=8080\nberth.path=/app\nberth.tls=off\nberth.drain_timeout=10s\ncom.docker.compose.service=web",
    "berth.host=app.test\nberth.admin.host=admin.app.test\nberth.admin.port=9000",
    "berth.hots=a.test",
    "berth.api.prot=1",
    "berth.helth.path=/h",
    "berth.host=good.test\nberth.api.host=api.test\nberth.api.port=http",
    "berth.host=a.test\nberth.enable=false",
    "berth.host=a.test\nberth.enable=flase",
    "berth.api.port=9000",
    "berth.health.host=x.test",
    "berth.host=shop.test\nberth.api.host=api.shop.test\nberth.pth=/api",
    "berth.host=shop.test\nberth.api.host=api.shop.test\nberth.api.pth=/v1",
    "berth.host=shop.test\nberth.api.host=api.shop.test\nberth.health.pth=/h",
    "berth.host=shop.test\nberth.api.host=api.shop.test\nberth.Bad.key=x",
    "berth.host=a.test\nberth.path=/api\\nforged\nberth.admin.host=" + "a" * 300,
    "berth.host=a.test\nedge.host=b.test",
    "berth.host=*.apps.test\nberth.path=/v1/\nberth.tls=auto",
    "berth.host=A.Test.\nberth.dns=db, cache.internal\nberth.network=net",
    "berth.host=a.test\nberth.network=elsewhere",
    "berth.host=a.test\nberth.health.path=/health\nberth.health.interval=500ms\nberth.health.timeout=1.5s\nberth.health.rise=2\nberth.health.fall=3\nberth.autoheal=no",
    "berth.host=a.test\nberth.dns=*.x",
    "berth.host=a.test\nberth.health.interval=0s\nberth.health.rise=0",
    "berth.host=http://a.test\nberth.port=0",
    "berth.host=a.test:80\nberth.port=70000",
    "berth.host=other.test\nberth.tls=off",
    "berth.host=other.test\nberth.path=/x",
    # A good set, a bad one (the good one stays), a good one again.
    "berth.host=web.test\nberth.port=8081\n---\nberth.host=web.test\nberth.prot=8081\n---\nberth.host=web2.test",
    "berth.host=a.test\nberth.api.host=api.test\n---\nberth.host=a.test\nberth.api.host=api.test\nberth.api.tls=on",
]
for s in LABELS:
    put("labels", s)

# config: the shipped files and every YAML snippet of the config unit tests.
for f in ("config/berth.yaml", "config/production.yaml"):
    with open(os.path.join(ROOT, f), "rb") as fh:
        put("config", fh.read())
src = open(os.path.join(ROOT, "src/config/mod.rs")).read()
tests = src[src.find("#[cfg(test)]"):]
for lit in re.findall(r'"((?:[^"\\]|\\.)*)"', tests):
    if ":" not in lit or "\\n" not in lit and not lit.startswith(("proxy", "routes")):
        continue
    text = re.sub(r'\\(.)', lambda m: {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(m.group(1), m.group(0)), lit)
    put("config", text)
for s in [
    "routes:\n  - host: a.com, *.b.com\n    path: /api\n    backends: [127.0.0.1:9000, 127.0.0.1:9001]\n",
    'dns:\n  listen: 172.17.0.1:53, 127.0.0.1:53\n  zone: Docker.Lan.\n  ttl: 10s\n  upstreams: [1.1.1.1, "[::1]:5300"]\n  allow: [docker, 10.0.0.0/8, 192.168.1.7]\n',
    '{"a\n  b": 1}\n',
    "proxy: &a {threads: 1}\nadmin: *a\n",
    "? [a, b]\n: c\n",
    "routes:\n- host: a.com\n  backends:\n  - 127.0.0.1:1\n  - !!binary aGVsbG8=\n",
]:
    put("config", s)


# dns: a byte for who asks (0 loopback, 1 project a, 2 project c, 3 unknown
# in a Docker subnet, 4 outside dns.allow; +8: TCP), then the message.
def name(n):
    out = b""
    for label in n.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(qname, qtype=1, qclass=1, opcode=0, qd=1, edns=None, ident=0x1234):
    flags = (opcode << 11) | 0x0100
    ar = 1 if edns is not None else 0
    msg = struct.pack(">HHHHHH", ident, flags, qd, 0, 0, ar)
    for _ in range(qd):
        msg += name(qname) + struct.pack(">HH", qtype, qclass)
    if edns is not None:
        version, payload = edns
        msg += b"\0" + struct.pack(">HHBBHH", 41, payload, 0, version, 0, 0)
    return msg


A, AAAA, SOA, ANY, MX, TXT = 1, 28, 6, 255, 15, 16
for who in (0, 1, 2, 3, 4, 8):
    put("dns", bytes([who]) + query("db.internal."))
for q in [
    query("web.internal."),
    query("WEB.Internal", A),
    query("web.internal", AAAA),
    query("web.internal", ANY),
    query("web.internal", MX),
    query("web.blog.internal", A),
    query("blog.internal", A),
    query("cache.internal", A),
    query("nope.internal", TXT),
    query("internal.", SOA),
    query("internal", ANY),
    query("internal", A),
    query("web.internal", A, qclass=3),
    query("example.com.", A),
    query("notinternal", A),
    query("web.internal", A, opcode=5),
    query("web.internal", A, qd=2),
    query("web.internal", A, qd=0),
    query("web.internal", A, edns=(0, 4096)),
    query("web.internal", A, edns=(1, 1232)),
    query("web.internal", A, edns=(0, 0)),
]:
    put("dns", b"\0" + q)
    put("dns", b"\x08" + q)

# decide: a byte for the listener (0 HTTP + HTTPS on 8443, 1 on 443, 2 no
# HTTPS, 3 the HTTPS listener, 4 tls.redirect off), the target, `\n`, Host.
for mode in "01234":
    for target, host in [
        ("/.well-known/acme-challenge/tok", "secure.test"),
        ("/.well-known/acme-challenge/tok", None),
        ("/.well-known/acme-challenge/other", "x.test"),
        ("/", None),
        ("/", "secure.test:abc"),
        ("/", "secure.test:99999"),
        ("/", "nowhere.test"),
        ("/", "down.test"),
        ("/a?b=1", "Secure.TEST:8080"),
        ("/a?b=1", "secure.test"),
        ("/", "plain.test"),
        ("/", "nocert.test"),
        ("/x?y", "app.wild.test"),
        ("/", "wild.test"),
        ("/api/v1/users?id=1", "api.test"),
        ("/api", "api.test:8080"),
        ("/apix", "api.test"),
        ("/", "[::1]:8080"),
        ("/", "127.0.0.1:8080"),
        ("http://secure.test/a?b", "secure.test"),
        ("https://App.Wild.Test:8443/p", None),
    ]:
        data = mode + target + ("" if host is None else "\n" + host)
        put("decide", data)
put("decide", b"0/\n\xffsecure.test")

# compose: the compose files of the deploy tests (tests/it/project.rs, with
# their `{...}` holes filled) and of the parser's unit tests, and a few more.
COMPOSE = [
    """name: blog
services:
  web:
    build:
      context: ./web
      dockerfile: Dockerfile.prod
      args: {GREETING: hello, TAG: "${TAG}"}
      target: prod
    deploy: {replicas: 2}
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
    labels: {berth.host: blog.example.com}
    environment: [MODE=prod, "EMPTY=${EMPTY:-x}"]
    env_file: [ok.env]
    networks: {front: {aliases: [www]}, default: {}}
  migrate:
    image: blog:${TAG:?set TAG}
    command: /bin/sh -c "echo 'migrating'; exit 0"
  db:
    image: postgres:16
    ports: ["127.0.0.1:5432:5432", "8080:80/udp", {target: 9000, published: "9001", host_ip: 0.0.0.0, protocol: tcp}]
    expose: ["5433", 5434]
    volumes: [data:/var/lib/postgresql/data, ./init:/docker-entrypoint-initdb.d:ro, /tmp, {type: tmpfs, target: /run}]
    healthcheck:
      test: pg_isready
      interval: 1m30s
      timeout: 500ms
      retries: 5
      start_period: 10s
    restart: on-failure:3
    stop_grace_period: 20s
    user: "999"
    working_dir: /srv
x-common: &common {restart: always}
networks:
  front: {}
  outside: {external: true, name: proxy}
volumes:
  data: {labels: {berth.single-writer: "true"}}
""",
    "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n",
    "services:\n  web:\n    image: x\n    colour: red\n",
    "services:\n  web:\n    image: x\n    ports: [\"80a:80\"]\n",
    "services:\n  web:\n    image: x\n    container_name: web\n",
    "version: \"3.8\"\nservices:\n  app:\n    <<: {image: x}\n    environment: {A: 1, B: true, C: null, D: $$literal}\n",
]
with open(os.path.join(ROOT, "tests", "it", "project.rs")) as fh:
    tests = fh.read()
for lit in re.findall(r'r#"(name: \{id\}.*?)"#', tests, re.S):
    COMPOSE.append(lit.replace("{id}", "proj").replace("{IMAGE}", "img:1").replace("{host}", "web.test")
                   .replace("{host_port}", "8081").replace("{db_version}", "d1").replace("{db_healthy}", "1")
                   .replace("{migrate_exit}", "0").replace("{{", "{").replace("}}", "}"))
for text in COMPOSE:
    put("compose", text)

for t in sorted(d for d in os.listdir(CORPUS) if os.path.isdir(os.path.join(CORPUS, d))):
    print(f"{t}: {len(os.listdir(os.path.join(CORPUS, t)))} seeds", file=sys.stderr)
