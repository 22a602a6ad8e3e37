"""Checks of the AWS fake itself.

The fake runs as a subprocess, exactly as the daemon's tests start it, and is
driven with requests signed by the small SigV4 signer below.  The signer is
written independently of the fake's verifier and is itself checked against
the AWS SigV4 test suite, so the two cannot share a mistake unnoticed.
"""

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAKE = HERE / "aws_fake.py"
SUITE = HERE.parent / "data" / "aws" / "sigv4-testsuite"

sys.path.insert(0, str(HERE))
import aws_fake  # noqa: E402  (only for the canonicalisation and regex checks)

REGION = "us-east-1"
ACCOUNT = "123456789012"
KEY_ID, SECRET = "AKIDFAKETEST0001", "fake/secret+one"
TOKEN_KEY_ID, TOKEN_SECRET, TOKEN = "ASIAFAKETEST0002", "fake-secret-two", "FwoGZXIvYXdzEXAMPLE/token=="
SAGEMAKER = "SageMaker"
AUTOSCALING = "AnyScaleFrontendService"
SIGNING_NAMES = {SAGEMAKER: "sagemaker", AUTOSCALING: "application-autoscaling"}
BOOT_EKS = "boot-eks"  # made with --eks; survives resets

# Long enough to observe the intermediate states on a loaded machine.
FAST = {"create_s": 0.4, "update_s": 0.4, "delete_s": 0.4, "cluster_create_s": 0.4,
        "cluster_update_s": 0.4, "cluster_delete_s": 0.4, "latency_ms": 0, "rate_limit_rps": 0,
        "clock_offset_s": 0, "qualified_error_types": False, "region": REGION, "account": ACCOUNT}


# --------------------------------------------------------------------------
# A minimal SigV4 signer (simple paths and query strings that need no
# encoding, which is all the JSON protocols and EKS's DescribeCluster use)
# --------------------------------------------------------------------------

def _hmac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_signature(canonical, secret, region, service, amz_date):
    """The credential scope and the signature of a canonical request."""
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = _hmac(key, part)
    return scope, hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def sigv4_authorization(method, headers, body, key_id, secret, region, service, amz_date,
                        signed=None, path="/", query=""):
    """Authorization header value for `headers` (lower-case name -> value or
    list of values); `signed` picks the headers to sign (default: all)."""
    names = sorted(signed if signed is not None else headers)

    def value(name):
        values = headers[name] if isinstance(headers[name], list) else [headers[name]]
        return ",".join(" ".join(v.split()) for v in values)

    canonical = "\n".join([method, path, query, *[f"{n}:{value(n)}" for n in names], "",
                           ";".join(names), hashlib.sha256(body).hexdigest()])
    scope, sig = sigv4_signature(canonical, secret, region, service, amz_date)
    return (f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={sig}")


def amz_now(offset_s=0):
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_s)
    return when.strftime("%Y%m%dT%H%M%SZ")


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

class Reply:
    def __init__(self, status, headers, raw):
        self.status, self.headers, self.raw = status, headers, raw
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    @property
    def code(self):
        return self.json.get("__type") if isinstance(self.json, dict) else None

    @property
    def message(self):
        return self.json.get("message", self.json.get("Message")) if self.json else None

    def __repr__(self):
        return f"Reply({self.status}, {self.raw[:300]!r})"


class AwsClient:
    """Signed awsJson1_1 calls over one keep-alive connection."""

    def __init__(self, port, key_id=KEY_ID, secret=SECRET, token=None, region=REGION):
        self.port, self.key_id, self.secret, self.token, self.region = port, key_id, secret, token, region
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, prefix, op, params=None, *, body=None, amz_date=None, scope_service=None,
             scope_region=None, secret=None, signed_host=None, sign_token=True,
             content_type="application/x-amz-json-1.1", tamper=None):
        body = json.dumps(params if params is not None else {}).encode() if body is None else body
        host = f"127.0.0.1:{self.port}"
        headers = {"host": signed_host or host, "content-type": content_type,
                   "x-amz-date": amz_date or amz_now(), "x-amz-target": f"{prefix}.{op}"}
        signed = list(headers)
        if self.token is not None:
            headers["x-amz-security-token"] = self.token
            if sign_token:
                signed.append("x-amz-security-token")
        headers["authorization"] = sigv4_authorization(
            "POST", headers, body, self.key_id, secret or self.secret, scope_region or self.region,
            scope_service or SIGNING_NAMES[prefix], headers["x-amz-date"], signed)
        headers["host"] = host
        if tamper:
            body = tamper(headers, body) or body
        self.conn.request("POST", "/", body, headers)
        response = self.conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())

    def sm(self, op, **params):
        return self.call(SAGEMAKER, op, params)

    def aas(self, op, **params):
        return self.call(AUTOSCALING, op, params)

    def close(self):
        self.conn.close()


class FakeProcess:
    def __init__(self, proc, port, log_path):
        self.proc, self.port, self.log_path = proc, port, log_path

    def control(self, method, path, doc=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = json.dumps(doc).encode() if doc is not None else None
            conn.request(method, path, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = json.loads(response.read() or b"null")
            if response.status != 200:
                raise AssertionError(f"{method} {path}: {response.status} {payload}")
            return payload
        finally:
            conn.close()

    def raw(self, method, path, headers=None, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body, headers or {})
            response = conn.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def calls(self, op=None):
        return [c for c in self.control("GET", "/_fake/calls") if op is None or c["op"] == op]


def wait_port_file(path, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"fake exited with {proc.returncode}")
        time.sleep(0.02)
    raise AssertionError("fake did not write its port file")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("aws_fake")
    port_file, log_path = workdir / "port", workdir / "fake.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(FAKE), "--port", "0", "--port-file", str(port_file),
             "--region", REGION, "--account", ACCOUNT, "--key", f"{KEY_ID}:{SECRET}",
             "--key", f"{TOKEN_KEY_ID}:{TOKEN_SECRET}:{TOKEN}", "--eks", BOOT_EKS],
            stdout=log, stderr=log)
    try:
        yield FakeProcess(proc, wait_port_file(port_file, proc), log_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=10) == 0, log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.fixture(autouse=True)
def clean(fake):
    fake.control("POST", "/_fake/reset")
    fake.control("POST", "/_fake/config", FAST)
    fake.control("POST", "/_fake/imds", {"enabled": False})
    yield


@pytest.fixture
def client(fake):
    c = AwsClient(fake.port)
    yield c
    c.close()


def wait_for(predicate, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


def arn(resource):
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{resource}"


def make_endpoint(client, name="ep1", variants=(("v1", 2),), model="m1", config=None):
    config = config or f"{name}-cfg"
    if client.sm("DescribeModel", ModelName=model).status != 200:
        assert client.sm("CreateModel", ModelName=model,
                         PrimaryContainer={"Image": "123.dkr.ecr.us-east-1.amazonaws.com/llm:1"},
                         ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sm").status == 200
    reply = client.sm("CreateEndpointConfig", EndpointConfigName=config, ProductionVariants=[
        {"VariantName": v, "ModelName": model, "InitialInstanceCount": n,
         "InstanceType": "ml.g5.xlarge"} for v, n in variants])
    assert reply.status == 200, reply
    reply = client.sm("CreateEndpoint", EndpointName=name, EndpointConfigName=config)
    assert reply.status == 200, reply
    return reply.json["EndpointArn"]


def endpoint_status(client, name):
    reply = client.sm("DescribeEndpoint", EndpointName=name)
    return reply.json.get("EndpointStatus") if reply.status == 200 else reply.code


# --------------------------------------------------------------------------
# SigV4 test suite: the signer above and the fake's canonicalisation
# --------------------------------------------------------------------------

def parse_suite_request(path):
    """Method, path, query, headers and body of a test suite case.

    The signed request (.sreq) is read rather than .req, whose session token
    case lacks the token header; its Authorization header is left out.
    """
    text = path.with_suffix(".sreq").read_text(encoding="utf-8")
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.rsplit(" ", 1)[0]
    raw_path, _, query = target.partition("?")
    headers = {}
    last = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and last:
            headers[last][-1] += " " + line.strip()
            continue
        name, _, value = line.partition(":")
        last = name.lower()
        headers.setdefault(last, []).append(value)
    headers.pop("authorization", None)
    return method, raw_path, query, headers, body.encode()


SUITE_CASES = sorted(p for p in SUITE.rglob("*.req"))
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("req_file", SUITE_CASES, ids=lambda p: p.stem)
def test_fake_canonicalisation_matches_sigv4_suite(req_file):
    method, raw_path, query, headers, body = parse_suite_request(req_file)
    expected_creq = req_file.with_suffix(".creq").read_text(encoding="utf-8")
    signed = re.search(r"SignedHeaders=([^,]+)",
                       req_file.with_suffix(".authz").read_text()).group(1).split(";")
    creq = aws_fake.canonical_request(method, raw_path, query, headers, signed, body)
    assert creq == expected_creq
    sts = aws_fake.string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", creq)
    assert sts == req_file.with_suffix(".sts").read_text(encoding="utf-8")
    expected_sig = re.search(r"Signature=(\w+)", req_file.with_suffix(".authz").read_text()).group(1)
    assert aws_fake.signature(SUITE_SECRET, "20150830", "us-east-1", "service", sts) == expected_sig


SIMPLE_SUITE_CASES = [p for p in SUITE_CASES if parse_suite_request(p)[1:3] == ("/", "")]


@pytest.mark.parametrize("req_file", SIMPLE_SUITE_CASES, ids=lambda p: p.stem)
def test_test_signer_matches_sigv4_suite(req_file):
    method, _, _, headers, body = parse_suite_request(req_file)
    authz = req_file.with_suffix(".authz").read_text()
    signed = re.search(r"SignedHeaders=([^,]+)", authz).group(1).split(";")
    got = sigv4_authorization(method, headers, body, "AKIDEXAMPLE", SUITE_SECRET, "us-east-1",
                              "service", "20150830T123600Z", signed)
    assert got == authz.strip()


def curl_supports_sigv4():
    curl = shutil.which("curl")
    if curl is None:
        return False
    return "--aws-sigv4" in subprocess.run([curl, "--help", "all"], capture_output=True,
                                           text=True).stdout


@pytest.mark.skipif(not curl_supports_sigv4(), reason="needs curl with --aws-sigv4")
def test_libcurl_signer_is_accepted(fake, tmp_path):
    """libcurl's own SigV4 signer, with a body large enough for Expect: 100-continue."""
    body = tmp_path / "model.json"
    body.write_text(json.dumps({"ModelName": "from-curl", "PrimaryContainer": {
        "Image": "x:1", "Environment": {f"K{i}": "v" * 900 for i in range(90)}}}))
    result = subprocess.run(
        ["curl", "-s", "--aws-sigv4", f"aws:amz:{REGION}:sagemaker", "--user", f"{KEY_ID}:{SECRET}",
         "-H", "Content-Type: application/x-amz-json-1.1", "-H", "X-Amz-Target: SageMaker.CreateModel",
         "-H", "Expect: 100-continue", "--data-binary", f"@{body}", f"http://127.0.0.1:{fake.port}/"],
        capture_output=True, text=True, timeout=30)
    assert json.loads(result.stdout) == {"ModelArn": arn("model/from-curl")}


# --------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------

def test_signed_request_is_accepted_and_carries_request_id(client):
    reply = client.sm("ListEndpoints")
    assert reply.status == 200
    assert reply.json == {"Endpoints": []}
    assert reply.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert re.fullmatch(r"[0-9a-f-]{36}", reply.headers["x-amzn-RequestId"])


def test_missing_authorization(fake, client):
    def unsign(headers, body):
        del headers["authorization"]
    reply = client.call(SAGEMAKER, "ListEndpoints", tamper=unsign)
    assert (reply.status, reply.code) == (400, "MissingAuthenticationTokenException")
    assert reply.message == "Request is missing Authentication Token"
    assert "x-amzn-RequestId" in reply.headers


def test_unknown_access_key(fake):
    stranger = AwsClient(fake.port, key_id="AKIDUNKNOWN00000")
    reply = stranger.sm("ListEndpoints")
    assert (reply.status, reply.code) == (400, "UnrecognizedClientException")
    assert reply.message == "The security token included in the request is invalid."


def test_wrong_secret_reports_the_canonical_request(fake, client):
    reply = client.call(SAGEMAKER, "ListEndpoints", secret="not-the-secret")
    assert (reply.status, reply.code) == (400, "InvalidSignatureException")
    assert reply.message.startswith(
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key and signing method. Consult the service "
        "documentation for details.")
    assert f"host:127.0.0.1:{fake.port}\n" in reply.message
    assert "The String-to-Sign should have been" in reply.message


def test_body_changed_after_signing_is_rejected(client):
    reply = client.call(SAGEMAKER, "ListEndpoints", {"MaxResults": 5},
                        tamper=lambda h, b: b'{"MaxResults": 6}')
    assert reply.code == "InvalidSignatureException"


def test_host_must_be_signed_with_its_port(client):
    reply = client.call(SAGEMAKER, "ListEndpoints", signed_host="127.0.0.1")
    assert reply.code == "InvalidSignatureException"


def test_host_must_be_a_signed_header(client):
    def unsign_host(headers, body):
        headers["authorization"] = headers["authorization"].replace(
            "SignedHeaders=content-type;host;", "SignedHeaders=content-type;")
    reply = client.call(SAGEMAKER, "ListEndpoints", tamper=unsign_host)
    assert reply.message == "'Host' must be a 'SignedHeader' in the AWS Authorization."


def test_stale_and_future_dates(client):
    reply = client.call(SAGEMAKER, "ListEndpoints", amz_date=amz_now(-16 * 60))
    assert reply.code == "InvalidSignatureException"
    assert re.fullmatch(r"Signature expired: \d{8}T\d{6}Z is now earlier than \d{8}T\d{6}Z "
                        r"\(\d{8}T\d{6}Z - 15 min\.\)", reply.message)
    reply = client.call(SAGEMAKER, "ListEndpoints", amz_date=amz_now(16 * 60))
    assert re.fullmatch(r"Signature not yet current: \d{8}T\d{6}Z is still later than "
                        r"\d{8}T\d{6}Z \(\d{8}T\d{6}Z \+ 15 min\.\)", reply.message)
    assert client.call(SAGEMAKER, "ListEndpoints", amz_date=amz_now(-14 * 60)).status == 200


def test_malformed_date(client):
    reply = client.call(SAGEMAKER, "ListEndpoints", amz_date="2015-08-30T12:36:00Z")
    assert reply.code == "IncompleteSignatureException"
    assert reply.message.startswith("Date must be in ISO-8601 'basic format'.")


def test_credential_scope_service_and_region(client):
    reply = client.call(SAGEMAKER, "ListEndpoints", scope_service="application-autoscaling")
    assert reply.code == "InvalidSignatureException"
    assert reply.message == "Credential should be scoped to correct service: 'sagemaker'. "
    reply = client.call(SAGEMAKER, "ListEndpoints", scope_region="eu-west-1")
    assert reply.message == "Credential should be scoped to a valid region, not 'eu-west-1'. "
    reply = client.call(AUTOSCALING, "DescribeScalableTargets", {"ServiceNamespace": "sagemaker"},
                        scope_service="sagemaker")
    assert reply.message == "Credential should be scoped to correct service: 'application-autoscaling'. "


def test_incomplete_authorization(client):
    def drop_signature(headers, body):
        headers["authorization"] = headers["authorization"].split(", Signature=")[0]
    reply = client.call(SAGEMAKER, "ListEndpoints", tamper=drop_signature)
    assert reply.code == "IncompleteSignatureException"
    assert reply.message.startswith("Authorization header requires 'Signature' parameter. ")


def test_session_token_must_be_present_signed_and_equal(fake):
    good = AwsClient(fake.port, TOKEN_KEY_ID, TOKEN_SECRET, TOKEN)
    assert good.sm("ListEndpoints").status == 200
    missing = AwsClient(fake.port, TOKEN_KEY_ID, TOKEN_SECRET)
    wrong = AwsClient(fake.port, TOKEN_KEY_ID, TOKEN_SECRET, "another-token")
    for reply in (missing.sm("ListEndpoints"), wrong.sm("ListEndpoints"),
                  good.call(SAGEMAKER, "ListEndpoints", sign_token=False)):
        assert reply.code == "UnrecognizedClientException"
        assert reply.message == "The security token included in the request is invalid"
    stray = AwsClient(fake.port, KEY_ID, SECRET, "unexpected-token")
    assert stray.sm("ListEndpoints").code == "UnrecognizedClientException"


def test_keys_rotate_through_the_control_api(fake):
    fake.control("POST", "/_fake/keys", {"add": [{"id": "AKIDROTATED00001", "secret": "s2"}]})
    try:
        rotated = AwsClient(fake.port, "AKIDROTATED00001", "s2")
        assert rotated.sm("ListEndpoints").status == 200
        reply = fake.control("POST", "/_fake/keys", {"remove": ["AKIDROTATED00001"]})
        assert reply["removed"] == ["AKIDROTATED00001"]
        assert rotated.sm("ListEndpoints").code == "UnrecognizedClientException"
        listed = fake.control("GET", "/_fake/keys")["keys"]
        assert {k["id"] for k in listed} == {KEY_ID, TOKEN_KEY_ID}
    finally:
        fake.control("POST", "/_fake/keys", {"remove": ["AKIDROTATED00001"]})


def test_expiring_control_key(fake):
    fake.control("POST", "/_fake/keys", {"add": [{"id": "ASIASHORTLIVED01", "secret": "s",
                                                  "token": "t", "expires_in_s": 0.3}]})
    short = AwsClient(fake.port, "ASIASHORTLIVED01", "s", "t")
    assert short.sm("ListEndpoints").status == 200
    time.sleep(0.4)
    reply = short.sm("ListEndpoints")
    assert (reply.code, reply.message) == ("ExpiredTokenException",
                                           "The security token included in the request is expired")


def test_clock_offset_moves_the_signature_window_and_date_header(fake, client):
    fake.control("POST", "/_fake/config", {"clock_offset_s": 3600})
    reply = client.sm("ListEndpoints")
    assert reply.message.startswith("Signature expired:")
    served = time.mktime(time.strptime(reply.headers["Date"], "%a, %d %b %Y %H:%M:%S GMT"))
    assert 3500 < served - time.mktime(time.gmtime()) < 3700
    assert client.call(SAGEMAKER, "ListEndpoints", amz_date=amz_now(3600)).status == 200


# --------------------------------------------------------------------------
# Protocol
# --------------------------------------------------------------------------

def test_unknown_operation_and_target(client):
    for prefix, op in ((SAGEMAKER, "CreateTrainingJob"), ("DynamoDB_20120810", "ListTables")):
        reply = client.call(prefix, op, scope_service="sagemaker")
        assert (reply.status, reply.code) == (400, "UnknownOperationException")


def test_wrong_content_type_or_method(fake, client):
    reply = client.call(SAGEMAKER, "ListEndpoints", content_type="application/json")
    assert (reply.status, reply.raw) == (404, b"<UnknownOperationException/>\n")
    reply = fake.raw("GET", "/")
    assert reply.status == 404 and "x-amzn-RequestId" in reply.headers


def test_malformed_or_missing_body(client):
    assert client.call(SAGEMAKER, "ListEndpoints", body=b"{not json").code == "SerializationException"
    assert client.call(SAGEMAKER, "ListEndpoints", body=b"").code == "SerializationException"


def test_qualified_error_types(fake, client):
    fake.control("POST", "/_fake/config", {"qualified_error_types": True})
    assert client.sm("CreateEndpoint").code == "com.amazon.coral.validate#ValidationException"
    reply = client.call(SAGEMAKER, "ListEndpoints", secret="wrong")
    assert reply.code == "com.amazon.coral.service#InvalidSignatureException"
    assert client.sm("DescribeCluster", ClusterName="none").code == "ResourceNotFound"


def test_keep_alive_and_chunked_bodies(fake, client):
    for _ in range(3):
        assert client.sm("ListModels").status == 200
    sock_before = client.conn.sock
    assert client.sm("ListModels").status == 200 and client.conn.sock is sock_before
    body = json.dumps({"MaxResults": 3}).encode()
    headers = {"host": f"127.0.0.1:{fake.port}", "content-type": "application/x-amz-json-1.1",
               "x-amz-date": amz_now(), "x-amz-target": "SageMaker.ListModels"}
    headers["authorization"] = sigv4_authorization("POST", headers, body, KEY_ID, SECRET, REGION,
                                                   "sagemaker", headers["x-amz-date"])
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    conn.request("POST", "/", iter([body[:5], body[5:]]), headers, encode_chunked=True)
    assert conn.getresponse().status == 200
    conn.close()


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

def test_required_members(client):
    reply = client.sm("CreateEndpoint")
    assert reply.code == "ValidationException"
    assert reply.message == (
        "2 validation errors detected: Value null at 'endpointName' failed to satisfy "
        "constraint: Member must not be null; Value null at 'endpointConfigName' failed to "
        "satisfy constraint: Member must not be null")


def test_length_pattern_enum_and_nested_paths(client):
    reply = client.sm("CreateEndpointConfig", EndpointConfigName="x" * 64, ProductionVariants=[
        {"VariantName": "ok", "InstanceType": "ml.bogus", "InitialInstanceCount": 0},
        {"ModelName": "bad_name"}])
    message = reply.message
    assert message.startswith("6 validation errors detected: ")
    assert ("Value '" + "x" * 64 + "' at 'endpointConfigName' failed to satisfy constraint: "
            "Member must have length less than or equal to 63") in message
    assert ("Value 'ml.bogus' at 'productionVariants.1.member.instanceType' failed to satisfy "
            "constraint: Member must satisfy enum value set: [ml.t2.medium, ") in message
    assert ("Value '0' at 'productionVariants.1.member.initialInstanceCount' failed to satisfy "
            "constraint: Member must have value greater than or equal to 1") in message
    assert ("Value null at 'productionVariants.2.member.variantName' failed to satisfy "
            "constraint: Member must not be null") in message
    assert ("Value 'bad_name' at 'productionVariants.2.member.modelName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: "
            "[a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?") in message


def test_at_most_ten_validation_errors(client):
    reply = client.sm("CreateEndpointConfig", EndpointConfigName="c",
                      ProductionVariants=[{} for _ in range(12)])
    assert reply.message.startswith("10 validation errors detected: Value '[")
    assert reply.message.count("failed to satisfy constraint") == 10


def test_type_mismatch_is_a_serialization_error(client):
    reply = client.sm("DescribeEndpoint", EndpointName=5)
    assert (reply.code, reply.json["Message"]) == (
        "SerializationException", "class java.lang.Short can not be converted to an String")
    reply = client.sm("ListEndpoints", MaxResults="10")
    assert reply.json["Message"] == "class java.lang.String can not be converted to an Integer"
    reply = client.sm("CreateEndpoint", EndpointName=["a"], EndpointConfigName="c")
    assert reply.json["Message"] == "Start of list found where not expected"


def test_unknown_members_are_ignored_but_recorded(fake, client):
    assert client.sm("ListEndpoints", Bogus=1).status == 200
    assert fake.calls("ListEndpoints")[-1]["unknown_members"] == ["Bogus"]


def test_service_side_limits(client):
    reply = client.aas("DescribeScalingPolicies", ServiceNamespace="sagemaker", MaxResults=11)
    assert reply.message == ("1 validation error detected: Value '11' at 'maxResults' failed to "
                             "satisfy constraint: Member must have value less than or equal to 10")


def test_java_regex_translation():
    print_class = re.compile(aws_fake.java_regex_to_python(r"\p{Print}+"))
    assert print_class.fullmatch("policy name ~!") and not print_class.fullmatch("tab\there")
    tags = re.compile(aws_fake.java_regex_to_python(r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)"))
    assert tags.fullmatch("Team: ML-infra/été 2") and not tags.fullmatch("no*stars")
    xml = re.compile(aws_fake.java_regex_to_python(
        r"[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\r\n\t]*"))
    assert xml.fullmatch("endpoint/e/variant/v \U0001F600") and not xml.fullmatch("bell\x07")


# --------------------------------------------------------------------------
# SageMaker resources
# --------------------------------------------------------------------------

def test_endpoint_lifecycle(fake, client):
    endpoint_arn = make_endpoint(client, "Ep-Life", variants=(("v1", 2),))
    assert endpoint_arn == arn("endpoint/ep-life")
    described = client.sm("DescribeEndpoint", EndpointName="Ep-Life").json
    assert described["EndpointStatus"] == "Creating"
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 0
    assert described["ProductionVariants"][0]["DesiredInstanceCount"] == 2
    wait_for(lambda: endpoint_status(client, "Ep-Life") == "InService")
    described = client.sm("DescribeEndpoint", EndpointName="ep-life").json
    variant = described["ProductionVariants"][0]
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (2, 2)
    assert variant["DeployedImages"][0]["SpecifiedImage"].endswith("/llm:1")
    assert described["EndpointName"] == "Ep-Life" and described["EndpointConfigName"] == "Ep-Life-cfg"
    assert described["LastModifiedTime"] >= described["CreationTime"]

    # Weights and capacities: Updating with the new desired count, then applied.
    reply = client.sm("UpdateEndpointWeightsAndCapacities", EndpointName="Ep-Life",
                      DesiredWeightsAndCapacities=[{"VariantName": "v1", "DesiredInstanceCount": 5}])
    assert reply.json == {"EndpointArn": endpoint_arn}
    variant = client.sm("DescribeEndpoint", EndpointName="Ep-Life").json["ProductionVariants"][0]
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (2, 5)
    assert endpoint_status(client, "Ep-Life") == "Updating"
    reply = client.sm("UpdateEndpoint", EndpointName="Ep-Life", EndpointConfigName="Ep-Life-cfg")
    assert reply.message == f'Cannot update in-progress endpoint "{endpoint_arn}".'
    wait_for(lambda: endpoint_status(client, "Ep-Life") == "InService")
    variant = client.sm("DescribeEndpoint", EndpointName="Ep-Life").json["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == 5

    # A new config: the pending deployment is visible until it completes.
    client.sm("CreateEndpointConfig", EndpointConfigName="cfg2", ProductionVariants=[
        {"VariantName": "v2", "ModelName": "m1", "InitialInstanceCount": 3,
         "InstanceType": "ml.g5.2xlarge"}])
    assert client.sm("UpdateEndpoint", EndpointName="Ep-Life", EndpointConfigName="cfg2").status == 200
    described = client.sm("DescribeEndpoint", EndpointName="Ep-Life").json
    assert described["EndpointStatus"] == "Updating"
    assert described["EndpointConfigName"] == "Ep-Life-cfg"
    assert described["PendingDeploymentSummary"]["EndpointConfigName"] == "cfg2"
    wait_for(lambda: endpoint_status(client, "Ep-Life") == "InService")
    described = client.sm("DescribeEndpoint", EndpointName="Ep-Life").json
    assert described["EndpointConfigName"] == "cfg2"
    assert [(v["VariantName"], v["CurrentInstanceCount"]) for v in described["ProductionVariants"]] == [("v2", 3)]

    assert client.sm("DeleteEndpoint", EndpointName="Ep-Life").json == {}
    assert endpoint_status(client, "Ep-Life") == "Deleting"
    wait_for(lambda: endpoint_status(client, "Ep-Life") == "ValidationException")
    reply = client.sm("DescribeEndpoint", EndpointName="Ep-Life")
    assert reply.message == f'Could not find endpoint "{endpoint_arn}".'
    assert fake.control("GET", "/_fake/state")["endpoints"] == []


def test_duplicates_and_missing_resources_use_aws_wording(client):
    make_endpoint(client, "Dup", model="Model-A")
    assert client.sm("CreateModel", ModelName="model-a").message == \
        f'Cannot create already existing model "{arn("model/model-a")}".'
    assert client.sm("CreateEndpointConfig", EndpointConfigName="DUP-cfg", ProductionVariants=[
        {"VariantName": "v", "ModelName": "model-a", "InitialInstanceCount": 1,
         "InstanceType": "ml.g5.xlarge"}]).message == \
        f'Cannot create already existing endpoint configuration "{arn("endpoint-config/dup-cfg")}".'
    assert client.sm("CreateEndpoint", EndpointName="dup", EndpointConfigName="dup-cfg").message == \
        f'Cannot create already existing endpoint "{arn("endpoint/dup")}".'
    assert client.sm("CreateEndpoint", EndpointName="other", EndpointConfigName="Nope").message == \
        f'Could not find endpoint configuration "{arn("endpoint-config/nope")}".'
    assert client.sm("DescribeModel", ModelName="Ghost").message == \
        f'Could not find model "{arn("model/ghost")}".'
    assert client.sm("CreateEndpointConfig", EndpointConfigName="c9", ProductionVariants=[
        {"VariantName": "v", "ModelName": "ghost", "InitialInstanceCount": 1,
         "InstanceType": "ml.g5.xlarge"}]).message == f'Could not find model "{arn("model/ghost")}".'
    assert client.sm("DeleteEndpoint", EndpointName="ghost").message == \
        f'Could not find endpoint "{arn("endpoint/ghost")}".'


def tags_of(client, resource_arn):
    reply = client.sm("ListTags", ResourceArn=resource_arn)
    assert reply.status == 200, reply
    return reply.json["Tags"]


def test_tags_on_create_add_tags_and_list_tags(client):
    owner = [{"Key": "infrafs:owner", "Value": "abc"}, {"Key": "team", "Value": "nlp"}]
    assert client.sm("CreateModel", ModelName="tagged", ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sm",
                     PrimaryContainer={"Image": "123.dkr.ecr.us-east-1.amazonaws.com/llm:1"},
                     Tags=owner).status == 200
    assert tags_of(client, arn("model/tagged")) == owner
    # AddTags replaces a key's value and appends new keys; it answers with what it was given.
    added = [{"Key": "team", "Value": "vision"}, {"Key": "cost-center", "Value": "42"}]
    reply = client.sm("AddTags", ResourceArn=arn("model/tagged"), Tags=added)
    assert reply.json == {"Tags": added}
    assert tags_of(client, arn("model/tagged")) == [
        {"Key": "infrafs:owner", "Value": "abc"}, {"Key": "team", "Value": "vision"},
        {"Key": "cost-center", "Value": "42"}]
    assert client.sm("DeleteTags", ResourceArn=arn("model/tagged"), TagKeys=["team"]).status == 200
    assert [t["Key"] for t in tags_of(client, arn("model/tagged"))] == ["infrafs:owner", "cost-center"]
    # Untagged objects list nothing; every kind infrafs makes keeps its tags.
    make_endpoint(client, "Plain")
    assert tags_of(client, arn("endpoint/plain")) == []
    assert tags_of(client, arn("endpoint-config/plain-cfg")) == []
    group = {"InstanceGroupName": "workers", "InstanceType": "ml.p5.48xlarge", "InstanceCount": 1,
             "LifeCycleConfig": {"SourceS3Uri": "s3://bucket/lifecycle", "OnCreate": "on_create.sh"},
             "ExecutionRole": f"arn:aws:iam::{ACCOUNT}:role/hyperpod"}
    cluster_arn = client.sm("CreateCluster", ClusterName="Tagged", InstanceGroups=[group],
                            Tags=owner).json["ClusterArn"]
    assert tags_of(client, cluster_arn) == owner


def test_a_new_object_under_an_old_name_starts_without_tags(client):
    model = {"ExecutionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/sm",
             "PrimaryContainer": {"Image": "123.dkr.ecr.us-east-1.amazonaws.com/llm:1"}}
    client.sm("CreateModel", ModelName="again", Tags=[{"Key": "k", "Value": "v"}], **model)
    assert client.sm("DeleteModel", ModelName="again").status == 200
    client.sm("CreateModel", ModelName="again", **model)
    assert tags_of(client, arn("model/again")) == []


def test_tag_shapes_are_validated_as_the_model_says(client):
    reply = client.sm("AddTags", ResourceArn=arn("model/none"),
                      Tags=[{"Key": "", "Value": "x" * 257}, {"Key": "bad\nkey", "Value": "v"}])
    assert reply.code == "ValidationException"
    assert reply.message.startswith("3 validation errors detected: ")
    assert ("Value '' at 'tags.1.member.key' failed to satisfy constraint: Member must have "
            "length greater than or equal to 1") in reply.message
    assert ("at 'tags.1.member.value' failed to satisfy constraint: Member must have length "
            "less than or equal to 256") in reply.message
    assert ("Value 'bad\nkey' at 'tags.2.member.key' failed to satisfy constraint: Member must "
            "satisfy regular expression pattern: ([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)") in reply.message
    reply = client.sm("ListTags", ResourceArn="arn:aws:s3:::bucket")
    assert "Member must satisfy regular expression pattern: arn:aws[a-z-]*:sagemaker:" in reply.message
    assert "Member must have value greater than or equal to 50" in \
        client.sm("ListTags", ResourceArn=arn("model/none"), MaxResults=10).message
    too_many = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    assert "Member must have length less than or equal to 50" in \
        client.sm("CreateModel", ModelName="many", Tags=too_many, ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sm",
                  PrimaryContainer={"Image": "123.dkr.ecr.us-east-1.amazonaws.com/llm:1"}).message


def test_tags_of_missing_objects_are_refused(client):
    assert client.sm("ListTags", ResourceArn=arn("model/ghost")).message == \
        f'Could not find model "{arn("model/ghost")}".'
    assert client.sm("AddTags", ResourceArn=arn("endpoint/ghost"),
                     Tags=[{"Key": "k", "Value": "v"}]).message == \
        f'Could not find endpoint "{arn("endpoint/ghost")}".'
    assert client.sm("ListTags", ResourceArn=arn("cluster/abcdefabcdef")).code == "ResourceNotFound"
    model = {"ExecutionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/sm",
             "PrimaryContainer": {"Image": "123.dkr.ecr.us-east-1.amazonaws.com/llm:1"}}
    client.sm("CreateModel", ModelName="full", Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)],
              **model)
    reply = client.sm("AddTags", ResourceArn=arn("model/full"), Tags=[{"Key": "one-more", "Value": "v"}])
    assert reply.code == "ValidationException" and "more than 50 tags" in reply.message
    assert len(tags_of(client, arn("model/full"))) == 50


def test_delete_in_use_config_and_model_is_allowed(client):
    make_endpoint(client, "InUse")
    assert client.sm("DeleteEndpointConfig", EndpointConfigName="InUse-cfg").status == 200
    assert client.sm("DeleteModel", ModelName="m1").status == 200
    wait_for(lambda: endpoint_status(client, "InUse") == "InService")


def test_delete_while_creating_is_refused(client):
    endpoint_arn = make_endpoint(client, "Young")
    reply = client.sm("DeleteEndpoint", EndpointName="Young")
    assert reply.message == f'Cannot update in-progress endpoint "{endpoint_arn}".'


def test_injected_endpoint_failure(fake, client):
    fake.control("POST", "/_fake/fail_endpoint", {"name": "Doomed", "reason": "No capacity for ml.g5.xlarge"})
    endpoint_arn = make_endpoint(client, "Doomed")
    wait_for(lambda: endpoint_status(client, "Doomed") == "Failed")
    described = client.sm("DescribeEndpoint", EndpointName="Doomed").json
    assert described["FailureReason"] == "No capacity for ml.g5.xlarge"
    assert client.sm("UpdateEndpoint", EndpointName="Doomed", EndpointConfigName="Doomed-cfg").message \
        == f'Cannot update failed endpoint "{endpoint_arn}".'
    assert client.sm("DeleteEndpoint", EndpointName="Doomed").status == 200

    fake.control("POST", "/_fake/fail_endpoint", {"name": "later", "reason": "update broke"})
    make_endpoint(client, "Later")
    wait_for(lambda: endpoint_status(client, "Later") == "Failed")


def test_failure_injected_for_update(fake, client):
    make_endpoint(client, "Upd")
    wait_for(lambda: endpoint_status(client, "Upd") == "InService")
    fake.control("POST", "/_fake/fail_endpoint", {"name": "upd", "reason": "image pull failed"})
    assert client.sm("UpdateEndpoint", EndpointName="Upd", EndpointConfigName="Upd-cfg").status == 200
    wait_for(lambda: endpoint_status(client, "Upd") == "Failed")
    assert client.sm("DescribeEndpoint", EndpointName="Upd").json["FailureReason"] == "image pull failed"


def test_retain_variant_properties_on_update(client):
    make_endpoint(client, "Keep", variants=(("v1", 2),))
    wait_for(lambda: endpoint_status(client, "Keep") == "InService")
    client.sm("UpdateEndpointWeightsAndCapacities", EndpointName="Keep",
              DesiredWeightsAndCapacities=[{"VariantName": "v1", "DesiredInstanceCount": 4}])
    wait_for(lambda: endpoint_status(client, "Keep") == "InService")
    client.sm("UpdateEndpoint", EndpointName="Keep", EndpointConfigName="Keep-cfg",
              RetainAllVariantProperties=True)
    wait_for(lambda: endpoint_status(client, "Keep") == "InService")
    variant = client.sm("DescribeEndpoint", EndpointName="Keep").json["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == 4


def test_cluster_lifecycle(fake, client):
    group = {"InstanceGroupName": "workers", "InstanceType": "ml.p5.48xlarge", "InstanceCount": 2,
             "LifeCycleConfig": {"SourceS3Uri": "s3://bucket/lifecycle", "OnCreate": "on_create.sh"},
             "ExecutionRole": f"arn:aws:iam::{ACCOUNT}:role/hyperpod", "ThreadsPerCore": 1}
    vpc = {"SecurityGroupIds": ["sg-0123456789abcdef0"], "Subnets": ["subnet-0123456789abcdef0"]}
    reply = client.sm("CreateCluster", ClusterName="Pool-A", InstanceGroups=[group], VpcConfig=vpc)
    cluster_arn = reply.json["ClusterArn"]
    assert re.fullmatch(rf"arn:aws:sagemaker:{REGION}:{ACCOUNT}:cluster/[a-z0-9]{{12}}", cluster_arn)
    described = client.sm("DescribeCluster", ClusterName="Pool-A").json
    assert described["ClusterStatus"] == "Creating"
    assert described["InstanceGroups"][0]["CurrentCount"] == 0
    assert described["InstanceGroups"][0]["TargetCount"] == 2
    assert described["VpcConfig"] == vpc

    def status():
        reply = client.sm("DescribeCluster", ClusterName=cluster_arn)
        return reply.json["ClusterStatus"] if reply.status == 200 else reply.code

    wait_for(lambda: status() == "InService")
    groups = client.sm("DescribeCluster", ClusterName=cluster_arn).json["InstanceGroups"]
    assert (groups[0]["CurrentCount"], groups[0]["Status"]) == (2, "InService")
    assert groups[0]["LifeCycleConfig"] == group["LifeCycleConfig"]

    reply = client.sm("CreateCluster", ClusterName="Pool-A", InstanceGroups=[group])
    assert (reply.code, reply.message) == (
        "ResourceInUse", "Resource Already Exists: Cluster with name Pool-A already exists. "
                         "Choose a different name.")

    client.sm("UpdateCluster", ClusterName="Pool-A", InstanceGroups=[{**group, "InstanceCount": 4}])
    groups = client.sm("DescribeCluster", ClusterName="Pool-A").json["InstanceGroups"]
    assert (status(), groups[0]["CurrentCount"], groups[0]["TargetCount"]) == ("Updating", 2, 4)
    assert client.sm("UpdateCluster", ClusterName="Pool-A", InstanceGroups=[group]).code == "ConflictException"
    wait_for(lambda: status() == "InService")
    assert client.sm("DescribeCluster", ClusterName="Pool-A").json["InstanceGroups"][0]["CurrentCount"] == 4

    summaries = client.sm("ListClusters").json["ClusterSummaries"]
    assert [(s["ClusterName"], s["ClusterStatus"]) for s in summaries] == [("Pool-A", "InService")]

    assert client.sm("DeleteCluster", ClusterName="Pool-A").json == {"ClusterArn": cluster_arn}
    assert status() == "Deleting"
    wait_for(lambda: status() == "ResourceNotFound")
    reply = client.sm("DescribeCluster", ClusterName="Pool-A")
    assert reply.message == f"Could not find cluster '{arn('cluster/pool-a')}'"


def test_injected_cluster_failure(fake, client):
    fake.control("POST", "/_fake/fail_cluster", {"name": "bad", "reason": "Insufficient capacity"})
    client.sm("CreateCluster", ClusterName="bad", InstanceGroups=[{
        "InstanceGroupName": "g", "InstanceType": "ml.g5.xlarge", "InstanceCount": 1,
        "ExecutionRole": f"arn:aws:iam::{ACCOUNT}:role/hyperpod"}])
    described = wait_for(lambda: (lambda d: d if d["ClusterStatus"] == "Failed" else None)(
        client.sm("DescribeCluster", ClusterName="bad").json))
    assert described["FailureMessage"] == "Insufficient capacity"


# --------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------

def create_models(fake, names):
    def create(chunk):
        c = AwsClient(fake.port)
        try:
            for name in chunk:
                assert c.sm("CreateModel", ModelName=name).status == 200
        finally:
            c.close()
    chunks = [names[i::8] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, chunks))


def list_all(client, op, key, **params):
    items = []
    while True:
        reply = client.sm(op, **params)
        assert reply.status == 200, reply
        items += reply.json[key]
        params["NextToken"] = reply.json.get("NextToken")
        if not params["NextToken"]:
            return items


def test_pagination_over_a_thousand_models(fake, client):
    names = [f"model-{i:04d}" for i in range(1050)]
    create_models(fake, names)

    assert len(client.sm("ListModels").json["Models"]) == 10  # the documented default
    listed = list_all(client, "ListModels", "Models", MaxResults=100)
    assert sorted(m["ModelName"] for m in listed) == names
    times = [m["CreationTime"] for m in listed]
    assert times == sorted(times, reverse=True)  # newest first by default

    by_name = list_all(client, "ListModels", "Models", MaxResults=77, SortBy="Name",
                       SortOrder="Ascending")
    assert [m["ModelName"] for m in by_name] == names

    assert {m["ModelName"] for m in list_all(client, "ListModels", "Models", NameContains="MODEL-10",
                                             MaxResults=100)} == {f"model-10{i:02d}" for i in range(50)}

    # Resources created between pages do not disturb the rest of the walk.
    seen, token = [], None
    for page in range(4):
        reply = client.sm("ListModels", MaxResults=100, SortBy="Name", SortOrder="Ascending",
                          **({"NextToken": token} if token else {}))
        seen += [m["ModelName"] for m in reply.json["Models"]]
        token = reply.json["NextToken"]
        client.sm("CreateModel", ModelName=f"aaa-new-{page}")
        client.sm("DeleteModel", ModelName=seen[0])
    seen += [m["ModelName"] for m in list_all(client, "ListModels", "Models", MaxResults=100,
                                              SortBy="Name", SortOrder="Ascending", NextToken=token)]
    assert seen == names

    assert client.sm("ListModels", MaxResults=101).code == "ValidationException"
    assert client.sm("ListModels", NextToken="garbage").code == "ValidationException"


def test_list_endpoints_filters(client):
    make_endpoint(client, "alpha")
    make_endpoint(client, "beta", model="m1")
    wait_for(lambda: endpoint_status(client, "beta") == "InService")
    make_endpoint(client, "gamma", model="m1")
    creating = client.sm("ListEndpoints", StatusEquals="Creating").json["Endpoints"]
    assert [e["EndpointName"] for e in creating] == ["gamma"]
    ascending = client.sm("ListEndpoints", SortBy="Name", SortOrder="Ascending").json["Endpoints"]
    assert [e["EndpointName"] for e in ascending] == ["alpha", "beta", "gamma"]
    assert set(ascending[0]) == {"EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime",
                                 "EndpointStatus"}


# --------------------------------------------------------------------------
# Application Auto Scaling
# --------------------------------------------------------------------------

DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def target(resource_id, **extra):
    return {"ServiceNamespace": "sagemaker", "ResourceId": resource_id,
            "ScalableDimension": DIMENSION, **extra}


def tracking_policy(name, resource_id, value=70.0):
    return {"PolicyName": name, **target(resource_id), "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": value, "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}}


def test_scalable_target_register_update_deregister(client):
    rid = "endpoint/ep1/variant/v1"
    reply = client.aas("RegisterScalableTarget", **target(rid))
    assert reply.code == "ValidationException"
    reply = client.aas("RegisterScalableTarget", **target(rid, MinCapacity=1, MaxCapacity=4))
    assert reply.json["ScalableTargetARN"].startswith(
        f"arn:aws:application-autoscaling:{REGION}:{ACCOUNT}:scalable-target/")
    client.aas("RegisterScalableTarget", **target(rid, MaxCapacity=8))
    (described,) = client.aas("DescribeScalableTargets", ServiceNamespace="sagemaker").json["ScalableTargets"]
    assert (described["MinCapacity"], described["MaxCapacity"]) == (1, 8)
    assert described["RoleARN"].endswith("AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint")

    assert client.aas("DeregisterScalableTarget", **target(rid)).json == {}
    reply = client.aas("DeregisterScalableTarget", **target(rid))
    assert (reply.code, reply.message) == (
        "ObjectNotFoundException",
        "No scalable target registered for service namespace: sagemaker, resource ID: "
        "endpoint/ep1/variant/v1, scalable dimension: sagemaker:variant:DesiredInstanceCount")
    reply = client.aas("RegisterScalableTarget", **target("table/x", MinCapacity=1, MaxCapacity=2))
    assert reply.message == "Unsupported service namespace, resource type or scalable dimension"


def test_scalable_target_tags(client):
    rid = "endpoint/ep1/variant/v1"
    made = client.aas("RegisterScalableTarget",
                      **target(rid, MinCapacity=1, MaxCapacity=2, Tags={"team": "ml"})).json
    reply = client.aas("ListTagsForResource", ResourceARN=made["ScalableTargetARN"])
    assert reply.json == {"Tags": {"team": "ml"}}
    other = client.aas("RegisterScalableTarget",
                       **target("endpoint/ep2/variant/v1", MinCapacity=1, MaxCapacity=2)).json
    assert client.aas("ListTagsForResource", ResourceARN=other["ScalableTargetARN"]).json == \
        {"Tags": {}}
    client.aas("DeregisterScalableTarget", **target(rid))
    reply = client.aas("ListTagsForResource", ResourceARN=made["ScalableTargetARN"])
    assert reply.code == "ResourceNotFoundException"


def test_describe_model_says_the_container_mode(client):
    make_endpoint(client)
    container = client.sm("DescribeModel", ModelName="m1").json["PrimaryContainer"]
    assert container["Mode"] == "SingleModel"
    client.sm("CreateModel", ModelName="multi", ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sm",
              PrimaryContainer={"Image": "123.dkr.ecr.us-east-1.amazonaws.com/llm:1",
                                "Mode": "MultiModel"})
    container = client.sm("DescribeModel", ModelName="multi").json["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"


def test_scaling_policies(client):
    rid = "endpoint/ep1/variant/v1"
    reply = client.aas("PutScalingPolicy", **tracking_policy("p1", rid))
    assert reply.code == "ObjectNotFoundException"
    client.aas("RegisterScalableTarget", **target(rid, MinCapacity=1, MaxCapacity=4))
    first = client.aas("PutScalingPolicy", **tracking_policy("p1", rid)).json
    assert re.fullmatch(rf"arn:aws:autoscaling:{REGION}:{ACCOUNT}:scalingPolicy:[0-9a-f-]{{36}}:"
                        rf"resource/sagemaker/{rid}:policyName/p1", first["PolicyARN"])
    assert len(first["Alarms"]) == 2
    again = client.aas("PutScalingPolicy", **tracking_policy("p1", rid, 90.0)).json
    assert again["PolicyARN"] == first["PolicyARN"]
    (policy,) = client.aas("DescribeScalingPolicies", ServiceNamespace="sagemaker").json["ScalingPolicies"]
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 90.0

    for i in range(24):
        client.aas("PutScalingPolicy", **tracking_policy(f"extra-{i:02d}", rid))
    pages, token = [], None
    while True:
        reply = client.aas("DescribeScalingPolicies", ServiceNamespace="sagemaker",
                           **({"NextToken": token} if token else {}))
        pages.append([p["PolicyName"] for p in reply.json["ScalingPolicies"]])
        token = reply.json.get("NextToken")
        if not token:
            break
    assert [len(p) for p in pages] == [10, 10, 5]
    filtered = client.aas("DescribeScalingPolicies", ServiceNamespace="sagemaker",
                          PolicyNames=["p1", "extra-03"]).json["ScalingPolicies"]
    assert sorted(p["PolicyName"] for p in filtered) == ["extra-03", "p1"]
    assert client.aas("DescribeScalingPolicies", ServiceNamespace="sagemaker",
                      NextToken="bogus").code == "InvalidNextTokenException"

    assert client.aas("DeleteScalingPolicy", PolicyName="p1", **target(rid)).status == 200
    reply = client.aas("DeleteScalingPolicy", PolicyName="p1", **target(rid))
    assert reply.code == "ObjectNotFoundException"
    client.aas("DeregisterScalableTarget", **target(rid))
    assert client.aas("DescribeScalingPolicies", ServiceNamespace="sagemaker").json["ScalingPolicies"] == []


def test_deleting_an_endpoint_deregisters_its_targets(fake, client):
    make_endpoint(client, "Scaled")
    wait_for(lambda: endpoint_status(client, "Scaled") == "InService")
    client.aas("RegisterScalableTarget", **target("endpoint/Scaled/variant/v1", MinCapacity=1, MaxCapacity=3))
    client.aas("RegisterScalableTarget", **target("endpoint/other/variant/v1", MinCapacity=1, MaxCapacity=3))
    client.aas("PutScalingPolicy", **tracking_policy("p", "endpoint/Scaled/variant/v1"))
    client.sm("DeleteEndpoint", EndpointName="Scaled")
    state = fake.control("GET", "/_fake/state")
    assert [t["ResourceId"] for t in state["scalable_targets"]] == ["endpoint/other/variant/v1"]
    assert state["scaling_policies"] == []


# --------------------------------------------------------------------------
# Faults, throttling, latency
# --------------------------------------------------------------------------

def test_throttle_fault_counts_and_filters_by_operation(fake, client):
    fake.control("POST", "/_fake/faults", [{"kind": "throttle", "count": 2, "op": "ListModels"}])
    assert client.sm("ListEndpoints").status == 200
    for _ in range(2):
        reply = client.sm("ListModels")
        assert (reply.status, reply.code, reply.message) == (400, "ThrottlingException", "Rate exceeded")
    assert client.sm("ListModels").status == 200
    assert [c["fault"] for c in fake.calls("ListModels")] == ["throttle", "throttle", None]


def test_status_and_429_faults(fake, client):
    fake.control("POST", "/_fake/faults", [{"kind": "status", "code": 503},
                                           {"kind": "status", "code": 500},
                                           {"kind": "http429"}])
    reply = client.sm("ListModels")
    assert (reply.status, reply.code) == (503, "ServiceUnavailable")
    reply = client.sm("ListModels")
    assert (reply.status, reply.code) == (500, "InternalFailure")
    reply = client.sm("ListModels")
    assert (reply.status, reply.code) == (429, "ThrottlingException")
    assert client.sm("ListModels").status == 200


def test_faults_do_not_fire_on_unauthenticated_calls(fake, client):
    fake.control("POST", "/_fake/faults", [{"kind": "status", "code": 500}])
    assert client.call(SAGEMAKER, "ListModels", secret="wrong").code == "InvalidSignatureException"
    assert client.sm("ListModels").status == 500


def test_slow_and_latency(fake, client):
    fake.control("POST", "/_fake/faults", [{"kind": "slow", "seconds": 0.3}])
    started = time.monotonic()
    assert client.sm("ListModels").status == 200
    assert time.monotonic() - started >= 0.3
    fake.control("POST", "/_fake/config", {"latency_ms": 100})
    started = time.monotonic()
    client.sm("ListModels")
    assert time.monotonic() - started >= 0.1


def test_drop_closes_the_connection_without_an_answer(fake, client):
    fake.control("POST", "/_fake/faults", [{"kind": "drop", "op": "CreateModel"}])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        client.sm("CreateModel", ModelName="dropped")
    assert fake.control("GET", "/_fake/state")["models"] == []
    call = fake.calls("CreateModel")[-1]
    assert (call["fault"], call["status"]) == ("drop", None)
    assert client.sm("ListModels").status == 200  # http.client reconnects

    fake.control("POST", "/_fake/faults", [{"kind": "drop", "after": True, "op": "CreateModel"}])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        client.sm("CreateModel", ModelName="dropped")
    assert [m["ModelName"] for m in fake.control("GET", "/_fake/state")["models"]] == ["dropped"]


def test_fail_after_performs_the_call_then_answers_500(fake, client):
    fake.control("POST", "/_fake/faults", [{"kind": "fail_after", "op": "CreateModel"}])
    reply = client.sm("CreateModel", ModelName="twice")
    assert (reply.status, reply.code) == (500, "InternalFailure")
    assert [m["ModelName"] for m in fake.control("GET", "/_fake/state")["models"]] == ["twice"]
    reply = client.sm("CreateModel", ModelName="twice")
    assert reply.message == f'Cannot create already existing model "{arn("model/twice")}".'


def test_hang_blocks_without_performing_until_released(fake):
    fake.control("POST", "/_fake/faults", [{"kind": "hang", "op": "CreateModel"}])
    hung = AwsClient(fake.port)
    outcome = {}

    def call():
        try:
            outcome["reply"] = hung.sm("CreateModel", ModelName="frozen")
        except Exception as exc:  # the connection is closed without an answer
            outcome["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    wait_for(lambda: any(c["fault"] == "hang" for c in fake.calls("CreateModel")))
    time.sleep(0.3)
    assert thread.is_alive()
    assert fake.control("GET", "/_fake/state")["models"] == []
    with AwsClientContext(fake.port) as other:
        assert other.sm("ListModels").status == 200  # other connections are served
    fake.control("POST", "/_fake/faults/clear")
    thread.join(timeout=5)
    assert not thread.is_alive() and "error" in outcome
    assert fake.control("GET", "/_fake/state")["models"] == []


def test_hang_ends_when_the_client_goes_away(fake):
    fake.control("POST", "/_fake/faults", [{"kind": "hang"}])
    hung = AwsClient(fake.port)
    thread = threading.Thread(target=lambda: pytest.raises(Exception, hung.sm, "ListModels"),
                              daemon=True)
    thread.start()
    wait_for(lambda: any(c["fault"] == "hang" for c in fake.calls("ListModels")))
    hung.conn.sock.shutdown(socket.SHUT_RDWR)
    thread.join(timeout=5)
    with AwsClientContext(fake.port) as other:
        assert other.sm("ListModels").status == 200


class AwsClientContext:
    def __init__(self, port, **kwargs):
        self.client = AwsClient(port, **kwargs)

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        self.client.close()


def test_rate_limit(fake, client):
    fake.control("POST", "/_fake/config", {"rate_limit_rps": 5})
    codes = [client.sm("ListModels").code for _ in range(20)]
    assert codes.count(None) >= 5 and codes.count("ThrottlingException") >= 10
    # The bucket is per service.
    assert client.aas("DescribeScalableTargets", ServiceNamespace="sagemaker").status == 200
    time.sleep(0.5)
    assert client.sm("ListModels").status == 200


def test_control_api_rejects_nonsense(fake):
    for path, doc in (("/_fake/faults", [{"kind": "explode"}]),
                      ("/_fake/faults", [{"kind": "throttle", "op": "NoSuchOp"}]),
                      ("/_fake/config", {"create_s": -1}),
                      ("/_fake/config", {"no_such_key": 1})):
        reply = fake.raw("POST", path, {"Content-Type": "application/json"}, json.dumps(doc))
        assert reply.status == 400 and "error" in reply.json
    assert fake.raw("GET", "/_fake/nothing").status == 404


# --------------------------------------------------------------------------
# Call log and state
# --------------------------------------------------------------------------

def test_calls_are_recorded_without_secrets(fake, client):
    client.sm("CreateModel", ModelName="rec")
    client.call(SAGEMAKER, "ListModels", secret="wrong")
    AwsClient(fake.port, TOKEN_KEY_ID, TOKEN_SECRET, TOKEN).sm("ListModels")
    calls = fake.calls()
    first = calls[0]
    assert set(first) >= {"seq", "time", "op", "service", "access_key", "status", "error", "body",
                          "signed_headers"}
    assert (first["op"], first["service"], first["access_key"], first["status"], first["error"]) == \
        ("CreateModel", "sagemaker", KEY_ID, 200, None)
    assert first["body"] == {"ModelName": "rec"}
    assert first["signed_headers"] == ["content-type", "host", "x-amz-date", "x-amz-target"]
    assert (calls[1]["status"], calls[1]["error"]) == (400, "InvalidSignatureException")
    assert [c["seq"] for c in calls] == sorted(c["seq"] for c in calls)
    dump = json.dumps([calls, fake.control("GET", "/_fake/state"), fake.control("GET", "/_fake/keys")])
    for secret in (SECRET, TOKEN_SECRET, TOKEN):
        assert secret not in dump
    fake.control("POST", "/_fake/calls/clear")
    assert fake.calls() == []


def test_state_shows_everything(fake, client):
    make_endpoint(client, "St")
    client.aas("RegisterScalableTarget", **target("endpoint/St/variant/v1", MinCapacity=1, MaxCapacity=2))
    state = fake.control("GET", "/_fake/state")
    assert [e["EndpointName"] for e in state["endpoints"]] == ["St"]
    assert state["endpoints"][0]["EndpointStatus"] == "Creating"
    assert [m["ModelName"] for m in state["models"]] == ["m1"]
    assert [c["EndpointConfigName"] for c in state["endpoint_configs"]] == ["St-cfg"]
    assert len(state["scalable_targets"]) == 1 and state["clusters"] == []


# --------------------------------------------------------------------------
# IMDS
# --------------------------------------------------------------------------

def imds_token(fake, ttl="60"):
    headers = {} if ttl is None else {"X-aws-ec2-metadata-token-ttl-seconds": ttl}
    return fake.raw("PUT", "/latest/api/token", headers)


def imds_get(fake, path, token):
    headers = {"X-aws-ec2-metadata-token": token} if token else {}
    return fake.raw("GET", "/latest/meta-data/iam/security-credentials/" + path, headers)


def test_imds_is_off_until_enabled(fake):
    assert imds_token(fake).status == 404


def test_imds_v2_credentials(fake):
    fake.control("POST", "/_fake/imds", {"role": "infrafs-node", "expires_in_s": 3600})
    assert imds_token(fake, ttl=None).status == 400
    assert imds_token(fake, ttl="0").status == 400
    assert imds_get(fake, "", None).status == 401
    assert imds_get(fake, "", "forged").status == 401
    token = imds_token(fake).raw.decode()
    assert imds_get(fake, "", token).raw == b"infrafs-node"
    assert imds_get(fake, "other-role", token).status == 404
    creds = json.loads(imds_get(fake, "infrafs-node", token).raw)
    assert (creds["Code"], creds["Type"]) == ("Success", "AWS-HMAC")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", creds["Expiration"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", creds["LastUpdated"])
    node = AwsClient(fake.port, creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"])
    assert node.sm("ListEndpoints").status == 200
    ops = [c["op"] for c in fake.calls() if c["service"] == "imds"]
    assert ops == ["IMDS:token", "IMDS:token", "IMDS:role", "IMDS:role", "IMDS:token", "IMDS:role",
                   "IMDS:credentials", "IMDS:credentials"]
    assert creds["SecretAccessKey"] not in json.dumps(fake.calls())


def test_imds_rotation_keeps_the_old_key_for_a_grace_period(fake):
    fake.control("POST", "/_fake/imds", {"role": "r", "rotate": True, "rotate_grace_s": 0.5})
    token = imds_token(fake).raw.decode()
    first = json.loads(imds_get(fake, "r", token).raw)
    second = json.loads(imds_get(fake, "r", token).raw)
    assert first["AccessKeyId"] != second["AccessKeyId"]
    old = AwsClient(fake.port, first["AccessKeyId"], first["SecretAccessKey"], first["Token"])
    new = AwsClient(fake.port, second["AccessKeyId"], second["SecretAccessKey"], second["Token"])
    assert old.sm("ListModels").status == 200 and new.sm("ListModels").status == 200
    time.sleep(0.6)
    assert old.sm("ListModels").code == "ExpiredTokenException"
    assert new.sm("ListModels").status == 200


def test_imds_credentials_expire(fake):
    fake.control("POST", "/_fake/imds", {"role": "r", "expires_in_s": 0.3})
    creds = json.loads(imds_get(fake, "r", imds_token(fake).raw.decode()).raw)
    node = AwsClient(fake.port, creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"])
    assert node.sm("ListModels").status == 200
    time.sleep(0.4)
    assert node.sm("ListModels").code == "ExpiredTokenException"


# --------------------------------------------------------------------------
# Process and performance
# --------------------------------------------------------------------------

def test_bad_command_line_is_refused(tmp_path):
    result = subprocess.run([sys.executable, str(FAKE), "--key", "no-secret"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "AKID:SECRET" in result.stderr
    result = subprocess.run([sys.executable, str(FAKE), "--eks", "bad/name"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "not an EKS cluster name" in result.stderr


def test_thousand_describes_at_64_way_concurrency(fake, client):
    fake.control("POST", "/_fake/config", {"create_s": 0})
    make_endpoint(client, "hot")
    fake.control("POST", "/_fake/config", {"latency_ms": 50})
    calls, workers, latency = 1000, 64, 0.05
    per_worker = [calls // workers + (1 if i < calls % workers else 0) for i in range(workers)]

    def run(count):
        c = AwsClient(fake.port)
        try:
            return [c.sm("DescribeEndpoint", EndpointName="hot").status for _ in range(count)]
        finally:
            c.close()

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        statuses = [s for batch in pool.map(run, per_worker) for s in batch]
    elapsed = time.monotonic() - started
    ideal = max(per_worker) * latency
    assert statuses == [200] * calls
    print(f"1000 DescribeEndpoint at 64-way: {elapsed:.2f}s (latency alone {ideal:.2f}s)")
    assert elapsed - ideal < 1.5


# --------------------------------------------------------------------------
# EKS DescribeCluster (restJson1)
# --------------------------------------------------------------------------

def eks_arn(name):
    return f"arn:aws:eks:{REGION}:{ACCOUNT}:cluster/{name}"


def make_eks(fake, name="ml"):
    return fake.control("POST", "/_fake/eks", {"name": name})["cluster"]


def eks_describe(fake, name, *, key_id=KEY_ID, secret=SECRET, service="eks", amz_date=None):
    """EKS DescribeCluster: a SigV4-signed GET /clusters/NAME."""
    path = f"/clusters/{name}"
    headers = {"host": f"127.0.0.1:{fake.port}", "x-amz-date": amz_date or amz_now()}
    headers["authorization"] = sigv4_authorization("GET", headers, b"", key_id, secret, REGION,
                                                   service, headers["x-amz-date"], path=path)
    return fake.raw("GET", path, headers)


def test_health_names_the_kubernetes_port(fake):
    health = fake.control("GET", "/_fake/health")
    assert health["ok"] is True and isinstance(health["kubernetes_port"], int)
    assert health["kubernetes_port"] != fake.port


def test_eks_describe_cluster(fake):
    made = make_eks(fake, "ml")
    assert make_eks(fake, "ml") == made  # idempotent
    reply = eks_describe(fake, "ml")
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"] == "application/json"
    cluster = reply.json["cluster"]
    assert cluster == made
    port = fake.control("GET", "/_fake/health")["kubernetes_port"]
    assert (cluster["name"], cluster["arn"], cluster["endpoint"]) == (
        "ml", eks_arn("ml"), f"https://127.0.0.1:{port}")
    assert (cluster["status"], cluster["version"], cluster["accessConfig"]) == (
        "ACTIVE", "1.31", {"authenticationMode": "API"})
    assert isinstance(cluster["createdAt"], (int, float))
    pem = base64.b64decode(cluster["certificateAuthority"]["data"]).decode()
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    call = fake.calls("DescribeCluster")[-1]
    assert (call["service"], call["status"], call["access_key"]) == ("eks", 200, KEY_ID)
    names = [c["name"] for c in fake.control("GET", "/_fake/eks")["clusters"]]
    assert names == [BOOT_EKS, "ml"]


def test_eks_unknown_cluster(fake):
    reply = eks_describe(fake, "nope")
    assert reply.status == 404
    assert reply.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert reply.json == {"clusterName": "nope", "message": "No cluster found for name: nope."}
    assert fake.calls("DescribeCluster")[-1]["error"] == "ResourceNotFoundException"


def test_eks_signature_errors_are_rest_shaped(fake):
    reply = eks_describe(fake, BOOT_EKS, secret="wrong")
    assert reply.status == 403
    assert reply.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
    assert reply.json["message"].startswith("The request signature we calculated does not match")
    assert set(reply.json) == {"message"}
    reply = eks_describe(fake, BOOT_EKS, service="sagemaker")
    assert (reply.status, reply.json) == (
        403, {"message": "Credential should be scoped to correct service: 'eks'. "})
    reply = eks_describe(fake, BOOT_EKS, key_id="AKIDUNKNOWN")
    assert (reply.status, reply.headers["x-amzn-ErrorType"]) == (403, "UnrecognizedClientException")
    assert fake.raw("GET", f"/clusters/{BOOT_EKS}").headers["x-amzn-ErrorType"] == \
        "MissingAuthenticationTokenException"
    fake.control("POST", "/_fake/config", {"qualified_error_types": True})
    reply = eks_describe(fake, BOOT_EKS, secret="wrong")
    assert reply.headers["x-amzn-ErrorType"] == \
        "InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/"


def test_eks_faults_and_other_routes(fake):
    fake.control("POST", "/_fake/faults", [{"kind": "status", "code": 503, "service": "eks"},
                                           {"kind": "throttle", "service": "eks"},
                                           {"kind": "fail_after", "service": "eks",
                                            "op": "DescribeCluster"}])
    reply = eks_describe(fake, BOOT_EKS)
    assert (reply.status, reply.headers["x-amzn-ErrorType"]) == (503, "ServiceUnavailable")
    reply = eks_describe(fake, BOOT_EKS)
    assert (reply.status, reply.json) == (429, {"message": "Rate exceeded"})
    reply = eks_describe(fake, BOOT_EKS)
    assert (reply.status, reply.headers["x-amzn-ErrorType"]) == (500, "InternalFailure")
    assert eks_describe(fake, BOOT_EKS).status == 200
    assert [c["fault"] for c in fake.calls("DescribeCluster")] == ["status", "throttle",
                                                                   "fail_after", None]
    reply = fake.raw("POST", "/clusters", {"Content-Type": "application/json"}, b"{}")
    assert (reply.status, reply.headers["x-amzn-ErrorType"]) == (404, "UnknownOperationException")


def test_eks_clusters_from_the_command_line_survive_reset(fake):
    make_eks(fake, "temporary")
    fake.control("POST", "/_fake/reset")
    assert [c["name"] for c in fake.control("GET", "/_fake/eks")["clusters"]] == [BOOT_EKS]
    assert fake.control("GET", "/_fake/state")["eks"][0]["from_cli"] is True
    with pytest.raises(AssertionError, match="400"):
        fake.control("POST", "/_fake/eks", {"name": "-bad"})


# --------------------------------------------------------------------------
# EKS tokens and the Kubernetes API
# --------------------------------------------------------------------------

def presigned_token(cluster, host, *, key_id=KEY_ID, secret=SECRET, token=None, region=REGION,
                    service="sts", age_s=0, expires=60, signed=("host", "x-k8s-aws-id"),
                    scheme="https", extra=None, signature=None):
    """What `aws eks get-token` makes: a GetCallerIdentity URL presigned with
    x-k8s-aws-id signed, as unpadded base64url behind "k8s-aws-v1."."""
    amz_date = amz_now(-age_s)
    params = {"Action": "GetCallerIdentity", "Version": "2011-06-15",
              "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
              "X-Amz-Credential": f"{key_id}/{amz_date[:8]}/{region}/{service}/aws4_request",
              "X-Amz-Date": amz_date, "X-Amz-Expires": str(expires),
              "X-Amz-SignedHeaders": ";".join(signed), **(extra or {})}
    if token is not None:
        params["X-Amz-Security-Token"] = token
    enc = lambda text: urllib.parse.quote(text, safe="-_.~")
    query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params.items()))
    values = {"host": host, "x-k8s-aws-id": cluster, "x-extra": "value"}
    canonical = "\n".join(["GET", "/", query, *[f"{h}:{values[h]}" for h in sorted(signed)], "",
                           ";".join(sorted(signed)), hashlib.sha256(b"").hexdigest()])
    sig = signature or sigv4_signature(canonical, secret, region, service, amz_date)[1]
    url = f"{scheme}://{host}/?{query}&X-Amz-Signature={sig}"
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


STS_HOST = f"sts.{REGION}.amazonaws.com"
UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
POOLS = "/apis/karpenter.sh/v1/nodepools"
CLASSES = "/apis/karpenter.sagemaker.amazonaws.com/v1/hyperpodnodeclasses"
APPLY = "?fieldManager=infrafs&force=true"


class KubeClient:
    """HTTPS to the fake's Kubernetes API, trusting only the CA EKS hands
    out, with host name checks on (as the C client does)."""

    def __init__(self, fake, cluster, **token_options):
        described = eks_describe(fake, cluster).json["cluster"]
        pem = base64.b64decode(described["certificateAuthority"]["data"]).decode()
        self.context = ssl.create_default_context(cadata=pem)
        self.port = int(described["endpoint"].rsplit(":", 1)[1])
        self.cluster, self.token_options = cluster, token_options

    def token(self, **options):
        return presigned_token(self.cluster, STS_HOST, **{**self.token_options, **options})

    def request(self, method, path, doc=None, *, body=None, token=None,
                content_type="application/apply-patch+yaml", authorization=None):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                           context=self.context)
        try:
            headers = {"Authorization": authorization or f"Bearer {token or self.token()}",
                       "Accept": "application/json"}
            if doc is not None or body is not None:
                body = json.dumps(doc).encode() if body is None else body
                headers["Content-Type"] = content_type
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def apply(self, path, doc, query=APPLY, **options):
        return self.request("PATCH", path + query, doc, **options)


def node_class(name, groups=("workers",)):
    return {"apiVersion": "karpenter.sagemaker.amazonaws.com/v1", "kind": "HyperpodNodeClass",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "infrafs"}},
            "spec": {"instanceGroups": list(groups)}}


def node_pool(name, node_class_name=None, limits=None):
    spec = {"template": {"spec": {
        "nodeClassRef": {"group": "karpenter.sagemaker.amazonaws.com",
                         "kind": "HyperpodNodeClass", "name": node_class_name or name},
        "expireAfter": "Never",
        "requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "Exists"}]}}}
    if limits is not None:
        spec["limits"] = limits
    return {"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": name},
            "spec": spec}


@pytest.fixture
def kube(fake):
    make_eks(fake, "ml")
    return KubeClient(fake, "ml")


def test_kubernetes_certificate_is_for_127_0_0_1_and_localhost(kube):
    with socket.create_connection(("127.0.0.1", kube.port), timeout=10) as raw:
        with kube.context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            names = tls.getpeercert()["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in names and ("DNS", "localhost") in names


def test_good_tokens_are_accepted(fake, kube):
    reply = kube.request("GET", f"{POOLS}/none")
    assert reply.status == 404 and reply.json["reason"] == "NotFound"
    call = fake.calls()[-1]
    assert (call["service"], call["op"], call["status"], call["eks_cluster"], call["access_key"]) \
        == ("kubernetes", "GET nodepools/none", 404, "ml", KEY_ID)
    assert reply.headers["Audit-Id"] == call["request_id"]
    with_token = {"key_id": TOKEN_KEY_ID, "secret": TOKEN_SECRET, "token": TOKEN}
    assert kube.request("GET", POOLS, token=kube.token(**with_token)).status == 200
    # The provider signs for its STS endpoint override: the fake itself.
    own = presigned_token("ml", f"127.0.0.1:{fake.port}", scheme="http")
    assert kube.request("GET", POOLS, token=own).status == 200
    global_sts = presigned_token("ml", "sts.amazonaws.com")
    assert kube.request("GET", POOLS, token=global_sts).status == 200
    # One socket serves every cluster; the token says which.
    assert kube.request("GET", POOLS, token=presigned_token(BOOT_EKS, STS_HOST)).status == 200
    assert fake.calls()[-1]["eks_cluster"] == BOOT_EKS


# Token options, and what the call log says about the refusal.
BAD_TOKENS = {
    "wrong key": (dict(key_id="AKIDUNKNOWN"), "unknown access key"),
    "wrong secret": (dict(secret="not-the-secret"), "matches no known EKS cluster"),
    "bad signature": (dict(signature="0" * 64), "matches no known EKS cluster"),
    "expired": (dict(age_s=120, expires=60), "the token expired at"),
    "from the future": (dict(age_s=-600), "in the future"),
    "expires too long": (dict(expires=901), "X-Amz-Expires '901' is not between 1 and 900"),
    "expires zero": (dict(expires=0), "X-Amz-Expires '0' is not between 1 and 900"),
    "x-k8s-aws-id not signed": (dict(signed=("host",)), "the signed headers are ['host']"),
    "another header signed": (dict(signed=("host", "x-k8s-aws-id", "x-extra")),
                              "the signed headers are"),
    "service scope": (dict(service="eks"), "scoped to eks/aws4_request, not sts"),
    "region scope": (dict(region="eu-west-1"), "scoped to region eu-west-1"),
    "session token missing": (dict(key_id=TOKEN_KEY_ID, secret=TOKEN_SECRET), "session token"),
    "session token wrong": (dict(key_id=TOKEN_KEY_ID, secret=TOKEN_SECRET, token="other"),
                            "session token"),
    "session token unexpected": (dict(token="unexpected"), "session token"),
    "extra parameter": (dict(extra={"X-Amz-User-Agent": "x"}), "unexpected query parameter"),
    "plain http to STS": (dict(scheme="http"), "not 'https'"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused(fake, kube, case):
    options, detail = BAD_TOKENS[case]
    fake.control("POST", "/_fake/calls/clear")
    token = kube.token(**options)
    reply = kube.request("GET", POOLS, token=token)
    assert (reply.status, reply.json) == (401, UNAUTHORIZED)
    assert reply.headers["Content-Type"] == "application/json"
    (call,) = fake.calls()
    assert (call["status"], call["error"], call["eks_cluster"]) == (401, "Unauthorized", None)
    assert detail in call["detail"]
    assert token[len("k8s-aws-v1."):] not in json.dumps(call) and SECRET not in call["detail"]


def test_malformed_tokens_are_refused(fake, kube):
    cases = {
        "unknown cluster": presigned_token("not-a-cluster", STS_HOST),
        "other host": presigned_token("ml", "sts.example.com"),
        "no prefix": presigned_token("ml", STS_HOST)[len("k8s-aws-v1."):],
        "padded": presigned_token("ml", STS_HOST) + "==",
        "not base64": "k8s-aws-v1.@@@",
    }
    for case, token in cases.items():
        reply = kube.request("GET", POOLS, token=token)
        assert (reply.status, reply.json) == (401, UNAUTHORIZED), case
    for authorization in ("Basic abc", "Bearer"):
        assert kube.request("GET", POOLS, authorization=authorization).status == 401
    details = [c["detail"] for c in fake.calls() if c["service"] == "kubernetes"]
    assert "matches no known EKS cluster" in details[0]
    assert "not an STS endpoint" in details[1]


def test_apply_get_list_delete(fake, kube):
    reply = kube.apply(f"{CLASSES}/pool-a", node_class("pool-a"))
    assert reply.status == 201, reply
    made = reply.json
    meta = made["metadata"]
    assert (made["apiVersion"], made["kind"]) == ("karpenter.sagemaker.amazonaws.com/v1",
                                                  "HyperpodNodeClass")
    assert made["spec"] == {"instanceGroups": ["workers"]}
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"]) and meta["generation"] == 1
    assert isinstance(meta["resourceVersion"], str)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "infrafs"}
    assert meta["managedFields"][0]["manager"] == "infrafs"
    assert reply.headers["Content-Type"] == "application/json"

    again = kube.apply(f"{CLASSES}/pool-a", node_class("pool-a"))
    assert again.status == 200
    assert again.json["metadata"]["resourceVersion"] == meta["resourceVersion"]
    changed = kube.apply(f"{CLASSES}/pool-a", node_class("pool-a", ["workers", "spare"])).json
    assert changed["metadata"]["generation"] == 2
    assert int(changed["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert changed["metadata"]["uid"] == meta["uid"]

    got = kube.request("GET", f"{CLASSES}/pool-a")
    assert got.status == 200 and got.json["spec"] == {"instanceGroups": ["workers", "spare"]}
    listed = kube.request("GET", CLASSES).json
    assert listed["kind"] == "HyperpodNodeClassList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["pool-a"]
    # Objects are kept per EKS cluster.
    other = kube.request("GET", CLASSES, token=presigned_token(BOOT_EKS, STS_HOST)).json
    assert other["items"] == []

    deleted = kube.request("DELETE", f"{CLASSES}/pool-a")
    assert deleted.status == 200 and deleted.json["metadata"]["uid"] == meta["uid"]
    for method in ("GET", "DELETE"):
        reply = kube.request(method, f"{CLASSES}/pool-a")
        assert (reply.status, reply.json) == (404, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'hyperpodnodeclasses.karpenter.sagemaker.amazonaws.com "pool-a" not found',
            "reason": "NotFound", "details": {"name": "pool-a",
                                              "group": "karpenter.sagemaker.amazonaws.com",
                                              "kind": "hyperpodnodeclasses"}, "code": 404})
    reply = kube.request("GET", f"{POOLS}/gone")
    assert reply.json["message"] == 'nodepools.karpenter.sh "gone" not found'
    assert reply.json["details"] == {"name": "gone", "group": "karpenter.sh", "kind": "nodepools"}
    ops = [c["op"] for c in fake.calls() if c["service"] == "kubernetes"]
    assert ops[:2] == ["PATCH hyperpodnodeclasses/pool-a"] * 2


def test_apply_is_refused_when_malformed(kube):
    path = f"{POOLS}/p"
    reply = kube.apply(path, node_pool("p"), content_type="application/merge-patch+json")
    assert (reply.status, reply.json["reason"]) == (415, "UnsupportedMediaType")
    reply = kube.apply(path, node_pool("p"), content_type="application/json")
    assert (reply.status, reply.json["reason"]) == (415, "UnsupportedMediaType")
    assert reply.json["message"].startswith("the body of the request was in an unknown format")

    reply = kube.apply(path, node_pool("p"), query="")
    assert (reply.status, reply.json["reason"], reply.json["message"]) == (
        422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                        "is required for apply patch")
    reply = kube.apply(path, None, body=b"apiVersion: karpenter.sh/v1\nkind: NodePool\n")
    assert (reply.status, reply.json["reason"]) == (400, "BadRequest")
    assert reply.json["message"].startswith("error decoding YAML")
    reply = kube.apply(path, {**node_pool("p"), "apiVersion": "karpenter.sh/v1beta1"})
    assert (reply.status, reply.json["message"]) == (400, "Incorrect version specified in apply "
                                                          "patch. Specified patch version: "
                                                          "karpenter.sh/v1beta1, expected: "
                                                          "karpenter.sh/v1")
    reply = kube.apply(path, {**node_pool("p"), "kind": "NodeClaim"})
    assert (reply.status, reply.json["reason"]) == (400, "BadRequest")
    reply = kube.apply(path, node_pool("q"))
    assert (reply.status, reply.json["message"]) == (
        400, "the name of the object (q) does not match the name on the URL (p)")

    no_ref = node_pool("p")
    del no_ref["spec"]["template"]["spec"]["nodeClassRef"]
    reply = kube.apply(path, no_ref)
    assert (reply.status, reply.json["reason"], reply.json["message"]) == (
        422, "Invalid", 'NodePool.karpenter.sh "p" is invalid: spec.template.spec.nodeClassRef: '
                        "Required value")
    assert reply.json["details"]["causes"] == [{"reason": "FieldValueRequired",
                                                "message": "Required value",
                                                "field": "spec.template.spec.nodeClassRef"}]
    wrong_group = node_pool("p")
    wrong_group["spec"]["template"]["spec"]["nodeClassRef"]["group"] = "karpenter.k8s.aws"
    reply = kube.apply(path, wrong_group)
    assert reply.status == 422
    assert "spec.template.spec.nodeClassRef.group: Unsupported value" in reply.json["message"]
    reply = kube.apply(path, node_pool("p", limits={"nvidia.com/gpu": "16Gi", "nodes": -1}))
    assert reply.status == 422
    assert [c["field"] for c in reply.json["details"]["causes"]] == [
        "spec.limits[nvidia.com/gpu]", "spec.limits[nodes]"]
    assert kube.apply(path, node_pool("p", limits={"nodes": 4, "nvidia.com/gpu": "16"})).status \
        == 201

    for groups in ([], [f"g{i}" for i in range(11)], ["ok", 7]):
        reply = kube.apply(f"{CLASSES}/c", node_class("c", groups))
        assert (reply.status, reply.json["reason"]) == (422, "Invalid"), groups
        assert "spec.instanceGroups" in reply.json["message"]
    reply = kube.apply(f"{CLASSES}/Upper", node_class("Upper"))
    assert reply.status == 422 and "metadata.name" in reply.json["message"]

    for method, target in (("PUT", f"{POOLS}/p"), ("POST", POOLS), ("DELETE", POOLS)):
        reply = kube.request(method, target, node_pool("p"))
        assert (reply.status, reply.json["reason"]) == (405, "MethodNotAllowed"), method
    reply = kube.request("GET", "/api/v1/namespaces")
    assert (reply.status, reply.json["reason"]) == (404, "NotFound")


def test_apply_conflicts_between_field_managers(kube):
    assert kube.apply(f"{POOLS}/p", node_pool("p", limits={"nodes": 2})).status == 201
    reply = kube.apply(f"{POOLS}/p", node_pool("p", limits={"nodes": 3}),
                       query="?fieldManager=someone-else")
    assert (reply.status, reply.json["reason"]) == (409, "Conflict")
    assert reply.json["message"] == ('Apply failed with 1 conflict: conflict with "infrafs" '
                                     "using karpenter.sh/v1: .spec.limits")
    reply = kube.apply(f"{POOLS}/p", node_pool("p", limits={"nodes": 3}),
                       query="?fieldManager=someone-else&force=true")
    assert reply.status == 200 and reply.json["spec"]["limits"] == {"nodes": 3}


def test_kubernetes_faults(fake, kube):
    fake.control("POST", "/_fake/faults", [
        {"kind": "status", "code": 500, "service": "kubernetes"},
        {"kind": "http429", "service": "kubernetes", "op": "PATCH nodepools/p"},
        {"kind": "status", "code": 503, "service": "kubernetes"}])
    reply = kube.request("GET", POOLS, token=kube.token(secret="wrong"))
    assert reply.status == 401  # refused calls do not eat faults
    reply = kube.request("GET", POOLS)
    assert (reply.status, reply.json["kind"], reply.json["reason"]) == (500, "Status",
                                                                        "InternalError")
    reply = kube.apply(f"{POOLS}/p", node_pool("p"))
    assert (reply.status, reply.json["reason"], reply.headers["Retry-After"]) == (
        429, "TooManyRequests", "1")
    reply = kube.request("GET", POOLS)
    assert (reply.status, reply.json["reason"]) == (503, "ServiceUnavailable")
    assert kube.apply(f"{POOLS}/p", node_pool("p")).status == 201
    faults = [c["fault"] for c in fake.calls() if c["service"] == "kubernetes"]
    assert faults == [None, "status", "http429", "status", None]


def test_kubernetes_calls_can_be_dropped_or_held(fake, kube):
    fake.control("POST", "/_fake/faults", [{"kind": "drop", "service": "kubernetes"},
                                           {"kind": "hang", "service": "kubernetes"}])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        kube.request("GET", POOLS)
    outcome = {}

    def held():
        try:
            kube.request("GET", POOLS)
        except (http.client.RemoteDisconnected, ConnectionError) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=held)
    thread.start()
    wait_for(lambda: fake.calls()[-1]["fault"] == "hang")
    assert thread.is_alive() and fake.calls()[-1]["status"] is None
    fake.control("POST", "/_fake/faults/clear")
    thread.join(10)
    assert "error" in outcome and kube.request("GET", POOLS).status == 200


# --------------------------------------------------------------------------
# HyperPod autoscaling and the fake Karpenter
# --------------------------------------------------------------------------

ROLE = f"arn:aws:iam::{ACCOUNT}:role/hyperpod"
CLUSTER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/hyperpod-autoscaling"


def group_spec(name="workers", instance_type="ml.g5.12xlarge", count=0):
    return {"InstanceGroupName": name, "InstanceType": instance_type, "InstanceCount": count,
            "ExecutionRole": ROLE,
            "LifeCycleConfig": {"SourceS3Uri": "s3://bucket/lifecycle", "OnCreate": "on_create.sh"}}


def autoscaled_cluster(eks="ml", autoscaling="Enable", groups=None, **extra):
    doc = {"ClusterName": f"hp-{eks}", "InstanceGroups": groups or [group_spec()],
           "Orchestrator": {"Eks": {"ClusterArn": eks_arn(eks)}},
           "NodeProvisioningMode": "Continuous", "NodeRecovery": "Automatic",
           "ClusterRole": CLUSTER_ROLE, "AutoScaling": {"Mode": autoscaling,
                                                        "AutoScalerType": "Karpenter"}}
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not None}


def cluster_doc(client, name="hp-ml"):
    return client.sm("DescribeCluster", ClusterName=name).json


def counts(client, name="hp-ml"):
    """(TargetCount, CurrentCount) by instance group."""
    return {g["InstanceGroupName"]: (g["TargetCount"], g["CurrentCount"])
            for g in cluster_doc(client, name)["InstanceGroups"]}


def in_service(client, name="hp-ml"):
    wait_for(lambda: cluster_doc(client, name)["ClusterStatus"] == "InService")


def demand(fake, nodes, eks="ml"):
    return fake.control("POST", "/_fake/karpenter", {"eks": eks, "demand_nodes": nodes})


def test_cluster_shows_orchestration_and_autoscaling(fake, client):
    make_eks(fake, "ml")
    assert client.sm("CreateCluster", **autoscaled_cluster()).status == 200
    described = cluster_doc(client)
    assert described["Orchestrator"] == {"Eks": {"ClusterArn": eks_arn("ml")}}
    assert (described["NodeProvisioningMode"], described["NodeRecovery"],
            described["ClusterRole"]) == ("Continuous", "Automatic", CLUSTER_ROLE)
    assert described["AutoScaling"] == {"Mode": "Enable", "AutoScalerType": "Karpenter",
                                        "Status": "Creating"}
    in_service(client)
    assert cluster_doc(client)["AutoScaling"]["Status"] == "InService"
    assert fake.control("GET", "/_fake/state")["clusters"][0]["AutoScaling"]["Mode"] == "Enable"


CREATE_RULES = {
    "no orchestrator": (dict(Orchestrator=None), "AutoScaling can be enabled only for a "
                                                 "cluster orchestrated by Amazon EKS."),
    "not continuous": (dict(NodeProvisioningMode=None),
                       "AutoScaling requires NodeProvisioningMode to be Continuous."),
    "no cluster role": (dict(ClusterRole=None),
                        "ClusterRole is required when AutoScaling is enabled."),
    "unknown eks": (dict(Orchestrator={"Eks": {"ClusterArn": eks_arn("ghost")}}),
                    f"The Amazon EKS cluster '{eks_arn('ghost')}' does not exist."),
    "other account": (dict(Orchestrator={"Eks": {"ClusterArn":
                                                 f"arn:aws:eks:{REGION}:111122223333:cluster/ml"}}),
                      "The Amazon EKS cluster 'arn:aws:eks:us-east-1:111122223333:cluster/ml' "
                      "must be in the same account and Region as the SageMaker HyperPod cluster."),
    "other region": (dict(Orchestrator={"Eks": {"ClusterArn":
                                                f"arn:aws:eks:eu-west-1:{ACCOUNT}:cluster/ml"}}),
                     f"The Amazon EKS cluster 'arn:aws:eks:eu-west-1:{ACCOUNT}:cluster/ml' must "
                     "be in the same account and Region as the SageMaker HyperPod cluster."),
}


@pytest.mark.parametrize("case", sorted(CREATE_RULES))
def test_create_cluster_autoscaling_rules(fake, client, case):
    make_eks(fake, "ml")
    changes, message = CREATE_RULES[case]
    reply = client.sm("CreateCluster", **autoscaled_cluster(**changes))
    assert (reply.status, reply.code, reply.message) == (400, "ValidationException", message)
    assert fake.control("GET", "/_fake/state")["clusters"] == []


def test_one_hyperpod_cluster_per_eks_cluster(fake, client):
    make_eks(fake, "ml")
    assert client.sm("CreateCluster", **autoscaled_cluster()).status == 200
    reply = client.sm("CreateCluster", **autoscaled_cluster(ClusterName="second"))
    assert reply.code == "ValidationException"
    assert "is already associated with the SageMaker HyperPod cluster" in reply.message
    # Autoscaling off and no orchestrator at all are fine.
    plain = autoscaled_cluster(ClusterName="plain", Orchestrator=None, AutoScaling=None)
    assert client.sm("CreateCluster", **plain).status == 200


def test_update_cluster_autoscaling_rules(fake, client):
    make_eks(fake, "ml")
    make_eks(fake, "other")
    client.sm("CreateCluster", **autoscaled_cluster())
    in_service(client)
    reply = client.sm("UpdateCluster", ClusterName="hp-ml",
                      Orchestrator={"Eks": {"ClusterArn": eks_arn("other")}})
    assert reply.message == f"The Orchestrator of cluster '{cluster_doc(client)['ClusterArn']}' " \
                            "cannot be changed."
    reply = client.sm("UpdateCluster", ClusterName="hp-ml", ClusterRole=ROLE)
    assert (reply.code, reply.message) == (
        "ValidationException", "ClusterRole cannot be updated while autoscaling is enabled.")
    same = client.sm("UpdateCluster", ClusterName="hp-ml", ClusterRole=CLUSTER_ROLE,
                     Orchestrator={"Eks": {"ClusterArn": eks_arn("ml")}})
    assert same.status == 200
    in_service(client)
    # Switched off, the role may change; Slurm clusters cannot gain EKS.
    assert client.sm("UpdateCluster", ClusterName="hp-ml", ClusterRole=ROLE,
                     AutoScaling={"Mode": "Disable"}).status == 200
    in_service(client)
    assert cluster_doc(client)["AutoScaling"] == {"Mode": "Disable", "AutoScalerType": "Karpenter",
                                                  "Status": "InService"}
    client.sm("CreateCluster", ClusterName="slurm", InstanceGroups=[group_spec(count=1)])
    in_service(client, "slurm")
    reply = client.sm("UpdateCluster", ClusterName="slurm", AutoScaling={"Mode": "Enable"},
                      NodeProvisioningMode="Continuous", ClusterRole=CLUSTER_ROLE)
    assert reply.message == "AutoScaling can be enabled only for a cluster orchestrated by " \
                            "Amazon EKS."
    reply = client.sm("UpdateCluster", ClusterName="slurm",
                      Orchestrator={"Eks": {"ClusterArn": eks_arn("other")}})
    assert reply.code == "ValidationException" and "cannot be changed" in reply.message


def setup_karpenter(fake, client, kube, groups=None, pools=None):
    """An autoscaled HyperPod cluster on EKS cluster "ml" with node classes
    and pools; `pools` maps a pool to (node class groups, limits)."""
    client.sm("CreateCluster", **autoscaled_cluster(groups=groups))
    in_service(client)
    for pool, (class_groups, limits) in (pools or {"pool": (["workers"], None)}).items():
        assert kube.apply(f"{CLASSES}/{pool}", node_class(pool, class_groups)).status == 201
        assert kube.apply(f"{POOLS}/{pool}", node_pool(pool, limits=limits)).status == 201


def test_status_conditions_follow_the_hyperpod_cluster(fake, client, kube):
    reply = kube.apply(f"{POOLS}/pool", node_pool("pool"))
    conditions = {c["type"]: c for c in reply.json["status"]["conditions"]}
    assert (conditions["Ready"]["status"], conditions["NodeClassReady"]["reason"]) == (
        "False", "NodeClassNotFound")
    reply = kube.apply(f"{CLASSES}/pool", node_class("pool"))
    (ready,) = reply.json["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False",
                                                                 "HyperPodClusterNotFound")
    assert set(ready) == {"type", "status", "reason", "message", "lastTransitionTime",
                          "observedGeneration"}
    client.sm("CreateCluster", **autoscaled_cluster(groups=[group_spec("other")]))
    ready = kube.request("GET", f"{CLASSES}/pool").json["status"]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InstanceGroupsNotFound")
    assert "workers" in ready["message"]
    in_service(client)
    client.sm("UpdateCluster", ClusterName="hp-ml", InstanceGroups=[group_spec("workers")])
    ready = kube.request("GET", f"{CLASSES}/pool").json["status"]["conditions"][0]
    assert (ready["status"], ready["reason"], ready["message"]) == ("True", "Ready", "")
    pool = kube.request("GET", f"{POOLS}/pool").json["status"]["conditions"]
    assert [(c["type"], c["status"]) for c in pool] == [
        ("ValidationSucceeded", "True"), ("NodeClassReady", "True"), ("Ready", "True")]


def test_karpenter_scales_within_the_gpu_limit(fake, client, kube):
    # ml.g5.12xlarge has 4 GPUs: 16 GPUs are 4 nodes.
    setup_karpenter(fake, client, kube, pools={"pool": (["workers"], {"nvidia.com/gpu": "16"})})
    assert counts(client) == {"workers": (0, 0)}
    view = demand(fake, 10)["clusters"]["ml"]
    assert (view["demand_nodes"], view["pending_nodes"], view["groups"]) == (10, 6, {"workers": 4})
    assert view["placements"] == [{"nodepool": "pool", "instance_group": "workers", "nodes": 4}]
    assert counts(client) == {"workers": (4, 4)}
    assert cluster_doc(client)["ClusterStatus"] == "InService"
    demand(fake, 2)
    assert counts(client) == {"workers": (2, 2)}
    # InstanceCount sent while Karpenter scales is kept but does not count.
    client.sm("UpdateCluster", ClusterName="hp-ml", InstanceGroups=[group_spec(count=7)])
    assert counts(client) == {"workers": (2, 2)}
    in_service(client)
    assert counts(client) == {"workers": (2, 2)}
    # A new limit takes effect at once.
    kube.apply(f"{POOLS}/pool", node_pool("pool", limits={"nvidia.com/gpu": 4}))
    assert counts(client) == {"workers": (1, 1)}
    demand(fake, 0)
    assert counts(client) == {"workers": (0, 0)}
    assert fake.control("GET", "/_fake/state")["karpenter"]["ml"]["demand_nodes"] == 0


def test_karpenter_node_limits_pools_and_groups_in_order(fake, client, kube):
    groups = [group_spec("a", "ml.p5.48xlarge"), group_spec("b", "ml.g5.xlarge"),
              group_spec("c", "ml.trn1.32xlarge"), group_spec("d", "ml.c5.xlarge")]
    pools = {"first": (["a", "b"], {"nodes": "3"}),
             "second": (["c"], {"aws.amazon.com/neuron": 32}),
             "third": (["d"], {"nvidia.com/gpu": 0})}
    setup_karpenter(fake, client, kube, groups=groups, pools=pools)
    demand(fake, 2)
    assert counts(client) == {"a": (2, 2), "b": (0, 0), "c": (0, 0), "d": (0, 0)}
    demand(fake, 5)  # "first" allows 3 nodes across its groups, "second" 2 Neuron nodes
    assert counts(client) == {"a": (3, 3), "b": (0, 0), "c": (2, 2), "d": (0, 0)}
    demand(fake, 9)  # "third" limits GPUs only, and c5 nodes have none
    assert counts(client) == {"a": (3, 3), "b": (0, 0), "c": (2, 2), "d": (4, 4)}


def test_karpenter_needs_ready_pools_and_enabled_autoscaling(fake, client, kube):
    setup_karpenter(fake, client, kube, pools={"pool": (["workers"], None)})
    demand(fake, 3)
    assert counts(client) == {"workers": (3, 3)}
    # A pool whose node class names a missing group is not Ready: no nodes.
    kube.apply(f"{CLASSES}/pool", node_class("pool", ["workers", "missing"]))
    assert counts(client) == {"workers": (0, 0)}
    kube.apply(f"{CLASSES}/pool", node_class("pool"))
    assert counts(client) == {"workers": (3, 3)}
    # A deleted NodePool leaves its groups at zero.
    assert kube.request("DELETE", f"{POOLS}/pool").status == 200
    assert counts(client) == {"workers": (0, 0)}
    kube.apply(f"{POOLS}/pool", node_pool("pool"))
    assert counts(client) == {"workers": (3, 3)}


def test_disabling_autoscaling_returns_groups_to_their_instance_count(fake, client, kube):
    setup_karpenter(fake, client, kube)
    demand(fake, 5)
    assert counts(client) == {"workers": (5, 5)}
    client.sm("UpdateCluster", ClusterName="hp-ml", AutoScaling={"Mode": "Disable"},
              InstanceGroups=[group_spec(count=2)])
    (group,) = cluster_doc(client)["InstanceGroups"]
    assert (group["CurrentCount"], group["TargetCount"], group["Status"]) == (5, 2, "Updating")
    in_service(client)
    assert counts(client) == {"workers": (2, 2)}
    demand(fake, 8)
    assert counts(client) == {"workers": (2, 2)}
    assert demand(fake, 8)["clusters"]["ml"]["autoscaling"] is False
    # Switched off without naming the group, it goes back to its InstanceCount too.
    client.sm("UpdateCluster", ClusterName="hp-ml", AutoScaling={"Mode": "Enable"})
    assert counts(client) == {"workers": (8, 8)}
    in_service(client)
    client.sm("UpdateCluster", ClusterName="hp-ml", AutoScaling={"Mode": "Disable"})
    assert counts(client)["workers"] == (2, 8)
    in_service(client)
    assert counts(client) == {"workers": (2, 2)}


def test_reset_forgets_kubernetes_objects_and_demand(fake, client, kube):
    setup_karpenter(fake, client, kube)
    demand(fake, 1)
    state = fake.control("GET", "/_fake/state")
    assert list(state["kubernetes"]["ml"]["nodepools"]) == ["pool"]
    assert state["kubernetes"]["ml"]["nodepools"]["pool"]["kind"] == "NodePool"
    assert state["karpenter"]["ml"]["groups"] == {"workers": 1}
    fake.control("POST", "/_fake/reset")
    state = fake.control("GET", "/_fake/state")
    assert state["kubernetes"] == {} and state["clusters"] == []
    assert state["karpenter"] == {BOOT_EKS: {"demand_nodes": 0, "pending_nodes": 0,
                                             "hyperpod_cluster": None, "autoscaling": False,
                                             "groups": {}, "placements": []}}
    with pytest.raises(AssertionError, match="400"):
        demand(fake, 1)  # "ml" came from the control API and is gone
