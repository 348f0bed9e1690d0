"""What the benchmark runners share: free loopback ports, the docker CLI,
steady HTTP load with its samples, percentiles."""

import http.client
import socket
import subprocess
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def docker(*args):
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


class Load:
    """`workers` threads with keep-alive connections, GET / back to back on
    `host`; each sample is (phase, ok, seconds), `phase` set by the caller."""

    def __init__(self, port, host, workers):
        self.port, self.host, self.stop, self.phase = port, host, False, "warmup"
        self.samples = []  # (phase, ok, seconds)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def worker(self):
        conn = None
        while not self.stop:
            t0 = time.perf_counter()
            ok = False
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/", headers={"Host": self.host})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
                if r.getheader("connection", "").lower() == "close":
                    conn = None
            except (OSError, http.client.HTTPException):
                conn = None
            with self.lock:
                self.samples.append((self.phase, ok, time.perf_counter() - t0))

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join()


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))] * 1000 if v else float("nan")
