"""The fake Kubernetes API server (tests/fake/kube_fake.py) in its own
process, its control API, and the real kubectl pointed at it: what the
kubernetes provider's tests and benchmark share."""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fake" / "kube_fake.py"
KUBECTL = shutil.which("kubectl")


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class KubeFake:
    """One fake API server; kubeconfig is the file it wrote (contexts
    fake, a bearer token, and fake-cert, a client certificate)."""

    def __init__(self, tmp: Path):
        self.dir = tmp
        port_file = tmp / "kube.ports"
        self.kubeconfig = tmp / "kubeconfig"
        self.log = open(tmp / "kube-fake.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE), "--port-file", str(port_file),
             "--kubeconfig", str(self.kubeconfig)],
            stdout=self.log, stderr=subprocess.STDOUT)
        _wait(port_file.exists, 20, "the fake API server to listen")
        ports = json.loads(port_file.read_text())
        self.api_port = ports["api"]
        self.url = f"http://127.0.0.1:{ports['control']}"

    def control(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + "/_fake/" + path, data=data,
            method="GET" if data is None else "POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
        return json.loads(text) if text else None

    def calls(self, since=0):
        got = self.control(f"calls?since={since}")
        return got["calls"] if isinstance(got, dict) else got

    def state(self):
        return self.control("state")

    def kubectl(self, *args, check=True, context=None):
        cmd = [KUBECTL, "--kubeconfig", str(self.kubeconfig)]
        if context:
            cmd += ["--context", context]
        r = subprocess.run(cmd + list(args), capture_output=True, text=True,
                           timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {r.stderr}")
        return r

    def get(self, kind, name, ns="infrafs-dev"):
        """The object as kubectl shows it, or None when absent."""
        args = ["get", kind, name, "-o", "json", "--show-managed-fields"]
        if ns:
            args += ["-n", ns]
        r = self.kubectl(*args, check=False)
        if r.returncode != 0:
            if "NotFound" in r.stderr or "not found" in r.stderr:
                return None
            raise AssertionError(r.stderr)
        return json.loads(r.stdout)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
