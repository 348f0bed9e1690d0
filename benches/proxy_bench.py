"""Runner for benches/proxy.sh: starts the backends and proxies, drives wrk,
reads each proxy's CPU time from /proc, prints medians and ratios."""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = int(os.environ.get("RUNS", "5"))
DURATION = int(os.environ.get("DURATION", "10"))
CONNS = int(os.environ.get("CONNS", "50"))
PROXY_CPU, LOAD_CPU = "1", "0"
HOST = "bench.local"
BACKENDS = (19001, 19002)
PORTS = {"direct": BACKENDS[0], "berth": 18080, "nginx": 18081, "haproxy": 18082}
CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
BERTH = os.path.join(os.getcwd(), "target/dist/berth")

work = tempfile.mkdtemp(prefix="berth-bench-")
procs = []


def start(name, argv, cpu):
    log = open(os.path.join(work, f"{name}.log"), "w")
    p = subprocess.Popen(["taskset", "-c", cpu] + argv, stdout=log, stderr=log, start_new_session=True)
    procs.append(p)
    return p


def wait_port(port, limit=20):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port} after {limit}s; logs in {work}")


def nginx_conf(name, body):
    path = os.path.join(work, f"{name}.conf")
    with open(path, "w") as f:
        f.write(f"""daemon off; master_process on; worker_processes 1;
pid {work}/{name}.pid; error_log {work}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
client_body_temp_path {work}/{name}-body; proxy_temp_path {work}/{name}-proxy;
fastcgi_temp_path {work}/{name}-fcgi; uwsgi_temp_path {work}/{name}-uwsgi; scgi_temp_path {work}/{name}-scgi;
{body}
}}
""")
    return path


def tree_pids(root):
    """The process and its children (nginx master + workers)."""
    pids = [root]
    out = subprocess.run(["pgrep", "-P", str(root)], capture_output=True, text=True).stdout
    for line in out.split():
        pids += tree_pids(int(line))
    return pids


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(r"VmRSS:\s+(\d+)", f.read())
        total += int(m.group(1)) if m else 0
    return total


def cpu_stat():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[7]  # total, steal


def to_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    n, u = float(m.group(1)), m.group(2)
    return n / 1000 if u == "us" else n * 1000 if u == "s" else n


def wrk(port, seconds):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s", "--latency",
         "-H", f"Host: {HOST}", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return reqs, rps, p50, p99, (int(errors.group(1)) if errors else 0), (sock.group(1) if sock else "")


def main():
    backend = start("backends", [NGINX, "-c", nginx_conf("backends", "\n".join(
        f"server {{ listen 127.0.0.1:{p} reuseport; location / {{ return 200 'ok\\n'; }} }}" for p in BACKENDS))], LOAD_CPU)
    servers = "\n".join(f"server 127.0.0.1:{p};" for p in BACKENDS)
    nginx = start("nginx", [NGINX, "-c", nginx_conf("nginx", f"""
upstream be {{ {servers} keepalive 128; }}
server {{ listen 127.0.0.1:{PORTS['nginx']}; location / {{
  proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }} }}""")], PROXY_CPU)
    hap_cfg = os.path.join(work, "haproxy.cfg")
    with open(hap_cfg, "w") as f:
        f.write(f"""global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  http-reuse always
  option forwardfor
frontend fe
  bind 127.0.0.1:{PORTS['haproxy']}
  default_backend be
backend be
  balance roundrobin
""" + "".join(f"  server b{i} 127.0.0.1:{p}\n" for i, p in enumerate(BACKENDS)))
    haproxy = start("haproxy", [HAPROXY, "-f", hap_cfg], PROXY_CPU)
    berth_cfg = os.path.join(work, "berth.yaml")
    with open(berth_cfg, "w") as f:
        f.write(f"""http:
  listen: 127.0.0.1:{PORTS['berth']}
docker:
  host: unix://{work}/no-docker.sock
proxy:
  threads: 1
tls:
  listen: "off"
admin:
  listen: "off"
routes:
  - host: {HOST}
    backends: [{", ".join(f"127.0.0.1:{p}" for p in BACKENDS)}]
log:
  level: error
""")
    berth = start("berth", [BERTH, "serve", "--config", berth_cfg], PROXY_CPU)
    pids = {"direct": None, "berth": berth.pid, "nginx": nginx.pid, "haproxy": haproxy.pid}
    for name, port in PORTS.items():
        wait_port(port)

    results = {n: [] for n in PORTS}
    print(f"# {RUNS} runs x {DURATION}s, wrk -t1 -c{CONNS}; proxies on CPU {PROXY_CPU}, wrk and backends on CPU {LOAD_CPU}", flush=True)
    for name, port in PORTS.items():
        wrk(port, 2)  # warm-up
    for run in range(RUNS):
        for name, port in PORTS.items():
            tree = tree_pids(pids[name]) if pids[name] else []
            t0, s0 = cpu_stat()
            c0 = cpu_ticks(tree)
            reqs, rps, p50, p99, non2xx, sockerr = wrk(port, DURATION)
            c1 = cpu_ticks(tree)
            t1, s1 = cpu_stat()
            steal = 100.0 * (s1 - s0) / max(1, t1 - t0)
            cpu_us = (c1 - c0) / CLK_TCK / max(1, reqs) * 1e6 if tree else 0.0
            rss = rss_kib(tree) / 1024 if tree else 0.0
            flag = ""
            if steal > 3:
                flag = f"  (steal {steal:.1f}%: run discarded)"
            elif non2xx or sockerr:
                flag = f"  (non-2xx {non2xx}, socket errors {sockerr})"
            print(f"run {run + 1} {name:8} rps={rps:9.0f} p50={p50:6.2f}ms p99={p99:6.2f}ms "
                  f"cpu/req={cpu_us:6.1f}us rss={rss:6.1f}MiB{flag}", flush=True)
            if steal <= 3:
                results[name].append((rps, p50, p99, cpu_us, rss))

    med = {}
    print("\n# medians")
    print(f"{'target':8} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu/req us':>10} {'rss MiB':>8}")
    for name, rows in results.items():
        if not rows:
            sys.exit(f"every run of {name} was discarded")
        m = [statistics.median(col) for col in zip(*rows)]
        med[name] = m
        print(f"{name:8} {m[0]:9.0f} {m[1]:7.2f} {m[2]:7.2f} {m[3]:10.1f} {m[4]:8.1f}")
    b = med["berth"]
    for peer in ("haproxy", "nginx"):
        o = med[peer]
        print(f"berth/{peer}: rps={b[0] / o[0]:.2f} p99={b[2] / o[2]:.2f} cpu_per_req={b[3] / o[3]:.2f}")


try:
    main()
finally:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    if os.environ.get("KEEP") is None:
        shutil.rmtree(work, ignore_errors=True)
