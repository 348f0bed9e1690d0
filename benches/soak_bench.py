"""Runner for benches/soak.sh: berth under DURATION seconds of container churn
(rollouts, scaling, rolling restarts, stops and starts, containers started and
removed, bad labels, a replica that never gets healthy) while a steady load
runs against a service nobody touches. Prints requests sent and failed on that
stable service (target: 0 failed), and berth's RSS, open fds and threads at
start and end (target: flat).

Loopback only: berth listens on 127.0.0.1, the load goes there; the
containers are this run's own (label berth-soak.run=RUN), removed at the end.
"""

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from common import free_port

DURATION = float(os.environ.get("DURATION", "1200"))
WORKERS = int(os.environ.get("WORKERS", "4"))
# Connections that load the churned service too (reported, not the target).
CHURN_WORKERS = int(os.environ.get("CHURN_WORKERS", "1"))
# Seconds between two churn actions (each also takes as long as it takes).
CHURN_EVERY = float(os.environ.get("CHURN_EVERY", "2"))
# Seconds between two samples of berth's resources.
SAMPLE_EVERY = float(os.environ.get("SAMPLE_EVERY", "10"))
BERTH = os.environ.get("BERTH") or os.path.join(os.getcwd(), "target/dist/berth")
RUN = f"soak{os.getpid()}"
LABEL = f"berth-soak.run={RUN}"
STABLE = f"stable.{RUN}.test"
CHURN = f"churn.{RUN}.test"
IMAGES = ("berth-test-web:1", "berth-test-web:2")
TOKEN = "berth-soak-token-0123456789"


def docker(*args, check=True):
    r = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


class Load:
    """WORKERS threads, each with a keep-alive connection, GET / back to back
    on `host`. Counts every request: a 200 is ok; any other status, a reset,
    a timeout or a refused connection is a failure, kept by kind."""

    def __init__(self, port, host, workers):
        self.port, self.host, self.stop = port, host, False
        self.sent = self.ok = 0
        self.failures = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def worker(self):
        conn = None
        while not self.stop:
            why = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/", headers={"Host": self.host})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    why = f"HTTP {r.status}"
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                why = type(e).__name__
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.sent += 1
                if why is None:
                    self.ok += 1
                else:
                    self.failures[why] = self.failures.get(why, 0) + 1

    def counts(self):
        with self.lock:
            return self.sent, self.sent - self.ok, dict(self.failures)

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join()


def metrics_text(admin):
    try:
        c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        c.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        r = c.getresponse()
        return r.read().decode() if r.status == 200 else ""
    except (OSError, http.client.HTTPException):
        return ""


# berth exports no tokio task count: the OS thread count stands in for it,
# beside the fds (sockets to clients, backends and the engine) and the RSS.
TASK_METRIC = re.compile(r"^(?:berth_tasks|tokio_\w*alive_tasks)\S*\s+(\d+)", re.M)


def sample(pid, admin):
    status = open(f"/proc/{pid}/status").read()
    field = lambda name: int(re.search(rf"^{name}:\s+(\d+)", status, re.M).group(1))
    text = metrics_text(admin)
    tasks = TASK_METRIC.search(text)
    routes = re.search(r"^berth_routes (\d+)", text, re.M)
    problems = re.search(r"^berth_label_problems (\d+)", text, re.M)
    return {
        "rss_kb": field("VmRSS"),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": field("Threads"),
        "tasks": int(tasks.group(1)) if tasks else None,
        "routes": int(routes.group(1)) if routes else None,
        "problems": int(problems.group(1)) if problems else None,
    }


class Churn:
    """One action every CHURN_EVERY seconds, in turns, on the `churn` service
    of project RUN and on throwaway containers; never on the stable service."""

    def __init__(self, cfg, net, watched):
        self.cfg, self.net, self.watched = cfg, net, watched
        self.done, self.failed = {}, {}
        # Failed requests on the churned service while each kind of action ran.
        self.hurt = {}
        self.n = 0
        self.image = 0
        self.extra = []  # throwaway containers still around

    def berth(self, *args):
        r = subprocess.run([BERTH, *args, "--config", self.cfg], capture_output=True, text=True, timeout=300)
        self.rc = r.returncode
        return r.returncode == 0, (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]

    def run_container(self, name, labels, image="berth-test-web:1"):
        args = ["run", "-d", "--name", name, "--network", self.net, "--label", LABEL]
        for k, v in labels:
            args += ["--label", f"{k}={v}"]
        docker(*args, image)
        self.extra.append(name)

    def drop_extra(self):
        if self.extra:
            docker("rm", "-f", *self.extra, check=False)
            self.extra = []

    def churn_replicas(self):
        ids = docker("ps", "-q", "--filter", f"label={LABEL}", "--filter", f"label=com.docker.compose.project={RUN}",
                     "--filter", "label=com.docker.compose.service=churn").split()
        return ids

    def step(self):
        actions = [
            ("rollout", self.rollout),
            ("scale up", lambda: self.berth("scale", "churn=3", "--project", RUN)),
            ("bad labels", self.bad_labels),
            ("scale down", lambda: self.berth("scale", "churn=1", "--project", RUN)),
            ("start/remove", self.throwaway),
            ("scale to 2", lambda: self.berth("scale", "churn=2", "--project", RUN)),
            ("restart project", lambda: self.berth("restart", RUN)),
            ("stop/start", self.stop_start),
            ("never healthy", self.never_healthy),
            ("restart service", lambda: self.berth("restart", f"{RUN}/churn")),
        ]
        name, action = actions[self.n % len(actions)]
        self.n += 1
        _, before, _ = self.watched.counts()
        try:
            ok, last = action()
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            ok, last = False, [str(e)]
        _, after, _ = self.watched.counts()
        if after > before:
            self.hurt[name] = self.hurt.get(name, 0) + after - before
        self.done[name] = self.done.get(name, 0) + 1
        if not ok:
            self.failed[name] = self.failed.get(name, 0) + 1
            print(f"  churn: {name} failed: {last[0][:200]}", flush=True)

    def rollout(self):
        self.image ^= 1
        return self.berth("rollout", "churn", "--project", RUN, "--image", IMAGES[self.image])

    def bad_labels(self):
        """A replica of the churn service with a typo, one of another service
        with a bad port, one with a named route without a host: problems on
        those containers only, the churn routes stay on their last good labels."""
        k = self.n
        self.run_container(f"{RUN}-typo-{k}", [
            ("com.docker.compose.project", RUN), ("com.docker.compose.service", "churn"),
            ("berth.host", CHURN), ("berth.prot", "8080"), ("berth.health.path", "/health"),
        ])
        self.run_container(f"{RUN}-badport-{k}", [("berth.host", f"bad.{RUN}.test"), ("berth.port", "http")])
        self.run_container(f"{RUN}-nohost-{k}", [("berth.api.port", "8080"), ("berth.helth.path", "/h")])
        time.sleep(1)
        _, last = self.berth("problems")
        self.drop_extra()
        # `berth problems` exits 1 when it finds some: here it must.
        return self.rc == 1, last

    def throwaway(self):
        k = self.n
        for i in range(3):
            self.run_container(f"{RUN}-tmp-{k}-{i}", [("berth.host", f"tmp{i}.{RUN}.test")])
        time.sleep(1)
        docker("stop", "-t", "5", *self.extra)
        self.drop_extra()
        return True, [""]

    def stop_start(self):
        ids = self.churn_replicas()
        if not ids:
            return False, ["no churn replica running"]
        docker("stop", "-t", "5", ids[0])
        docker("start", ids[0])
        return True, [""]

    def never_healthy(self):
        self.run_container(f"{RUN}-broken-{self.n}", [
            ("berth.host", f"broken.{RUN}.test"), ("berth.health.path", "/health"),
            ("berth.health.interval", "200ms"),
        ], image="berth-test-web:broken")
        time.sleep(2)
        self.drop_extra()
        return True, [""]


def table(start, end):
    print(f"\n{'':14}{'start':>12}{'end':>12}{'end/start':>11}")
    rows = [("RSS (KiB)", "rss_kb"), ("open fds", "fds"), ("threads", "threads")]
    if start["tasks"] is not None:
        rows.append(("tokio tasks", "tasks"))
    rows += [("routes", "routes"), ("label problems", "problems")]
    for label, key in rows:
        a, b = start[key], end[key]
        ratio = f"{b / a:.2f}" if a else "-"
        print(f"{label:14}{a if a is not None else '-':>12}{b if b is not None else '-':>12}{ratio:>11}")
    if start["tasks"] is None:
        print("(berth exports no task count: threads is the OS thread count from /proc/PID/status)")


def main():
    work = tempfile.mkdtemp(prefix="berth-soak-")
    port, admin = free_port(), free_port()
    cfg = os.path.join(work, "berth.yaml")
    with open(cfg, "w") as f:
        f.write(f"""http:
  listen: 127.0.0.1:{port}
docker:
  constraint: {LABEL}
admin:
  listen: 127.0.0.1:{admin}
  token: {TOKEN}
proxy:
  threads: 1
tls:
  listen: "off"
dns:
  listen: "off"
deploy:
  health_timeout: 30s
state_dir: {work}/state
log:
  level: warn
  access: false
""")
    net = f"berth-{RUN}"
    berth = load = churn_load = None
    try:
        docker("network", "create", "--label", LABEL, net)
        for service, project, host, n in (("stable", f"{RUN}-stable", STABLE, 2), ("churn", RUN, CHURN, 2)):
            for i in range(1, n + 1):
                docker("run", "-d", "--name", f"{project}-{service}-{i}", "--network", net, "--label", LABEL,
                       "--label", f"com.docker.compose.project={project}",
                       "--label", f"com.docker.compose.service={service}",
                       "--label", f"berth.host={host}", "--label", "berth.health.path=/health",
                       "--label", "berth.health.interval=500ms", "--label", "berth.drain_timeout=5s",
                       IMAGES[0])
        log = open(os.path.join(work, "berth.log"), "w")
        berth = subprocess.Popen([BERTH, "serve", "--config", cfg], stdout=log, stderr=log)
        deadline = time.time() + 30
        for host in (STABLE, CHURN):
            while True:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    c.request("GET", "/", headers={"Host": host})
                    if c.getresponse().status == 200:
                        break
                except (OSError, http.client.HTTPException):
                    pass
                if time.time() > deadline or berth.poll() is not None:
                    sys.exit(f"berth never served {host}; log in {work}")
                time.sleep(0.1)

        load = Load(port, STABLE, WORKERS)
        churn_load = Load(port, CHURN, CHURN_WORKERS)
        time.sleep(5)  # warm-up: connections open, allocator settled
        start = sample(berth.pid, admin)
        sent0, failed0, _ = load.counts()
        csent0, cfailed0, _ = churn_load.counts()
        t0 = time.time()
        print(f"berth pid {berth.pid}; {DURATION:.0f}s of churn, load on {STABLE} ({WORKERS} connections)", flush=True)
        churn = Churn(cfg, net, churn_load)
        next_sample = t0 + SAMPLE_EVERY
        while time.time() - t0 < DURATION:
            churn.step()
            if berth.poll() is not None:
                sys.exit(f"berth exited ({berth.returncode}) during the soak; log in {work}")
            now = time.time()
            if now >= next_sample:
                s = sample(berth.pid, admin)
                sent, failed, _ = load.counts()
                print(f"  t={now - t0:5.0f}s sent={sent - sent0} failed={failed - failed0} "
                      f"rss={s['rss_kb']}KiB fds={s['fds']} threads={s['threads']} actions={churn.n}", flush=True)
                next_sample = now + SAMPLE_EVERY
            time.sleep(CHURN_EVERY)
        elapsed = time.time() - t0
        churn.drop_extra()
        # The churn service back to its starting shape, then a moment to
        # settle, so that end and start compare like with like.
        churn.berth("scale", "churn=2", "--project", RUN)
        time.sleep(5)
        end = sample(berth.pid, admin)
        sent, failed, kinds = load.counts()
        csent, cfailed, ckinds = churn_load.counts()
        load.finish()
        churn_load.finish()
        load = churn_load = None
        sent, failed = sent - sent0, failed - failed0
        csent, cfailed = csent - csent0, cfailed - cfailed0

        print(f"\nchurn: {churn.n} actions in {elapsed:.0f}s: " +
              ", ".join(f"{k} {v}" for k, v in sorted(churn.done.items())))
        if churn.failed:
            print("churn actions that failed: " + ", ".join(f"{k} {v}" for k, v in sorted(churn.failed.items())))
        print(f"stable service: sent={sent} failed={failed} ({sent / elapsed:.0f} req/s)"
              + (f" failures: {kinds}" if kinds else ""))
        print(f"churned service (for information): sent={csent} failed={cfailed}"
              + (f" failures: {ckinds}" if ckinds else ""))
        if churn.hurt:
            print("  failed while: " + ", ".join(f"{k} {v}" for k, v in sorted(churn.hurt.items())))
        table(start, end)
        if failed:
            sys.exit(1)
    finally:
        for l in (load, churn_load):
            if l:
                l.finish()
        if berth:
            berth.send_signal(signal.SIGINT)
            try:
                berth.wait(timeout=15)
            except subprocess.TimeoutExpired:
                berth.kill()
        ids = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        docker("network", "rm", net, check=False)
        if os.environ.get("KEEP_LOG"):
            print(f"log kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


main()
