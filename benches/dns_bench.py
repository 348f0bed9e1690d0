"""Runner for benches/dns.sh: berth and dnsmasq serving web.internal, dnsperf
against each in turns, CPU time per query from /proc, medians and ratios."""

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from common import docker, free_port

RUNS = int(os.environ.get("RUNS", "3"))
DURATION = int(os.environ.get("DURATION", "10"))
SERVER_CPU, LOAD_CPU = "1", "0"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BERTH = os.path.join(os.getcwd(), "target/dist/berth")
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
RUN = f"dnsbench{os.getpid()}"

work = tempfile.mkdtemp(prefix="berth-dns-bench-")
procs = []


def start(name, argv):
    log = open(os.path.join(work, f"{name}.log"), "w")
    p = subprocess.Popen(["taskset", "-c", SERVER_CPU] + argv, stdout=log, stderr=log, start_new_session=True)
    procs.append(p)
    return p


def dig(port, name):
    return subprocess.run(["dig", "@127.0.0.1", "-p", str(port), name, "+short", "+tries=1", "+time=1"],
                          capture_output=True, text=True).stdout.split()


def wait_answer(port, name, ip, limit=20):
    deadline = time.time() + limit
    while time.time() < deadline:
        if dig(port, name) == [ip]:
            return
        time.sleep(0.1)
    sys.exit(f"{name} on port {port} never answered {ip}; logs in {work}")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime, all threads


def dnsperf(port, queries):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries,
         "-l", str(DURATION), "-c", "4", "-q", "200"],
        capture_output=True, text=True, check=True).stdout
    completed = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lat = float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1)) * 1000
    noerror = re.search(r"NOERROR (\d+)", out)
    return completed, qps, lat, int(noerror.group(1)) if noerror else 0


def main():
    http, berth_dns, dnsmasq_dns = free_port(), free_port(), free_port()
    cid = docker("run", "-d", "--name", f"{RUN}-web", "--label", f"berth-bench={RUN}",
                 "--label", f"com.docker.compose.project={RUN}", "--label", "com.docker.compose.service=web",
                 "berth-test-web:1")
    try:
        ip = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cid)
        cfg = os.path.join(work, "berth.yaml")
        with open(cfg, "w") as f:
            f.write(f"""http:\n  listen: 127.0.0.1:{http}\ndocker:\n  constraint: berth-bench={RUN}
admin:\n  listen: "off"\ntls:\n  listen: "off"\nlog:\n  level: warn
dns:\n  listen: 127.0.0.1:{berth_dns}\n  forward: false\n""")
        hosts = os.path.join(work, "hosts")
        with open(hosts, "w") as f:
            f.write(f"{ip} web.internal\n")
        berth = start("berth", [BERTH, "serve", "--config", cfg])
        dnsmasq = start("dnsmasq", [DNSMASQ, "--keep-in-foreground", "--user=root", f"--port={dnsmasq_dns}",
                                    "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                                    "--no-hosts", f"--addn-hosts={hosts}", "--local-ttl=5",
                                    "--log-facility=/dev/null"])
        wait_answer(berth_dns, "web.internal", ip)
        wait_answer(dnsmasq_dns, "web.internal", ip)
        queries = os.path.join(work, "queries")
        with open(queries, "w") as f:
            f.write("web.internal A\n")
        targets = {"berth": (berth, berth_dns), "dnsmasq": (dnsmasq, dnsmasq_dns)}
        results = {k: [] for k in targets}
        for run in range(RUNS):
            for name, (proc, port) in targets.items():
                before = cpu_ticks(proc.pid)
                completed, qps, lat, noerror = dnsperf(port, queries)
                cpu_us = (cpu_ticks(proc.pid) - before) / CLK_TCK * 1e6 / max(completed, 1)
                results[name].append((qps, lat, cpu_us, completed, noerror))
                print(f"run {run + 1} {name:8} {qps:10.0f} q/s  avg {lat:.3f} ms  "
                      f"{cpu_us:.1f} µs CPU/query  ({completed} completed, {noerror} NOERROR)", flush=True)
                if noerror != completed:
                    sys.exit(f"{name}: {completed - noerror} answers were not NOERROR")
        med = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in results.items()}
        print(f"\n{'server':8} {'q/s':>10} {'avg ms':>8} {'CPU µs/q':>9}   (medians of {RUNS} x {DURATION}s)")
        for k, (qps, lat, cpu) in med.items():
            print(f"{k:8} {qps:10.0f} {lat:8.3f} {cpu:9.1f}")
        b, d = med["berth"], med["dnsmasq"]
        print(f"berth/dnsmasq: qps={b[0] / d[0]:.2f} latency={b[1] / d[1]:.2f} cpu_per_query={b[2] / d[2]:.2f}")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
