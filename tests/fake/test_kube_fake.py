"""Tests of kube_fake.py, judged by the real kubectl where it can be.

The fake runs as a subprocess (one per module); each test resets it through
the control API.  kubectl talks to it with the kubeconfig the fake writes;
urllib calls it over TLS trusting only the fake's CA, with host name checks."""

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

FAKE = Path(__file__).with_name("kube_fake.py")
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
        args: ["--port", "8080"]
        env:
        - name: MODE
          value: serving
        - name: TOKEN
          valueFrom:
            secretKeyRef:
              name: creds
              key: token
        ports:
        - containerPort: 8080
        resources:
          requests:
            cpu: 100m
            memory: 128Mi
        readinessProbe:
          httpGet:
            path: /healthz
            port: 8080
"""


class Fake:
    def __init__(self, tmp):
        self.tmp = tmp
        self.kubeconfig = tmp / "kubeconfig"
        port_file = tmp / "ports.json"
        self.proc = subprocess.Popen([sys.executable, str(FAKE), "--port-file", str(port_file),
                                      "--kubeconfig", str(self.kubeconfig)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 20
        while not port_file.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(self.proc.stderr.read().decode())
            time.sleep(0.05)
        ports = json.loads(port_file.read_text())
        self.api_port, self.control_port = ports["api"], ports["control"]
        text = self.kubeconfig.read_text()
        self.token = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                          if line.strip().startswith("token:"))
        self.tls = ssl.create_default_context(cafile=f"{self.kubeconfig}.ca.pem")
        self.cache = tmp / "kubectl-cache"

    # --- clients ----------------------------------------------------------

    def control(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.control_port}/_fake/{path}",
                                     data=data, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def api(self, method, path, body=None, ctype="application/json", token=None, raw=False,
            headers=None):
        """(status, headers, JSON document) of one API call."""
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        req = urllib.request.Request(f"https://127.0.0.1:{self.api_port}{path}", data=body,
                                     method=method)
        if token is not False:
            req.add_header("Authorization", f"Bearer {token or self.token}")
        if body is not None:
            req.add_header("Content-Type", ctype)
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.tls) as resp:
                data = resp.read()
                return resp.status, resp.headers, data if raw else json.loads(data)
        except urllib.error.HTTPError as err:
            data = err.read()
            return err.code, err.headers, data if raw else json.loads(data)

    def kubectl(self, *args, context=None, check=True, stdin=None, timeout=60):
        cmd = [KUBECTL, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache)]
        if context:
            cmd += ["--context", context]
        done = subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True,
                              timeout=timeout, env=dict(os.environ, HOME=str(self.tmp)))
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    def wait(self, check, timeout=10.0, what="condition"):
        deadline = time.time() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def get(self, path):
        status, _, doc = self.api("GET", path)
        return doc if status == 200 else None

    def namespace(self, name):
        status, _, doc = self.api("POST", "/api/v1/namespaces",
                                  {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": name}})
        assert status == 201, doc
        return name

    def apply(self, path, doc, manager, force=False, validation=None):
        query = f"?fieldManager={manager}" + ("&force=true" if force else "")
        if validation:
            query += f"&fieldValidation={validation}"
        return self.api("PATCH", path + query, doc, "application/apply-patch+yaml")


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    fake = Fake(tmp_path_factory.mktemp("kube"))
    yield fake
    fake.proc.send_signal(signal.SIGTERM)
    assert fake.proc.wait(timeout=10) == 0


@pytest.fixture
def fake(fake_server):
    fake_server.control("POST", "reset", {})
    return fake_server


def deployment(ns, name="web", replicas=1, image="nginx:1.27", requests=None, limits=None,
               node_selector=None, tolerations=None):
    container = {"name": "main", "image": image}
    if requests or limits:
        container["resources"] = {}
        if requests:
            container["resources"]["requests"] = requests
        if limits:
            container["resources"]["limits"] = limits
    spec = {"containers": [container]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def deploy_path(ns, name=None):
    return f"/apis/apps/v1/namespaces/{ns}/deployments" + (f"/{name}" if name else "")


def pods_of(fake, ns, app):
    doc = fake.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=app%3D{app}")
    return doc["items"]


# --------------------------------------------------------------------------
# Start-up, kubeconfig, authentication
# --------------------------------------------------------------------------

def test_kubeconfig_layout(fake):
    text = fake.kubeconfig.read_text()
    assert oct(fake.kubeconfig.stat().st_mode & 0o777) == "0o600"
    assert f"server: https://127.0.0.1:{fake.api_port}" in text
    for needle in ("certificate-authority-data:", "client-certificate-data:",
                   "client-key-data:", "current-context: fake", "name: fake-cert"):
        assert needle in text
    for suffix in (".client.pem", ".client-key.pem"):
        assert oct(Path(f"{fake.kubeconfig}{suffix}").stat().st_mode & 0o777) == "0o600"
    assert "BEGIN CERTIFICATE" in Path(f"{fake.kubeconfig}.ca.pem").read_text()


def test_bad_command_line_exits_2():
    done = subprocess.run([sys.executable, str(FAKE), "--bogus"], capture_output=True)
    assert done.returncode == 2


def test_unauthenticated_requests_get_401(fake):
    status, _, doc = fake.api("GET", "/api/v1/namespaces", token="wrong")
    assert status == 401
    assert doc == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    status, _, _ = fake.api("GET", "/api/v1/namespaces", token=False)
    assert status == 401


def test_tokens_added_expire_and_are_never_logged(fake):
    fake.control("POST", "tokens", {"add": [
        {"token": "tok-dev", "user": "dev", "groups": ["devs"]},
        {"token": "tok-old", "user": "old", "expires_in_s": -1}]})
    assert fake.api("GET", "/api/v1/namespaces", token="tok-dev")[0] == 200
    assert fake.api("GET", "/api/v1/namespaces", token="tok-old")[0] == 401
    fake.control("POST", "tokens", {"remove": ["tok-dev"]})
    assert fake.api("GET", "/api/v1/namespaces", token="tok-dev")[0] == 401
    calls = json.dumps(fake.control("GET", "calls"))
    assert "tok-dev" not in calls and fake.token not in calls


@needs_kubectl
def test_kubectl_get_namespaces_with_token_and_client_cert(fake):
    for context in ("fake", "fake-cert"):
        out = fake.kubectl("get", "ns", context=context).stdout
        lines = out.splitlines()
        assert lines[0].split() == ["NAME", "STATUS", "AGE"]
        assert any(l.split()[:2] == ["default", "Active"] for l in lines[1:])
        assert any(l.split()[:2] == ["kube-system", "Active"] for l in lines[1:])
    users = {c["user"] for c in fake.control("GET", "calls")["calls"]}
    assert {"admin", "cert-admin"} <= users


@needs_kubectl
def test_kubectl_discovery(fake):
    groups = json.loads(fake.kubectl("get", "--raw", "/apis").stdout)
    names = [g["name"] for g in groups["groups"]]
    assert groups["kind"] == "APIGroupList"
    assert "apps" in names and "autoscaling" in names
    assert "karpenter.sh" not in names and "serving.kserve.io" not in names
    out = fake.kubectl("api-resources", "--no-headers").stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()}
    assert rows["deployments"][1] == "deploy"
    assert rows["horizontalpodautoscalers"][1] == "hpa"
    assert rows["namespaces"][1] == "ns"
    version = json.loads(fake.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["minor"] == "32"


# --------------------------------------------------------------------------
# kubectl end to end: apply, rollout, scale, conflicts, label, delete
# --------------------------------------------------------------------------

@needs_kubectl
def test_kubectl_apply_rollout_scale_conflict_delete(fake):
    fake.kubectl("create", "namespace", "infrafs-dev")
    manifest = DEPLOYMENT.format(ns="infrafs-dev")
    out = fake.kubectl("apply", "--server-side", "-f", "-", stdin=manifest).stdout
    assert out.strip() == "deployment.apps/web serverside-applied"
    fake.kubectl("rollout", "status", "deployment/web", "-n", "infrafs-dev", "--timeout=20s")
    doc = json.loads(fake.kubectl("get", "deploy", "web", "-n", "infrafs-dev", "-o", "json",
                                  "--show-managed-fields").stdout)
    status = doc["status"]
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"],
            status["updatedReplicas"]) == (2, 2, 2, 2)
    assert status["observedGeneration"] == doc["metadata"]["generation"] == 1
    reasons = {c["type"]: c["reason"] for c in status["conditions"]}
    assert reasons == {"Available": "MinimumReplicasAvailable",
                       "Progressing": "NewReplicaSetAvailable"}
    applied = [m for m in doc["metadata"]["managedFields"] if m["operation"] == "Apply"]
    assert [m["manager"] for m in applied] == ["kubectl"]
    fields = applied[0]["fieldsV1"]
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert container["."] == {} and "f:image" in container
    assert 'k:{"containerPort":8080,"protocol":"TCP"}' in container["f:ports"]
    assert 'k:{"name":"TOKEN"}' in container["f:env"]
    assert fields["f:spec"]["f:selector"] == {}          # LabelSelector is atomic
    assert "f:imagePullPolicy" not in container          # defaults are no one's
    # Defaults the apiserver adds are there.
    live = doc["spec"]["template"]["spec"]["containers"][0]
    assert live["imagePullPolicy"] == "IfNotPresent"
    assert live["terminationMessagePath"] == "/dev/termination-log"
    assert doc["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}

    fake.kubectl("scale", "deployment/web", "-n", "infrafs-dev", "--replicas=3")
    done = fake.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, check=False)
    assert done.returncode != 0
    assert ('Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" '
            'using apps/v1: .spec.replicas') in done.stderr
    fake.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=manifest)
    doc = json.loads(fake.kubectl("get", "deploy", "web", "-n", "infrafs-dev", "-o", "json",
                                  "--show-managed-fields").stdout)
    assert doc["spec"]["replicas"] == 2
    assert not [m for m in doc["metadata"]["managedFields"] if m.get("subresource") == "scale"]

    fake.kubectl("label", "deploy", "web", "-n", "infrafs-dev", "tier=front")
    fake.kubectl("patch", "deploy", "web", "-n", "infrafs-dev", "--type=merge",
                 "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}')
    fake.kubectl("rollout", "status", "deployment/web", "-n", "infrafs-dev", "--timeout=20s")
    fake.kubectl("wait", "--for=condition=Available", "deploy/web", "-n", "infrafs-dev",
                 "--timeout=10s")
    doc = fake.get(deploy_path("infrafs-dev", "web"))
    assert doc["metadata"]["labels"]["tier"] == "front"
    assert doc["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    managers = {(m["manager"], m["operation"]) for m in doc["metadata"]["managedFields"]}
    assert ("kubectl-label", "Update") in managers and ("kubectl-patch", "Update") in managers
    images = {p["spec"]["containers"][0]["image"] for p in pods_of(fake, "infrafs-dev", "web")}
    assert images == {"nginx:1.28"}

    fake.kubectl("delete", "deployment", "web", "-n", "infrafs-dev", "--timeout=20s")
    fake.wait(lambda: not pods_of(fake, "infrafs-dev", "web") and
              not fake.get("/apis/apps/v1/namespaces/infrafs-dev/replicasets")["items"],
              what="garbage collection")
    out = fake.kubectl("get", "deploy", "-n", "infrafs-dev", check=False)
    assert "No resources found" in out.stderr


@needs_kubectl
def test_kubectl_strict_validation_refuses_unknown_fields(fake):
    fake.kubectl("create", "namespace", "strict")
    manifest = DEPLOYMENT.format(ns="strict").replace("  replicas: 2", "  replicas: 2\n  bogus: 1")
    done = fake.kubectl("apply", "--server-side", "-f", "-", stdin=manifest, check=False)
    assert done.returncode != 0
    assert ".spec.bogus: field not declared in schema" in done.stderr
    done = fake.kubectl("create", "-f", "-", stdin=manifest, check=False)
    assert done.returncode != 0
    assert 'strict decoding error: unknown field "spec.bogus"' in done.stderr
    done = fake.kubectl("patch", "deploy", "web", "-n", "strict", "--type=merge",
                        "-p", '{"spec":{"bogus":1}}', check=False)
    assert "NotFound" in done.stderr or "not found" in done.stderr


@needs_kubectl
def test_kubectl_rbac_denial(fake):
    fake.namespace("infrafs-dev")
    fake.control("POST", "rbac", {"deny": [{"user": "admin", "verb": "patch",
                                            "resource": "deployments", "group": "apps"}]})
    done = fake.kubectl("apply", "--server-side", "-f", "-",
                        stdin=DEPLOYMENT.format(ns="infrafs-dev"), check=False)
    assert done.returncode != 0
    assert ('deployments.apps "web" is forbidden: User "admin" cannot patch resource '
            '"deployments" in API group "apps" in the namespace "infrafs-dev"') in done.stderr
    # The client-certificate user is not denied.
    fake.kubectl("apply", "--server-side", "-f", "-", stdin=DEPLOYMENT.format(ns="infrafs-dev"),
                 context="fake-cert")


# --------------------------------------------------------------------------
# The API over urllib
# --------------------------------------------------------------------------

def test_rbac_forbidden_status(fake):
    fake.namespace("infrafs-dev")
    fake.control("POST", "rbac", {"deny": [{"verb": "create", "resource": "deployments"}]})
    status, _, doc = fake.api("POST", deploy_path("infrafs-dev"), deployment("infrafs-dev"))
    assert status == 403
    assert doc["reason"] == "Forbidden"
    assert doc["message"] == ('deployments.apps is forbidden: User "admin" cannot create resource '
                              '"deployments" in API group "apps" in the namespace "infrafs-dev"')
    assert doc["details"] == {"group": "apps", "kind": "deployments"}
    fake.control("POST", "rbac", {"deny": []})
    assert fake.api("POST", deploy_path("infrafs-dev"), deployment("infrafs-dev"))[0] == 201


def test_crud_errors(fake):
    status, _, doc = fake.api("POST", deploy_path("nowhere"), deployment("nowhere"))
    assert (status, doc["message"]) == (404, 'namespaces "nowhere" not found')
    fake.namespace("crud")
    status, _, created = fake.api("POST", deploy_path("crud"), deployment("crud"))
    assert status == 201 and created["metadata"]["uid"] and created["metadata"]["generation"] == 1
    status, _, doc = fake.api("POST", deploy_path("crud"), deployment("crud"))
    assert (status, doc["reason"], doc["message"]) == (409, "AlreadyExists",
                                                      'deployments.apps "web" already exists')
    # The controllers write the deployment's status: update a configmap instead.
    cm_path = "/api/v1/namespaces/crud/configmaps"
    status, _, cm = fake.api("POST", cm_path, {"apiVersion": "v1", "kind": "ConfigMap",
                                               "metadata": {"name": "c"}, "data": {"a": "1"}})
    stale = dict(cm, data={"a": "2"})
    status, _, updated = fake.api("PUT", cm_path + "/c", stale)
    assert status == 200 and updated["data"] == {"a": "2"}
    assert int(updated["metadata"]["resourceVersion"]) > int(cm["metadata"]["resourceVersion"])
    status, _, doc = fake.api("PUT", cm_path + "/c", stale)
    assert status == 409 and doc["reason"] == "Conflict"
    assert doc["message"] == ('Operation cannot be fulfilled on configmaps "c": the object '
                              'has been modified; please apply your changes to the latest version '
                              'and try again')
    assert fake.api("PUT", cm_path + "/nope", dict(stale, metadata={"name": "nope"}))[0] == 404
    current = fake.get(deploy_path("crud", "web"))
    current["spec"]["replicas"] = 3
    status, _, updated = fake.api("PUT", deploy_path("crud", "web"), current)
    assert status in (200, 409)      # 409 only if a controller wrote in between
    if status == 200:
        assert updated["metadata"]["generation"] == 2
    status, _, doc = fake.api("GET", deploy_path("crud", "nope"))
    assert doc["message"] == 'deployments.apps "nope" not found'
    assert doc["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    assert fake.api("GET", "/apis/karpenter.sh/v1/nodepools")[0] == 404


def test_field_validation_modes(fake):
    fake.namespace("fv")
    body = deployment("fv")
    body["spec"]["bogus"] = True
    status, _, doc = fake.api("POST", deploy_path("fv") + "?fieldValidation=Strict", body)
    assert status == 400 and doc["reason"] == "BadRequest"
    assert doc["message"] == ('Deployment in version "v1" cannot be handled as a Deployment: '
                              'strict decoding error: unknown field "spec.bogus"')
    status, headers, doc = fake.api("POST", deploy_path("fv") + "?fieldValidation=Warn", body)
    assert status == 201 and "bogus" not in doc["spec"]
    assert headers["Warning"] == '299 - "unknown field \\"spec.bogus\\""'
    body["metadata"]["name"] = "quiet"
    status, headers, doc = fake.api("POST", deploy_path("fv") + "?fieldValidation=Ignore", body)
    assert status == 201 and headers.get("Warning") is None and "bogus" not in doc["spec"]
    status, _, doc = fake.api("PATCH", deploy_path("fv", "quiet"), {"spec": {"bogus": 1}},
                              "application/merge-patch+json")
    assert (status, doc["message"]) == (400, 'strict decoding error: unknown field "spec.bogus"')
    bad = deployment("fv", "q")
    bad["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "lots"}}
    status, _, doc = fake.api("POST", deploy_path("fv"), bad)
    assert status == 400 and "quantities must match the regular expression" in doc["message"]


def test_semantic_validation(fake):
    fake.namespace("sv")
    body = deployment("sv", name="Bad_Name", replicas=-1)
    del body["spec"]["template"]["spec"]["containers"][0]["image"]
    status, _, doc = fake.api("POST", deploy_path("sv"), body)
    assert status == 422 and doc["reason"] == "Invalid"
    assert doc["message"].startswith('Deployment.apps "Bad_Name" is invalid: [')
    causes = {c["field"]: (c["reason"], c["message"]) for c in doc["details"]["causes"]}
    assert causes["spec.replicas"] == ("FieldValueInvalid",
                                       "Invalid value: -1: must be greater than or equal to 0")
    assert causes["spec.template.spec.containers[0].image"] == ("FieldValueRequired",
                                                                "Required value")
    assert causes["metadata.name"][1].startswith('Invalid value: "Bad_Name": a lowercase RFC 1123 '
                                                 'subdomain')
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "h", "namespace": "sv"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 5, "maxReplicas": 2}}
    status, _, doc = fake.api("POST", "/apis/autoscaling/v2/namespaces/sv/horizontalpodautoscalers",
                              hpa)
    assert status == 422
    assert doc["message"] == ('HorizontalPodAutoscaler.autoscaling "h" is invalid: spec.maxReplicas: '
                              'Invalid value: 2: must be greater than or equal to `minReplicas`')
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "sv"},
           "spec": {"selector": {"app": "x"}}}
    status, _, doc = fake.api("POST", "/api/v1/namespaces/sv/services", svc)
    assert (status, doc["message"]) == (422, 'Service "s" is invalid: spec.ports: Required value')


def test_server_side_apply_ownership(fake):
    fake.namespace("ssa")
    path = deploy_path("ssa", "web")
    body = deployment("ssa", replicas=2)
    body["metadata"]["labels"] = {"team": "a"}
    status, _, doc = fake.apply(path, body, "alpha")
    assert status == 201
    # Same value from another manager: shared, no conflict.
    status, _, doc = fake.apply(path, {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "metadata": {"name": "web"}, "spec": {"replicas": 2}}, "beta")
    assert status == 200
    owners = [m["manager"] for m in doc["metadata"]["managedFields"]
              if "f:replicas" in m["fieldsV1"].get("f:spec", {})]
    assert sorted(owners) == ["alpha", "beta"]
    # A different value is a conflict with the other owner.
    body["spec"]["replicas"] = 4
    status, _, doc = fake.apply(path, body, "alpha")
    assert status == 409 and doc["reason"] == "Conflict"
    assert doc["message"] == 'Apply failed with 1 conflict: conflict with "beta": .spec.replicas'
    assert doc["details"]["causes"] == [{"reason": "FieldManagerConflict",
                                         "message": 'conflict with "beta"',
                                         "field": ".spec.replicas"}]
    # Two conflicts, and an Update manager, are worded as the apiserver does.
    fake.api("PATCH", path + "?fieldManager=kubectl-edit",
             {"spec": {"minReadySeconds": 3}}, "application/merge-patch+json")
    body["spec"]["minReadySeconds"] = 5
    status, _, doc = fake.apply(path, body, "alpha")
    assert status == 409
    assert doc["message"] == ('Apply failed with 2 conflicts: conflicts with "beta":\n'
                              '- .spec.replicas\nconflicts with "kubectl-edit" using apps/v1:\n'
                              '- .spec.minReadySeconds')
    # force moves ownership; omitting a field removes it unless others own it.
    del body["metadata"]["labels"]
    status, _, doc = fake.apply(path, body, "alpha", force=True)
    assert status == 200 and doc["spec"]["replicas"] == 4
    assert "team" not in (doc["metadata"].get("labels") or {})
    entries = {m["manager"]: m for m in doc["metadata"]["managedFields"]}
    assert "beta" not in entries                       # it owned only .spec.replicas
    assert entries["alpha"]["operation"] == "Apply"
    # Apply as someone else through the control API.
    doc = fake.control("POST", "apply", {"manager": "ops", "force": True, "body": {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ssa"}, "spec": {"replicas": 1}}})
    assert doc["spec"]["replicas"] == 1


def test_apply_request_errors(fake):
    fake.namespace("ae")
    path = deploy_path("ae", "web")
    status, _, doc = fake.api("PATCH", path, deployment("ae"), "application/apply-patch+yaml")
    assert status == 422
    assert doc["message"] == ('PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required '
                              'value: is required for apply patch')
    body = deployment("ae")
    body["metadata"]["managedFields"] = [{"manager": "x"}]
    status, _, doc = fake.apply(path, body, "m")
    assert (status, doc["message"]) == (400, "metadata.managedFields must be nil")
    body = deployment("ae")
    body["spec"]["foo"] = 1
    status, _, doc = fake.apply(path, body, "m")
    assert status == 500
    assert doc["message"] == ("failed to create typed patch object (ae/web; apps/v1, "
                              "Kind=Deployment): .spec.foo: field not declared in schema")
    yaml_body = ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n"
                 "  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n"
                 "    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n"
                 "      - name: main\n        image: busybox:1.36\n")
    status, _, doc = fake.apply(path, yaml_body, "m")
    assert status == 201 and doc["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.36"


def test_patch_types(fake):
    fake.namespace("pt")
    body = deployment("pt")
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    fake.api("POST", deploy_path("pt"), body)
    path = deploy_path("pt", "web")
    smp = {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "env": [{"name": "B", "value": "2"}]}]}}}}
    status, _, doc = fake.api("PATCH", path, smp, "application/strategic-merge-patch+json")
    env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
    assert status == 200 and [e["name"] for e in env] == ["A", "B"]
    status, _, doc = fake.api("PATCH", path, [{"op": "replace", "path": "/spec/replicas",
                                               "value": 2}], "application/json-patch+json")
    assert status == 200 and doc["spec"]["replicas"] == 2
    status, _, doc = fake.api("PATCH", path, {"spec": {"replicas": 0}}, "text/plain")
    assert status == 415 and doc["reason"] == "UnsupportedMediaType"


def read_events(resp, count, timeout=10):
    out = []
    deadline = time.time() + timeout
    while len(out) < count and time.time() < deadline:
        line = resp.readline()
        if not line:
            break
        out.append(json.loads(line))
    return out


def open_watch(fake, path):
    conn = http.client.HTTPSConnection("127.0.0.1", fake.api_port, context=fake.tls, timeout=15)
    conn.request("GET", path, headers={"Authorization": f"Bearer {fake.token}"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Transfer-Encoding") == "chunked"
    return conn, resp


def test_watch_events_bookmarks_expiry_and_close(fake):
    fake.namespace("w")
    fake.control("POST", "config", {"bookmark_interval_s": 0.2})
    status, _, created = fake.api("POST", "/api/v1/namespaces/w/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}})
    rv = created["metadata"]["resourceVersion"]
    conn, resp = open_watch(fake, "/api/v1/namespaces/w/configmaps?watch=1&resourceVersion="
                                  f"{rv}&allowWatchBookmarks=true&timeoutSeconds=30")
    fake.api("PATCH", "/api/v1/namespaces/w/configmaps/c", {"data": {"a": "2"}},
             "application/merge-patch+json")
    status, _, gone = fake.api("DELETE", "/api/v1/namespaces/w/configmaps/c")
    assert status == 200 and gone["status"] == "Success"
    events = [e for e in read_events(resp, 4) if e["type"] != "BOOKMARK"][:2]
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert events[0]["object"]["data"] == {"a": "2"} and events[0]["object"]["kind"] == "ConfigMap"
    bookmark = fake.wait(lambda: next((e for e in read_events(resp, 1) if e["type"] == "BOOKMARK"),
                                      None), what="bookmark")
    assert bookmark["object"]["kind"] == "ConfigMap"
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) >= int(
        events[1]["object"]["metadata"]["resourceVersion"])
    assert fake.control("GET", "stats")["open_watches"] >= 1
    fake.control("POST", "watches/close", {})
    fake.wait(lambda: resp.read() == b"" or True, what="end of stream")
    assert resp.isclosed() or resp.read() == b""
    conn.close()
    # ADDED for the state when no resourceVersion is given.
    conn, resp = open_watch(fake, "/api/v1/watch/namespaces?timeoutSeconds=2")
    added = read_events(resp, 2)
    assert {e["type"] for e in added} == {"ADDED"}
    conn.close()
    # History gone: 410 as an ERROR event.
    fake.control("POST", "compact", {})
    conn, resp = open_watch(fake, f"/api/v1/namespaces/w/configmaps?watch=true&resourceVersion={rv}")
    error = read_events(resp, 1)[0]
    assert error["type"] == "ERROR"
    assert error["object"]["code"] == 410 and error["object"]["reason"] == "Expired"
    assert error["object"]["message"].startswith(f"too old resource version: {rv} (")
    conn.close()


def test_faults(fake):
    fake.control("POST", "faults", [{"kind": "status", "code": 503, "verb": "list",
                                     "resource": "namespaces"},
                                    {"kind": "status", "code": 429, "verb": "get"}])
    status, _, doc = fake.api("GET", "/api/v1/namespaces")
    assert (status, doc["reason"]) == (503, "ServiceUnavailable")
    status, headers, doc = fake.api("GET", "/api/v1/namespaces/default")
    assert (status, doc["reason"], doc["message"]) == (429, "TooManyRequests",
                                                      "Too many requests, please try again later.")
    assert headers["Retry-After"] == "1" and doc["details"]["retryAfterSeconds"] == 1
    assert fake.api("GET", "/api/v1/namespaces")[0] == 200
    fake.control("POST", "faults", {"kind": "slow", "seconds": 0.4, "verb": "list"})
    started = time.time()
    assert fake.api("GET", "/api/v1/namespaces")[0] == 200
    assert time.time() - started >= 0.4
    fake.control("POST", "faults", {"kind": "drop", "resource": "namespaces"})
    with pytest.raises((http.client.RemoteDisconnected, urllib.error.URLError, ConnectionError)):
        fake.api("GET", "/api/v1/namespaces")
    calls = fake.control("GET", "calls")["calls"]
    assert [c["status"] for c in calls if c["verb"] == "list"][:2] == [503, 200]
    assert calls[0]["reason"] == "ServiceUnavailable" and calls[0]["user"] == "admin"


def test_scheduling_failure_message_and_event(fake):
    fake.namespace("sched")
    fake.control("POST", "nodes", {"add": [{"name": "gpu-1", "labels": {"pool": "gpu"},
                                            "allocatable": {"nvidia.com/gpu": "4", "cpu": "32",
                                                            "memory": "128Gi"}}]})
    body = deployment("sched", requests={"nvidia.com/gpu": "8"}, limits={"nvidia.com/gpu": "8"},
                      node_selector={"pool": "gpu"})
    assert fake.api("POST", deploy_path("sched"), body)[0] == 201
    pod = fake.wait(lambda: next((p for p in pods_of(fake, "sched", "web")
                                  if any(c["type"] == "PodScheduled" for c in
                                         p["status"].get("conditions", []))), None))
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    assert cond["message"] == ("0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) "
                               "didn't match Pod's node affinity/selector. preemption: 0/2 nodes "
                               "are available: 1 No preemption victims found for incoming pod, "
                               "1 Preemption is not helpful for scheduling.")
    events = fake.get("/api/v1/namespaces/sched/events")["items"]
    assert any(e["reason"] == "FailedScheduling" and e["type"] == "Warning" and
               e["message"] == cond["message"] for e in events)
    # A node that fits comes: the pod is bound and becomes ready.
    fake.control("POST", "nodes", {"add": [{"name": "gpu-2", "labels": {"pool": "gpu"},
                                            "allocatable": {"nvidia.com/gpu": "8"}}]})
    fake.wait(lambda: any(p["spec"].get("nodeName") == "gpu-2" and p["status"]["phase"] == "Running"
                          for p in pods_of(fake, "sched", "web")), what="pod on gpu-2")


def test_required_node_affinity_places_pods(fake):
    fake.namespace("aff")
    fake.control("POST", "nodes", {"add": [
        {"name": "a100-free", "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
         "allocatable": {"nvidia.com/gpu": "8"}},
        {"name": "a100-pooled", "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                                            "infrafs.dev/pool": "other"},
         "allocatable": {"nvidia.com/gpu": "8", "cpu": "64"}},
        {"name": "t4", "labels": {"nvidia.com/gpu.product": "Tesla-T4"},
         "allocatable": {"nvidia.com/gpu": "1", "cpu": "64"}}]})
    body = deployment("aff", requests={"nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "1"})
    body["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [
                {"key": "nvidia.com/gpu.product", "operator": "In",
                 "values": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"]},
                {"key": "infrafs.dev/pool", "operator": "DoesNotExist"}]}]}}}
    assert fake.api("POST", deploy_path("aff"), body)[0] == 201
    # The pooled A100 and the T4 have more room, but only a100-free holds.
    fake.wait(lambda: any(p["spec"].get("nodeName") == "a100-free"
                          for p in pods_of(fake, "aff", "web")), what="pod on a100-free")
    # No term holds on any node: Unschedulable, named as the scheduler does.
    body = deployment("aff", "nowhere")
    body["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",
                                   "values": ["NVIDIA-B200"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In",
                              "values": ["no-such-node"]}]}]}}}
    assert fake.api("POST", deploy_path("aff"), body)[0] == 201
    pod = fake.wait(lambda: next((p for p in pods_of(fake, "aff", "nowhere")
                                  if any(c["type"] == "PodScheduled" for c in
                                         p["status"].get("conditions", []))), None))
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["reason"] == "Unschedulable"
    assert "didn't match Pod's node affinity/selector" in cond["message"]


def test_image_failures(fake):
    fake.namespace("img")
    fake.control("POST", "config", {"image_failures": {"bad/*": "ImagePullBackOff",
                                                       "crash:*": "CrashLoopBackOff"},
                                    "crashloop_restart_s": 0.2})
    fake.api("POST", deploy_path("img"), deployment("img", "pull", image="bad/model:1"))
    fake.api("POST", deploy_path("img"), deployment("img", "loop", image="crash:1"))

    def waiting(app):
        for pod in pods_of(fake, "img", app):
            for cs in pod["status"].get("containerStatuses", []):
                if "waiting" in cs["state"]:
                    return pod, cs
        return None
    pod, cs = fake.wait(lambda: waiting("pull"))
    assert cs["state"]["waiting"] == {"reason": "ImagePullBackOff",
                                      "message": 'Back-off pulling image "bad/model:1"'}
    assert cs["ready"] is False
    pod, cs = fake.wait(lambda: (lambda r: r if r and r[1]["restartCount"] >= 2 else None)(
        waiting("loop")), what="restarts")
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["state"]["waiting"]["message"].startswith("back-off ")
    assert f"restarting failed container=main pod={pod['metadata']['name']}_img(" in \
        cs["state"]["waiting"]["message"]
    dep = fake.get(deploy_path("img", "pull"))
    assert dep["status"].get("availableReplicas") is None


def test_quota_refuses_pods(fake):
    fake.namespace("q")
    fake.control("POST", "nodes", {"add": [{"name": "gpu-1", "allocatable": {"nvidia.com/gpu": "8"}}]})
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpus"},
             "spec": {"hard": {"requests.nvidia.com/gpu": "1", "pods": "10"}}}
    assert fake.api("POST", "/api/v1/namespaces/q/resourcequotas", quota)[0] == 201
    body = deployment("q", replicas=2, requests={"nvidia.com/gpu": "1"},
                      limits={"nvidia.com/gpu": "1"})
    fake.api("POST", deploy_path("q"), body)
    rs = fake.wait(lambda: next((r for r in fake.get("/apis/apps/v1/namespaces/q/replicasets")["items"]
                                 if any(c["type"] == "ReplicaFailure"
                                        for c in r["status"].get("conditions", []))), None))
    cond = next(c for c in rs["status"]["conditions"] if c["type"] == "ReplicaFailure")
    assert cond["reason"] == "FailedCreate"
    assert "is forbidden: exceeded quota: gpus, requested: requests.nvidia.com/gpu=1, used: " \
           "requests.nvidia.com/gpu=1, limited: requests.nvidia.com/gpu=1" in cond["message"]
    assert len(pods_of(fake, "q", "web")) == 1
    used = fake.wait(lambda: fake.get("/api/v1/namespaces/q/resourcequotas/gpus")["status"]
                     .get("used", {}).get("pods") == "1" and
                     fake.get("/api/v1/namespaces/q/resourcequotas/gpus")["status"]["used"])
    assert used["requests.nvidia.com/gpu"] == "1"
    events = fake.get("/api/v1/namespaces/q/events")["items"]
    assert any(e["reason"] == "FailedCreate" for e in events)


def test_service_secret_and_hpa(fake):
    fake.namespace("svc")
    lb = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
          "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                   "ports": [{"port": 80, "targetPort": 8080}]}}
    status, _, doc = fake.api("POST", "/api/v1/namespaces/svc/services", lb)
    assert status == 201
    assert doc["spec"]["clusterIP"].startswith("10.") and doc["spec"]["ports"][0]["nodePort"] >= 30000
    ingress = fake.wait(lambda: fake.get("/api/v1/namespaces/svc/services/lb")["status"]
                        ["loadBalancer"].get("ingress"))
    assert ingress[0]["ip"]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
              "stringData": {"token": "s3cr3t-value"}}
    status, _, doc = fake.api("POST", "/api/v1/namespaces/svc/secrets", secret)
    assert status == 201 and doc["type"] == "Opaque" and doc["data"] == {"token": "czNjcjN0LXZhbHVl"}
    assert "s3cr3t" not in json.dumps(fake.control("GET", "calls"))
    fake.api("POST", deploy_path("svc"), deployment("svc", replicas=2))
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "web"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 1, "maxReplicas": 5,
                    "metrics": [{"type": "External", "external": {
                        "metric": {"name": "queue_depth"},
                        "target": {"type": "AverageValue", "averageValue": "10"}}}],
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}
    status, _, doc = fake.api("POST", "/apis/autoscaling/v2/namespaces/svc/horizontalpodautoscalers", hpa)
    assert status == 201
    assert doc["spec"]["behavior"]["scaleUp"]["policies"][0] == {"type": "Pods", "value": 4,
                                                                 "periodSeconds": 15}
    path = "/apis/autoscaling/v2/namespaces/svc/horizontalpodautoscalers/web"

    def active():
        doc = fake.get(path)
        return next((c for c in doc.get("status", {}).get("conditions", [])
                     if c["type"] == "ScalingActive"), None)
    cond = fake.wait(active)
    assert (cond["status"], cond["reason"]) == ("False", "FailedGetExternalMetric")
    assert fake.get(path)["status"]["desiredReplicas"] == 2
    apis = [g["name"] for g in fake.get("/apis")["groups"]]
    assert "external.metrics.k8s.io" not in apis
    fake.control("POST", "config", {"external_metrics": True})
    assert "external.metrics.k8s.io" in [g["name"] for g in fake.get("/apis")["groups"]]
    fake.api("PATCH", path, {"spec": {"maxReplicas": 6}}, "application/merge-patch+json")
    fake.wait(lambda: (active() or {}).get("status") == "True", what="ScalingActive")


def test_delete_propagation_and_finalizers(fake):
    fake.namespace("del")
    fake.api("POST", deploy_path("del"), deployment("del", replicas=2))
    fake.wait(lambda: len(pods_of(fake, "del", "web")) == 2)
    status, _, doc = fake.api("DELETE", deploy_path("del", "web"),
                              {"kind": "DeleteOptions", "apiVersion": "v1",
                               "propagationPolicy": "Foreground"})
    assert status == 200 and doc["kind"] == "Deployment"
    assert doc["metadata"]["deletionTimestamp"] and doc["metadata"]["finalizers"] == ["foregroundDeletion"]
    fake.wait(lambda: fake.api("GET", deploy_path("del", "web"))[0] == 404, what="foreground")
    assert not pods_of(fake, "del", "web")
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    fake.api("POST", "/api/v1/namespaces/del/configmaps", cm)
    status, _, doc = fake.api("DELETE", "/api/v1/namespaces/del/configmaps/held")
    assert status == 200 and doc["metadata"]["deletionTimestamp"]
    time.sleep(0.2)
    assert fake.api("GET", "/api/v1/namespaces/del/configmaps/held")[0] == 200
    fake.api("PATCH", "/api/v1/namespaces/del/configmaps/held",
             {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    assert fake.api("GET", "/api/v1/namespaces/del/configmaps/held")[0] == 404
    # Deleting a namespace deletes what is in it.
    fake.api("POST", deploy_path("del"), deployment("del", "again"))
    status, _, doc = fake.api("DELETE", "/api/v1/namespaces/del")
    assert doc["status"]["phase"] == "Terminating"
    fake.wait(lambda: fake.api("GET", "/api/v1/namespaces/del")[0] == 404, what="namespace gone")
    assert not fake.get("/apis/apps/v1/deployments")["items"]


def test_karpenter_and_kserve_switches(fake):
    assert fake.api("GET", "/apis/karpenter.sh/v1/nodepools")[0] == 404
    assert fake.api("GET", "/apis/serving.kserve.io/v1beta1")[0] == 404
    fake.control("POST", "config", {"karpenter": True, "kserve": True, "node_launch_s": 0.1,
                                    "isvc_ready_s": 0.1})
    names = [g["name"] for g in fake.get("/apis")["groups"]]
    assert "karpenter.sh" in names and "serving.kserve.io" in names
    pool = {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "gpu"},
            "spec": {"template": {"metadata": {"labels": {"team": "ml"}}, "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                                 "name": "default"},
                "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
                "requirements": [
                    {"key": "node.kubernetes.io/instance-type", "operator": "In",
                     "values": ["g5.12xlarge"]},
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1b"]}]}},
                "limits": {"nvidia.com/gpu": "8", "nodes": "2"}}}
    status, _, doc = fake.apply("/apis/karpenter.sh/v1/nodepools/gpu", pool, "infrafs")
    assert status == 201
    fake.wait(lambda: (fake.get("/apis/karpenter.sh/v1/nodepools/gpu").get("status") or {})
              .get("conditions"), what="pool status")
    fake.namespace("ml")
    body = deployment("ml", replicas=2, requests={"nvidia.com/gpu": "4"},
                      limits={"nvidia.com/gpu": "4"}, node_selector={"karpenter.sh/nodepool": "gpu"},
                      tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"}])
    fake.api("POST", deploy_path("ml"), body)
    fake.wait(lambda: sum(1 for p in pods_of(fake, "ml", "web")
                          if p["status"].get("phase") == "Running") == 2, timeout=15,
              what="pods on launched nodes")
    nodes = [n for n in fake.get("/api/v1/nodes")["items"]
             if n["metadata"]["labels"].get("karpenter.sh/nodepool") == "gpu"]
    assert len(nodes) == 2
    labels = nodes[0]["metadata"]["labels"]
    assert labels["node.kubernetes.io/instance-type"] == "g5.12xlarge"
    assert labels["topology.kubernetes.io/zone"] == "us-east-1b"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A10G" and labels["team"] == "ml"
    assert nodes[0]["spec"]["taints"][0]["key"] == "nvidia.com/gpu"
    fake.wait(lambda: fake.get("/apis/karpenter.sh/v1/nodepools/gpu")["status"]["resources"]
              .get("nodes") == "2", what="pool resources")
    # Within limits: a third pod stays pending.
    fake.api("PATCH", deploy_path("ml", "web"), {"spec": {"replicas": 3}},
             "application/merge-patch+json")
    time.sleep(0.5)
    assert len(fake.get("/api/v1/nodes")["items"]) == 3
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "llm", "namespace": "ml"},
            "spec": {"predictor": {"minReplicas": 1, "maxReplicas": 3, "scaleMetric": "concurrency",
                                   "scaleTarget": 4,
                                   "containers": [{"name": "kserve-container", "image": "vllm:1"}]}}}
    status, _, doc = fake.api("POST", "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices", isvc)
    assert status == 201
    done = fake.wait(lambda: (lambda s: s if s.get("url") else None)(
        fake.get("/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices/llm").get("status") or {}))
    assert done["url"] == "http://llm.ml.example.com"
    assert {c["type"]: c["status"] for c in done["conditions"]}["Ready"] == "True"
    # Deleting the pool removes its nodes; switching off hides the API.
    fake.api("DELETE", "/apis/karpenter.sh/v1/nodepools/gpu")
    fake.wait(lambda: len(fake.get("/api/v1/nodes")["items"]) == 1, what="pool nodes gone")
    fake.control("POST", "config", {"karpenter": False, "kserve": False})
    assert fake.api("GET", "/apis/karpenter.sh/v1/nodepools")[0] == 404
    assert "karpenter.sh" not in [g["name"] for g in fake.get("/apis")["groups"]]


def test_thousand_deployments(fake):
    fake.namespace("load")
    fake.control("POST", "nodes", {"add": [{"name": "big", "allocatable": {
        "cpu": "1000", "memory": "4Ti", "pods": "5000"}}]})
    conn = http.client.HTTPSConnection("127.0.0.1", fake.api_port, context=fake.tls, timeout=30)
    headers = {"Authorization": f"Bearer {fake.token}", "Content-Type": "application/json"}
    for i in range(1000):
        conn.request("POST", deploy_path("load"), json.dumps(deployment("load", f"d{i}")), headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 201
    started = time.time()
    conn.request("GET", deploy_path("load"), headers=headers)
    resp = conn.getresponse()
    items = json.loads(resp.read())["items"]
    assert resp.getheader("Content-Length") and len(items) == 1000
    assert time.time() - started < 1.0

    def ready():
        conn.request("GET", deploy_path("load"), headers=headers)
        docs = json.loads(conn.getresponse().read())["items"]
        return sum(1 for d in docs if d.get("status", {}).get("readyReplicas") == 1) == 1000
    fake.wait(ready, timeout=30, what="1000 ready deployments")
    conn.close()


def test_list_selectors_and_paging(fake):
    fake.namespace("sel")
    for name, tier in (("a", "web"), ("b", "db"), ("c", "cache")):
        fake.api("POST", "/api/v1/namespaces/sel/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"tier": tier, **({"x": "1"} if name != "c" else {})}}})

    def names(query):
        doc = fake.get(f"/api/v1/namespaces/sel/configmaps?{query}")
        return [i["metadata"]["name"] for i in doc["items"]]
    assert names("labelSelector=tier%3Dweb") == ["a"]
    assert names("labelSelector=tier%3D%3Dweb") == ["a"]
    assert names("labelSelector=tier!%3Dweb") == ["b", "c"]
    assert names("labelSelector=tier+in+(web,db)") == ["a", "b"]
    assert names("labelSelector=tier+notin+(web,db)") == ["c"]
    assert names("labelSelector=x") == ["a", "b"]
    assert names("labelSelector=!x") == ["c"]
    assert names("fieldSelector=metadata.name%3Db") == ["b"]
    first = fake.get("/api/v1/namespaces/sel/configmaps?limit=2")
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    assert first["metadata"]["remainingItemCount"] == 1
    rest = fake.get(f"/api/v1/namespaces/sel/configmaps?limit=2&continue={first['metadata']['continue']}")
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c"]
    assert "continue" not in rest["metadata"]
    assert first["kind"] == "ConfigMapList" and "kind" not in first["items"][0]


def test_progress_deadline_exceeded(fake):
    fake.namespace("pd")
    fake.control("POST", "config", {"image_failures": {"broken:*": "ErrImagePull"}})
    body = deployment("pd", image="broken:1")
    body["spec"]["progressDeadlineSeconds"] = 1
    fake.api("POST", deploy_path("pd"), body)

    def progressing():
        doc = fake.get(deploy_path("pd", "web"))
        cond = next((c for c in doc.get("status", {}).get("conditions", [])
                     if c["type"] == "Progressing"), None)
        return cond if cond and cond["reason"] == "ProgressDeadlineExceeded" else None
    cond = fake.wait(progressing, timeout=5, what="ProgressDeadlineExceeded")
    assert cond["status"] == "False"
    assert cond["message"].startswith('ReplicaSet "web-') and \
        cond["message"].endswith('" has timed out progressing.')
    pod = fake.wait(lambda: next((p for p in pods_of(fake, "pd", "web")
                                  if p["status"].get("containerStatuses")), None))
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
    assert fake.get(deploy_path("pd", "web"))["status"]["unavailableReplicas"] == 1
