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
# The policy row: basic auth (bcrypt, as htpasswd -B makes it), a rate limit
# that does not bite, two response headers; nginx does the same.
POLICY_HOST = "policy.local"
POLICY = os.environ.get("POLICY", "1") != "0"
AUTH = "Authorization: Basic " + __import__("base64").b64encode(b"bench:bench-secret").decode()
BACKENDS = (19001, 19002)
PORTS = {"direct": BACKENDS[0], "berth": 18080, "nginx": 18081, "haproxy": 18082}
# HTTPS, same certificate (ECDSA P-256) for both: keep-alive, and a new
# connection (full handshake) per request.
TLS_PORTS = {"berth": 18443, "nginx": 18444, "base": 18445}
TLS = os.environ.get("TLS", "1") != "0"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
BERTH = os.path.join(os.getcwd(), "target/dist/berth")
# Another berth binary (say, the commit before a change), measured in the
# same run as "base": the last line then gives this build against it.
BASELINE = os.environ.get("BASELINE")
if BASELINE:
    PORTS["base"] = 18083

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


def wrk(port, seconds, scheme="http", close=False, host=HOST, headers=()):
    extra = ["-H", "Connection: close"] if close else []
    for h in headers:
        extra += ["-H", h]
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s", "--latency",
         "-H", f"Host: {host}", *extra, f"{scheme}://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return reqs, rps, p50, p99, (int(errors.group(1)) if errors else 0), (sock.group(1) if sock else "")


def make_cert():
    """One ECDSA P-256 certificate for bench.local, for berth and nginx."""
    certs = os.path.join(work, "certs")
    os.makedirs(certs)
    crt, key = os.path.join(certs, f"{HOST}.crt"), os.path.join(certs, f"{HOST}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN={HOST}",
                    "-addext", f"subjectAltName=DNS:{HOST}"], check=True, capture_output=True)
    return certs, crt, key


def berth_conf(name, certs, tls, policy=True):
    """A berth config routing HOST to the backends, on PORTS[name]; with
    `policy`, also POLICY_HOST with basic auth, a rate limit and headers (a
    BASELINE build from before route policies gets none)."""
    path = os.path.join(work, f"{name}.yaml")
    policy_route = f"""  - host: {POLICY_HOST}
    backends: [{", ".join(f"127.0.0.1:{p}" for p in BACKENDS)}]
    policy:
      auth.basic: "{HTPASSWD}"
      ratelimit: 1000000/s
      headers.response.set.X-Frame-Options: DENY
      headers.response.set.X-Content-Type-Options: nosniff
""" if policy and POLICY else ""
    with open(path, "w") as f:
        f.write(f"""http:
  listen: 127.0.0.1:{PORTS[name]}
docker:
  host: unix://{work}/no-docker.sock
proxy:
  threads: 1
tls:
  listen: {f"127.0.0.1:{TLS_PORTS[name]}" if tls else '"off"'}
  certs_dir: {certs}
  redirect: false
admin:
  listen: "off"
dns:
  listen: "off"
routes:
  - host: {HOST}
    backends: [{", ".join(f"127.0.0.1:{p}" for p in BACKENDS)}]
{policy_route}log:
  level: error
  access: false
""")
    return path


def htpasswd():
    out = subprocess.run(["htpasswd", "-nbB", "bench", "bench-secret"], capture_output=True,
                         text=True, check=True).stdout.strip()
    path = os.path.join(work, "htpasswd")
    with open(path, "w") as f:
        f.write(out + "\n")
    # nginx's workers run as nobody: they must reach and read the file.
    os.chmod(work, 0o755)
    os.chmod(path, 0o644)
    return out, path


def main():
    global HTPASSWD
    HTPASSWD, htpasswd_file = htpasswd()
    backend = start("backends", [NGINX, "-c", nginx_conf("backends", "\n".join(
        f"server {{ listen 127.0.0.1:{p} reuseport; location / {{ return 200 'ok\\n'; }} }}" for p in BACKENDS))], LOAD_CPU)
    servers = "\n".join(f"server 127.0.0.1:{p};" for p in BACKENDS)
    certs, crt, key = make_cert()
    nginx_tls = f"""
server {{ listen 127.0.0.1:{TLS_PORTS['nginx']} ssl http2; server_name {HOST};
  ssl_certificate {crt}; ssl_certificate_key {key}; keepalive_requests 1000000;
  location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }} }}""" if TLS else ""
    nginx_policy = f"""
limit_req_zone $binary_remote_addr zone=bench:10m rate=1000000r/s;
server {{ listen 127.0.0.1:{PORTS['nginx']}; server_name {POLICY_HOST}; location / {{
  auth_basic "berth"; auth_basic_user_file {htpasswd_file};
  limit_req zone=bench burst=1000000 nodelay;
  add_header X-Frame-Options DENY always; add_header X-Content-Type-Options nosniff always;
  proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }} }}""" if POLICY else ""
    nginx = start("nginx", [NGINX, "-c", nginx_conf("nginx", f"""
upstream be {{ {servers} keepalive 128; }}
server {{ listen 127.0.0.1:{PORTS['nginx']} default_server; location / {{
  proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
  proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }} }}
{nginx_policy}
{nginx_tls}""")], PROXY_CPU)
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
    berth = start("berth", [BERTH, "serve", "--config", berth_conf("berth", certs, TLS)], PROXY_CPU)
    pids = {"direct": None, "berth": berth.pid, "nginx": nginx.pid, "haproxy": haproxy.pid}
    if BASELINE:
        base = start("base", [BASELINE, "serve", "--config", berth_conf("base", certs, TLS, policy=False)], PROXY_CPU)
        pids["base"] = base.pid
    for name, port in PORTS.items():
        wait_port(port)
    # (name, port, scheme, close, pid, host, headers)
    targets = [(n, p, "http", False, pids[n], HOST, ()) for n, p in PORTS.items()]
    if POLICY:
        for n in ("berth", "nginx"):
            targets.append((f"{n}-pol", PORTS[n], "http", False, pids[n], POLICY_HOST, (AUTH,)))
    if TLS:
        for n, p in TLS_PORTS.items():
            if n not in pids:
                continue
            wait_port(p)
            targets.append((f"{n}-tls", p, "https", False, pids[n], HOST, ()))
            targets.append((f"{n}-hs", p, "https", True, pids[n], HOST, ()))

    results = {t[0]: [] for t in targets}
    print(f"# {RUNS} runs x {DURATION}s, wrk -t1 -c{CONNS}; proxies on CPU {PROXY_CPU}, wrk and backends on CPU {LOAD_CPU}", flush=True)
    time.sleep(2.5)  # berth picks up its certificate files every 2 s
    for name, port, scheme, close, pid, host, headers in targets:
        wrk(port, 2, scheme, close, host, headers)  # warm-up
    for run in range(RUNS):
        for name, port, scheme, close, pid, host, headers in targets:
            tree = tree_pids(pid) if pid else []
            t0, s0 = cpu_stat()
            c0 = cpu_ticks(tree)
            reqs, rps, p50, p99, non2xx, sockerr = wrk(port, DURATION, scheme, close, host, headers)
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
            print(f"run {run + 1} {name:10} rps={rps:9.0f} p50={p50:6.2f}ms p99={p99:6.2f}ms "
                  f"cpu/req={cpu_us:6.1f}us rss={rss:6.1f}MiB{flag}", flush=True)
            if steal <= 3:
                results[name].append((rps, p50, p99, cpu_us, rss))

    med = {}
    print("\n# medians")
    print(f"{'target':10} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu/req us':>10} {'rss MiB':>8}")
    for name, rows in results.items():
        if not rows:
            sys.exit(f"every run of {name} was discarded")
        m = [statistics.median(col) for col in zip(*rows)]
        med[name] = m
        print(f"{name:10} {m[0]:9.0f} {m[1]:7.2f} {m[2]:7.2f} {m[3]:10.1f} {m[4]:8.1f}")
    if TLS:
        print("# HTTPS: -tls keep-alive, -hs a new connection and handshake per request")
        for kind in ("tls", "hs"):
            b, o = med[f"berth-{kind}"], med[f"nginx-{kind}"]
            print(f"berth/nginx {kind}: rps={b[0] / o[0]:.2f} p99={b[2] / o[2]:.2f} cpu_per_req={b[3] / o[3]:.2f}")
    if POLICY:
        b, o = med["berth-pol"], med["nginx-pol"]
        print("# -pol: basic auth (bcrypt) + rate limit + 2 response headers; berth remembers verified credentials, nginx checks the hash on every request")
        print(f"berth/nginx pol: rps={b[0] / o[0]:.2f} p99={b[2] / o[2]:.2f} cpu_per_req={b[3] / o[3]:.2f}")
        base = med["berth"]
        print(f"berth-pol/berth: cpu_per_req={b[3] / base[3]:.2f} (the policies' own cost)")
    b = med["berth"]
    if BASELINE:
        o = med["base"]
        print(f"berth/base: rps={b[0] / o[0]:.2f} p99={b[2] / o[2]:.2f} cpu_per_req={b[3] / o[3]:.2f}")
        if TLS:
            for kind in ("tls", "hs"):
                bk, ok = med[f"berth-{kind}"], med[f"base-{kind}"]
                print(f"berth/base {kind}: rps={bk[0] / ok[0]:.2f} p99={bk[2] / ok[2]:.2f} cpu_per_req={bk[3] / ok[3]:.2f}")
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
