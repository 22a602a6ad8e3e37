#!/usr/bin/env python3
"""Loopback fake of the SageMaker and Application Auto Scaling JSON APIs.

The infrafs AWS provider speaks awsJson1_1 signed with SigV4.  This server
imitates the part of both services the provider uses, closely enough that the
provider's signing, error handling, retries and credential refresh can be
exercised without reaching AWS:

* every call is authenticated by a real SigV4 verifier (keys from the command
  line or the control API, optional session tokens, a 15 minute clock window);
* inputs are validated generically against the botocore service models in
  tests/data/aws, with Coral-style ValidationException messages;
* resources follow timed lifecycles (Creating -> InService -> ...) computed
  lazily from timestamps, so thousands of them cost nothing;
* a control API under /_fake/ (plain, unsigned HTTP) injects faults, latency
  and throttling, rotates keys, and exposes every call and the whole state;
* an IMDSv2 imitation under /latest/ hands out (optionally rotating) keys.

README.md next to this file documents the control API and where each error
wording comes from.  Only the standard library is used.
"""

import argparse
import base64
import binascii
import dataclasses
import datetime
import email.utils
import functools
import hashlib
import hmac
import http
import json
import math
import os
import random
import re
import select
import signal
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[1] / "data" / "aws"
MODEL_FILES = ("sagemaker.subset.json", "application-autoscaling.subset.json")

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_BODY_BYTES = 16 * 1024 * 1024
SIGNATURE_WINDOW_S = 15 * 60
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# SageMaker: at most 50 tags on one resource (TagList's max).
MAX_TAGS = 50
# Coral stops collecting constraint violations after ten.
MAX_VALIDATION_ERRORS = 10

_rng = random.SystemRandom()


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

# Coral, the framework behind both services, reports its own errors with a
# namespaced __type; modeled service errors carry the bare name.  The fake
# sends bare names unless `qualified_error_types` is set, so a client can be
# tested against both spellings (the protocol says to strip the prefix).
CORAL_NAMESPACES = {
    "MissingAuthenticationTokenException": "com.amazon.coral.service",
    "IncompleteSignatureException": "com.amazon.coral.service",
    "InvalidSignatureException": "com.amazon.coral.service",
    "UnrecognizedClientException": "com.amazon.coral.service",
    "ExpiredTokenException": "com.amazon.coral.service",
    "UnknownOperationException": "com.amazon.coral.service",
    "SerializationException": "com.amazon.coral.service",
    "InternalFailure": "com.amazon.coral.service",
    "ValidationException": "com.amazon.coral.validate",
    "ThrottlingException": "com.amazon.coral.availability",
    "ServiceUnavailable": "com.amazon.coral.availability",
}


class AwsError(Exception):
    """An error answered to an AWS call as `{"__type": ..., "message": ...}`."""

    def __init__(self, code, message=None, status=400, message_key="message", extra=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        # Coral's SerializationException spells the key "Message".
        self.message_key = message_key
        # Members of the error shape besides the message (restJson1 only).
        self.extra = extra or {}

    def document(self, qualified):
        type_name = self.code
        if qualified and self.code in CORAL_NAMESPACES:
            type_name = f"{CORAL_NAMESPACES[self.code]}#{self.code}"
        doc = {"__type": type_name}
        if self.message is not None:
            doc[self.message_key] = self.message
        return doc

    def rest_outcome(self, qualified):
        """restJson1's form: the code in x-amzn-ErrorType, the body without
        it.  Coral qualifies the header with its namespace as a URI."""
        error_type = self.code
        if qualified and self.code in CORAL_NAMESPACES:
            error_type += f":http://internal.amazon.com/coral/{CORAL_NAMESPACES[self.code]}/"
        doc = dict(self.extra)
        if self.message is not None:
            doc["message"] = self.message
        status = REST_STATUS.get(self.code, self.status) if self.status == 400 else self.status
        return Outcome(status, json_bytes(doc), EKS_CONTENT_TYPE,
                       headers={"x-amzn-ErrorType": error_type}, error=self.code)


def validation_error(message):
    return AwsError("ValidationException", message)


class ControlError(ValueError):
    """A malformed control API request; answered as 400 {"error": ...}."""


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def epoch(value):
    """Timestamps go on the wire as epoch seconds with millisecond precision."""
    return round(value, 3)


def iso8601(value):
    return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).strftime(ISO_FORMAT)


def amz_date(value):
    return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).strftime(AMZ_DATE_FORMAT)


def random_string(alphabet, length):
    return "".join(_rng.choice(alphabet) for _ in range(length))


def new_access_key_id(prefix="ASIA"):
    return prefix + random_string(string.ascii_uppercase + string.digits, 16)


def new_secret():
    return random_string(string.ascii_letters + string.digits + "+/", 40)


def new_session_token():
    return base64.b64encode(os.urandom(96)).decode()


def lower_first(name):
    return name[:1].lower() + name[1:]


def join_path(parent, child):
    return f"{parent}.{child}" if parent else child


def utf16_length(text):
    # Coral measures strings in UTF-16 code units, as Java does.
    return len(text.encode("utf-16-le")) // 2


def json_bytes(doc):
    return json.dumps(doc, separators=(",", ":")).encode()


def resolved_image(image):
    """`repo[:tag]` pinned to a digest, as DeployedImages reports it."""
    repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return f"{repository}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def partition_for(region):
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


# --------------------------------------------------------------------------
# SigV4
# --------------------------------------------------------------------------

def uri_encode(text):
    return urllib.parse.quote(text, safe="-_.~")


def canonical_uri(raw_path):
    """The normalised, encoded path SigV4 signs for every service but S3.

    Segments are encoded once more on top of what the client sent, as the
    SDKs do; dot segments and empty segments are removed.
    """
    segments = []
    for segment in raw_path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    path = "/" + "/".join(uri_encode(s) for s in segments)
    if segments and raw_path.endswith("/"):
        path += "/"
    return path


def canonical_query(raw_query):
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((uri_encode(urllib.parse.unquote(key)),
                      uri_encode(urllib.parse.unquote(value))))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_header_value(values):
    # Repeated headers are joined with commas in the order received; each
    # value is trimmed and runs of whitespace (folded lines too) become one
    # space.
    return ",".join(re.sub(r"\s+", " ", v.strip()) for v in values)


def canonical_request(method, raw_path, raw_query, headers, signed_headers, payload):
    """Rebuild the canonical request from what was received.

    `headers` maps lower-case names to the list of values received.
    """
    names = sorted(name.lower() for name in signed_headers)
    lines = [method, canonical_uri(raw_path), canonical_query(raw_query)]
    lines += [f"{n}:{canonical_header_value(headers.get(n, []))}" for n in names]
    lines += ["", ";".join(names), hashlib.sha256(payload).hexdigest()]
    return "\n".join(lines)


def string_to_sign(request_date, scope, canonical):
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"AWS4-HMAC-SHA256\n{request_date}\n{scope}\n{digest}"


@functools.lru_cache(maxsize=256)
def signing_key(secret, date, region, service):
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret, date, region, service, to_sign):
    key = signing_key(secret, date, region, service)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass
class AuthHeader:
    raw: str
    algorithm: str
    credential: str | None
    signed_headers: list | None
    signature: str | None

    @property
    def access_key(self):
        return self.credential.split("/")[0] if self.credential else None


def parse_auth_header(raw):
    if raw is None:
        return None
    algorithm, _, rest = raw.strip().partition(" ")
    params = {}
    for item in re.split(r"[,\s]+", rest):
        name, sep, value = item.partition("=")
        if sep:
            params[name] = value
    signed = params.get("SignedHeaders")
    return AuthHeader(raw=raw, algorithm=algorithm, credential=params.get("Credential"),
                      signed_headers=signed.split(";") if signed else None,
                      signature=params.get("Signature"))


@dataclass
class ReceivedRequest:
    method: str
    path: str
    query: str
    headers: dict  # lower-case name -> list of values, in the order received
    body: bytes

    def header(self, name):
        values = self.headers.get(name)
        return values[0] if values else None


@dataclass
class Credential:
    key_id: str
    secret: str
    token: str | None = None
    expires_at: float | None = None


class SigV4Verifier:
    """Checks a request the way Coral does, in Coral's order.

    The order and the wordings follow what the DynamoDB emulator dynalite
    observed from the real service (see README.md).
    """

    def __init__(self, fake):
        self.fake = fake

    def verify(self, req, auth, service):
        if auth is None or not auth.raw.strip().startswith("AWS4-"):
            raise AwsError("MissingAuthenticationTokenException",
                           "Request is missing Authentication Token")
        self._check_complete(req, auth)
        request_date = self._request_date(req)
        self._check_clock(request_date)
        if "host" not in (h.lower() for h in auth.signed_headers):
            raise AwsError("InvalidSignatureException",
                           "'Host' must be a 'SignedHeader' in the AWS Authorization.")
        if auth.algorithm != "AWS4-HMAC-SHA256":
            raise AwsError("IncompleteSignatureException",
                           f"Unsupported AWS 'algorithm': '{auth.algorithm}' "
                           "(only AWS4-HMAC-SHA256 for now). ")
        key_id, date, region, scope_service, terminator = self._credential_parts(auth)
        self._check_scope(date, region, scope_service, terminator, service, request_date)
        cred = self.fake.keyring.get(key_id)
        if cred is None:
            raise AwsError("UnrecognizedClientException",
                           "The security token included in the request is invalid.")
        self._check_signature(req, auth, cred, request_date, f"{date}/{region}/{scope_service}/aws4_request")
        self._check_token(req, auth, cred)
        if cred.expires_at is not None and self.fake.now() >= cred.expires_at:
            raise AwsError("ExpiredTokenException",
                           "The security token included in the request is expired")
        return cred

    @staticmethod
    def _check_complete(req, auth):
        problems = ""
        for name, value in (("Credential", auth.credential), ("Signature", auth.signature),
                            ("SignedHeaders", auth.signed_headers)):
            if not value:
                problems += f"Authorization header requires '{name}' parameter. "
        if not req.header("x-amz-date") and not req.header("date"):
            problems += ("Authorization header requires existence of either a "
                         "'X-Amz-Date' or a 'Date' header. ")
        if problems:
            raise AwsError("IncompleteSignatureException", problems + "Authorization=" + auth.raw)

    @staticmethod
    def _request_date(req):
        value = req.header("x-amz-date")
        if value is None:
            # Only a Date header: SigV4 then signs its ISO 8601 basic form.
            try:
                return amz_date(email.utils.parsedate_to_datetime(req.header("date")).timestamp())
            except (TypeError, ValueError):
                value = req.header("date")
        if not re.fullmatch(r"\d{8}T\d{6}Z", value or ""):
            raise AwsError("IncompleteSignatureException",
                           f"Date must be in ISO-8601 'basic format'. Got '{value}'. "
                           "See http://en.wikipedia.org/wiki/ISO_8601")
        return value

    def _check_clock(self, request_date):
        try:
            signed_at = datetime.datetime.strptime(request_date, AMZ_DATE_FORMAT).replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            raise AwsError("IncompleteSignatureException",
                           f"Date must be in ISO-8601 'basic format'. Got '{request_date}'. "
                           "See http://en.wikipedia.org/wiki/ISO_8601") from None
        now = self.fake.now()
        if signed_at < now - SIGNATURE_WINDOW_S:
            raise AwsError("InvalidSignatureException",
                           f"Signature expired: {request_date} is now earlier than "
                           f"{amz_date(now - SIGNATURE_WINDOW_S)} ({amz_date(now)} - 15 min.)")
        if signed_at > now + SIGNATURE_WINDOW_S:
            raise AwsError("InvalidSignatureException",
                           f"Signature not yet current: {request_date} is still later than "
                           f"{amz_date(now + SIGNATURE_WINDOW_S)} ({amz_date(now)} + 15 min.)")

    @staticmethod
    def _credential_parts(auth):
        parts = auth.credential.rstrip("/").split("/")
        if len(parts) != 5:
            raise AwsError("IncompleteSignatureException",
                           "Credential must have exactly 5 slash-delimited elements, "
                           f"e.g. keyid/date/region/service/term, got '{auth.credential}'")
        return parts

    def _check_scope(self, date, region, scope_service, terminator, service, request_date):
        problems = ""
        if region != self.fake.config.region:
            problems += f"Credential should be scoped to a valid region, not '{region}'. "
        if scope_service != service:
            problems += f"Credential should be scoped to correct service: '{service}'. "
        if terminator != "aws4_request":
            problems += ("Credential should be scoped with a valid terminator: "
                         f"'aws4_request', not '{terminator}'. ")
        if date != request_date[:8]:
            problems += ("Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                         f"version of date from HTTP: '{date}' != '{request_date[:8]}', "
                         f"from '{request_date}'.")
        if problems:
            raise AwsError("InvalidSignatureException", problems)

    @staticmethod
    def _check_signature(req, auth, cred, request_date, scope):
        canonical = canonical_request(req.method, req.path, req.query, req.headers,
                                      auth.signed_headers, req.body)
        to_sign = string_to_sign(request_date, scope, canonical)
        date, region, service = scope.split("/")[:3]
        expected = signature(cred.secret, date, region, service, to_sign)
        if not hmac.compare_digest(expected, auth.signature or ""):
            # Coral appends what it computed, which makes signer bugs easy to find.
            raise AwsError(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method. Consult "
                "the service documentation for details.\n\n"
                f"The Canonical String for this request should have been\n'{canonical}'\n\n"
                f"The String-to-Sign should have been\n'{to_sign}'\n")

    @staticmethod
    def _check_token(req, auth, cred):
        token = req.header("x-amz-security-token")
        signed = "x-amz-security-token" in (h.lower() for h in auth.signed_headers)
        if cred.token is None and token is None:
            return
        if cred.token is not None and token is not None and signed \
                and hmac.compare_digest(cred.token, token):
            return
        raise AwsError("UnrecognizedClientException",
                       "The security token included in the request is invalid")


# --------------------------------------------------------------------------
# Keys, configuration, faults, throttling, call log
# --------------------------------------------------------------------------

def parse_key_spec(spec):
    """`AKID:SECRET` or `AKID:SECRET:TOKEN` (tokens are base64, without colons)."""
    parts = spec.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"expected AKID:SECRET[:TOKEN], got {spec!r}")
    return Credential(parts[0], parts[1], parts[2] if len(parts) == 3 and parts[2] else None)


class KeyRing:
    def __init__(self):
        self._lock = threading.Lock()
        self._keys = {}

    def add(self, cred):
        with self._lock:
            self._keys[cred.key_id] = cred

    def remove(self, key_id):
        with self._lock:
            return self._keys.pop(key_id, None) is not None

    def get(self, key_id):
        with self._lock:
            return self._keys.get(key_id)

    def expire_by(self, key_id, deadline):
        """Make a key stop working at `deadline` unless it expires sooner."""
        with self._lock:
            cred = self._keys.get(key_id)
            if cred is not None and (cred.expires_at is None or cred.expires_at > deadline):
                self._keys[key_id] = dataclasses.replace(cred, expires_at=deadline)

    def describe(self):
        # Never the secret or the token: only what identifies the key.
        with self._lock:
            return [{"id": c.key_id, "has_token": c.token is not None, "expires_at": c.expires_at}
                    for c in self._keys.values()]


@dataclass
class Config:
    region: str = "us-east-1"
    account: str = "123456789012"
    latency_ms: float = 0.0
    create_s: float = 0.5
    update_s: float = 0.5
    delete_s: float = 0.5
    cluster_create_s: float = 0.5
    cluster_update_s: float = 0.5
    cluster_delete_s: float = 0.5
    rate_limit_rps: float = 0.0
    # Shifts the fake's clock (signature window, Date header, timestamps).
    clock_offset_s: float = 0.0
    qualified_error_types: bool = False

    def update(self, changes):
        if not isinstance(changes, dict):
            raise ControlError("config must be a JSON object")
        fields = {f.name: f for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in fields:
                raise ControlError(f"unknown config key {name!r}")
            kind = fields[name].type
            if kind is str and not isinstance(value, str):
                raise ControlError(f"{name} must be a string")
            if kind is bool and not isinstance(value, bool):
                raise ControlError(f"{name} must be true or false")
            if kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ControlError(f"{name} must be a number")
                if value < 0 and name != "clock_offset_s":
                    raise ControlError(f"{name} must not be negative")
        if "account" in changes and not re.fullmatch(r"\d{12}", changes["account"]):
            raise ControlError("account must be 12 digits")
        for name, value in changes.items():
            setattr(self, name, float(value) if fields[name].type is float else value)

    def to_json(self):
        return dataclasses.asdict(self)


FAULT_KINDS = ("throttle", "status", "http429", "slow", "drop", "fail_after", "hang")


@dataclass
class Fault:
    kind: str
    count: int = 1
    op: str | None = None
    service: str | None = None
    code: int = 500          # status
    seconds: float = 0.0     # slow
    after: bool = False      # drop: perform the call, then drop the connection
    error: str | None = None    # status: overrides the __type
    message: str | None = None  # status: overrides the message

    @classmethod
    def from_json(cls, doc, known_ops):
        if not isinstance(doc, dict):
            raise ControlError("each fault must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(doc) - names
        if unknown:
            raise ControlError(f"unknown fault fields {sorted(unknown)}")
        fault = cls(**doc)
        if fault.kind not in FAULT_KINDS:
            raise ControlError(f"fault kind must be one of {list(FAULT_KINDS)}")
        if not isinstance(fault.count, int) or isinstance(fault.count, bool) or fault.count < 1:
            raise ControlError("count must be a positive integer")
        if fault.op is not None and fault.op not in known_ops and not KUBE_OP.fullmatch(fault.op):
            raise ControlError(f"unknown operation {fault.op!r}")
        if fault.kind == "status" and not (isinstance(fault.code, int) and 400 <= fault.code <= 599):
            raise ControlError("status faults need a code between 400 and 599")
        if not isinstance(fault.seconds, (int, float)) or fault.seconds < 0:
            raise ControlError("seconds must be a non-negative number")
        return fault

    def matches(self, service, op):
        return (self.op is None or self.op == op) and (self.service is None or self.service == service)


class FaultQueue:
    """One-shot faults, consumed in order by the next matching calls."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending = []
        # Hung calls wait until this changes (faults cleared, reset, shutdown).
        self.hang_generation = 0

    def add(self, faults):
        with self._lock:
            self._pending.extend(faults)

    def take(self, service, op):
        with self._lock:
            for index, fault in enumerate(self._pending):
                if fault.matches(service, op):
                    if fault.count > 1:
                        self._pending[index] = dataclasses.replace(fault, count=fault.count - 1)
                    else:
                        del self._pending[index]
                    return fault
        return None

    def pending(self):
        with self._lock:
            return [dataclasses.asdict(f) for f in self._pending]

    def clear(self):
        with self._lock:
            self._pending.clear()
            self.hang_generation += 1


class RateLimiter:
    """A token bucket per service; `rate` calls a second with a burst of `rate`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._buckets = {}

    def allow(self, service, rate, now):
        if rate <= 0:
            return True
        with self._lock:
            tokens, last, bucket_rate = self._buckets.get(service, (rate, now, rate))
            if bucket_rate != rate:
                tokens, last = rate, now
            tokens = min(max(rate, 1.0), tokens + (now - last) * rate)
            allowed = tokens >= 1.0
            self._buckets[service] = (tokens - 1.0 if allowed else tokens, now, rate)
            return allowed

    def reset(self):
        with self._lock:
            self._buckets.clear()


class CallLog:
    """Every AWS and IMDS call, recorded when it arrives and completed when
    it is answered, so a test can see a call that is still hanging."""

    FIELDS = ("seq", "time", "op", "service", "access_key", "status", "error", "body",
              "signed_headers", "fault", "request_id", "unknown_members", "eks_cluster", "detail")

    def __init__(self):
        self._lock = threading.Lock()
        self._records = []
        self._seq = 0

    def start(self, now, **fields):
        with self._lock:
            self._seq += 1
            record = dict.fromkeys(self.FIELDS)
            record.update(seq=self._seq, time=epoch(now), **fields)
            self._records.append(record)
            return record

    def update(self, record, **fields):
        with self._lock:
            record.update(fields)

    def answered(self, record, outcome, error):
        """Notes the answer; a dropped or hung call keeps neither."""
        replied = outcome.action == "reply"
        self.update(record, status=outcome.status if replied else None,
                    error=error if replied else None)

    def snapshot(self, since=0, op=None):
        with self._lock:
            return [dict(r) for r in self._records
                    if r["seq"] > since and (op is None or r["op"] == op)]

    def clear(self):
        with self._lock:
            self._records.clear()


# --------------------------------------------------------------------------
# Service models and input validation
# --------------------------------------------------------------------------

# Python's re has no Unicode property classes.  \p{Print} is exact (Java
# defines it as printable ASCII); letters are approximated by "ASCII letter
# or any non-ASCII character", which never rejects valid input but lets a
# few non-ASCII symbols through; \p{N} needs only ASCII digits on top of that.
_PROPERTY_CLASSES = {
    "Print": r"\x20-\x7E",
    "L": r"a-zA-Z\u00AA-\U0010FFFF",
    "N": r"0-9",
    "Z": r" \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000",
}


def _combine_surrogates(pattern):
    """Java writes supplementary code points as UTF-16 surrogate pairs."""
    def code_point(match):
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        return "\\U%08X" % (0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    return re.sub(r"\\u(D[89AB][0-9A-Fa-f]{2})\\u(D[C-Fc-f][0-9A-Fa-f]{2})", code_point, pattern)


def java_regex_to_python(pattern):
    pattern = _combine_surrogates(pattern)
    out, in_class, i = [], False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            prop = re.match(r"\\p\{(\w+)\}", pattern[i:])
            if prop:
                body = _PROPERTY_CLASSES.get(prop.group(1))
                if body is None:
                    raise ValueError(f"unsupported property class {prop.group(0)}")
                out.append(body if in_class else f"[{body}]")
                i += prop.end()
                continue
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


def _java_number_class(value):
    if isinstance(value, float) and not value.is_integer():
        return "java.lang.Double"
    if -32768 <= value <= 32767:
        return "java.lang.Short"
    if -2147483648 <= value <= 2147483647:
        return "java.lang.Integer"
    return "java.lang.Long"


def _mismatch(value, java_type):
    """Coral's (Jackson's) words for a JSON value of the wrong type."""
    if isinstance(value, list):
        return "Start of list found where not expected"
    if isinstance(value, dict):
        return "Start of structure or map found where not expected."
    if isinstance(value, bool):
        return f"class java.lang.Boolean can not be converted to an {java_type}"
    if isinstance(value, (int, float)):
        return f"class {_java_number_class(value)} can not be converted to an {java_type}"
    if java_type == "Boolean":
        return f"'{str(value).upper()}' can not be converted to an Boolean"
    return f"class java.lang.String can not be converted to an {java_type}"


def _render(value):
    """How Coral prints an offending value: Java's toString of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _number_text(value):
    return str(int(value)) if float(value).is_integer() else str(value)


_JAVA_TYPES = {"string": "String", "integer": "Integer", "long": "Long", "float": "Float",
               "double": "Double", "boolean": "Boolean", "timestamp": "Date"}


def serialization_error(message):
    return AwsError("SerializationException", message, message_key="Message")


class InputValidator:
    """Generic input checking driven by a botocore service model.

    Like Coral it works in two passes: types first (the first mismatch is a
    SerializationException), then constraints, of which up to ten are
    reported in one ValidationException.  Unknown members and nulls are
    dropped, as Coral ignores them; the unknown ones are reported back so
    the call log can show them.
    """

    def __init__(self, shapes):
        self.shapes = shapes
        self._patterns = {}

    def validate(self, shape_name, value, extra_limits=None):
        unknown = []
        value = self._coerce(shape_name, value, "", unknown)
        errors = []
        self._constrain(shape_name, value, "", errors)
        for member, limits in (extra_limits or {}).items():
            if member in value:
                self._check_range(limits, value[member], lower_first(member), errors)
        if errors:
            plural = "s" if len(errors) > 1 else ""
            raise validation_error(f"{len(errors)} validation error{plural} detected: "
                                   + "; ".join(errors))
        return value, unknown

    # Pass 1: types --------------------------------------------------------

    def _coerce(self, shape_name, value, path, unknown):
        shape = self.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            if isinstance(value, list):
                raise serialization_error("Start of list found where not expected")
            if not isinstance(value, dict):
                raise serialization_error("Expected null")
            members = shape.get("members", {})
            result = {}
            for name, item in value.items():
                if name not in members:
                    unknown.append(join_path(path, name))
                elif item is not None:
                    result[name] = self._coerce(members[name]["shape"], item,
                                                join_path(path, name), unknown)
            return result
        if kind == "list":
            if isinstance(value, dict):
                raise serialization_error("Start of structure or map found where not expected.")
            if not isinstance(value, list):
                raise serialization_error("Expected list or null")
            member = shape["member"]["shape"]
            return [None if item is None else self._coerce(member, item, f"{path}[{i}]", unknown)
                    for i, item in enumerate(value)]
        if kind == "map":
            if isinstance(value, list):
                raise serialization_error("Start of list found where not expected")
            if not isinstance(value, dict):
                raise serialization_error("Expected map or null")
            member = shape["value"]["shape"]
            return {k: self._coerce(member, v, f"{path}.{k}", unknown)
                    for k, v in value.items() if v is not None}
        return self._coerce_scalar(kind, value)

    @staticmethod
    def _coerce_scalar(kind, value):
        java_type = _JAVA_TYPES.get(kind, kind)
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind == "string" and isinstance(value, str):
            return value
        if kind in ("integer", "long") and is_number:
            # Jackson truncates a fractional number given for an integer.
            return math.floor(value)
        if kind in ("float", "double", "timestamp") and is_number:
            return value
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, float) and not value.is_integer():
                return abs(value) >= 1  # observed Coral quirk: fractions convert
        if kind in ("blob",) and isinstance(value, str):
            return value
        raise serialization_error(_mismatch(value, java_type))

    # Pass 2: constraints --------------------------------------------------

    def _constrain(self, shape_name, value, path, errors):
        shape = self.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            required = set(shape.get("required", ()))
            for name, member in shape.get("members", {}).items():
                member_path = join_path(path, lower_first(name))
                if name not in value:
                    if name in required:
                        self._fail(errors, None, member_path, "Member must not be null")
                    continue
                self._constrain(member["shape"], value[name], member_path, errors)
        elif kind == "list":
            self._check_length(shape, value, len(value), path, errors)
            for index, item in enumerate(value, 1):
                item_path = f"{path}.{index}.member"
                if item is None:
                    self._fail(errors, None, item_path, "Member must not be null")
                else:
                    self._constrain(shape["member"]["shape"], item, item_path, errors)
        elif kind == "map":
            self._check_length(shape, value, len(value), path, errors)
            for key, item in value.items():
                self._constrain(shape["value"]["shape"], item, f"{path}.{key}.member", errors)
        elif kind == "string":
            if "enum" in shape and value not in shape["enum"]:
                self._fail(errors, value, path,
                           "Member must satisfy enum value set: [" + ", ".join(shape["enum"]) + "]")
            pattern = self._pattern(shape_name)
            if pattern is not None and not pattern.fullmatch(value):
                self._fail(errors, value, path,
                           f"Member must satisfy regular expression pattern: {shape['pattern']}")
            self._check_length(shape, value, utf16_length(value), path, errors)
        elif kind in ("integer", "long", "float", "double"):
            self._check_range(shape, value, path, errors)

    def _check_length(self, shape, value, length, path, errors):
        if "min" in shape and length < shape["min"]:
            self._fail(errors, value, path,
                       f"Member must have length greater than or equal to {shape['min']}")
        if "max" in shape and length > shape["max"]:
            self._fail(errors, value, path,
                       f"Member must have length less than or equal to {shape['max']}")

    def _check_range(self, limits, value, path, errors):
        if "min" in limits and value < limits["min"]:
            self._fail(errors, value, path, "Member must have value greater than or equal to "
                       + _number_text(limits["min"]))
        if "max" in limits and value > limits["max"]:
            self._fail(errors, value, path, "Member must have value less than or equal to "
                       + _number_text(limits["max"]))

    @staticmethod
    def _fail(errors, value, path, constraint):
        if len(errors) >= MAX_VALIDATION_ERRORS:
            return
        shown = "null" if value is None else f"'{_render(value)}'"
        errors.append(f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}")

    def _pattern(self, shape_name):
        if shape_name not in self._patterns:
            source = self.shapes[shape_name].get("pattern")
            compiled = None
            if source is not None:
                try:
                    compiled = re.compile(java_regex_to_python(source))
                except (re.error, ValueError) as exc:
                    # An untranslatable pattern is skipped rather than
                    # rejecting valid input.
                    print(f"aws_fake: pattern of {shape_name} not enforced: {exc}", file=sys.stderr)
            self._patterns[shape_name] = compiled
        return self._patterns[shape_name]


# Limits the services enforce although their models do not declare them.
EXTRA_LIMITS = {
    "DescribeScalableTargets": {"MaxResults": {"min": 1, "max": 50}},
    "DescribeScalingPolicies": {"MaxResults": {"min": 1, "max": 10}},
}


class ServiceModel:
    def __init__(self, doc):
        meta = doc["metadata"]
        self.target_prefix = meta["targetPrefix"]
        self.signing_name = meta.get("signingName") or meta["endpointPrefix"]
        self.operations = doc["operations"]
        self.validator = InputValidator(doc["shapes"])

    def validate(self, op, params):
        shape = self.operations[op].get("input", {}).get("shape")
        if shape is None:
            return {}, sorted(params)
        return self.validator.validate(shape, params, EXTRA_LIMITS.get(op))


def load_models(directory=MODEL_DIR):
    models = {}
    for name in MODEL_FILES:
        with open(directory / name, encoding="utf-8") as handle:
            model = ServiceModel(json.load(handle))
        models[model.target_prefix] = model
    return models


# --------------------------------------------------------------------------
# Pagination
# --------------------------------------------------------------------------

def encode_token(sort_by, key):
    raw = json.dumps({"by": sort_by, "after": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_token(token, sort_by):
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
        if doc["by"] != sort_by:
            return None
        return tuple(doc["after"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


def paginate(items, sort_by, sort_key, descending, limit, token, bad_token):
    """One page of `items` and the token for the next.

    Tokens carry the sort key of the last item returned, not an offset, so
    resources created or deleted between pages neither repeat nor shift the
    remaining ones.
    """
    if token:
        after = decode_token(token, sort_by)
        if after is None:
            raise bad_token()
        try:
            items = [i for i in items if (sort_key(i) < after if descending else sort_key(i) > after)]
        except TypeError:
            raise bad_token() from None
    items = sorted(items, key=sort_key, reverse=descending)
    page = items[:limit]
    next_token = encode_token(sort_by, sort_key(page[-1])) if len(items) > limit else None
    return page, next_token


def _sagemaker_bad_token():
    return validation_error("Invalid pagination token.")


def autoscaling_mode(cluster_spec):
    return cluster_spec.get("AutoScaling", {}).get("Mode")


# --------------------------------------------------------------------------
# SageMaker resources
# --------------------------------------------------------------------------

# Members of the create requests echoed by the describe calls.
MODEL_ECHO = ("PrimaryContainer", "Containers", "InferenceExecutionConfig", "ExecutionRoleArn",
              "VpcConfig", "EnableNetworkIsolation")
CONFIG_ECHO = ("DataCaptureConfig", "KmsKeyId", "AsyncInferenceConfig", "ExplainerConfig",
               "ShadowProductionVariants", "ExecutionRoleArn", "VpcConfig",
               "EnableNetworkIsolation", "MetricsConfig")
CLUSTER_ECHO = ("VpcConfig", "Orchestrator", "NodeRecovery", "TieredStorageConfig",
                "NodeProvisioningMode", "ClusterRole")
# Cluster-level members UpdateCluster can set.
CLUSTER_UPDATABLE = ("NodeRecovery", "TieredStorageConfig", "NodeProvisioningMode", "ClusterRole",
                     "Orchestrator", "AutoScaling")
GROUP_ECHO = ("InstanceGroupName", "InstanceType", "LifeCycleConfig", "ExecutionRole",
              "ThreadsPerCore", "InstanceStorageConfigs", "OnStartDeepHealthChecks",
              "TrainingPlanArn", "OverrideVpcConfig", "ScheduledUpdateConfig")


@dataclass
class Model:
    name: str
    arn: str
    created: float
    spec: dict

    def describe(self):
        doc = {"ModelName": self.name, "ModelArn": self.arn, "CreationTime": epoch(self.created),
               "EnableNetworkIsolation": False}
        doc.update({k: self.spec[k] for k in MODEL_ECHO if k in self.spec})
        # SageMaker answers with the container's Mode even when the create
        # left it out: SingleModel, ContainerDefinition's default.
        if "PrimaryContainer" in doc:
            doc["PrimaryContainer"] = {"Mode": "SingleModel", **doc["PrimaryContainer"]}
        if "Containers" in doc:
            doc["Containers"] = [{"Mode": "SingleModel", **c} for c in doc["Containers"]]
        return doc

    def images(self):
        containers = [self.spec.get("PrimaryContainer")] + list(self.spec.get("Containers", []))
        return [c["Image"] for c in containers if c and c.get("Image")]


@dataclass
class EndpointConfig:
    name: str
    arn: str
    created: float
    spec: dict

    def describe(self):
        variants = [{"InitialVariantWeight": 1.0, **v} for v in self.spec["ProductionVariants"]]
        doc = {"EndpointConfigName": self.name, "EndpointConfigArn": self.arn,
               "ProductionVariants": variants, "CreationTime": epoch(self.created)}
        doc.update({k: self.spec[k] for k in CONFIG_ECHO if k in self.spec})
        return doc


@dataclass
class Variant:
    name: str
    weight: float
    desired_weight: float
    count: int | None
    desired: int | None
    serverless: dict | None = None
    images: list = field(default_factory=list)

    def describe(self):
        doc = {"VariantName": self.name}
        if self.images:
            doc["DeployedImages"] = self.images
        doc["CurrentWeight"] = self.weight
        doc["DesiredWeight"] = self.desired_weight
        if self.serverless is not None:
            doc["CurrentServerlessConfig"] = self.serverless
            doc["DesiredServerlessConfig"] = self.serverless
        else:
            doc["CurrentInstanceCount"] = self.count
            doc["DesiredInstanceCount"] = self.desired
        return doc

    def settled(self):
        return dataclasses.replace(self, weight=self.desired_weight, count=self.desired)


@dataclass
class Transition:
    """A status change in flight; it takes effect once `ends_at` has passed."""
    status: str                  # Creating, Updating or Deleting
    ends_at: float
    config_name: str | None = None   # endpoint config being deployed
    result: list | None = None       # variants or instance groups once done
    failure: str | None = None       # the transition ends in Failed with this


@dataclass
class Endpoint:
    name: str
    arn: str
    config_name: str
    created: float
    modified: float
    variants: list
    status: str = "InService"    # meaningful only when no transition is in flight
    failure_reason: str | None = None
    transition: Transition | None = None

    @property
    def current_status(self):
        return self.transition.status if self.transition else self.status

    def describe(self):
        doc = {"EndpointName": self.name, "EndpointArn": self.arn,
               "EndpointConfigName": self.config_name,
               "ProductionVariants": [v.describe() for v in self.variants],
               "EndpointStatus": self.current_status,
               "CreationTime": epoch(self.created), "LastModifiedTime": epoch(self.modified)}
        if self.current_status == "Failed":
            doc["FailureReason"] = self.failure_reason
        t = self.transition
        if t and t.status == "Updating" and t.config_name:
            pending = {"EndpointConfigName": t.config_name,
                       "ProductionVariants": [v.describe() for v in t.result],
                       "StartTime": epoch(self.modified)}
            doc["PendingDeploymentSummary"] = pending
        return doc

    def summary(self):
        return {"EndpointName": self.name, "EndpointArn": self.arn,
                "CreationTime": epoch(self.created), "LastModifiedTime": epoch(self.modified),
                "EndpointStatus": self.current_status}


@dataclass
class InstanceGroup:
    spec: dict
    current: int
    status: str

    @property
    def name(self):
        return self.spec["InstanceGroupName"]

    def describe(self):
        doc = {"CurrentCount": self.current, "TargetCount": self.spec["InstanceCount"]}
        if "MinInstanceCount" in self.spec:
            doc["MinCount"] = self.spec["MinInstanceCount"]
        doc.update({k: self.spec[k] for k in GROUP_ECHO if k in self.spec})
        doc["Status"] = self.status
        return doc

    def settled(self):
        return InstanceGroup(self.spec, self.spec["InstanceCount"], "InService")


@dataclass
class Cluster:
    name: str
    arn: str
    created: float
    spec: dict
    groups: list
    status: str = "InService"
    failure: str | None = None
    transition: Transition | None = None
    # Node counts the fake's Karpenter set, by instance group; they win over
    # InstanceCount while autoscaling is enabled.
    karpenter: dict = field(default_factory=dict)

    @property
    def current_status(self):
        return self.transition.status if self.transition else self.status

    @property
    def eks_arn(self):
        return self.spec.get("Orchestrator", {}).get("Eks", {}).get("ClusterArn")

    @property
    def autoscaling_enabled(self):
        return autoscaling_mode(self.spec) == "Enable"

    def describe(self):
        doc = {"ClusterArn": self.arn, "ClusterName": self.name,
               "ClusterStatus": self.current_status, "CreationTime": epoch(self.created)}
        if self.current_status == "Failed":
            doc["FailureMessage"] = self.failure
        doc["InstanceGroups"] = [self._group_doc(g) for g in self.groups]
        doc.update({k: self.spec[k] for k in CLUSTER_ECHO if k in self.spec})
        if "AutoScaling" in self.spec:
            doc["AutoScaling"] = self._autoscaling_doc()
        return doc

    def _group_doc(self, group):
        doc = group.describe()
        if self.autoscaling_enabled and group.name in self.karpenter:
            doc["CurrentCount"] = doc["TargetCount"] = self.karpenter[group.name]
        return doc

    def _autoscaling_doc(self):
        """ClusterAutoScalingConfigOutput: the autoscaler follows the
        cluster's own transitions."""
        status = {"Creating": "Creating", "Updating": "Creating", "Deleting": "Deleting",
                  "Failed": "Failed"}.get(self.current_status, "InService")
        doc = {"Mode": self.spec["AutoScaling"]["Mode"],
               "AutoScalerType": self.spec["AutoScaling"].get("AutoScalerType", "Karpenter"),
               "Status": status}
        if status == "Failed":
            doc["FailureMessage"] = self.failure
        return doc

    def summary(self):
        return {"ClusterArn": self.arn, "ClusterName": self.name,
                "CreationTime": epoch(self.created), "ClusterStatus": self.current_status}


class SageMakerBackend:
    """Models, endpoint configs, endpoints and HyperPod clusters.

    Model, config and endpoint names are case-insensitive (the ARN carries
    the name lower-cased and the API documents endpoint names as such);
    cluster names are matched exactly, or by ARN.  The lock is the one the
    EKS, Kubernetes and Karpenter parts share, as they read each other.
    """

    def __init__(self, fake):
        self.fake = fake
        self._lock = fake.lock
        self.reset()
        self.operations = {
            "CreateModel": self.create_model, "DescribeModel": self.describe_model,
            "DeleteModel": self.delete_model, "ListModels": self.list_models,
            "CreateEndpointConfig": self.create_endpoint_config,
            "DescribeEndpointConfig": self.describe_endpoint_config,
            "DeleteEndpointConfig": self.delete_endpoint_config,
            "ListEndpointConfigs": self.list_endpoint_configs,
            "CreateEndpoint": self.create_endpoint, "DescribeEndpoint": self.describe_endpoint,
            "UpdateEndpoint": self.update_endpoint,
            "UpdateEndpointWeightsAndCapacities": self.update_weights_and_capacities,
            "DeleteEndpoint": self.delete_endpoint, "ListEndpoints": self.list_endpoints,
            "CreateCluster": self.create_cluster, "DescribeCluster": self.describe_cluster,
            "UpdateCluster": self.update_cluster, "DeleteCluster": self.delete_cluster,
            "ListClusters": self.list_clusters,
            "AddTags": self.add_tags, "ListTags": self.list_tags, "DeleteTags": self.delete_tags,
        }

    def reset(self):
        with self._lock:
            self.tags = {}
            self.models = {}
            self.configs = {}
            self.endpoints = {}
            self.clusters = {}
            self.endpoint_failures = {}
            self.cluster_failures = {}

    def call(self, op, params, now):
        with self._lock:
            return self.operations[op](params, now)

    def inject_endpoint_failure(self, name, reason):
        with self._lock:
            self.endpoint_failures[name.lower()] = reason

    def inject_cluster_failure(self, name, reason):
        with self._lock:
            self.cluster_failures[name] = reason

    def _arn(self, kind, name):
        return self.fake.arn("sagemaker", f"{kind}/{name.lower()}")

    # Models ------------------------------------------------------------------

    def create_model(self, p, now):
        name = p["ModelName"]
        arn = self._arn("model", name)
        if name.lower() in self.models:
            raise validation_error(f'Cannot create already existing model "{arn}".')
        spec = {k: v for k, v in p.items() if k not in ("ModelName", "Tags")}
        self._tag_new(arn, p.get("Tags", []))
        self.models[name.lower()] = Model(name, arn, now, spec)
        return {"ModelArn": arn}

    def _require_model(self, name):
        model = self.models.get(name.lower())
        if model is None:
            raise validation_error(f'Could not find model "{self._arn("model", name)}".')
        return model

    def describe_model(self, p, now):
        return self._require_model(p["ModelName"]).describe()

    def delete_model(self, p, now):
        model = self._require_model(p["ModelName"])
        del self.models[p["ModelName"].lower()]
        self.tags.pop(model.arn, None)
        return {}

    def list_models(self, p, now):
        page, token = self._list(self.models.values(), p, name_of=lambda m: m.name)
        return self._with_token({"Models": [{"ModelName": m.name, "ModelArn": m.arn,
                                             "CreationTime": epoch(m.created)} for m in page]}, token)

    # Endpoint configs --------------------------------------------------------

    def create_endpoint_config(self, p, now):
        name = p["EndpointConfigName"]
        arn = self._arn("endpoint-config", name)
        if name.lower() in self.configs:
            raise validation_error(f'Cannot create already existing endpoint configuration "{arn}".')
        self._require_variant_models(p["ProductionVariants"])
        spec = {k: v for k, v in p.items() if k not in ("EndpointConfigName", "Tags")}
        self._tag_new(arn, p.get("Tags", []))
        self.configs[name.lower()] = EndpointConfig(name, arn, now, spec)
        return {"EndpointConfigArn": arn}

    def _require_variant_models(self, variants):
        for variant in variants:
            if "ModelName" in variant:
                self._require_model(variant["ModelName"])

    def _require_config(self, name):
        config = self.configs.get(name.lower())
        if config is None:
            arn = self._arn("endpoint-config", name)
            raise validation_error(f'Could not find endpoint configuration "{arn}".')
        return config

    def describe_endpoint_config(self, p, now):
        return self._require_config(p["EndpointConfigName"]).describe()

    def delete_endpoint_config(self, p, now):
        # Allowed even while an endpoint uses the config, as on AWS.
        config = self._require_config(p["EndpointConfigName"])
        del self.configs[p["EndpointConfigName"].lower()]
        self.tags.pop(config.arn, None)
        return {}

    def list_endpoint_configs(self, p, now):
        page, token = self._list(self.configs.values(), p, name_of=lambda c: c.name)
        return self._with_token({"EndpointConfigs": [
            {"EndpointConfigName": c.name, "EndpointConfigArn": c.arn,
             "CreationTime": epoch(c.created)} for c in page]}, token)

    # Endpoints ---------------------------------------------------------------

    def _settle_endpoint(self, endpoint, now):
        """Apply a finished transition; False when the endpoint is gone."""
        t = endpoint.transition
        if t is None or now < t.ends_at:
            return True
        endpoint.transition = None
        endpoint.modified = t.ends_at
        if t.status == "Deleting":
            del self.endpoints[endpoint.name.lower()]
            self.tags.pop(endpoint.arn, None)
            return False
        if t.failure is not None:
            endpoint.status, endpoint.failure_reason = "Failed", t.failure
            return True
        endpoint.status, endpoint.failure_reason = "InService", None
        if t.config_name:
            endpoint.config_name = t.config_name
        endpoint.variants = t.result
        return True

    def _find_endpoint(self, name, now):
        endpoint = self.endpoints.get(name.lower())
        if endpoint is not None and self._settle_endpoint(endpoint, now):
            return endpoint
        return None

    def _require_endpoint(self, name, now):
        endpoint = self._find_endpoint(name, now)
        if endpoint is None:
            raise validation_error(f'Could not find endpoint "{self._arn("endpoint", name)}".')
        return endpoint

    @staticmethod
    def _require_settled(endpoint):
        if endpoint.transition is not None:
            raise validation_error(f'Cannot update in-progress endpoint "{endpoint.arn}".')

    def _require_updatable(self, endpoint):
        self._require_settled(endpoint)
        if endpoint.status == "Failed":
            # A failed endpoint can only be deleted and created again.
            raise validation_error(f'Cannot update failed endpoint "{endpoint.arn}".')

    def _plan_variants(self, config, now, previous=None, retain=False, excluded=()):
        """The variants an endpoint will run once `config` is deployed."""
        old = {v.name: v for v in previous or ()}
        planned = []
        for spec in config.spec["ProductionVariants"]:
            desired = spec.get("InitialInstanceCount")
            weight = float(spec.get("InitialVariantWeight", 1.0))
            kept = old.get(spec["VariantName"]) if retain else None
            if kept is not None:
                if "DesiredInstanceCount" not in excluded:
                    desired = kept.desired
                if "DesiredWeight" not in excluded:
                    weight = kept.desired_weight
            planned.append(Variant(spec["VariantName"], weight, weight, desired, desired,
                                   serverless=spec.get("ServerlessConfig"),
                                   images=self._deployed_images(spec, now)))
        return planned

    def _deployed_images(self, variant_spec, now):
        model = self.models.get(variant_spec.get("ModelName", "").lower())
        if model is None:
            return []
        return [{"SpecifiedImage": image, "ResolvedImage": resolved_image(image),
                 "ResolutionTime": epoch(now)} for image in model.images()]

    def _start(self, endpoint, status, seconds, now, config_name=None, result=None):
        failure = None
        if status != "Deleting":
            failure = self.endpoint_failures.pop(endpoint.name.lower(), None)
        endpoint.transition = Transition(status, now + seconds, config_name, result, failure)
        endpoint.modified = now

    def create_endpoint(self, p, now):
        name = p["EndpointName"]
        arn = self._arn("endpoint", name)
        if self._find_endpoint(name, now) is not None:
            raise validation_error(f'Cannot create already existing endpoint "{arn}".')
        config = self._require_config(p["EndpointConfigName"])
        self._require_variant_models(config.spec["ProductionVariants"])
        final = self._plan_variants(config, now)
        starting = [dataclasses.replace(v, count=0, images=[]) for v in final]
        self._tag_new(arn, p.get("Tags", []))
        endpoint = Endpoint(name, arn, config.name, now, now, starting)
        self._start(endpoint, "Creating", self.fake.config.create_s, now,
                    result=[v.settled() for v in final])
        self.endpoints[name.lower()] = endpoint
        return {"EndpointArn": arn}

    def describe_endpoint(self, p, now):
        return self._require_endpoint(p["EndpointName"], now).describe()

    def update_endpoint(self, p, now):
        endpoint = self._require_endpoint(p["EndpointName"], now)
        self._require_updatable(endpoint)
        config = self._require_config(p["EndpointConfigName"])
        self._require_variant_models(config.spec["ProductionVariants"])
        excluded = {e["VariantPropertyType"] for e in p.get("ExcludeRetainedVariantProperties", [])}
        final = self._plan_variants(config, now, endpoint.variants,
                                    p.get("RetainAllVariantProperties", False), excluded)
        self._start(endpoint, "Updating", self.fake.config.update_s, now,
                    config_name=config.name, result=[v.settled() for v in final])
        return {"EndpointArn": endpoint.arn}

    def update_weights_and_capacities(self, p, now):
        endpoint = self._require_endpoint(p["EndpointName"], now)
        self._require_updatable(endpoint)
        variants = {v.name: v for v in endpoint.variants}
        missing = [d["VariantName"] for d in p["DesiredWeightsAndCapacities"]
                   if d["VariantName"] not in variants]
        if missing:
            raise validation_error(f'The variant(s) "[{", ".join(missing)}]" are not present '
                                   f'in the endpoint "{endpoint.arn}".')
        for desired in p["DesiredWeightsAndCapacities"]:
            variant = variants[desired["VariantName"]]
            if "DesiredWeight" in desired:
                variant.desired_weight = float(desired["DesiredWeight"])
            if "DesiredInstanceCount" in desired:
                variant.desired = desired["DesiredInstanceCount"]
        self._start(endpoint, "Updating", self.fake.config.update_s, now,
                    result=[v.settled() for v in endpoint.variants])
        return {"EndpointArn": endpoint.arn}

    def delete_endpoint(self, p, now):
        endpoint = self._require_endpoint(p["EndpointName"], now)
        # AWS refuses while the endpoint is Creating or Updating, with this
        # wording even for a delete.
        self._require_settled(endpoint)
        self._start(endpoint, "Deleting", self.fake.config.delete_s, now)
        # SageMaker deregisters the variants' scalable targets itself.
        self.fake.autoscaling.forget_endpoint(endpoint.name)
        self._settle_endpoint(endpoint, now)
        return {}

    def list_endpoints(self, p, now):
        endpoints = [e for e in list(self.endpoints.values()) if self._settle_endpoint(e, now)]
        if "StatusEquals" in p:
            endpoints = [e for e in endpoints if e.current_status == p["StatusEquals"]]
        if "LastModifiedTimeBefore" in p:
            endpoints = [e for e in endpoints if e.modified < p["LastModifiedTimeBefore"]]
        if "LastModifiedTimeAfter" in p:
            endpoints = [e for e in endpoints if e.modified > p["LastModifiedTimeAfter"]]
        page, token = self._list(endpoints, p, name_of=lambda e: e.name,
                                 status_of=lambda e: e.current_status)
        return self._with_token({"Endpoints": [e.summary() for e in page]}, token)

    # Listing helpers ---------------------------------------------------------

    @staticmethod
    def _list(items, p, name_of, status_of=None, default_order="Descending",
              sort_keys=("Name", "CreationTime", "Status")):
        items = list(items)
        if "NameContains" in p:
            needle = p["NameContains"].lower()
            items = [i for i in items if needle in name_of(i).lower()]
        if "CreationTimeBefore" in p:
            items = [i for i in items if i.created < p["CreationTimeBefore"]]
        if "CreationTimeAfter" in p:
            items = [i for i in items if i.created > p["CreationTimeAfter"]]
        sort_by = p.get("SortBy", "CreationTime")
        by_name, by_time, by_status = sort_keys
        if sort_by == by_name:
            key = lambda i: (name_of(i), i.arn)
        elif sort_by == by_status:
            key = lambda i: (status_of(i), i.arn)
        else:
            key = lambda i: (i.created, i.arn)
        descending = p.get("SortOrder", default_order) == "Descending"
        return paginate(items, sort_by, key, descending, p.get("MaxResults", 10),
                        p.get("NextToken"), _sagemaker_bad_token)

    @staticmethod
    def _with_token(doc, token):
        if token:
            doc["NextToken"] = token
        return doc

    # Clusters ----------------------------------------------------------------

    def _settle_cluster(self, cluster, now):
        t = cluster.transition
        if t is None or now < t.ends_at:
            return True
        cluster.transition = None
        if t.status == "Deleting":
            del self.clusters[cluster.name]
            self.tags.pop(cluster.arn, None)
            return False
        if t.failure is not None:
            cluster.status, cluster.failure = "Failed", t.failure
            for group in cluster.groups:
                if group.status != "InService":
                    group.status = "Failed"
            return True
        cluster.status, cluster.failure = "InService", None
        cluster.groups = t.result
        return True

    def _find_cluster(self, name_or_arn, now):
        if name_or_arn.startswith("arn:"):
            cluster = next((c for c in self.clusters.values() if c.arn == name_or_arn), None)
        else:
            cluster = self.clusters.get(name_or_arn)
        if cluster is not None and self._settle_cluster(cluster, now):
            return cluster
        return None

    def _require_cluster(self, name_or_arn, now):
        cluster = self._find_cluster(name_or_arn, now)
        if cluster is None:
            arn = name_or_arn if name_or_arn.startswith("arn:") else self._arn("cluster", name_or_arn)
            raise AwsError("ResourceNotFound", f"Could not find cluster '{arn}'")
        return cluster

    def _cluster_transition(self, cluster, status, seconds, now, result=None):
        failure = None
        if status != "Deleting":
            failure = self.cluster_failures.pop(cluster.name, None)
        cluster.transition = Transition(status, now + seconds, result=result, failure=failure)

    def create_cluster(self, p, now):
        name = p["ClusterName"]
        if self._find_cluster(name, now) is not None:
            raise AwsError("ResourceInUse", f"Resource Already Exists: Cluster with name {name} "
                                            "already exists. Choose a different name.")
        if "Orchestrator" in p and "Eks" in p["Orchestrator"]:
            self._check_eks_orchestrator(p["Orchestrator"]["Eks"]["ClusterArn"], now)
        spec = {k: v for k, v in p.items() if k not in ("ClusterName", "InstanceGroups", "Tags")}
        self._check_autoscaling(spec)
        cluster_id = random_string(string.ascii_lowercase + string.digits, 12)
        arn = self.fake.arn("sagemaker", f"cluster/{cluster_id}")
        groups = [InstanceGroup(g, 0, "Creating") for g in p.get("InstanceGroups", [])]
        self._tag_new(arn, p.get("Tags", []))
        cluster = Cluster(name, arn, now, spec, groups)
        self._cluster_transition(cluster, "Creating", self.fake.config.cluster_create_s, now,
                                 result=[g.settled() for g in groups])
        self.clusters[name] = cluster
        self.fake.karpenter.rescale_cluster(cluster)
        return {"ClusterArn": arn}

    # The rules of EKS orchestration and Karpenter autoscaling; their
    # wordings are best guesses (README.md).

    def _check_eks_orchestrator(self, eks_arn, now):
        """A new cluster's EKS cluster must exist, here, and be free."""
        _, _, _, region, account, resource = eks_arn.split(":", 5)
        if (region, account) != (self.fake.config.region, self.fake.config.account):
            raise validation_error(f"The Amazon EKS cluster '{eks_arn}' must be in the same "
                                   "account and Region as the SageMaker HyperPod cluster.")
        if self.fake.eks.get(resource.split("/", 1)[1]) is None:
            raise validation_error(f"The Amazon EKS cluster '{eks_arn}' does not exist.")
        other = self.cluster_for_eks(eks_arn, now)
        if other is not None:
            # One EKS cluster orchestrates one HyperPod cluster (README.md).
            raise validation_error(f"The Amazon EKS cluster '{eks_arn}' is already associated "
                                   f"with the SageMaker HyperPod cluster '{other.arn}'.")

    @staticmethod
    def _check_autoscaling(spec):
        if autoscaling_mode(spec) != "Enable":
            return
        if "Eks" not in spec.get("Orchestrator", {}):
            raise validation_error("AutoScaling can be enabled only for a cluster orchestrated "
                                   "by Amazon EKS.")
        if spec.get("NodeProvisioningMode") != "Continuous":
            raise validation_error("AutoScaling requires NodeProvisioningMode to be Continuous.")
        if not spec.get("ClusterRole"):
            raise validation_error("ClusterRole is required when AutoScaling is enabled.")

    @staticmethod
    def _check_orchestrator_unchanged(cluster, p):
        new = p.get("Orchestrator")
        if new is None:
            return
        old = cluster.spec.get("Orchestrator", {})
        if ("Eks" in new or "Eks" in old) and new.get("Eks") != old.get("Eks"):
            raise validation_error(f"The Orchestrator of cluster '{cluster.arn}' cannot be "
                                   "changed.")

    @staticmethod
    def _check_cluster_role(cluster, merged):
        if cluster.autoscaling_enabled and autoscaling_mode(merged) == "Enable" \
                and merged.get("ClusterRole") != cluster.spec.get("ClusterRole"):
            raise validation_error("ClusterRole cannot be updated while autoscaling is enabled.")

    def cluster_for_eks(self, eks_arn, now):
        """The HyperPod cluster the EKS cluster orchestrates, if any."""
        with self._lock:
            for cluster in list(self.clusters.values()):
                if cluster.eks_arn == eks_arn and self._settle_cluster(cluster, now):
                    return cluster
            return None

    def describe_cluster(self, p, now):
        return self._require_cluster(p["ClusterName"], now).describe()

    def update_cluster(self, p, now):
        cluster = self._require_cluster(p["ClusterName"], now)
        if cluster.current_status != "InService":
            raise AwsError("ConflictException",
                           f"Cluster '{cluster.arn}' is in {cluster.current_status} state; "
                           "it can be updated only when it is InService.")
        self._check_orchestrator_unchanged(cluster, p)
        merged = {**cluster.spec, **{k: p[k] for k in CLUSTER_UPDATABLE if k in p}}
        self._check_cluster_role(cluster, merged)
        self._check_autoscaling(merged)
        current = {g.name: g for g in cluster.groups}
        doomed = set(p.get("InstanceGroupsToDelete", []))
        unknown = sorted(doomed - set(current))
        if unknown:
            raise validation_error(f"Instance groups {unknown} do not exist in cluster "
                                   f"'{cluster.arn}'.")
        released = self._release_from_karpenter(cluster, merged)
        shown, final = [], []
        for spec in p.get("InstanceGroups", []):
            old = current.pop(spec["InstanceGroupName"], None)
            merged_group = {**old.spec, **spec} if old else spec
            changed = old is None or merged_group != old.spec or old.name in released
            shown.append(InstanceGroup(merged_group, old.current if old else 0,
                                       "Updating" if changed else "InService"))
            final.append(InstanceGroup(merged_group, merged_group["InstanceCount"], "InService"))
        for group in current.values():
            if group.name in doomed:
                shown.append(InstanceGroup(group.spec, group.current, "Deleting"))
            elif group.name in released:
                # Back from Karpenter's count to the group's InstanceCount.
                shown.append(InstanceGroup(group.spec, group.current, "Updating"))
                final.append(group.settled())
            else:
                shown.append(group)
                final.append(group)
        cluster.spec = merged
        cluster.groups = shown
        self._cluster_transition(cluster, "Updating", self.fake.config.cluster_update_s, now,
                                 result=final)
        self.fake.karpenter.rescale_cluster(cluster)
        return {"ClusterArn": cluster.arn}

    @staticmethod
    def _release_from_karpenter(cluster, merged):
        """Switching autoscaling off: the groups Karpenter sized start from
        its counts; their names are returned."""
        if not cluster.autoscaling_enabled or autoscaling_mode(merged) == "Enable":
            return set()
        for group in cluster.groups:
            if group.name in cluster.karpenter:
                group.current = cluster.karpenter[group.name]
        released = set(cluster.karpenter)
        cluster.karpenter = {}
        return released

    def delete_cluster(self, p, now):
        cluster = self._require_cluster(p["ClusterName"], now)
        if cluster.current_status == "Deleting":
            raise AwsError("ConflictException", f"Cluster '{cluster.arn}' is already being deleted.")
        for group in cluster.groups:
            group.status = "Deleting"
        self._cluster_transition(cluster, "Deleting", self.fake.config.cluster_delete_s, now)
        self._settle_cluster(cluster, now)
        return {"ClusterArn": cluster.arn}

    def list_clusters(self, p, now):
        clusters = [c for c in list(self.clusters.values()) if self._settle_cluster(c, now)]
        page, token = self._list(clusters, p, name_of=lambda c: c.name, default_order="Ascending",
                                 sort_keys=("NAME", "CREATION_TIME", None))
        return self._with_token({"ClusterSummaries": [c.summary() for c in page]}, token)

    # Tags --------------------------------------------------------------------

    def _tag_new(self, arn, tags):
        """A new object's tags: nothing of an earlier object under the same
        ARN (names make the ARNs of models, configs and endpoints) stays."""
        self.tags[arn] = {}
        self._merge_tags(arn, tags)

    def _merge_tags(self, arn, tags):
        merged = dict(self.tags.get(arn, {}))
        merged.update((t["Key"], t["Value"]) for t in tags)
        if len(merged) > MAX_TAGS:
            raise validation_error(f"Resource {arn} cannot have more than {MAX_TAGS} tags.")
        self.tags[arn] = merged

    def _require_tagged(self, arn, now):
        """The object an ARN names, for the tagging calls; a missing one is
        reported the way its own Describe reports it."""
        kind, _, name = arn.split(":", 5)[-1].partition("/")
        if kind == "model":
            self._require_model(name)
        elif kind == "endpoint-config":
            self._require_config(name)
        elif kind == "endpoint":
            self._require_endpoint(name, now)
        elif kind == "cluster":
            self._require_cluster(arn, now)
        else:
            raise validation_error(f'Could not find resource "{arn}".')

    def add_tags(self, p, now):
        self._require_tagged(p["ResourceArn"], now)
        self._merge_tags(p["ResourceArn"], p["Tags"])
        return {"Tags": p["Tags"]}

    def list_tags(self, p, now):
        self._require_tagged(p["ResourceArn"], now)
        tags = [{"Key": k, "Value": v} for k, v in self.tags.get(p["ResourceArn"], {}).items()]
        # MaxResults is at least 50 (the model) and no object holds more,
        # so one page always holds them all.
        if p.get("NextToken"):
            raise _sagemaker_bad_token()
        return {"Tags": tags}

    def delete_tags(self, p, now):
        self._require_tagged(p["ResourceArn"], now)
        for key in p["TagKeys"]:
            self.tags.get(p["ResourceArn"], {}).pop(key, None)
        return {}

    # State -------------------------------------------------------------------

    def state(self, now):
        with self._lock:
            endpoints = [e for e in list(self.endpoints.values()) if self._settle_endpoint(e, now)]
            clusters = [c for c in list(self.clusters.values()) if self._settle_cluster(c, now)]
            by_time = lambda item: (item.created, item.arn)
            return {
                "models": [m.describe() for m in sorted(self.models.values(), key=by_time)],
                "endpoint_configs": [c.describe() for c in sorted(self.configs.values(), key=by_time)],
                "endpoints": [e.describe() for e in sorted(endpoints, key=by_time)],
                "clusters": [c.describe() for c in sorted(clusters, key=by_time)],
                "tags": {arn: dict(tags) for arn, tags in self.tags.items()},
                "pending_endpoint_failures": dict(self.endpoint_failures),
                "pending_cluster_failures": dict(self.cluster_failures),
            }


# --------------------------------------------------------------------------
# Application Auto Scaling
# --------------------------------------------------------------------------

SAGEMAKER_SCALING_ROLE = ("role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
                          "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint")


@dataclass
class ScalableTarget:
    namespace: str
    resource_id: str
    dimension: str
    min_capacity: int
    max_capacity: int
    role_arn: str
    created: float
    arn: str
    seq: int
    tags: dict = field(default_factory=dict)
    suspended: dict = field(default_factory=lambda: {
        "DynamicScalingInSuspended": False, "DynamicScalingOutSuspended": False,
        "ScheduledScalingSuspended": False})

    def describe(self):
        return {"ServiceNamespace": self.namespace, "ResourceId": self.resource_id,
                "ScalableDimension": self.dimension, "MinCapacity": self.min_capacity,
                "MaxCapacity": self.max_capacity, "RoleARN": self.role_arn,
                "CreationTime": epoch(self.created), "SuspendedState": dict(self.suspended),
                "ScalableTargetARN": self.arn}


@dataclass
class ScalingPolicy:
    name: str
    arn: str
    namespace: str
    resource_id: str
    dimension: str
    policy_type: str
    created: float
    seq: int
    configuration: dict
    alarms: list

    def describe(self):
        doc = {"PolicyARN": self.arn, "PolicyName": self.name, "ServiceNamespace": self.namespace,
               "ResourceId": self.resource_id, "ScalableDimension": self.dimension,
               "PolicyType": self.policy_type}
        doc.update(self.configuration)
        doc["Alarms"] = self.alarms
        doc["CreationTime"] = epoch(self.created)
        return doc


POLICY_CONFIGURATIONS = {
    "TargetTrackingScaling": "TargetTrackingScalingPolicyConfiguration",
    "StepScaling": "StepScalingPolicyConfiguration",
    "PredictiveScaling": "PredictiveScalingPolicyConfiguration",
}


class AutoScalingBackend:
    """Scalable targets keyed by (namespace, resource id, dimension) and
    their scaling policies."""

    def __init__(self, fake):
        self.fake = fake
        self._lock = threading.RLock()
        self.reset()
        self.operations = {
            "RegisterScalableTarget": self.register_scalable_target,
            "DeregisterScalableTarget": self.deregister_scalable_target,
            "DescribeScalableTargets": self.describe_scalable_targets,
            "PutScalingPolicy": self.put_scaling_policy,
            "DeleteScalingPolicy": self.delete_scaling_policy,
            "DescribeScalingPolicies": self.describe_scaling_policies,
            "ListTagsForResource": self.list_tags_for_resource,
        }

    def reset(self):
        with self._lock:
            self.targets = {}
            self.policies = {}
            self._seq = 0

    def call(self, op, params, now):
        with self._lock:
            return self.operations[op](params, now)

    def _next_seq(self):
        self._seq += 1
        return self._seq

    @staticmethod
    def _key(p):
        return p["ServiceNamespace"], p["ResourceId"], p["ScalableDimension"]

    @staticmethod
    def _check_dimension(namespace, resource_id, dimension):
        fits = dimension.split(":")[0] == namespace
        if dimension == "sagemaker:variant:DesiredInstanceCount":
            fits = re.fullmatch(r"endpoint/[^/]+/variant/[^/]+", resource_id) is not None
        if not fits:
            raise validation_error("Unsupported service namespace, resource type or scalable dimension")

    def _require_target(self, key):
        target = self.targets.get(key)
        if target is None:
            namespace, resource_id, dimension = key
            raise AwsError("ObjectNotFoundException",
                           f"No scalable target registered for service namespace: {namespace}, "
                           f"resource ID: {resource_id}, scalable dimension: {dimension}")
        return target

    def register_scalable_target(self, p, now):
        key = self._key(p)
        self._check_dimension(*key)
        target = self.targets.get(key)
        low = p.get("MinCapacity", target.min_capacity if target else None)
        high = p.get("MaxCapacity", target.max_capacity if target else None)
        if low is None or high is None:
            raise validation_error("MinCapacity and MaxCapacity are required when registering "
                                   "a new scalable target")
        if low > high:
            raise validation_error(f"Minimum capacity ({low}) cannot be greater than maximum "
                                   f"capacity ({high})")
        if target is None:
            role = self.fake.arn("iam", SAGEMAKER_SCALING_ROLE, region="")
            target = ScalableTarget(*key, low, high, p.get("RoleARN", role), now,
                                    self.fake.arn("application-autoscaling",
                                                  "scalable-target/" + os.urandom(18).hex()),
                                    self._next_seq(), dict(p.get("Tags", {})))
            self.targets[key] = target
        else:
            # Registering again updates only what the request names.
            target.min_capacity, target.max_capacity = low, high
            if "RoleARN" in p:
                target.role_arn = p["RoleARN"]
        if "SuspendedState" in p:
            target.suspended.update(p["SuspendedState"])
        return {"ScalableTargetARN": target.arn}

    def list_tags_for_resource(self, p, now):
        arn = p["ResourceARN"]
        for target in self.targets.values():
            if target.arn == arn:
                return {"Tags": dict(target.tags)}
        raise AwsError("ResourceNotFoundException", f"No scalable target found for ARN: {arn}")

    def deregister_scalable_target(self, p, now):
        key = self._key(p)
        self._require_target(key)
        self._drop_target(key)
        return {}

    def _drop_target(self, key):
        # Deregistering deletes the target's scaling policies too.
        del self.targets[key]
        for policy_key in [k for k in self.policies if k[:3] == key]:
            del self.policies[policy_key]

    def forget_endpoint(self, endpoint_name):
        """What DeleteEndpoint does to the endpoint's variant targets."""
        prefix = f"endpoint/{endpoint_name.lower()}/variant/"
        with self._lock:
            for key in [k for k in self.targets
                        if k[0] == "sagemaker" and k[1].lower().startswith(prefix)]:
                self._drop_target(key)

    def describe_scalable_targets(self, p, now):
        targets = [t for t in self.targets.values() if t.namespace == p["ServiceNamespace"]]
        if p.get("ResourceIds"):
            wanted = set(p["ResourceIds"])
            targets = [t for t in targets if t.resource_id in wanted]
        if "ScalableDimension" in p:
            targets = [t for t in targets if t.dimension == p["ScalableDimension"]]
        page, token = self._page(targets, p, 50)
        doc = {"ScalableTargets": [t.describe() for t in page]}
        if token:
            doc["NextToken"] = token
        return doc

    def put_scaling_policy(self, p, now):
        key = self._key(p)
        self._require_target(key)
        policy_key = key + (p["PolicyName"],)
        existing = self.policies.get(policy_key)
        policy_type = p.get("PolicyType", existing.policy_type if existing else None)
        if policy_type is None:
            raise validation_error("PolicyType is required when creating a scaling policy")
        config_name = POLICY_CONFIGURATIONS[policy_type]
        configuration = {config_name: p[config_name]} if config_name in p else \
            (existing.configuration if existing and existing.policy_type == policy_type else None)
        if configuration is None:
            raise validation_error(f"{config_name} is required for a {policy_type} policy")
        tracking = configuration.get("TargetTrackingScalingPolicyConfiguration")
        if tracking is not None and not ({"PredefinedMetricSpecification",
                                          "CustomizedMetricSpecification"} & set(tracking)):
            raise validation_error("Either PredefinedMetricSpecification or "
                                   "CustomizedMetricSpecification must be specified")
        namespace, resource_id, dimension = key
        if existing is not None:
            existing.policy_type, existing.configuration = policy_type, configuration
            existing.alarms = self._alarms(policy_type, resource_id)
            policy = existing
        else:
            arn = self.fake.arn("autoscaling",
                                f"scalingPolicy:{uuid.uuid4()}:resource/{namespace}/{resource_id}"
                                f":policyName/{p['PolicyName']}")
            policy = ScalingPolicy(p["PolicyName"], arn, namespace, resource_id, dimension,
                                   policy_type, now, self._next_seq(), configuration,
                                   self._alarms(policy_type, resource_id))
            self.policies[policy_key] = policy
        return {"PolicyARN": policy.arn, "Alarms": policy.alarms}

    def _alarms(self, policy_type, resource_id):
        # Target tracking creates a high and a low CloudWatch alarm.
        if policy_type != "TargetTrackingScaling":
            return []
        alarms = []
        for side in ("AlarmHigh", "AlarmLow"):
            name = f"TargetTracking-{resource_id}-{side}-{uuid.uuid4()}"
            alarms.append({"AlarmName": name, "AlarmARN": self.fake.arn("cloudwatch", f"alarm:{name}")})
        return alarms

    def delete_scaling_policy(self, p, now):
        policy_key = self._key(p) + (p["PolicyName"],)
        if policy_key not in self.policies:
            namespace, resource_id, dimension, name = policy_key
            raise AwsError("ObjectNotFoundException",
                           f"No scaling policy found for service namespace: {namespace}, "
                           f"resource ID: {resource_id}, scalable dimension: {dimension}, "
                           f"policy name: {name}")
        del self.policies[policy_key]
        return {}

    def describe_scaling_policies(self, p, now):
        policies = [x for x in self.policies.values() if x.namespace == p["ServiceNamespace"]]
        if p.get("PolicyNames"):
            wanted = set(p["PolicyNames"])
            policies = [x for x in policies if x.name in wanted]
        if "ResourceId" in p:
            policies = [x for x in policies if x.resource_id == p["ResourceId"]]
        if "ScalableDimension" in p:
            policies = [x for x in policies if x.dimension == p["ScalableDimension"]]
        page, token = self._page(policies, p, 10)
        doc = {"ScalingPolicies": [x.describe() for x in page]}
        if token:
            doc["NextToken"] = token
        return doc

    @staticmethod
    def _page(items, p, default_limit):
        return paginate(items, "seq", lambda item: (item.seq,), False,
                        p.get("MaxResults", default_limit), p.get("NextToken"),
                        lambda: AwsError("InvalidNextTokenException", "Invalid token"))

    def state(self):
        with self._lock:
            return {
                "scalable_targets": [t.describe() for t in sorted(self.targets.values(),
                                                                   key=lambda t: t.seq)],
                "scaling_policies": [x.describe() for x in sorted(self.policies.values(),
                                                                   key=lambda x: x.seq)],
            }


# --------------------------------------------------------------------------
# HTTP plumbing shared by the three faces of the server
# --------------------------------------------------------------------------

@dataclass
class Outcome:
    """What to answer; `action` "drop" closes the connection silently and
    "hang" holds it open until the client goes away or hangs are released."""
    status: int = 200
    body: bytes = b""
    content_type: str = JSON_CONTENT_TYPE
    headers: dict = field(default_factory=dict)
    action: str = "reply"
    error: str | None = None


def _reject_json_constant(name):
    # Python would accept NaN and Infinity; JSON (and Coral) do not.
    raise ValueError(f"invalid JSON constant {name}")


def json_outcome(doc, status=200, content_type="application/json"):
    return Outcome(status, json_bytes(doc), content_type)


# --------------------------------------------------------------------------
# IMDSv2
# --------------------------------------------------------------------------

class Imds:
    """The instance metadata service, token-protected, answering only once
    enabled through the control API."""

    TOKEN_PATH = "/latest/api/token"
    CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"

    def __init__(self, fake):
        self.fake = fake
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        with self._lock:
            self.settings = None
            self.credential = None
            self.issued_at = 0.0
            self.served_once = False
            self.tokens = {}

    def configure(self, doc):
        if not isinstance(doc, dict):
            raise ControlError("imds settings must be a JSON object")
        if doc.get("enabled") is False:
            self.reset()
            return {"enabled": False}
        role = doc.get("role")
        if not isinstance(role, str) or not role or "/" in role:
            raise ControlError("imds needs a role name")
        expires_in = doc.get("expires_in_s", 6 * 3600)
        grace = doc.get("rotate_grace_s", 60)
        for name, value in (("expires_in_s", expires_in), ("rotate_grace_s", grace)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ControlError(f"{name} must be a non-negative number")
        now = self.fake.now()
        cred = Credential(doc.get("id") or new_access_key_id(), doc.get("secret") or new_secret(),
                          doc.get("token") or new_session_token(), now + expires_in)
        self.fake.keyring.add(cred)
        with self._lock:
            self.settings = {"role": role, "expires_in_s": float(expires_in),
                             "rotate": bool(doc.get("rotate", False)), "rotate_grace_s": float(grace)}
            self.credential, self.issued_at, self.served_once = cred, now, False
        return self.describe()

    def describe(self):
        with self._lock:
            if self.settings is None:
                return {"enabled": False}
            return {"enabled": True, **self.settings, "id": self.credential.key_id,
                    "expires_at": self.credential.expires_at}

    def _operation(self, path):
        if path == self.TOKEN_PATH:
            return "IMDS:token"
        if path in (self.CREDENTIALS_PATH, self.CREDENTIALS_PATH.rstrip("/")):
            return "IMDS:role"
        if path.startswith(self.CREDENTIALS_PATH):
            return "IMDS:credentials"
        return "IMDS:other"

    def handle(self, req):
        now = self.fake.now()
        op = self._operation(req.path)
        record = self.fake.calls.start(now, op=op, service="imds")
        outcome, key_id = self._answer(req, op, now)
        self.fake.calls.update(record, status=outcome.status, error=outcome.error,
                               access_key=key_id)
        return outcome

    def _answer(self, req, op, now):
        """The answer, and the access key id it hands out if any."""
        with self._lock:
            if self.settings is None:
                return self._text(404, "Not Found", "NotFound"), None
            if op == "IMDS:token":
                if req.method != "PUT":
                    return self._text(405, "Method Not Allowed", "MethodNotAllowed"), None
                return self._issue_token(req, now), None
            if req.method != "GET":
                return self._text(405, "Method Not Allowed", "MethodNotAllowed"), None
            expiry = self.tokens.get(req.header("x-aws-ec2-metadata-token") or "")
            if expiry is None or now >= expiry:
                return self._text(401, "Unauthorized", "Unauthorized"), None
            if op == "IMDS:role":
                return self._text(200, self.settings["role"]), None
            if op == "IMDS:credentials" and \
                    req.path[len(self.CREDENTIALS_PATH):] == self.settings["role"]:
                return self._credentials(now)
            return self._text(404, "Not Found", "NotFound"), None

    def _issue_token(self, req, now):
        ttl = req.header("x-aws-ec2-metadata-token-ttl-seconds")
        if ttl is None or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return self._text(400, "Bad Request", "BadRequest")
        token = base64.urlsafe_b64encode(os.urandom(42)).decode()
        self.tokens[token] = now + int(ttl)
        outcome = self._text(200, token)
        outcome.headers["X-aws-ec2-metadata-token-ttl-seconds"] = ttl
        return outcome

    def _credentials(self, now):
        if self.settings["rotate"] and self.served_once:
            # A fresh key each fetch; the previous one keeps working a while,
            # like real role credentials overlapping at rotation.
            old = self.credential
            self.credential = Credential(new_access_key_id(), new_secret(), new_session_token(),
                                         now + self.settings["expires_in_s"])
            self.issued_at = now
            self.fake.keyring.add(self.credential)
            self.fake.keyring.expire_by(old.key_id, now + self.settings["rotate_grace_s"])
        self.served_once = True
        cred = self.credential
        doc = {"Code": "Success", "LastUpdated": iso8601(self.issued_at), "Type": "AWS-HMAC",
               "AccessKeyId": cred.key_id, "SecretAccessKey": cred.secret, "Token": cred.token,
               "Expiration": iso8601(cred.expires_at)}
        return Outcome(200, json.dumps(doc, indent=2).encode(), "text/plain"), cred.key_id

    @staticmethod
    def _text(status, text, error=None):
        return Outcome(status, text.encode(), "text/plain", error=error)


# --------------------------------------------------------------------------
# EKS (restJson1): the clusters whose Kubernetes API the fake also serves
# --------------------------------------------------------------------------

EKS_VERSION = "1.31"
EKS_NAME_PATTERN = re.compile(r"[0-9A-Za-z][A-Za-z0-9\-_]{0,99}")
EKS_CONTENT_TYPE = "application/json"

# restJson1 answers authentication errors with 403 and throttling with 429,
# where awsJson says 400 for both.
REST_STATUS = {
    "MissingAuthenticationTokenException": 403,
    "IncompleteSignatureException": 403,
    "InvalidSignatureException": 403,
    "UnrecognizedClientException": 403,
    "ExpiredTokenException": 403,
    "ThrottlingException": 429,
}


@dataclass
class EksCluster:
    name: str
    arn: str
    created: float
    from_cli: bool = False


class EksBackend:
    """The EKS clusters the fake knows: made with --eks or the control API."""

    def __init__(self, fake):
        self.fake = fake
        self._lock = fake.lock
        self.clusters = {}

    def reset(self):
        """Clusters from the command line stay; the others go."""
        with self._lock:
            self.clusters = {n: c for n, c in self.clusters.items() if c.from_cli}

    def create(self, name, from_cli=False):
        if not isinstance(name, str) or not EKS_NAME_PATTERN.fullmatch(name):
            raise ControlError("an EKS cluster name is 1-100 letters, digits, '-' or '_', "
                               "starting with a letter or digit")
        with self._lock:
            cluster = self.clusters.get(name)
            if cluster is None:
                cluster = EksCluster(name, self.fake.arn("eks", f"cluster/{name}"),
                                     self.fake.now(), from_cli)
                self.clusters[name] = cluster
            cluster.from_cli = cluster.from_cli or from_cli
            self.fake.karpenter.rescale(name)
            return self.describe(cluster)

    def get(self, name):
        with self._lock:
            return self.clusters.get(name)

    def names(self):
        with self._lock:
            return sorted(self.clusters)

    def describe(self, cluster):
        ca_data = base64.b64encode(self.fake.kubernetes_ca_pem.encode()).decode() \
            if self.fake.kubernetes_ca_pem else None
        return {"cluster": {
            "name": cluster.name, "arn": cluster.arn,
            "endpoint": f"https://127.0.0.1:{self.fake.kubernetes_port}",
            "certificateAuthority": {"data": ca_data},
            "status": "ACTIVE", "version": EKS_VERSION,
            "accessConfig": {"authenticationMode": "API"},
            "createdAt": epoch(cluster.created)}}

    def describe_by_name(self, name):
        with self._lock:
            cluster = self.clusters.get(name)
            if cluster is None:
                raise AwsError("ResourceNotFoundException", f"No cluster found for name: {name}.",
                               status=404, extra={"clusterName": name})
            return self.describe(cluster)

    def state(self):
        with self._lock:
            return [{**self.describe(c)["cluster"], "from_cli": c.from_cli}
                    for c in sorted(self.clusters.values(), key=lambda c: c.name)]


# --------------------------------------------------------------------------
# EKS bearer tokens (aws-iam-authenticator's k8s-aws-v1 form)
# --------------------------------------------------------------------------

TOKEN_PREFIX = "k8s-aws-v1."
TOKEN_PARAMS = {"Action", "Version", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
                "X-Amz-Expires", "X-Amz-Security-Token", "X-Amz-SignedHeaders",
                "X-Amz-Signature"}
TOKEN_REQUIRED = TOKEN_PARAMS - {"X-Amz-Security-Token"}
TOKEN_SIGNED_HEADERS = ["host", "x-k8s-aws-id"]
TOKEN_MAX_EXPIRES_S = 900
TOKEN_CLOCK_SKEW_S = 5 * 60
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class TokenRefused(Exception):
    """Why a bearer token was refused; it goes to the call log only."""

    def __init__(self, reason, access_key=None):
        super().__init__(reason)
        self.reason = reason
        self.access_key = access_key


@dataclass
class TokenIdentity:
    access_key: str
    cluster: str


class EksTokenVerifier:
    """Checks `Bearer k8s-aws-v1.<base64url(presigned STS URL)>` as EKS does:
    the URL must be a GetCallerIdentity call presigned for the cluster's
    name in `x-k8s-aws-id`.  The name is not in the URL, only signed, so the
    cluster is the known one whose name makes the signature match."""

    def __init__(self, fake):
        self.fake = fake

    def verify(self, authorization):
        url = self._token_url(authorization)
        host = self._check_url(url)
        params = self._query_params(url.query)
        self._check_action(params)
        key_id, date = self._check_credential(params)
        try:
            self._check_time(params, date)
            cred = self._check_key(params, key_id)
            cluster = self._match_cluster(url.query, params, host, cred, date)
        except TokenRefused as refused:
            refused.access_key = key_id
            raise
        return TokenIdentity(key_id, cluster)

    @staticmethod
    def _token_url(authorization):
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenRefused("no bearer token")
        token = token.strip()
        if not token.startswith(TOKEN_PREFIX):
            raise TokenRefused(f"the token does not start with {TOKEN_PREFIX}")
        body = token[len(TOKEN_PREFIX):]
        if not re.fullmatch(r"[A-Za-z0-9_-]+", body):
            raise TokenRefused("the token is not unpadded base64url")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        except (binascii.Error, ValueError):
            raise TokenRefused("the token is not unpadded base64url") from None
        return urllib.parse.urlsplit(raw)

    def _check_url(self, url):
        """The STS host the URL names, as signed."""
        host = url.netloc.lower()
        suffix = "amazonaws.com.cn" if partition_for(self.fake.config.region) == "aws-cn" \
            else "amazonaws.com"
        sts_hosts = {f"sts.{self.fake.config.region}.{suffix}", f"sts.{suffix}"}
        own = f"127.0.0.1:{self.fake.aws_port}"
        if host.split(":")[0] in sts_hosts:
            if url.scheme != "https":
                raise TokenRefused(f"the URL's scheme is {url.scheme!r}, not 'https'")
        elif host != own or url.scheme not in ("http", "https"):
            raise TokenRefused(f"the URL's host {host!r} is not an STS endpoint "
                               f"({', '.join(sorted(sts_hosts))} or {own})")
        if url.path != "/" or url.fragment:
            raise TokenRefused(f"the URL's path is {url.path!r}, not '/'")
        return url.netloc

    @staticmethod
    def _query_params(query):
        params = {}
        for part in query.split("&"):
            name, sep, value = part.partition("=")
            name = urllib.parse.unquote(name)
            if not sep or name not in TOKEN_PARAMS:
                raise TokenRefused(f"unexpected query parameter {name!r}")
            if name in params:
                raise TokenRefused(f"query parameter {name} given twice")
            params[name] = urllib.parse.unquote(value)
        missing = sorted(TOKEN_REQUIRED - set(params))
        if missing:
            raise TokenRefused(f"missing query parameters {missing}")
        return params

    @staticmethod
    def _check_action(params):
        if params["Action"] != "GetCallerIdentity" or params["Version"] != "2011-06-15":
            raise TokenRefused(f"the URL calls {params['Action']} version {params['Version']}, "
                               "not GetCallerIdentity 2011-06-15")
        if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
            raise TokenRefused(f"unsupported algorithm {params['X-Amz-Algorithm']!r}")
        signed = params["X-Amz-SignedHeaders"].split(";")
        if sorted(signed) != TOKEN_SIGNED_HEADERS:
            raise TokenRefused(f"the signed headers are {signed}, not host and x-k8s-aws-id")

    def _check_credential(self, params):
        parts = params["X-Amz-Credential"].split("/")
        if len(parts) != 5:
            raise TokenRefused("the credential is not KEY/DATE/REGION/SERVICE/aws4_request")
        key_id, date, region, service, terminator = parts
        if service != "sts" or terminator != "aws4_request":
            raise TokenRefused(f"the credential is scoped to {service}/{terminator}, "
                               "not sts/aws4_request", key_id)
        if region != self.fake.config.region:
            raise TokenRefused(f"the credential is scoped to region {region}, "
                               f"not {self.fake.config.region}", key_id)
        if date != params["X-Amz-Date"][:8]:
            raise TokenRefused("the credential's date is not X-Amz-Date's", key_id)
        return key_id, date

    def _check_time(self, params, date):
        try:
            signed_at = datetime.datetime.strptime(params["X-Amz-Date"], AMZ_DATE_FORMAT).replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            raise TokenRefused(f"X-Amz-Date {params['X-Amz-Date']!r} is not YYYYMMDDTHHMMSSZ") \
                from None
        expires = params["X-Amz-Expires"]
        if not expires.isdigit() or not 1 <= int(expires) <= TOKEN_MAX_EXPIRES_S:
            raise TokenRefused(f"X-Amz-Expires {expires!r} is not between 1 and "
                               f"{TOKEN_MAX_EXPIRES_S}")
        now = self.fake.now()
        if signed_at > now + TOKEN_CLOCK_SKEW_S:
            raise TokenRefused(f"the token is dated {params['X-Amz-Date']}, in the future")
        if now > signed_at + int(expires):
            raise TokenRefused(f"the token expired at {amz_date(signed_at + int(expires))}")

    def _check_key(self, params, key_id):
        cred = self.fake.keyring.get(key_id)
        if cred is None:
            raise TokenRefused("unknown access key")
        if cred.expires_at is not None and self.fake.now() >= cred.expires_at:
            raise TokenRefused("the access key has expired")
        token = params.get("X-Amz-Security-Token")
        if (cred.token is None) != (token is None) or \
                (token is not None and not hmac.compare_digest(cred.token, token)):
            raise TokenRefused("the session token is missing, unexpected or wrong")
        return cred

    def _match_cluster(self, query, params, host, cred, date):
        unsigned = "&".join(part for part in query.split("&")
                            if urllib.parse.unquote(part.partition("=")[0]) != "X-Amz-Signature")
        scope = f"{date}/{self.fake.config.region}/sts/aws4_request"
        for name in self.fake.eks.names():
            canonical = "\n".join(["GET", "/", canonical_query(unsigned), f"host:{host}",
                                   f"x-k8s-aws-id:{name}", "", "host;x-k8s-aws-id",
                                   EMPTY_SHA256])
            expected = signature(cred.secret, date, self.fake.config.region, "sts",
                                 string_to_sign(params["X-Amz-Date"], scope, canonical))
            if hmac.compare_digest(expected, params["X-Amz-Signature"]):
                return name
        raise TokenRefused("the signature matches no known EKS cluster (a wrong secret, a "
                           "changed URL, or a token for a cluster the fake does not know)")


# --------------------------------------------------------------------------
# The Kubernetes API of the fake EKS clusters: Karpenter's two kinds
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class KubeResource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self):
        return f"{self.group}/{self.version}"

    @property
    def path(self):
        return f"/apis/{self.group}/{self.version}/{self.plural}"

    @property
    def qualified(self):
        return f"{self.plural}.{self.group}"


NODEPOOLS = KubeResource("karpenter.sh", "v1", "nodepools", "NodePool")
NODECLASSES = KubeResource("karpenter.sagemaker.amazonaws.com", "v1", "hyperpodnodeclasses",
                           "HyperpodNodeClass")
KUBE_RESOURCES = (NODEPOOLS, NODECLASSES)
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", APPLY_PATCH)
KUBE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
KUBE_OP = re.compile(r"[A-Z]+ (nodepools|hyperpodnodeclasses)(/\S+)?")
MAX_NODE_CLASS_GROUPS = 10
# The limits the fake's Karpenter understands: node counts and accelerators.
NODE_LIMITS = ("nodes", "nvidia.com/gpu", "aws.amazon.com/neuron")

GPUS_PER_NODE = {
    "ml.g5.xlarge": 1, "ml.g5.12xlarge": 4, "ml.g5.48xlarge": 8,
    "ml.g6.xlarge": 1, "ml.g6.12xlarge": 4, "ml.g6.48xlarge": 8,
    "ml.g4dn.xlarge": 1, "ml.g4dn.12xlarge": 4,
    "ml.p4d.24xlarge": 8, "ml.p4de.24xlarge": 8, "ml.p5.48xlarge": 8, "ml.p5e.48xlarge": 8,
    "ml.p6-b200.48xlarge": 8,
}
NEURON_PER_NODE = {"ml.trn1.32xlarge": 16}


class KubeError(Exception):
    """An answer as a Kubernetes Status."""

    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def outcome(self):
        return kube_status(self.code, self.reason, self.message, self.details)


def kube_status(code, reason, message, details=None):
    doc = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason}
    if details is not None:
        doc["details"] = details
    doc["code"] = code
    return json_outcome(doc, code)


def status_phrase(code):
    """"TooManyRequests" for 429: Kubernetes reasons are the phrases run together."""
    try:
        return http.HTTPStatus(code).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "InternalError"


def kube_unauthorized():
    return kube_status(401, "Unauthorized", "Unauthorized")


def kube_not_found(resource, name):
    return KubeError(404, "NotFound", f'{resource.qualified} "{name}" not found',
                     {"name": name, "group": resource.group, "kind": resource.plural})


def kube_bad_request(message):
    return KubeError(400, "BadRequest", message)


def kube_invalid(resource, name, causes):
    """422 as the apiserver words a failed validation; causes are
    (field, reason, detail) with detail like 'Required value'."""
    errors = [f"{f}: {detail}" for f, _, detail in causes]
    joined = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return KubeError(422, "Invalid",
                     f'{resource.kind}.{resource.group} "{name}" is invalid: {joined}',
                     {"name": name, "group": resource.group, "kind": resource.kind,
                      "causes": [{"reason": r, "message": d, "field": f} for f, r, d in causes]})


def _required(path):
    return (path, "FieldValueRequired", "Required value")


def _bad_value(path, value, why):
    return (path, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {why}")


def _unsupported(path, value, supported):
    return (path, "FieldValueNotSupported",
            f'Unsupported value: {json.dumps(value)}: supported values: "{supported}"')


def quantity(value):
    """A limit as an int, or None unless a non-negative integer (the fake
    understands no suffixes)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _node_class_ref(spec):
    template = spec.get("template")
    inner = template.get("spec") if isinstance(template, dict) else None
    return inner.get("nodeClassRef") if isinstance(inner, dict) else None


def validate_nodepool(spec):
    return _check_node_class_ref(_node_class_ref(spec)) + _check_limits(spec.get("limits"))


def _check_node_class_ref(ref):
    path = "spec.template.spec.nodeClassRef"
    if not isinstance(ref, dict):
        return [_required(path)]
    causes = []
    for key, wanted in (("group", NODECLASSES.group), ("kind", NODECLASSES.kind)):
        if key not in ref:
            causes.append(_required(f"{path}.{key}"))
        elif ref[key] != wanted:
            causes.append(_unsupported(f"{path}.{key}", ref[key], wanted))
    if not isinstance(ref.get("name"), str) or not ref["name"]:
        causes.append(_required(f"{path}.name"))
    return causes


def _check_limits(limits):
    if limits is None:
        return []
    if not isinstance(limits, dict):
        return [_bad_value("spec.limits", limits, "must map resource names to quantities")]
    return [_bad_value(f"spec.limits[{key}]", value, "must be a non-negative integer quantity")
            for key, value in limits.items() if quantity(value) is None]


def validate_nodeclass(spec):
    groups = spec.get("instanceGroups")
    if groups is None:
        return [_required("spec.instanceGroups")]
    if not isinstance(groups, list):
        return [_bad_value("spec.instanceGroups", groups, "must be a list of strings")]
    if not 1 <= len(groups) <= MAX_NODE_CLASS_GROUPS:
        return [_bad_value("spec.instanceGroups", len(groups),
                           f"must have between 1 and {MAX_NODE_CLASS_GROUPS} items")]
    return [_bad_value(f"spec.instanceGroups[{i}]", g, "must be a non-empty string")
            for i, g in enumerate(groups) if not isinstance(g, str) or not g]


VALIDATORS = {NODEPOOLS: validate_nodepool, NODECLASSES: validate_nodeclass}


def transport_fault(fault):
    """The faults every protocol shares: a slow, dropped or hung answer."""
    if fault.kind == "slow":
        time.sleep(fault.seconds)
    if fault.kind == "drop" and not fault.after:
        return Outcome(action="drop")
    if fault.kind == "hang":
        return Outcome(action="hang")
    return None


@dataclass
class KubeObject:
    resource: KubeResource
    name: str
    uid: str
    created: float
    resource_version: int
    generation: int
    spec: dict
    labels: dict | None
    annotations: dict | None
    manager: str                  # the field manager that applied last
    applied_at: dict = field(default_factory=dict)   # manager -> time
    transitions: dict = field(default_factory=dict)  # condition type -> (status, since)

    def metadata(self):
        doc = {"name": self.name, "uid": self.uid, "resourceVersion": str(self.resource_version),
               "generation": self.generation, "creationTimestamp": iso8601(self.created)}
        if self.labels:
            doc["labels"] = self.labels
        if self.annotations:
            doc["annotations"] = self.annotations
        doc["managedFields"] = [
            {"manager": m, "operation": "Apply", "apiVersion": self.resource.api_version,
             "time": iso8601(t), "fieldsType": "FieldsV1", "fieldsV1": {}}
            for m, t in sorted(self.applied_at.items(), key=lambda item: item[1])]
        return doc

    def document(self, status):
        return {"apiVersion": self.resource.api_version, "kind": self.resource.kind,
                "metadata": self.metadata(), "spec": self.spec, "status": status}

    def conditions(self, now, found):
        """Kubernetes conditions from (type, ok, reason, message); the time of
        the last change of each is remembered."""
        out = []
        for kind, ok, reason, message in found:
            status = "True" if ok else "False"
            seen = self.transitions.get(kind)
            if seen is None or seen[0] != status:
                self.transitions[kind] = seen = (status, now)
            out.append({"type": kind, "status": status, "observedGeneration": self.generation,
                        "lastTransitionTime": iso8601(seen[1]), "reason": reason,
                        "message": message})
        return out


class KubernetesBackend:
    """NodePools and HyperpodNodeClasses, cluster-scoped, per EKS cluster."""

    def __init__(self, fake):
        self.fake = fake
        self._lock = fake.lock
        self.reset()

    def reset(self):
        with self._lock:
            self.objects = {}   # EKS cluster -> plural -> name -> KubeObject
            self._versions = {}

    def _store(self, eks, resource):
        return self.objects.setdefault(eks, {}).setdefault(resource.plural, {})

    def _next_version(self, eks):
        self._versions[eks] = self._versions.get(eks, 0) + 1
        return self._versions[eks]

    def find(self, eks, resource, name):
        with self._lock:
            return self.objects.get(eks, {}).get(resource.plural, {}).get(name)

    def objects_of(self, eks, resource):
        with self._lock:
            store = self.objects.get(eks, {}).get(resource.plural, {})
            return [store[name] for name in sorted(store)]

    # Verbs ------------------------------------------------------------------

    def get(self, eks, resource, name):
        with self._lock:
            obj = self.find(eks, resource, name)
            if obj is None:
                raise kube_not_found(resource, name)
            return obj.document(self.status(eks, obj))

    def list(self, eks, resource):
        with self._lock:
            items = [o.document(self.status(eks, o)) for o in self.objects_of(eks, resource)]
            return {"apiVersion": resource.api_version, "kind": f"{resource.kind}List",
                    "metadata": {"resourceVersion": str(self._versions.get(eks, 0))},
                    "items": items}

    def delete(self, eks, resource, name):
        with self._lock:
            obj = self.find(eks, resource, name)
            if obj is None:
                raise kube_not_found(resource, name)
            doc = obj.document(self.status(eks, obj))
            del self._store(eks, resource)[name]
            self._next_version(eks)
            self.fake.karpenter.rescale(eks)
            return doc

    def apply(self, eks, resource, name, body, manager, force):
        """Server-side apply of `body`; the object and whether it was made."""
        with self._lock:
            self._check_applied(resource, name, body)
            metadata = body.get("metadata", {})
            spec = body.get("spec")
            labels, annotations = metadata.get("labels"), metadata.get("annotations")
            obj = self.find(eks, resource, name)
            now = self.fake.now()
            if obj is None:
                obj = KubeObject(resource, name, str(uuid.uuid4()), now, self._next_version(eks),
                                 1, spec, labels, annotations, manager)
                self._store(eks, resource)[name] = obj
                created = True
            else:
                self._update(eks, obj, spec, labels, annotations, manager, force)
                created = False
            obj.applied_at[manager] = now
            self.fake.karpenter.rescale(eks)
            return obj.document(self.status(eks, obj)), created

    def _update(self, eks, obj, spec, labels, annotations, manager, force):
        changed = (spec, labels, annotations) != (obj.spec, obj.labels, obj.annotations)
        if not changed:
            return  # an apply that changes nothing changes no version either
        if manager != obj.manager and not force:
            fields = sorted(f".spec.{k}" for k in set(spec or {}) | set(obj.spec or {})
                            if (spec or {}).get(k) != (obj.spec or {}).get(k)) or [".metadata"]
            plural = "s" if len(fields) > 1 else ""
            raise KubeError(409, "Conflict",
                            f"Apply failed with {len(fields)} conflict{plural}: conflict with "
                            f'"{obj.manager}" using {obj.resource.api_version}: '
                            + "\n".join(fields),
                            {"causes": [{"reason": "FieldManagerConflict",
                                         "message": f'conflict with "{obj.manager}" using '
                                                    f"{obj.resource.api_version}",
                                         "field": f} for f in fields]})
        if spec != obj.spec:
            obj.generation += 1
        obj.spec, obj.labels, obj.annotations, obj.manager = spec, labels, annotations, manager
        obj.resource_version = self._next_version(eks)

    @staticmethod
    def _check_applied(resource, name, body):
        if body.get("apiVersion") != resource.api_version:
            raise kube_bad_request("Incorrect version specified in apply patch. Specified patch "
                                   f"version: {body.get('apiVersion')}, expected: "
                                   f"{resource.api_version}")
        metadata = body.get("metadata")
        if not isinstance(metadata, dict):
            metadata = {}
        if metadata.get("managedFields") is not None:
            raise kube_bad_request("metadata.managedFields must be nil")
        if body.get("kind") != resource.kind:
            raise kube_bad_request(f"the kind in the apply patch ({body.get('kind')}) does not "
                                   f"match the kind of the resource ({resource.kind})")
        if metadata.get("name") != name:
            raise kube_bad_request(f"the name of the object ({metadata.get('name') or ''}) "
                                   f"does not match the name on the URL ({name})")
        causes = []
        if not KUBE_NAME.fullmatch(name) or len(name) > 253:
            causes.append(_bad_value(
                "metadata.name", name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character "
                "(e.g. 'example.com', regex used for validation is "
                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"))
        for key in ("labels", "annotations"):
            value = metadata.get(key)
            if value is not None and not (isinstance(value, dict) and
                                          all(isinstance(v, str) for v in value.values())):
                causes.append(_bad_value(f"metadata.{key}", value, "must map strings to strings"))
        spec = body.get("spec")
        if not isinstance(spec, dict):
            causes.append(_required("spec"))
        else:
            causes += VALIDATORS[resource](spec)
        if causes:
            raise kube_invalid(resource, name, causes)

    # Status -----------------------------------------------------------------

    def status(self, eks, obj):
        now = self.fake.now()
        if obj.resource is NODECLASSES:
            return {"conditions": obj.conditions(now, [self._node_class_ready(eks, obj)])}
        ready, reason, message = self._pool_node_class(eks, obj)
        return {"conditions": obj.conditions(now, [
            ("ValidationSucceeded", True, "ValidationSucceeded", ""),
            ("NodeClassReady", ready, reason, message),
            ("Ready", ready, "Ready" if ready else "UnhealthyDependents",
             "" if ready else "NodeClassReady=False")])}

    def _node_class_ready(self, eks, obj):
        """Ready iff every instance group it names is in the HyperPod cluster
        this EKS cluster orchestrates."""
        eks_cluster = self.fake.eks.get(eks)
        cluster = eks_cluster and self.fake.sagemaker.cluster_for_eks(eks_cluster.arn,
                                                                      self.fake.now())
        if cluster is None:
            return ("Ready", False, "HyperPodClusterNotFound",
                    f"no SageMaker HyperPod cluster is orchestrated by EKS cluster {eks}")
        names = {g.name for g in cluster.groups}
        missing = [g for g in obj.spec["instanceGroups"] if g not in names]
        if missing:
            return ("Ready", False, "InstanceGroupsNotFound",
                    f"instance groups not found in SageMaker HyperPod cluster {cluster.name}: "
                    + ", ".join(missing))
        return ("Ready", True, "Ready", "")

    def _pool_node_class(self, eks, pool):
        name = _node_class_ref(pool.spec)["name"]
        node_class = self.find(eks, NODECLASSES, name)
        if node_class is None:
            return False, "NodeClassNotFound", f"HyperpodNodeClass {name} not found"
        if not self._node_class_ready(eks, node_class)[1]:
            return False, "NodeClassNotReady", f"HyperpodNodeClass {name} is not ready"
        return True, "NodeClassReady", ""

    def node_class_of_ready_pool(self, eks, pool):
        """The pool's node class when the pool is Ready, else None."""
        with self._lock:
            if not self._pool_node_class(eks, pool)[0]:
                return None
            return self.find(eks, NODECLASSES, _node_class_ref(pool.spec)["name"])

    def state(self):
        """EKS cluster -> plural -> name -> object."""
        with self._lock:
            return {eks: {r.plural: {o.name: o.document(self.status(eks, o))
                                     for o in self.objects_of(eks, r)} for r in KUBE_RESOURCES}
                    for eks in sorted(self.objects)}


class KubernetesApi:
    """The HTTPS face: EKS token authentication, routing, faults, call log."""

    def __init__(self, fake):
        self.fake = fake
        self.tokens = EksTokenVerifier(fake)

    @staticmethod
    def route(path):
        """(resource, name or None) for a path the fake serves, else None."""
        for resource in KUBE_RESOURCES:
            if path == resource.path:
                return resource, None
            rest = path[len(resource.path) + 1:] if path.startswith(resource.path + "/") else ""
            if rest and "/" not in rest:
                return resource, urllib.parse.unquote(rest)
        return None

    @staticmethod
    def operation(method, route, path):
        if route is None:
            return f"{method} {path}"
        resource, name = route
        return f"{method} {resource.plural}" + (f"/{name}" if name is not None else "")

    def handle(self, req):
        audit_id = str(uuid.uuid4())
        route = self.route(req.path)
        record = self.fake.calls.start(self.fake.now(), service="kubernetes",
                                       op=self.operation(req.method, route, req.path),
                                       request_id=audit_id)
        try:
            outcome = self._process(req, route, record)
        except Exception:  # a bug in the fake must not look like a network fault
            traceback.print_exc()
            outcome = kube_status(500, "InternalError",
                                  "Internal error occurred: the fake failed: see its stderr")
        outcome.headers["Audit-Id"] = audit_id
        outcome.headers["Cache-Control"] = "no-cache, private"
        self.fake.calls.answered(record, outcome, self._reason(outcome))
        return outcome

    @staticmethod
    def _reason(outcome):
        if outcome.status < 400:
            return None
        try:
            return json.loads(outcome.body).get("reason")
        except (ValueError, AttributeError):
            return None

    def _process(self, req, route, record):
        if self.fake.config.latency_ms:
            time.sleep(self.fake.config.latency_ms / 1000)
        try:
            identity = self.tokens.verify(req.header("authorization"))
        except TokenRefused as refused:
            self.fake.calls.update(record, access_key=refused.access_key, detail=refused.reason)
            return kube_unauthorized()
        self.fake.calls.update(record, access_key=identity.access_key,
                               eks_cluster=identity.cluster, signed_headers=TOKEN_SIGNED_HEADERS)
        try:
            self._check_route(req, route)
            fault = self.fake.faults.take("kubernetes", record["op"])
            if fault is not None:
                self.fake.calls.update(record, fault=fault.kind)
                early = self._fault_before(fault)
                if early is not None:
                    return early
            if not self.fake.limiter.allow("kubernetes", self.fake.config.rate_limit_rps,
                                           time.monotonic()):
                return self._too_many_requests()
            outcome = self._serve(req, identity.cluster, *route, record)
            return self._fault_after(fault, outcome)
        except KubeError as err:
            return err.outcome()

    @staticmethod
    def _check_route(req, route):
        if route is None:
            raise KubeError(404, "NotFound", "the server could not find the requested resource",
                            {})
        allowed = ("GET",) if route[1] is None else ("GET", "PATCH", "DELETE")
        if req.method not in allowed:
            raise KubeError(405, "MethodNotAllowed",
                            "the server does not allow this method on the requested resource",
                            {})

    def _serve(self, req, eks, resource, name, record):
        backend = self.fake.kubernetes
        if name is None:
            return json_outcome(backend.list(eks, resource))
        if req.method == "GET":
            return json_outcome(backend.get(eks, resource, name))
        if req.method == "DELETE":
            return json_outcome(backend.delete(eks, resource, name))
        manager, force, body = self._apply_request(req)
        self.fake.calls.update(record, body=body)
        doc, created = backend.apply(eks, resource, name, body, manager, force)
        return json_outcome(doc, 201 if created else 200)

    @staticmethod
    def _apply_request(req):
        content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
        if content_type not in PATCH_TYPES:
            raise KubeError(415, "UnsupportedMediaType",
                            "the body of the request was in an unknown format - accepted media "
                            "types include: " + ", ".join(PATCH_TYPES))
        if content_type != APPLY_PATCH:
            raise KubeError(415, "UnsupportedMediaType",
                            f"the fake serves only {APPLY_PATCH} patches, not {content_type}")
        query = urllib.parse.parse_qs(req.query)
        manager = (query.get("fieldManager") or [""])[0]
        if not manager:
            raise KubeError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                            "Required value: is required for apply patch",
                            {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                                {"reason": "FieldValueRequired",
                                 "message": "Required value: is required for apply patch",
                                 "field": "fieldManager"}]})
        try:
            body = json.loads(req.body, parse_constant=_reject_json_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise kube_bad_request(f"error decoding YAML: the fake parses only JSON-form YAML: "
                                   f"{exc}") from None
        if not isinstance(body, dict):
            raise kube_bad_request("error decoding YAML: the applied object must be a mapping")
        return manager, (query.get("force") or ["false"])[0] == "true", body

    # Faults -------------------------------------------------------------------

    def _fault_before(self, fault):
        if fault.kind in ("throttle", "http429"):
            return self._too_many_requests()
        if fault.kind == "status":
            return self._status_fault(fault)
        return transport_fault(fault)

    def _fault_after(self, fault, outcome):
        if fault is None:
            return outcome
        if fault.kind == "fail_after":
            return self._status_fault(Fault("status", code=500))
        if fault.kind == "drop" and fault.after:
            return Outcome(action="drop")
        return outcome

    @staticmethod
    def _too_many_requests():
        # What the apiserver's priority and fairness answers when overloaded.
        outcome = kube_status(429, "TooManyRequests", "Too many requests, please try again later.",
                              {"retryAfterSeconds": 1})
        outcome.headers["Retry-After"] = "1"
        return outcome

    @staticmethod
    def _status_fault(fault):
        reasons = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
                   504: "Timeout"}
        messages = {500: "Internal error occurred: injected fault",
                    503: "the server is currently unable to handle the request",
                    504: "the server was unable to return a response in the time allotted"}
        reason = fault.error or reasons.get(fault.code) or status_phrase(fault.code)
        message = fault.message or messages.get(fault.code, f"injected fault {fault.code}")
        return kube_status(fault.code, reason, message)


# --------------------------------------------------------------------------
# Karpenter: turns pending demand into instance group sizes
# --------------------------------------------------------------------------

class Karpenter:
    """HyperPod's managed Karpenter, reduced to arithmetic: pending work
    needing N nodes is spread over the Ready NodePools of the EKS cluster
    (by name), each pool filling its node class's instance groups in order
    up to its limits.  The result is the groups' counts in the HyperPod
    cluster, recomputed whenever anything it depends on changes."""

    def __init__(self, fake):
        self.fake = fake
        self._lock = fake.lock
        self.reset()

    def reset(self):
        with self._lock:
            self.demand = {}       # EKS cluster -> nodes wanted
            self.placements = {}   # EKS cluster -> [(pool, group, nodes)]

    def set_demand(self, eks, nodes):
        if self.fake.eks.get(eks) is None:
            raise ControlError(f"unknown EKS cluster {eks!r}")
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 0:
            raise ControlError("demand_nodes must be a non-negative integer")
        with self._lock:
            self.demand[eks] = nodes
            self.rescale(eks)
            return self.view()

    def rescale_cluster(self, cluster):
        if cluster.eks_arn:
            self.rescale(cluster.eks_arn.rsplit("/", 1)[1])

    def rescale(self, eks):
        with self._lock:
            eks_cluster = self.fake.eks.get(eks)
            hyperpod = eks_cluster and self.fake.sagemaker.cluster_for_eks(eks_cluster.arn,
                                                                           self.fake.now())
            self.placements[eks] = []
            if hyperpod is None:
                return
            if not hyperpod.autoscaling_enabled:
                hyperpod.karpenter = {}
                return
            # Groups it sized before and no longer uses go to zero.
            counts = dict.fromkeys(hyperpod.karpenter, 0)
            placements = self._place(eks, hyperpod, self.demand.get(eks, 0))
            for _, group, nodes in placements:
                counts[group] = counts.get(group, 0) + nodes
            hyperpod.karpenter = counts
            self.placements[eks] = placements

    def _place(self, eks, hyperpod, remaining):
        groups = {g.name: g for g in hyperpod.groups}
        placements = []
        for pool in self.fake.kubernetes.objects_of(eks, NODEPOOLS):
            node_class = self.fake.kubernetes.node_class_of_ready_pool(eks, pool)
            if node_class is None:
                continue
            budget = {k: quantity(v) for k, v in (pool.spec.get("limits") or {}).items()
                      if k in NODE_LIMITS}
            for name in node_class.spec["instanceGroups"]:
                per_node = self._per_node(groups[name].spec.get("InstanceType"))
                nodes = min(remaining, self._fits(budget, per_node))
                for key, amount in per_node.items():
                    if key in budget:
                        budget[key] -= nodes * amount
                remaining -= nodes
                placements.append((pool.name, name, nodes))
        return placements

    @staticmethod
    def _per_node(instance_type):
        return {"nodes": 1, "nvidia.com/gpu": GPUS_PER_NODE.get(instance_type, 0),
                "aws.amazon.com/neuron": NEURON_PER_NODE.get(instance_type, 0)}

    @staticmethod
    def _fits(budget, per_node):
        """How many nodes the remaining limits allow; every limit holds, and
        a node without a resource is not bound by its limit."""
        fits = [budget[k] // amount for k, amount in per_node.items() if k in budget and amount]
        return min(fits) if fits else math.inf

    def view(self):
        with self._lock:
            now = self.fake.now()
            out = {}
            for eks in self.fake.eks.names():
                hyperpod = self.fake.sagemaker.cluster_for_eks(self.fake.eks.get(eks).arn, now)
                placed = self.placements.get(eks, [])
                demand = self.demand.get(eks, 0)
                out[eks] = {
                    "demand_nodes": demand,
                    "pending_nodes": demand - sum(n for _, _, n in placed),
                    "hyperpod_cluster": hyperpod.name if hyperpod else None,
                    "autoscaling": bool(hyperpod and hyperpod.autoscaling_enabled),
                    "groups": dict(hyperpod.karpenter) if hyperpod else {},
                    "placements": [{"nodepool": p, "instance_group": g, "nodes": n}
                                   for p, g, n in placed]}
            return {"clusters": out}


# --------------------------------------------------------------------------
# The fake as a whole
# --------------------------------------------------------------------------

class FakeAws:
    """The whole fake: keys, settings, faults, call log and the services,
    independent of HTTP so it can be driven directly."""

    def __init__(self, config=None, models=None):
        self.config = config or Config()
        self.models = models or load_models()
        self.known_ops = {op for m in self.models.values() for op in m.operations}
        self.keyring = KeyRing()
        self.calls = CallLog()
        self.faults = FaultQueue()
        self.limiter = RateLimiter()
        self.verifier = SigV4Verifier(self)
        # HyperPod clusters, EKS clusters, their Kubernetes objects and
        # Karpenter read one another, so they share one lock.
        self.lock = threading.RLock()
        self.sagemaker = SageMakerBackend(self)
        self.autoscaling = AutoScalingBackend(self)
        self.backends = {"sagemaker": self.sagemaker, "application-autoscaling": self.autoscaling}
        self.eks = EksBackend(self)
        self.kubernetes = KubernetesBackend(self)
        self.kubernetes_api = KubernetesApi(self)
        self.karpenter = Karpenter(self)
        self.imds = Imds(self)
        self.control = ControlApi(self)
        # Where the servers listen, once they do.
        self.aws_port = None
        self.kubernetes_port = None
        self.kubernetes_ca_pem = None

    def now(self):
        return time.time() + self.config.clock_offset_s

    def arn(self, service, resource, region=None):
        region = self.config.region if region is None else region
        return f"arn:{partition_for(self.config.region)}:{service}:{region}:{self.config.account}:{resource}"

    def reset(self):
        """Forget resources, calls, faults and injected failures; keys,
        configuration and the EKS clusters from --eks stay."""
        self.sagemaker.reset()
        self.autoscaling.reset()
        self.eks.reset()
        self.kubernetes.reset()
        self.karpenter.reset()
        self.calls.clear()
        self.faults.clear()
        self.limiter.reset()

    def state(self):
        return {**self.sagemaker.state(self.now()), **self.autoscaling.state(),
                "eks": self.eks.state(), "kubernetes": self.kubernetes.state(),
                "karpenter": self.karpenter.view()["clusters"]}

    # AWS calls -------------------------------------------------------------

    def process(self, req):
        request_id = str(uuid.uuid4())
        prefix, _, op = (req.header("x-amz-target") or "").partition(".")
        model = self.models.get(prefix)
        record = self.calls.start(self.now(), op=op or None, request_id=request_id,
                                  service=model.signing_name if model else None)
        try:
            outcome = self._process(req, model, op, record)
        except Exception:  # a bug in the fake must not look like a network fault
            traceback.print_exc()
            outcome = self._error(AwsError("InternalFailure", "The fake failed: see its stderr.",
                                           status=500))
        outcome.headers["x-amzn-RequestId"] = request_id
        self.calls.answered(record, outcome, outcome.error)
        return outcome

    def _process(self, req, model, op, record):
        # Coral's order: routing, body syntax, operation, authentication;
        # then the fake's faults and throttling; then types, constraints and
        # the operation itself.
        if self.config.latency_ms:
            time.sleep(self.config.latency_ms / 1000)
        content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
        if req.method != "POST" or req.path != "/" or content_type != JSON_CONTENT_TYPE:
            # What Coral answers to anything it cannot route.
            return Outcome(404, b"<UnknownOperationException/>\n", "application/xml",
                           error="UnknownOperationException")
        try:
            params = self._parse_body(req.body)
            self.calls.update(record, body=params)
            if model is None or op not in model.operations:
                raise AwsError("UnknownOperationException")
            auth = parse_auth_header(req.header("authorization"))
            if auth is not None:
                self.calls.update(record, access_key=auth.access_key,
                                  signed_headers=auth.signed_headers)
            self.verifier.verify(req, auth, model.signing_name)
            if params is None:
                raise serialization_error(None)
            fault = self.faults.take(model.signing_name, op)
            if fault is not None:
                self.calls.update(record, fault=fault.kind)
                early = self._fault_before(fault)
                if early is not None:
                    return early
            if not self.limiter.allow(model.signing_name, self.config.rate_limit_rps, time.monotonic()):
                raise AwsError("ThrottlingException", "Rate exceeded")
            params, unknown = model.validate(op, params)
            if unknown:
                self.calls.update(record, unknown_members=unknown)
            try:
                result = self.backends[model.signing_name].call(op, params, self.now())
                outcome = Outcome(200, json_bytes(result))
            except AwsError as err:
                outcome = self._error(err)
            return self._fault_after(fault, outcome)
        except AwsError as err:
            return self._error(err)

    @staticmethod
    def _parse_body(body):
        if not body:
            return None
        try:
            return json.loads(body, parse_constant=_reject_json_constant)
        except (ValueError, UnicodeDecodeError):
            raise serialization_error(None) from None

    def _fault_before(self, fault):
        if fault.kind == "throttle":
            raise AwsError("ThrottlingException", "Rate exceeded")
        if fault.kind == "http429":
            raise AwsError("ThrottlingException", "Rate exceeded", status=429)
        if fault.kind == "status":
            raise self._status_error(fault)
        return transport_fault(fault)

    def _fault_after(self, fault, outcome, render=None):
        if fault is None:
            return outcome
        if fault.kind == "fail_after":
            # The work is done, but the client is told it failed.
            return (render or self._error)(self._status_error(Fault("status", code=500)))
        if fault.kind == "drop" and fault.after:
            return Outcome(action="drop")
        return outcome

    @staticmethod
    def _status_error(fault):
        # Messages from the AWS common errors reference.
        if fault.code == 503:
            code = "ServiceUnavailable"
            message = "The request has failed due to a temporary failure of the server."
        else:
            code, message = "InternalFailure", ("The request processing has failed because of an "
                                                "unknown error, exception or failure.")
        return AwsError(fault.error or code, fault.message or message, status=fault.code)

    def _error(self, err):
        return Outcome(err.status, json_bytes(err.document(self.config.qualified_error_types)),
                       error=err.code)

    # EKS calls (restJson1) -------------------------------------------------

    def process_eks(self, req):
        request_id = str(uuid.uuid4())
        name = req.path[len("/clusters/"):]
        op = "DescribeCluster" if req.method == "GET" and name and "/" not in name else None
        record = self.calls.start(self.now(), op=op, request_id=request_id, service="eks")
        try:
            outcome = self._process_eks(req, op, urllib.parse.unquote(name), record)
        except AwsError as err:
            outcome = self._rest_error(err)
        except Exception:  # a bug in the fake must not look like a network fault
            traceback.print_exc()
            outcome = self._rest_error(AwsError("InternalFailure",
                                                "The fake failed: see its stderr.", status=500))
        outcome.headers["x-amzn-RequestId"] = request_id
        self.calls.answered(record, outcome, outcome.error)
        return outcome

    def _process_eks(self, req, op, name, record):
        if self.config.latency_ms:
            time.sleep(self.config.latency_ms / 1000)
        if op is None:
            raise AwsError("UnknownOperationException", status=404)
        auth = parse_auth_header(req.header("authorization"))
        if auth is not None:
            self.calls.update(record, access_key=auth.access_key,
                              signed_headers=auth.signed_headers)
        self.verifier.verify(req, auth, "eks")
        fault = self.faults.take("eks", op)
        if fault is not None:
            self.calls.update(record, fault=fault.kind)
            early = self._fault_before(fault)
            if early is not None:
                return early
        if not self.limiter.allow("eks", self.config.rate_limit_rps, time.monotonic()):
            raise AwsError("ThrottlingException", "Rate exceeded")
        try:
            outcome = json_outcome(self.eks.describe_by_name(name), content_type=EKS_CONTENT_TYPE)
        except AwsError as err:
            outcome = self._rest_error(err)
        return self._fault_after(fault, outcome, render=self._rest_error)

    def _rest_error(self, err):
        return err.rest_outcome(self.config.qualified_error_types)


# --------------------------------------------------------------------------
# Control API
# --------------------------------------------------------------------------

class ControlApi:
    """Plain JSON over HTTP under /_fake/; see README.md."""

    def __init__(self, fake):
        self.fake = fake
        self.routes = {
            ("GET", "/_fake/health"): lambda doc, query: {
                "ok": True, "kubernetes_port": self.fake.kubernetes_port},
            ("GET", "/_fake/config"): lambda doc, query: self.fake.config.to_json(),
            ("POST", "/_fake/config"): self.set_config,
            ("GET", "/_fake/faults"): lambda doc, query: {"pending": self.fake.faults.pending()},
            ("POST", "/_fake/faults"): self.add_faults,
            ("POST", "/_fake/faults/clear"): self.clear_faults,
            ("GET", "/_fake/keys"): lambda doc, query: {"keys": self.fake.keyring.describe()},
            ("POST", "/_fake/keys"): self.change_keys,
            ("POST", "/_fake/fail_endpoint"): self.fail_endpoint,
            ("POST", "/_fake/fail_cluster"): self.fail_cluster,
            ("GET", "/_fake/calls"): self.calls,
            ("POST", "/_fake/calls/clear"): self.clear_calls,
            ("GET", "/_fake/state"): lambda doc, query: self.fake.state(),
            ("POST", "/_fake/reset"): self.reset,
            ("GET", "/_fake/imds"): lambda doc, query: self.fake.imds.describe(),
            ("POST", "/_fake/imds"): lambda doc, query: self.fake.imds.configure(doc),
            ("GET", "/_fake/eks"): lambda doc, query: {"clusters": self.fake.eks.state()},
            ("POST", "/_fake/eks"): self.create_eks,
            ("GET", "/_fake/karpenter"): lambda doc, query: self.fake.karpenter.view(),
            ("POST", "/_fake/karpenter"): self.karpenter_demand,
            ("POST", "/_fake/kubectl_apply"): self.kubectl_apply,
        }

    def handle(self, req):
        route = self.routes.get((req.method, req.path.rstrip("/") or "/"))
        if route is None:
            return json_outcome({"error": f"no control route {req.method} {req.path}"}, 404)
        try:
            doc = json.loads(req.body) if req.body.strip() else {}
            query = dict(urllib.parse.parse_qsl(req.query))
            return json_outcome(route(doc, query))
        except (ControlError, ValueError, TypeError) as exc:
            return json_outcome({"error": str(exc)}, 400)

    def set_config(self, doc, query):
        self.fake.config.update(doc)
        if "rate_limit_rps" in doc:
            self.fake.limiter.reset()
        return self.fake.config.to_json()

    def add_faults(self, doc, query):
        if isinstance(doc, dict):
            doc = doc["faults"] if "faults" in doc else [doc]
        if not isinstance(doc, list):
            raise ControlError("expected a list of faults")
        self.fake.faults.add([Fault.from_json(item, self.fake.known_ops) for item in doc])
        return {"pending": self.fake.faults.pending()}

    def clear_faults(self, doc, query):
        self.fake.faults.clear()
        return {"pending": []}

    def change_keys(self, doc, query):
        if not isinstance(doc, dict):
            raise ControlError("expected {\"add\": [...], \"remove\": [...]}")
        now = self.fake.now()
        for item in doc.get("add", []):
            if not isinstance(item, dict) or not item.get("id") or not item.get("secret"):
                raise ControlError("each key needs an id and a secret")
            expires_in = item.get("expires_in_s")
            self.fake.keyring.add(Credential(item["id"], item["secret"], item.get("token") or None,
                                             None if expires_in is None else now + expires_in))
        removed = [key_id for key_id in doc.get("remove", []) if self.fake.keyring.remove(key_id)]
        return {"removed": removed, "keys": self.fake.keyring.describe()}

    def fail_endpoint(self, doc, query):
        name, reason = self._name_and_reason(doc)
        self.fake.sagemaker.inject_endpoint_failure(name, reason)
        return {"ok": True}

    def fail_cluster(self, doc, query):
        name, reason = self._name_and_reason(doc)
        self.fake.sagemaker.inject_cluster_failure(name, reason)
        return {"ok": True}

    @staticmethod
    def _name_and_reason(doc):
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
            raise ControlError("expected {\"name\": ..., \"reason\": ...}")
        return doc["name"], str(doc.get("reason") or "Injected failure")

    def calls(self, doc, query):
        return self.fake.calls.snapshot(int(query.get("since", 0)), query.get("op"))

    def clear_calls(self, doc, query):
        self.fake.calls.clear()
        return {"ok": True}

    def reset(self, doc, query):
        self.fake.reset()
        return {"ok": True}

    def create_eks(self, doc, query):
        if not isinstance(doc, dict):
            raise ControlError("expected {\"name\": ...}")
        return self.fake.eks.create(doc.get("name"))

    def kubectl_apply(self, doc, query):
        """An object applied by someone else (field manager kubectl)."""
        if not isinstance(doc, dict) or not isinstance(doc.get("body"), dict):
            raise ControlError("expected {\"eks\": ..., \"body\": {...}}")
        body = doc["body"]
        resource = next((r for r in KUBE_RESOURCES if r.kind == body.get("kind")), None)
        if resource is None or self.fake.eks.get(doc.get("eks")) is None:
            raise ControlError("unknown kind or EKS cluster")
        name = body.get("metadata", {}).get("name")
        try:
            obj, _ = self.fake.kubernetes.apply(doc["eks"], resource, name, body, "kubectl", True)
        except KubeError as e:
            raise ControlError(e.message) from e
        return obj

    def karpenter_demand(self, doc, query):
        if not isinstance(doc, dict):
            raise ControlError("expected {\"eks\": ..., \"demand_nodes\": N}")
        return self.fake.karpenter.set_demand(doc.get("eks"), doc.get("demand_nodes"))


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------

class BodyTooLarge(Exception):
    pass


class FakeRequestHandler(BaseHTTPRequestHandler):
    # Keep-alive like the real endpoints; every answer carries Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "aws-fake"
    sys_version = ""
    # Reclaims threads of clients that left connections idle.
    timeout = 300

    def setup(self):
        super().setup()
        # Headers and body go out in two writes; without this, Nagle and the
        # client's delayed ACK can add tens of milliseconds to each answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def fake(self):
        return self.server.fake

    def do_POST(self):
        self._dispatch()

    do_GET = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_POST

    def _dispatch(self):
        try:
            req = self._read_request()
        except BodyTooLarge:
            self.close_connection = True
            self._deliver(json_outcome({"error": "request body too large"}, 413))
            return
        except ValueError:
            self.close_connection = True
            self._deliver(json_outcome({"error": "malformed request body"}, 400))
            return
        self._deliver(self.route(req))

    def route(self, req):
        if req.path == "/_fake" or req.path.startswith("/_fake/"):
            return self.fake.control.handle(req)
        if req.path.startswith("/latest/"):
            return self.fake.imds.handle(req)
        if req.path == "/clusters" or req.path.startswith("/clusters/"):
            return self.fake.process_eks(req)
        return self.fake.process(req)

    def _read_request(self):
        path, _, query = self.path.partition("?")
        headers = {}
        for name in dict.fromkeys(k.lower() for k in self.headers.keys()):
            headers[name] = self.headers.get_all(name)
        return ReceivedRequest(self.command, path, query, headers, self._read_body())

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > MAX_BODY_BYTES:
            raise BodyTooLarge()
        return self.rfile.read(length)

    def _read_chunked(self):
        body = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise BodyTooLarge()
            body += self.rfile.read(size)
            self.rfile.readline()

    def _deliver(self, outcome):
        if outcome.action == "drop":
            self.close_connection = True
            return
        if outcome.action == "hang":
            self._hang()
            self.close_connection = True
            return
        self.send_response(outcome.status)
        for name, value in outcome.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", outcome.content_type)
        self.send_header("Content-Length", str(len(outcome.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(outcome.body)

    def _hang(self):
        """Hold the call until the client closes the connection, the faults
        are cleared, or the server stops."""
        generation = self.fake.faults.hang_generation
        while self.fake.faults.hang_generation == generation and not self.server.stopping:
            readable, _, _ = select.select([self.connection], [], [], 0.2)
            if readable:
                if self._client_gone():
                    return
                time.sleep(0.2)  # a pipelined request; keep hanging

    def _client_gone(self):
        try:
            return not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def date_time_string(self, timestamp=None):
        return email.utils.formatdate(self.fake.now() if timestamp is None else timestamp,
                                      usegmt=True)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)


class KubernetesRequestHandler(FakeRequestHandler):
    """The Kubernetes API of every fake EKS cluster, over TLS."""

    server_version = "kube-apiserver-fake"

    def setup(self):
        super().setup()
        # The handshake runs here, in the connection's thread, so a slow or
        # refusing client does not hold up the others.
        self.connection.do_handshake()

    def route(self, req):
        return self.fake.kubernetes_api.handle(req)

    def _client_gone(self):
        # TLS sockets cannot peek; what a hung call's client sends is
        # discarded, as the connection is closed afterwards anyway.
        try:
            self.connection.settimeout(0.2)
            return not self.connection.recv(1)
        except (TimeoutError, ssl.SSLWantReadError):
            return False
        except OSError:
            return True


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # The client opens dozens of connections at once; the default backlog
    # of 5 would make some of them wait for SYN retransmits.
    request_queue_size = 1024

    def __init__(self, address, fake, verbose=False, handler=FakeRequestHandler):
        self.fake = fake
        self.verbose = verbose
        self.stopping = False
        super().__init__(address, handler)

    def handle_error(self, request, client_address):
        # Clients vanishing mid-answer, or refusing the certificate, are
        # routine in fault tests.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)

    def stop(self):
        self.stopping = True
        self.fake.faults.clear()
        threading.Thread(target=self.shutdown, daemon=True).start()


class TlsServer(FakeServer):
    """The same server behind TLS; handshakes happen in the handler threads."""

    def __init__(self, address, fake, tls, verbose=False):
        self.tls = tls
        super().__init__(address, fake, verbose, KubernetesRequestHandler)

    def get_request(self):
        sock, address = self.socket.accept()
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


# A throwaway CA and a server certificate for 127.0.0.1 and localhost; the
# client verifies the server against the CA EKS DescribeCluster hands out.
CA_CONFIG = """[req]
distinguished_name = dn
prompt = no
x509_extensions = ca
[dn]
CN = aws-fake Kubernetes CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
SERVER_CONFIG = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = 127.0.0.1
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_tls(openssl="openssl"):
    """A server context and the CA's PEM, made with the openssl tool in a
    temporary folder that is gone once they are loaded."""
    with tempfile.TemporaryDirectory(prefix="aws_fake_tls_") as folder:
        path = Path(folder)
        (path / "ca.cnf").write_text(CA_CONFIG)
        (path / "server.cnf").write_text(SERVER_CONFIG)
        steps = [
            ["req", "-x509", *EC_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
             "-config", "ca.cnf"],
            ["req", "-new", *EC_KEY, "-keyout", "server.key", "-out", "server.csr",
             "-config", "server.cnf"],
            ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "30",
             "-extfile", "server.cnf", "-extensions", "server", "-out", "server.pem"],
        ]
        for step in steps:
            done = subprocess.run([openssl, *step], cwd=folder, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"openssl {step[0]} failed: {done.stderr.strip()}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(path / "server.pem", path / "server.key")
        return context, (path / "ca.pem").read_text()


def write_port_file(path, port):
    # Written then renamed, so a reader never sees a partial file.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Fake SageMaker and Application Auto Scaling endpoint on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--account", default="123456789012")
    parser.add_argument("--key", action="append", default=[], metavar="AKID:SECRET[:TOKEN]",
                        help="an accepted access key (repeatable)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--eks", action="append", default=[], metavar="NAME",
                        help="an EKS cluster the fake knows (repeatable)")
    parser.add_argument("--kubernetes-port", type=int, default=0,
                        help="port of the EKS clusters' Kubernetes API (HTTPS); 0 picks a free one")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    try:
        args.credentials = [parse_key_spec(spec) for spec in args.key]
    except ValueError as exc:
        parser.error(str(exc))
    if not re.fullmatch(r"\d{12}", args.account):
        parser.error("--account must be 12 digits")
    bad = [name for name in args.eks if not EKS_NAME_PATTERN.fullmatch(name)]
    if bad:
        parser.error(f"--eks: not an EKS cluster name: {bad[0]!r}")
    return args


def main(argv=None):
    args = parse_args(argv)
    fake = FakeAws(Config(region=args.region, account=args.account, latency_ms=args.latency_ms))
    for cred in args.credentials:
        fake.keyring.add(cred)
    try:
        tls, fake.kubernetes_ca_pem = make_tls()
    except (OSError, RuntimeError) as exc:
        print(f"aws_fake: cannot make the Kubernetes API's certificate: {exc}", file=sys.stderr)
        return 1
    server = FakeServer((args.host, args.port), fake, verbose=args.verbose)
    kube_server = TlsServer((args.host, args.kubernetes_port), fake, tls, verbose=args.verbose)
    fake.aws_port = server.server_address[1]
    fake.kubernetes_port = kube_server.server_address[1]
    for name in args.eks:
        fake.eks.create(name, from_cli=True)

    def stop(*_):
        kube_server.stop()
        server.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    threading.Thread(target=kube_server.serve_forever, kwargs={"poll_interval": 0.2},
                     daemon=True).start()
    if args.port_file:
        write_port_file(args.port_file, fake.aws_port)
    print(f"aws_fake listening on {args.host}:{fake.aws_port} (Kubernetes API: "
          f"https://{args.host}:{fake.kubernetes_port})", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        kube_server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
