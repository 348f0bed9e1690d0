"""Runner for benches/deploy.sh: one berth, a two-service project (web: built,
2 replicas; api: an image), steady load on web; five redeploys with a changed
build by `berth deploy`, then five by `docker-compose up -d --build` on a
project of its own; latency percentiles and failures per phase."""

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from common import Load, free_port, pct

DEPLOYS = int(os.environ.get("DEPLOYS", "5"))
STEADY = float(os.environ.get("STEADY", "8"))
WORKERS = int(os.environ.get("WORKERS", "4"))
BERTH = os.environ.get("BERTH") or os.path.join(os.getcwd(), "target/dist/berth")
RUN = f"dbench{os.getpid()}"
TOKEN = "berth-bench-token-0123456789"


def wait_serving(port, host, work):
    deadline = time.time() + 60
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/", headers={"Host": host})
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.time() > deadline:
            sys.exit(f"berth never served {host}; log in {work}")
        time.sleep(0.1)


def write_project(d, name, host, version, with_name):
    os.makedirs(os.path.join(d, "web"), exist_ok=True)
    with open(os.path.join(d, "web", "Dockerfile"), "w") as f:
        f.write(f"FROM berth-test-web:1\nENV VERSION={version}\nRUN echo {version} > /built\n")
    head = f"name: {name}\n" if with_name else ""
    with open(os.path.join(d, "compose.yaml"), "w") as f:
        f.write(f"""{head}services:
  web:
    build: ./web
    deploy:
      replicas: 2
    labels:
      berth-bench.run: "{RUN}"
      berth.host: {host}
      berth.health.path: /health
      berth.health.interval: 500ms
  api:
    image: berth-test-web:1
    environment:
      VERSION: api
    labels:
      berth-bench.run: "{RUN}"
""")


def phase(load, name, deploys, run_one):
    """Steady window, then `deploys` redeploys under the same load."""
    load.phase = f"{name}-steady"
    time.sleep(STEADY)
    load.phase = name
    took = []
    for n in range(deploys):
        took.append(run_one(n))
    load.phase = "idle"
    return took


def report(load, name, took):
    steady = [s for s in load.samples if s[0] == f"{name}-steady"]
    during = [s for s in load.samples if s[0] == name]
    s_ok = [s[2] for s in steady if s[1]]
    d_ok = [s[2] for s in during if s[1]]
    failed = sum(1 for s in during if not s[1])
    span = sum(t for t, _ in took)
    print(f"{name:8} steady:   {len(steady):7} requests  p99={pct(s_ok, .99):7.2f}ms")
    print(f"{name:8} deploys:  {len(during):7} requests  p99={pct(d_ok, .99):7.2f}ms  failed={failed}  "
          f"({len(took)} deploys in {span:.0f}s, p99 deploy/steady={pct(d_ok, .99) / pct(s_ok, .99):.2f})")
    return failed, span, pct(d_ok, .99) / pct(s_ok, .99)


def main():
    work = tempfile.mkdtemp(prefix="berth-deploy-")
    port, admin = free_port(), free_port()
    cfg = os.path.join(work, "berth.yaml")
    with open(cfg, "w") as f:
        f.write(f"""http:
  listen: 127.0.0.1:{port}
docker:
  constraint: berth-bench.run={RUN}
admin:
  listen: 127.0.0.1:{admin}
  token: {TOKEN}
tls:
  listen: "off"
dns:
  listen: "off"
log:
  level: warn
  access: false
state_dir: {work}/state
""")
    projects = {"berth": f"{RUN}b", "compose": f"{RUN}c"}
    berth = None
    try:
        log = open(os.path.join(work, "berth.log"), "w")
        berth = subprocess.Popen([BERTH, "serve", "--config", cfg], stdout=log, stderr=log)
        cli = [BERTH, "--admin", f"127.0.0.1:{admin}", "--token", TOKEN]
        # berth deploy
        bdir = os.path.join(work, "b")
        bhost = f"web.{projects['berth']}.test"
        write_project(bdir, projects["berth"], bhost, "v0", True)

        def berth_deploy(n):
            write_project(bdir, projects["berth"], bhost, f"v{n + 1}", True)
            t0 = time.time()
            r = subprocess.run([BERTH, "deploy", "-f", os.path.join(bdir, "compose.yaml"), "--admin",
                                f"127.0.0.1:{admin}", "--token", TOKEN], capture_output=True, text=True)
            took = time.time() - t0
            hist = json.loads(subprocess.run([BERTH, "history", projects["berth"], "--json", "--admin",
                                              f"127.0.0.1:{admin}", "--token", TOKEN],
                                             capture_output=True, text=True).stdout or "[]")
            build = hist[-1].get("build_seconds") if hist else None
            last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()
            print(f"berth deploy {n + 1}: build {build or 0:5.1f}s, trigger to completed {took:5.1f}s  {last}", flush=True)
            if r.returncode != 0:
                print(r.stdout + r.stderr, file=sys.stderr)
            return took, build

        r = subprocess.run([BERTH, "deploy", "-f", os.path.join(bdir, "compose.yaml"), "--admin",
                            f"127.0.0.1:{admin}", "--token", TOKEN], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"first berth deploy failed:\n{r.stdout}{r.stderr}")
        wait_serving(port, bhost, work)
        bload = Load(port, bhost, WORKERS)
        time.sleep(2)
        b_took = phase(bload, "berth", DEPLOYS, berth_deploy)
        bload.finish()

        # docker-compose up -d --build, routed by the same berth
        cdir = os.path.join(work, "c")
        chost = f"web.{projects['compose']}.test"
        write_project(cdir, projects["compose"], chost, "v0", False)
        env = dict(os.environ, DOCKER_BUILDKIT="0", COMPOSE_DOCKER_CLI_BUILD="0")

        def compose_up(n):
            write_project(cdir, projects["compose"], chost, f"v{n + 1}", False)
            t0 = time.time()
            r = subprocess.run(["docker-compose", "-p", projects["compose"], "build"], cwd=cdir, env=env,
                               capture_output=True, text=True)
            build = time.time() - t0
            r2 = subprocess.run(["docker-compose", "-p", projects["compose"], "up", "-d"], cwd=cdir, env=env,
                                capture_output=True, text=True)
            took = time.time() - t0
            print(f"compose up   {n + 1}: build {build:5.1f}s, trigger to done      {took:5.1f}s", flush=True)
            if r.returncode != 0 or r2.returncode != 0:
                print(r.stdout + r.stderr + r2.stdout + r2.stderr, file=sys.stderr)
            return took, build

        subprocess.run(["docker-compose", "-p", projects["compose"], "up", "-d", "--build"], cwd=cdir, env=env,
                       check=True, capture_output=True)
        wait_serving(port, chost, work)
        cload = Load(port, chost, WORKERS)
        time.sleep(2)
        c_took = phase(cload, "compose", DEPLOYS, compose_up)
        cload.finish()

        print()
        bf, bspan, bp99 = report(bload, "berth", b_took)
        cf, cspan, cp99 = report(cload, "compose", c_took)
        print()
        print(f"failed during redeploys: berth={bf} compose={cf}")
        print(f"ratios berth/compose: time={bspan / cspan:.2f} p99-during/steady={bp99 / cp99:.2f}")
    finally:
        for p in projects.values():
            label = f"label=com.docker.compose.project={p}"
            for kind in (["ps", "-aq"], ["network", "ls", "-q"]):
                ids = subprocess.run(["docker", *kind, "--filter", label], capture_output=True,
                                     text=True).stdout.split()
                if ids:
                    rm = {"ps": ["rm", "-f"], "network": ["network", "rm"]}[kind[0]]
                    subprocess.run(["docker", *rm, *ids], capture_output=True)
        # berth tags builds <project>-<service>:<deploy>, compose v1 <project>_<service>
        for ref in (f"{projects['berth']}-*", f"{projects['compose']}_*"):
            ids = subprocess.run(["docker", "image", "ls", "-q", "--filter", f"reference={ref}"],
                                 capture_output=True, text=True).stdout.split()
            if ids:
                subprocess.run(["docker", "rmi", "-f", *set(ids)], capture_output=True)
        if berth:
            berth.send_signal(signal.SIGINT)
            try:
                berth.wait(timeout=10)
            except subprocess.TimeoutExpired:
                berth.kill()
        shutil.rmtree(work, ignore_errors=True)


main()
