"""Runner for benches/rollout.sh: berth + a 3-replica service + steady load,
then ten rollouts under that load; latency percentiles per phase."""

import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from common import Load, docker, free_port, pct

ROLLOUTS = int(os.environ.get("ROLLOUTS", "10"))
STEADY = float(os.environ.get("STEADY", "10"))
WORKERS = int(os.environ.get("WORKERS", "8"))
BERTH = os.path.join(os.getcwd(), "target/dist/berth")
RUN = f"bench{os.getpid()}"
HOST = f"web.{RUN}.test"
TOKEN = "berth-bench-token-0123456789"


def main():
    work = tempfile.mkdtemp(prefix="berth-rollout-")
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
proxy:
  threads: 1
tls:
  listen: "off"
log:
  level: warn
  access: false
""")
    net = f"berth-{RUN}"
    berth = None
    try:
        docker("network", "create", "--label", f"berth-bench.run={RUN}", net)
        for i in range(1, 4):
            docker("run", "-d", "--name", f"{RUN}-web-{i}", "--network", net,
                   "--label", f"berth-bench.run={RUN}", "--label", f"com.docker.compose.project={RUN}",
                   "--label", "com.docker.compose.service=web", "--label", f"berth.host={HOST}",
                   "--label", "berth.health.path=/health", "--label", "berth.health.interval=500ms",
                   "berth-test-web:1")
        log = open(os.path.join(work, "berth.log"), "w")
        berth = subprocess.Popen([BERTH, "serve", "--config", cfg], stdout=log, stderr=log)
        deadline = time.time() + 20
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/", headers={"Host": HOST})
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit(f"berth never served {HOST}; log in {work}")
            time.sleep(0.1)

        load = Load(port, HOST, WORKERS)
        time.sleep(2)
        load.phase = "steady"
        time.sleep(STEADY)
        load.phase = "rollout"
        durations = []
        for n in range(ROLLOUTS):
            image = "berth-test-web:2" if n % 2 == 0 else "berth-test-web:1"
            t0 = time.time()
            r = subprocess.run([BERTH, "rollout", "web", "--image", image, "--admin", f"127.0.0.1:{admin}",
                                "--token", TOKEN], capture_output=True, text=True)
            durations.append(time.time() - t0)
            last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()
            print(f"rollout {n + 1:2} to {image:18} {durations[-1]:5.1f}s  {last}", flush=True)
            if r.returncode != 0:
                print(r.stdout + r.stderr, file=sys.stderr)
        load.finish()

        steady = [s for s in load.samples if s[0] == "steady"]
        during = [s for s in load.samples if s[0] == "rollout"]
        steady_ok = [s[2] for s in steady if s[1]]
        during_ok = [s[2] for s in during if s[1]]
        failed = sum(1 for s in during if not s[1]) + sum(1 for s in steady if not s[1])
        print()
        print(f"steady:   {len(steady):7} requests {len(steady) / STEADY:7.0f}/s  p50={pct(steady_ok, .5):6.2f}ms  p99={pct(steady_ok, .99):6.2f}ms")
        span = sum(durations)
        print(f"rollouts: {len(during):7} requests {len(during) / span:7.0f}/s  p50={pct(during_ok, .5):6.2f}ms  p99={pct(during_ok, .99):6.2f}ms  ({ROLLOUTS} rollouts in {span:.0f}s)")
        print(f"sent={len(steady) + len(during)} failed={failed} p99_rollout/p99_steady={pct(during_ok, .99) / pct(steady_ok, .99):.2f}")
    finally:
        if berth:
            berth.send_signal(signal.SIGINT)
            try:
                berth.wait(timeout=10)
            except subprocess.TimeoutExpired:
                berth.kill()
        ids = docker("ps", "-aq", "--filter", f"label=berth-bench.run={RUN}").split()
        if ids:
            docker("rm", "-f", *ids)
        subprocess.run(["docker", "network", "rm", net], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


main()
