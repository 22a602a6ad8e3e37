#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The kubernetes provider with many endpoints: one command, one result.

    tests/bench/kubernetes.py [BUILD_DIR]        (default BUILD_DIR: ./build)

Starts the fake Kubernetes API server (tests/fake/kube_fake.py, pods ready
0.05 s after binding, one extra node with room for every pod) and one
infrafs daemon with an environment `dev` (`provider = kubernetes`,
`settle_ms = 0`, `drift = report`, the fake's kubeconfig), declares
KUBE_BENCH_N (1000) endpoints, each `mkdir -p` then a spec of
`image = registry.example.com/m:1` and `replicas = 1`, and measures:

  create    the time from the first mkdir to every endpoint's status
            saying `state: ready` and `synced: yes`, when the fake got the
            first and the last Deployment PATCH, and the API requests
            that took, by verb and resource;
  apply     the time from close(2) of a one-field write (`3` to
            `endpoints/eK/replicas`) returning to the fake receiving the
            PATCH of Deployment eK (the `time` of its call record: the
            fake's time.time() when the request arrived, the same clock
            as the script's), over KUBE_BENCH_SAMPLES (50) endpoints one
            after another, each ready again before the next: p50, p99;
            with the time to the step's first request, the requests each
            write cost, and the reconciler's pass after it (`metrics`:
            infrafs_reconcile_pass_seconds and _resources);
  observe   the time from a change made in the API server by another
            field manager (`/_fake/apply` of `spec.replicas = 2` as
            manager `bench`, forced) to the endpoint's `status` showing
            it in its `drift:` line (read every 5 ms), over
            KUBE_BENCH_SAMPLES other endpoints: p50, p99; timed from
            before the control request is sent, so it includes it;
  at rest   once no request but watches came for 5 s: every API request
            over KUBE_BENCH_REST_S (60) seconds, per minute and by verb,
            the fake's open watches, and the CPU time the daemon and the
            fake used meanwhile (/proc/PID/stat);
  memory    the daemon's VmRSS and VmHWM (/proc/PID/status) right after
            mounting, with every endpoint declared and ready, and after
            the rest window.

The endpoints are declared by a child process: the process that made a
folder sees it empty for 5 s (so that cp -r can fill it), and the script
reads every status. `drift = report` keeps the other manager's change in
place, so the status line it makes stays. Progress and the sorted samples
of both latencies go to stderr, the results table to stdout.
KUBE_BENCH_CREATE_TIMEOUT_S (N x 0.6 s, at least 120) bounds the wait for
all endpoints to be ready. Everything lives in a fresh folder under /tmp,
removed at the end (KUBE_BENCH_KEEP=1 keeps it); the mount is unmounted
and the fake stopped, on errors too.

Run as root (FUSE mount), with a python3 that has pytest (tests/fs/
conftest.py imports it), as the other benchmarks in Python.
"""
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build").resolve()
os.environ["INFRAFS_BIN"] = str(BUILD / "infrafs")
sys.path.insert(0, str(ROOT / "tests" / "fs"))

from conftest import Mount, status_of, wait_for  # noqa: E402
from kube import KubeFake  # noqa: E402

N = int(os.environ.get("KUBE_BENCH_N", 1000))
SAMPLES = int(os.environ.get("KUBE_BENCH_SAMPLES", 50))
REST_S = float(os.environ.get("KUBE_BENCH_REST_S", 60))
CREATE_TIMEOUT_S = float(os.environ.get("KUBE_BENCH_CREATE_TIMEOUT_S",
                                        max(120, N * 0.6)))
IMAGE = "registry.example.com/m:1"
NS = "infrafs-dev"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def memory(m):
    out = {}
    for line in Path(f"/proc/{m.proc.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


def cpu_seconds(pid):
    """user + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mem_text(mem):
    return f"{mem['VmRSS']:.1f} MiB (peak {mem['VmHWM']:.1f} MiB)"


def status_text(m, name):
    try:
        return (m / f"dev/endpoints/{name}/status").read_text()
    except OSError:
        return ""


def is_ready(m, name):
    try:
        st = status_of(m / f"dev/endpoints/{name}/status")
    except OSError:
        return False
    return st.get("state") == "ready" and st.get("synced") == "yes"


def calls_since(kube, since):
    """The fake's call records after seq since (the log keeps 100,000)."""
    return kube.calls(since)


def last_seq(kube):
    return kube.control("calls?since=999999999999")["last"]


def call_kind(c):
    """verb and resource of a call record, or its path when it names no
    resource (discovery, /version)."""
    return f"{c['verb']} {c['resource'] or c['path']}"


def by_verb(calls):
    return Counter(c["verb"] for c in calls)


def verb_text(counts):
    return ", ".join(f"{v} {n}" for v, n in sorted(
        counts.items(), key=lambda kv: -kv[1])) or "none"


DECLARE = """
import os, sys, time
top, image, names = sys.argv[1], sys.argv[2], sys.argv[3:]
print(time.time(), flush=True)
for name in names:
    os.makedirs(f"{top}/{name}", exist_ok=True)
    with open(f"{top}/{name}/spec", "w") as f:
        f.write(f"image = {image}\\nreplicas = 1\\n")
print(time.time(), flush=True)
"""


def create(m, kube, names):
    """Declares every endpoint; returns (seconds to all ready, seconds of
    writing, calls by verb/resource meanwhile)."""
    since = last_seq(kube)
    # Another process declares them: a process that made a folder sees
    # it empty for 5 s (so that cp -r can fill it), status included.
    child = subprocess.Popen([sys.executable, "-c", DECLARE,
                              str(m / "dev/endpoints"), IMAGE, *names],
                             stdout=subprocess.PIPE, text=True)
    start_wall = float(child.stdout.readline())
    start = time.monotonic() - (time.time() - start_wall)
    written = float(child.stdout.readline()) - start_wall
    if child.wait() != 0:
        raise SystemExit("create: declaring the endpoints failed")
    log(f"  declared all {len(names)} in {written:.1f} s; waiting for ready")
    pending = list(names)
    last_log = 0.0
    while pending:
        now = time.monotonic()
        if now - start > CREATE_TIMEOUT_S:
            raise SystemExit(
                f"create: {len(pending)} of {len(names)} not ready after "
                f"{CREATE_TIMEOUT_S:.0f} s; e.g. {pending[0]}:\n"
                + status_text(m, pending[0]))
        pending = [n for n in pending if not is_ready(m, n)]
        if now - last_log >= 5:
            deps = kube.control("stats")["objects"].get(
                "deployments.apps", 0)
            log(f"  {now - start:5.1f} s: {len(names) - len(pending)} ready,"
                f" {deps} deployments in the fake")
            last_log = now
        if pending:
            time.sleep(0.2)
    took = time.monotonic() - start
    calls = [c for c in calls_since(kube, since) if c["verb"] != "watch"]
    patches = [c["time"] - start_wall for c in calls
               if c["verb"] == "patch" and c["resource"] == "deployments"]
    return took, written, calls, patches


def metric(m, name):
    for line in (m / "metrics").read_text().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def apply_latency(m, kube, names):
    """Returns the delays to the PATCH and to the step's first request,
    the requests of all the writes by verb and resource, and the
    reconciler's pass after each (seconds, resources looked at)."""
    delays, firsts, per, passes = [], [], Counter(), []
    for name in names:
        since = last_seq(kube)
        path = m / f"dev/endpoints/{name}/replicas"
        with open(path, "w") as f:
            f.write("3\n")
        closed = time.time()
        deadline = time.monotonic() + 30
        found = None
        while found is None:
            for c in calls_since(kube, since):
                if c["verb"] == "patch" and c["resource"] == "deployments" \
                        and c["name"] == name:
                    found = c
                    break
            if found is None:
                if time.monotonic() > deadline:
                    raise SystemExit(f"apply: no PATCH of {name} within 30 s:"
                                     "\n" + status_text(m, name))
                time.sleep(0.005)
        delays.append(found["time"] - closed)
        # Let its rollout finish so the next sample starts at rest.
        wait_for(lambda: is_ready(m, name), 30, f"{name} ready again")
        time.sleep(0.3)
        calls = [c for c in calls_since(kube, since) if c["verb"] != "watch"]
        mine = [c for c in calls
                if c["name"] in (name, f"{name}-secrets")]
        firsts.append(min(c["time"] for c in mine) - closed)
        per.update(call_kind(c) for c in calls)
        passes.append((metric(m, "infrafs_reconcile_pass_seconds"),
                       metric(m, "infrafs_reconcile_pass_resources")))
    return delays, firsts, per, passes


def observe_latency(m, kube, names, replicas=2):
    delays, control = [], []
    for name in names:
        body = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"replicas": replicas}}
        path = m / f"dev/endpoints/{name}/status"
        sent = time.monotonic()
        kube.control("apply", {"manager": "bench", "body": body,
                               "force": True})
        control.append(time.monotonic() - sent)
        while True:
            st = status_of(path)
            if "bench" in st.get("drift", ""):
                break
            if time.monotonic() - sent > 30:
                raise SystemExit(f"observe: no drift line for {name} within"
                                 " 30 s:\n" + path.read_text())
            time.sleep(0.005)
        delays.append(time.monotonic() - sent)
    return delays, control


def settle(kube, quiet_s=5, timeout=120):
    """Waits until the daemon sends no request but watches for quiet_s."""
    deadline = time.monotonic() + timeout
    since = last_seq(kube)
    quiet_from = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        new = [c for c in calls_since(kube, since) if c["verb"] != "watch"]
        since = last_seq(kube)
        if new:
            quiet_from = time.monotonic()
        elif time.monotonic() - quiet_from >= quiet_s:
            return
    log("  settle: requests did not stop within "
        f"{timeout} s; measuring anyway")


def main():
    if not (BUILD / "infrafs").exists():
        raise SystemExit(f"kubernetes: build first (ninja -C {BUILD})")
    top = Path(tempfile.mkdtemp(prefix="infrafs-bench-kube."))
    kube = m = None
    rows = []
    try:
        kube = KubeFake(top)
        kube.control("config", {"pod_ready_s": 0.05})
        # node-1 holds 110 pods: one more node with room for all of them.
        kube.control("nodes", {"add": [{"name": "big-1", "allocatable": {
            "cpu": "4000", "memory": "16Ti", "pods": str(N + 100)}}]})
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("KUBE")}
        env["HOME"] = str(top)
        m = Mount(top, env=env).start()
        rss0 = memory(m)
        m.sh("mkdir dev")
        (m / "dev/config").write_text(
            "provider = kubernetes\nsettle_ms = 0\ndrift = report\n"
            f"kubernetes.kubeconfig = {kube.kubeconfig}\n")
        names = [f"e{i}" for i in range(N)]
        log(f"kubernetes bench: {N} endpoints, {os.cpu_count()} CPUs")

        took, written, calls, patches = create(m, kube, names)
        rss_ready = memory(m)
        log(f"  all ready in {took:.1f} s")
        rows.append(("create: first mkdir to all ready",
                     f"{took:.1f} s ({N / took:.0f} endpoints/s; "
                     f"declaring took {written:.1f} s)"))
        if patches:
            rows.append(("  Deployment PATCHes at the server",
                         f"first {min(patches):.2f} s, last "
                         f"{max(patches):.2f} s after the first mkdir"))
        rows.append(("  API requests meanwhile (no watch)",
                     f"{len(calls)}: {verb_text(by_verb(calls))}"))
        per = Counter(call_kind(c) for c in calls)
        rows.append(("  by verb and resource", verb_text(per)))

        settle(kube)
        k = min(SAMPLES, N)
        sample = [names[i * N // k] for i in range(k)]
        log(f"  apply latency over {k} endpoints")
        delays, firsts, per, passes = apply_latency(m, kube, sample)
        log("  close(2) -> PATCH, ms: " + " ".join(
            f"{d * 1000:.0f}" for d in sorted(delays)))
        rows.append(("close(2) -> PATCH at the API server",
                     f"p50 {ms(pct(delays, 50))}, p99 {ms(pct(delays, 99))},"
                     f" max {ms(max(delays))} over {k} writes"))
        rows.append(("  close(2) -> the step's first request",
                     f"p50 {ms(pct(firsts, 50))}, p99 {ms(pct(firsts, 99))}"))
        rows.append(("  requests per write (no watch)",
                     ", ".join(f"{w} {n / k:.1f}" for w, n in sorted(
                         per.items(), key=lambda kv: -kv[1]))))
        secs = [p[0] for p in passes if p[0] is not None]
        res = [p[1] for p in passes if p[1] is not None]
        if secs and res:
            rows.append(("  reconciler's last pass (median)",
                         f"{ms(pct(secs, 50))}, {pct(res, 50):.0f} "
                         "resources looked at"))

        # Other endpoints than those just changed, where there are enough.
        if N >= 2 * k:
            other = [names[i * N // k + N // (2 * k)] for i in range(k)]
        else:
            other = sample
        settle(kube)
        log(f"  observe latency over {len(other)} endpoints")
        delays, control = observe_latency(m, kube, other)
        log("  change -> drift line, ms: " + " ".join(
            f"{d * 1000:.0f}" for d in sorted(delays)))
        rows.append(("change in API server -> drift in status",
                     f"p50 {ms(pct(delays, 50))}, p99 {ms(pct(delays, 99))},"
                     f" max {ms(max(delays))} over {len(other)} changes"))
        rows.append(("  of which the control request",
                     f"p50 {ms(pct(control, 50))}"))

        log("  settling before the rest window")
        settle(kube)
        stats0 = kube.control("stats")
        since = last_seq(kube)
        log(f"  at rest for {REST_S:.0f} s")
        cpu0 = cpu_seconds(m.proc.pid), cpu_seconds(kube.proc.pid)
        rest_start = time.monotonic()
        time.sleep(REST_S)
        cpu1 = cpu_seconds(m.proc.pid), cpu_seconds(kube.proc.pid)
        rest_took = time.monotonic() - rest_start
        rest = calls_since(kube, since)
        stats1 = kube.control("stats")
        per_min = {v: n * 60 / REST_S for v, n in by_verb(rest).items()}
        rows.append((f"API requests at rest ({REST_S:.0f} s)",
                     f"{len(rest) * 60 / REST_S:.1f}/min"
                     + (": " + ", ".join(f"{v} {n:.1f}/min" for v, n in
                                         sorted(per_min.items()))
                        if rest else "")))
        if rest:
            per = Counter(call_kind(c) for c in rest)
            rows.append(("  by verb and resource", verb_text(per)))
        rows.append(("open watches (before / after the window)",
                     f"{stats0['open_watches']} / {stats1['open_watches']}: "
                     + ", ".join(f"{r} {n}" for r, n in sorted(
                         stats1["watches_by_resource"].items()))))
        rows.append(("CPU at rest, daemon / fake",
                     f"{(cpu1[0] - cpu0[0]) / rest_took * 100:.1f}% / "
                     f"{(cpu1[1] - cpu0[1]) / rest_took * 100:.1f}% "
                     "of one CPU"))
        secs = metric(m, "infrafs_reconcile_pass_seconds")
        res = metric(m, "infrafs_reconcile_pass_resources")
        if secs is not None:
            rows.append(("  reconciler's last pass at rest",
                         f"{ms(secs)}, {res:.0f} resources looked at"))
        rss_rest = memory(m)
        rows.append(("daemon memory right after mount", mem_text(rss0)))
        rows.append((f"daemon memory, {N} endpoints ready",
                     mem_text(rss_ready)))
        rows.append(("daemon memory after the rest window",
                     mem_text(rss_rest)))

        print(f"kubernetes provider: {N} endpoints on the fake API server "
              f"(pod_ready_s 0.05), settle_ms 0, drift = report, "
              f"{os.cpu_count()} CPUs")
        width = max(len(r[0]) for r in rows)
        for what, value in rows:
            print(f"{what:<{width}}  {value}")
        return 0
    finally:
        if m is not None and m.proc:
            subprocess.run(["fusermount3", "-u", "-z", str(m.path)],
                           check=False)
            try:
                m.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()
            m.proc = None
            m.logf.close()
        if kube is not None:
            kube.stop()
        if os.environ.get("KUBE_BENCH_KEEP"):
            log(f"kept {top}")
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", str(top)],
                           check=False)


if __name__ == "__main__":
    sys.exit(main())
