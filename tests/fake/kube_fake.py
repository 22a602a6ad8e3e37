#!/usr/bin/env python3
"""A loopback stand-in for a Kubernetes API server (kube-apiserver plus the
controllers infrafs leans on), for the tests of infrafs's Kubernetes provider.

It serves the Kubernetes API over HTTPS with the apiserver's wire formats
(Status errors, discovery, list/watch, server-side apply with managedFields,
strategic merge patch, strict field validation), authenticates bearer tokens
and client certificates, refuses what a test tells its RBAC to refuse, and
runs small controllers (deployments, replica sets, a scheduler and kubelet,
services, HPA, resource quota, Karpenter, KServe) in a background thread.
A plain-HTTP control API (/_fake/...) configures it and shows what happened.

Python 3.11 standard library plus the `openssl` command-line tool.
See kube_fake.md next to this file.
"""

import argparse
import base64
import dataclasses
import fnmatch
import hashlib
import heapq
import http
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY_BYTES = 8 * 1024 * 1024
SERVER_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0",
                  "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
                  "gitTreeState": "clean", "buildDate": "2024-12-11T17:59:15Z",
                  "goVersion": "go1.23.3", "compiler": "gc", "platform": "linux/amd64"}
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"   # apimachinery's rand.String alphabet


def now_iso(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def rand_suffix(n=5):
    return "".join(secrets.choice(ALPHANUMS) for _ in range(n))


def dumps(doc):
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def deep(doc):
    """A deep copy of a JSON document (faster than copy.deepcopy)."""
    if isinstance(doc, dict):
        return {k: deep(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [deep(v) for v in doc]
    return doc


def dig(doc, *keys, default=None):
    for key in keys:
        if isinstance(doc, dict):
            doc = doc.get(key)
        elif isinstance(doc, list) and isinstance(key, int) and -len(doc) <= key < len(doc):
            doc = doc[key]
        else:
            return default
        if doc is None:
            return default
    return doc


def go_quote(text):
    """Go's %q for the strings the fake quotes."""
    return json.dumps(text, ensure_ascii=False)


# --------------------------------------------------------------------------
# Errors as the apiserver words them
# --------------------------------------------------------------------------

class KubeError(Exception):
    """An answer as a metav1.Status."""

    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details, self.headers = details, headers or {}

    def status(self):
        return kube_status_doc(self.code, self.reason, self.message, self.details)


def kube_status_doc(code, reason, message, details=None):
    doc = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message}
    if reason:
        doc["reason"] = reason
    if details is not None:
        doc["details"] = details
    doc["code"] = code
    return doc


def _details(name=None, group=None, kind=None, **more):
    doc = {}
    if name:
        doc["name"] = name
    if group:
        doc["group"] = group
    if kind:
        doc["kind"] = kind
    doc.update({k: v for k, v in more.items() if v})
    return doc


def qualified(rt):
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


def qualified_kind(rt):
    return f"{rt.kind}.{rt.group}" if rt.group else rt.kind


def err_not_found(rt, name):
    return KubeError(404, "NotFound", f"{qualified(rt)} {go_quote(name)} not found",
                     _details(name, rt.group, rt.plural))


def err_already_exists(rt, name):
    return KubeError(409, "AlreadyExists", f"{qualified(rt)} {go_quote(name)} already exists",
                     _details(name, rt.group, rt.plural))


def err_conflict(rt, name, why="the object has been modified; please apply your changes to "
                 "the latest version and try again"):
    return KubeError(409, "Conflict",
                     f"Operation cannot be fulfilled on {qualified(rt)} {go_quote(name)}: {why}",
                     _details(name, rt.group, rt.plural))


def err_bad_request(message):
    return KubeError(400, "BadRequest", message)


def err_forbidden(group, resource, name, why):
    gr = f"{resource}.{group}" if group else resource
    if name:
        message = f"{gr} {go_quote(name)} is forbidden: {why}"
    else:
        message = f"{gr} is forbidden: {why}"
    return KubeError(403, "Forbidden", message, _details(name, group, resource))


def err_not_found_path():
    return KubeError(404, "NotFound", "the server could not find the requested resource", {})


def err_method_not_allowed():
    return KubeError(405, "MethodNotAllowed",
                     "the server does not allow this method on the requested resource", {})


class FieldErr:
    """A field.Error: type, path, bad value, detail."""
    REASONS = {"Required value": "FieldValueRequired", "Invalid value": "FieldValueInvalid",
               "Unsupported value": "FieldValueNotSupported", "Forbidden": "FieldValueForbidden",
               "Duplicate value": "FieldValueDuplicate", "Too long": "FieldValueTooLong",
               "Not found": "FieldValueNotFound", "Too many": "FieldValueTooMany"}
    NO_VALUE = ("Required value", "Forbidden", "Too long", "Internal error")

    def __init__(self, kind, path, value=None, detail=""):
        self.kind, self.path, self.value, self.detail = kind, path, value, detail

    def body(self):
        if self.kind in self.NO_VALUE:
            text = self.kind
        else:
            text = f"{self.kind}: {go_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def __str__(self):
        return f"{self.path}: {self.body()}"


def go_value(value):
    """How field.Error prints a bad value (%v for numbers, %q for strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{go_quote(k)}:{go_value(v)}" for k, v in sorted(value.items()))
        return "map[string]string{" + inner + "}"
    return json.dumps(value)


def required(path, detail=""):
    return FieldErr("Required value", path, None, detail)


def invalid(path, value, detail):
    return FieldErr("Invalid value", path, value, detail)


def unsupported(path, value, supported):
    return FieldErr("Unsupported value", path, value,
                    "supported values: " + ", ".join(go_quote(s) for s in supported))


def err_invalid(rt, name, errs):
    texts = [str(e) for e in errs]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return KubeError(422, "Invalid", f"{qualified_kind(rt)} {go_quote(name)} is invalid: {joined}",
                     dict(_details(name, rt.group, rt.kind),
                          causes=[{"reason": FieldErr.REASONS.get(e.kind, "FieldValueInvalid"),
                                   "message": e.body(), "field": e.path} for e in errs]))


# --------------------------------------------------------------------------
# Names, labels, quantities, selectors
# --------------------------------------------------------------------------

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")

MSG_LABEL = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
             "or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
             "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
MSG_SUBDOMAIN = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character "
                 "(e.g. 'example.com', regex used for validation is "
                 "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
MSG_DNS1035 = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
               "start with an alphabetic character, and end with an alphanumeric character "
               "(e.g. 'my-name',  or 'abc-123', regex used for validation is "
               "'[a-z]([-a-z0-9]*[a-z0-9])?')")
MSG_QNAME = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must "
             "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
             "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
MSG_LVALUE = ("a valid label must be an empty string or consist of alphanumeric characters, "
              "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
              "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
              "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def check_name(kind, name):
    """Messages for a name that is not a DNS label / subdomain / 1035 label."""
    if kind == "label":
        out = [] if DNS1123_LABEL.fullmatch(name) else [MSG_LABEL]
        if len(name) > 63:
            out.insert(0, "must be no more than 63 characters")
    elif kind == "dns1035":
        out = [] if DNS1035_LABEL.fullmatch(name) else [MSG_DNS1035]
        if len(name) > 63:
            out.insert(0, "must be no more than 63 characters")
    else:
        out = [] if DNS1123_SUBDOMAIN.fullmatch(name) else [MSG_SUBDOMAIN]
        if len(name) > 253:
            out.insert(0, "must be no more than 253 characters")
    return out


def check_qualified_name(key):
    prefix, _, name = key.rpartition("/")
    msgs = []
    if "/" in key and (not prefix or check_name("subdomain", prefix)):
        msgs.append("prefix part " + (MSG_SUBDOMAIN if prefix else "must be non-empty"))
    if not name:
        msgs.append("name part must be non-empty")
    else:
        if len(name) > 63:
            msgs.append("name part must be no more than 63 characters")
        if not QUALIFIED_NAME.fullmatch(name):
            msgs.append(MSG_QNAME)
    return msgs


def check_labels(labels, path):
    errs = []
    if not isinstance(labels, dict):
        return errs
    for key, value in labels.items():
        for msg in check_qualified_name(key):
            errs.append(invalid(path, key, msg))
        if not isinstance(value, str):
            continue
        if len(value) > 63:
            errs.append(invalid(path, value, "must be no more than 63 characters"))
        if not LABEL_VALUE.fullmatch(value):
            errs.append(invalid(path, value, MSG_LVALUE))
    return errs


QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
QUANTITY_MSG = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
DECIMAL = {"n": Fraction(1, 10 ** 9), "u": Fraction(1, 10 ** 6), "m": Fraction(1, 1000), "": 1,
           "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18}


def parse_quantity(value):
    """A resource.Quantity as a Fraction; ValueError as the apiserver words it."""
    if isinstance(value, bool):
        raise ValueError(QUANTITY_MSG)
    if isinstance(value, (int, float)):
        return Fraction(value).limit_denominator(10 ** 9)
    if not isinstance(value, str):
        raise ValueError(QUANTITY_MSG)
    match = QUANTITY_RE.match(value.strip())
    if not match:
        raise ValueError(QUANTITY_MSG)
    number, suffix = match.groups()
    try:
        base = Fraction(number)
    except ValueError:
        raise ValueError(QUANTITY_MSG) from None
    if suffix in BINARY:
        return base * BINARY[suffix]
    if suffix in DECIMAL:
        return base * DECIMAL[suffix]
    exp = re.fullmatch(r"[eE]([-+]?[0-9]+)", suffix)
    if exp:
        return base * Fraction(10) ** int(exp.group(1))
    raise ValueError("unable to parse quantity's suffix")


def format_quantity(value, binary=False):
    value = Fraction(value)
    if value.denominator != 1:
        millis = value * 1000
        if millis.denominator == 1:
            return f"{millis.numerator}m"
        return f"{float(value):g}"
    n = value.numerator
    if n == 0:
        return "0"
    if binary:
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            if n % BINARY[suffix] == 0:
                return f"{n // BINARY[suffix]}{suffix}"
    return str(n)


def is_binary(text):
    return isinstance(text, str) and text[-2:] in BINARY


class Selector:
    """A label selector: a list of (key, op, values)."""

    def __init__(self, terms):
        self.terms = terms

    @classmethod
    def parse(cls, text):
        terms = []
        text = (text or "").strip()
        pos = 0
        token = re.compile(r"\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(==|!=|=|in(?=\s*\()|notin(?=\s*\())?\s*")
        while pos < len(text):
            m = token.match(text, pos)
            if not m or not m.group(2):
                raise err_bad_request(f"unable to parse requirement: found '{text[pos:]}'")
            neg, key, op = m.group(1), m.group(2), (m.group(3) or "").strip()
            pos = m.end()
            if neg:
                if op:
                    raise err_bad_request(f"unable to parse requirement: {text}")
                terms.append((key, "!", []))
            elif not op:
                terms.append((key, "exists", []))
            elif op in ("in", "notin"):
                if pos >= len(text) or text[pos] != "(":
                    raise err_bad_request(f"unable to parse requirement: found '{text[pos:]}', "
                                          "expected: '('")
                end = text.find(")", pos)
                if end < 0:
                    raise err_bad_request("unable to parse requirement: found '', expected: ')'")
                values = [v.strip() for v in text[pos + 1:end].split(",") if v.strip()]
                terms.append((key, op, values))
                pos = end + 1
            else:
                vm = re.compile(r"\s*([A-Za-z0-9_.-]*)\s*").match(text, pos)
                terms.append((key, "!=" if op == "!=" else "=", [vm.group(1)]))
                pos = vm.end()
            rest = re.compile(r"\s*,?\s*").match(text, pos)
            pos = rest.end()
        return cls(terms)

    @classmethod
    def from_label_selector(cls, sel):
        if not isinstance(sel, dict):
            return cls([("__nothing__", "exists", [])])
        terms = [(k, "=", [v]) for k, v in (sel.get("matchLabels") or {}).items()]
        for expr in sel.get("matchExpressions") or []:
            op = {"In": "in", "NotIn": "notin", "Exists": "exists",
                  "DoesNotExist": "!"}.get(expr.get("operator"), "in")
            terms.append((expr.get("key"), op, list(expr.get("values") or [])))
        return cls(terms)

    def matches(self, labels):
        labels = labels or {}
        for key, op, values in self.terms:
            present = key in labels
            if op == "=" and (not present or labels[key] != values[0]):
                return False
            if op == "!=" and present and labels[key] == values[0]:
                return False
            if op == "in" and (not present or labels[key] not in values):
                return False
            if op == "notin" and present and labels[key] in values:
                return False
            if op == "exists" and not present:
                return False
            if op == "!" and present:
                return False
        return True

    def empty(self):
        return not self.terms


def selector_string(sel):
    """metav1.FormatLabelSelector, for Scale.status.selector."""
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        op = expr.get("operator")
        if op in ("In", "NotIn"):
            parts.append(f"{expr['key']} {op.lower()} ({','.join(sorted(expr.get('values') or []))})")
        elif op == "Exists":
            parts.append(expr["key"])
        else:
            parts.append("!" + expr["key"])
    return ",".join(parts)


# --------------------------------------------------------------------------
# Schemas: the real fields of the real types, with their merge strategies
# (structured-merge-diff: struct / granular map / atomic; lists atomic,
# associative by keys, or sets; strategic merge patch keys).
# --------------------------------------------------------------------------

class T:
    """A type node.  kind: struct | map | list | scalar | any."""

    def __init__(self, kind, fields=None, elem=None, atomic=False, list_type="atomic",
                 keys=(), key_defaults=None, scalar=None, value_struct=False, go=None,
                 smp_key=None):
        self.kind, self.fields, self.elem, self.atomic = kind, fields or {}, elem, atomic
        self.list_type, self.keys, self.key_defaults = list_type, tuple(keys), key_defaults or {}
        self.scalar, self.value_struct, self.go = scalar, value_struct, go
        self.smp_key = smp_key if smp_key is not None else (self.keys[0] if self.keys else None)

    def child(self, key):
        if self.kind == "struct":
            return self.fields.get(key)
        if self.kind == "map":
            return self.elem
        if self.kind == "any":
            return ANY
        return None


def S(_go=None, _atomic=False, _value=False, **fields):
    return T("struct", fields=fields, atomic=_atomic, go=_go, value_struct=_value)


def V(_go=None, **fields):
    """A struct embedded by value (present, possibly empty, in Go's zero object)."""
    return S(_go, _value=True, **fields)


def M(elem, atomic=False):
    return T("map", elem=elem, atomic=atomic)


def L(elem, *keys, defaults=None, smp_key=None):
    return T("list", elem=elem, list_type="map", keys=keys, key_defaults=defaults,
             smp_key=smp_key)


def LA(elem, smp_key=None):
    return T("list", elem=elem, list_type="atomic", smp_key=smp_key)


def LS(elem):
    return T("list", elem=elem, list_type="set")


STR = T("scalar", scalar="string")
INT = T("scalar", scalar="int")
NUM = T("scalar", scalar="number")
BOOL = T("scalar", scalar="bool")
QTY = T("scalar", scalar="quantity")
IOS = T("scalar", scalar="intorstr")
TIME = T("scalar", scalar="time")
BYTES = T("scalar", scalar="bytes")
ANY = T("any")
STRMAP = M(STR)
ATOMIC_STRMAP = M(STR, atomic=True)
STRLIST = LA(STR)
RESOURCES = M(QTY)

OWNER_REF = S(apiVersion=STR, kind=STR, name=STR, uid=STR, controller=BOOL,
              blockOwnerDeletion=BOOL)
MANAGED_FIELDS_ENTRY = S(manager=STR, operation=STR, apiVersion=STR, time=TIME, fieldsType=STR,
                         fieldsV1=ANY, subresource=STR)
OBJECT_META = V(
    "ObjectMeta", name=STR, generateName=STR, namespace=STR, selfLink=STR, uid=STR,
    resourceVersion=STR, generation=INT, creationTimestamp=TIME, deletionTimestamp=TIME,
    deletionGracePeriodSeconds=INT, labels=STRMAP, annotations=STRMAP,
    ownerReferences=L(OWNER_REF, "uid"), finalizers=LS(STR),
    managedFields=LA(MANAGED_FIELDS_ENTRY))
LABEL_SELECTOR = S("LabelSelector", _atomic=True, matchLabels=STRMAP, matchExpressions=LA(
    S(key=STR, operator=STR, values=STRLIST)))
CONDITION_FIELDS = dict(type=STR, status=STR, lastTransitionTime=TIME, lastUpdateTime=TIME,
                        lastProbeTime=TIME, lastHeartbeatTime=TIME, reason=STR, message=STR,
                        observedGeneration=INT)
CONDITIONS = L(S(**CONDITION_FIELDS), "type")

# core/v1 pod pieces
KEY_SELECTOR = S(name=STR, key=STR, optional=BOOL)
ENV_VAR = S("EnvVar", name=STR, value=STR, valueFrom=S(
    fieldRef=S(apiVersion=STR, fieldPath=STR),
    resourceFieldRef=S(containerName=STR, resource=STR, divisor=QTY),
    configMapKeyRef=KEY_SELECTOR, secretKeyRef=KEY_SELECTOR))
ENV_FROM = S(prefix=STR, configMapRef=S(name=STR, optional=BOOL),
             secretRef=S(name=STR, optional=BOOL))
CONTAINER_PORT = S("ContainerPort", name=STR, hostPort=INT, containerPort=INT, protocol=STR,
                   hostIP=STR)
HTTP_GET = S(path=STR, port=IOS, host=STR, scheme=STR,
             httpHeaders=LA(S(name=STR, value=STR)))
PROBE = S("Probe", exec=S(command=STRLIST), httpGet=HTTP_GET,
          tcpSocket=S(port=IOS, host=STR), grpc=S(port=INT, service=STR),
          initialDelaySeconds=INT, timeoutSeconds=INT, periodSeconds=INT, successThreshold=INT,
          failureThreshold=INT, terminationGracePeriodSeconds=INT)
HANDLER = S(exec=S(command=STRLIST), httpGet=HTTP_GET, tcpSocket=S(port=IOS, host=STR),
            sleep=S(seconds=INT))
RESOURCE_REQUIREMENTS = V("ResourceRequirements", limits=RESOURCES, requests=RESOURCES,
                          claims=L(S(name=STR, request=STR), "name"))
SECURITY_CONTEXT = S(
    capabilities=S(add=STRLIST, drop=STRLIST), privileged=BOOL, seLinuxOptions=ANY,
    windowsOptions=ANY, runAsUser=INT, runAsGroup=INT, runAsNonRoot=BOOL,
    readOnlyRootFilesystem=BOOL, allowPrivilegeEscalation=BOOL, procMount=STR,
    seccompProfile=S(type=STR, localhostProfile=STR), appArmorProfile=S(type=STR,
                                                                       localhostProfile=STR))
CONTAINER = S(
    "Container", name=STR, image=STR, command=STRLIST, args=STRLIST, workingDir=STR,
    ports=L(CONTAINER_PORT, "containerPort", "protocol", defaults={"protocol": "TCP"}),
    envFrom=LA(ENV_FROM), env=L(ENV_VAR, "name"), resources=RESOURCE_REQUIREMENTS,
    resizePolicy=LA(S(resourceName=STR, restartPolicy=STR)), restartPolicy=STR,
    volumeMounts=L(S(name=STR, readOnly=BOOL, recursiveReadOnly=STR, mountPath=STR, subPath=STR,
                     mountPropagation=STR, subPathExpr=STR), "mountPath"),
    volumeDevices=L(S(name=STR, devicePath=STR), "devicePath"),
    livenessProbe=PROBE, readinessProbe=PROBE, startupProbe=PROBE,
    lifecycle=S(postStart=HANDLER, preStop=HANDLER, stopSignal=STR),
    terminationMessagePath=STR, terminationMessagePolicy=STR, imagePullPolicy=STR,
    securityContext=SECURITY_CONTEXT, stdin=BOOL, stdinOnce=BOOL, tty=BOOL)
KEY_TO_PATH = LA(S(key=STR, path=STR, mode=INT))
VOLUME = S(
    "Volume", name=STR,
    emptyDir=S(medium=STR, sizeLimit=QTY),
    configMap=S(name=STR, items=KEY_TO_PATH, defaultMode=INT, optional=BOOL),
    secret=S(secretName=STR, items=KEY_TO_PATH, defaultMode=INT, optional=BOOL),
    persistentVolumeClaim=S(claimName=STR, readOnly=BOOL),
    hostPath=S(path=STR, type=STR), projected=ANY, downwardAPI=ANY, csi=ANY, ephemeral=ANY,
    nfs=S(server=STR, path=STR, readOnly=BOOL), image=S(reference=STR, pullPolicy=STR))
TOLERATION = S("Toleration", key=STR, operator=STR, value=STR, effect=STR,
               tolerationSeconds=INT)
TAINT = S("Taint", key=STR, value=STR, effect=STR, timeAdded=TIME)
POD_SPEC = V(
    "PodSpec", volumes=L(VOLUME, "name"), initContainers=L(CONTAINER, "name"),
    containers=L(CONTAINER, "name"), ephemeralContainers=ANY, restartPolicy=STR,
    terminationGracePeriodSeconds=INT, activeDeadlineSeconds=INT, dnsPolicy=STR,
    nodeSelector=ATOMIC_STRMAP, serviceAccountName=STR, serviceAccount=STR,
    automountServiceAccountToken=BOOL, nodeName=STR, hostNetwork=BOOL, hostPID=BOOL,
    hostIPC=BOOL, shareProcessNamespace=BOOL, securityContext=ANY,
    imagePullSecrets=L(S(name=STR), "name"), hostname=STR, subdomain=STR, affinity=ANY,
    schedulerName=STR, tolerations=LA(TOLERATION), hostAliases=L(S(ip=STR, hostnames=STRLIST), "ip"),
    priorityClassName=STR, priority=INT, dnsConfig=ANY, readinessGates=LA(S(conditionType=STR)),
    runtimeClassName=STR, enableServiceLinks=BOOL, preemptionPolicy=STR, overhead=RESOURCES,
    topologySpreadConstraints=L(ANY, "topologyKey", "whenUnsatisfiable"),
    setHostnameAsFQDN=BOOL, os=S(name=STR), hostUsers=BOOL,
    schedulingGates=L(S(name=STR), "name"), resourceClaims=L(ANY, "name"), resources=ANY)
POD_TEMPLATE = V("PodTemplateSpec", metadata=OBJECT_META, spec=POD_SPEC)
CONTAINER_STATE = S(waiting=S(reason=STR, message=STR),
                    running=S(startedAt=TIME),
                    terminated=S(exitCode=INT, signal=INT, reason=STR, message=STR,
                                 startedAt=TIME, finishedAt=TIME, containerID=STR))
CONTAINER_STATUS = S(name=STR, state=CONTAINER_STATE, lastState=CONTAINER_STATE, ready=BOOL,
                     restartCount=INT, image=STR, imageID=STR, containerID=STR, started=BOOL,
                     allocatedResources=RESOURCES, resources=ANY, volumeMounts=ANY, user=ANY,
                     allocatedResourcesStatus=ANY, stopSignal=STR)
POD_STATUS = V("PodStatus", phase=STR, conditions=CONDITIONS, message=STR, reason=STR,
               nominatedNodeName=STR, hostIP=STR, hostIPs=L(S(ip=STR), "ip"), podIP=STR,
               podIPs=L(S(ip=STR), "ip"), startTime=TIME,
               initContainerStatuses=LA(CONTAINER_STATUS),
               containerStatuses=LA(CONTAINER_STATUS), qosClass=STR,
               ephemeralContainerStatuses=LA(CONTAINER_STATUS), resize=STR,
               resourceClaimStatuses=ANY, observedGeneration=INT)


def top(spec=None, status=None, **more):
    fields = dict(apiVersion=STR, kind=STR, metadata=OBJECT_META)
    if spec is not None:
        fields["spec"] = spec
    if status is not None:
        fields["status"] = status
    fields.update(more)
    return S(**fields)


SERVICE_PORT = S("ServicePort", name=STR, protocol=STR, appProtocol=STR, port=INT,
                 targetPort=IOS, nodePort=INT)
SCHEMAS = {
    "Namespace": top(V(finalizers=STRLIST), V(phase=STR, conditions=CONDITIONS)),
    "Node": top(V(podCIDR=STR, podCIDRs=LS(STR), providerID=STR, unschedulable=BOOL,
                  taints=LA(TAINT), configSource=ANY, externalID=STR),
                V(capacity=RESOURCES, allocatable=RESOURCES, phase=STR, conditions=CONDITIONS,
                  addresses=L(S(type=STR, address=STR), "type"), daemonEndpoints=ANY,
                  nodeInfo=ANY, images=ANY, volumesInUse=ANY, volumesAttached=ANY,
                  config=ANY, runtimeHandlers=ANY, features=ANY)),
    "Pod": top(POD_SPEC, POD_STATUS),
    "Service": top(V(
        ports=L(SERVICE_PORT, "port", "protocol", defaults={"protocol": "TCP"}),
        selector=ATOMIC_STRMAP, clusterIP=STR, clusterIPs=STRLIST, type=STR,
        externalIPs=STRLIST, sessionAffinity=STR, loadBalancerIP=STR,
        loadBalancerSourceRanges=STRLIST, externalName=STR, externalTrafficPolicy=STR,
        healthCheckNodePort=INT, publishNotReadyAddresses=BOOL,
        sessionAffinityConfig=S(clientIP=S(timeoutSeconds=INT)), ipFamilies=STRLIST,
        ipFamilyPolicy=STR, allocateLoadBalancerNodePorts=BOOL, loadBalancerClass=STR,
        internalTrafficPolicy=STR, trafficDistribution=STR),
        V(loadBalancer=V(ingress=LA(S(ip=STR, hostname=STR, ipMode=STR, ports=ANY))),
          conditions=CONDITIONS)),
    "Secret": top(data=M(BYTES), stringData=STRMAP, type=STR, immutable=BOOL),
    "ConfigMap": top(data=STRMAP, binaryData=M(BYTES), immutable=BOOL),
    "ResourceQuota": top(V(hard=RESOURCES, scopes=STRLIST, scopeSelector=ANY),
                         V(hard=RESOURCES, used=RESOURCES)),
    "Event": top(involvedObject=V(kind=STR, namespace=STR, name=STR, uid=STR, apiVersion=STR,
                                  resourceVersion=STR, fieldPath=STR),
                 reason=STR, message=STR, source=V(component=STR, host=STR),
                 firstTimestamp=TIME, lastTimestamp=TIME, count=INT, type=STR, eventTime=TIME,
                 series=ANY, action=STR, related=ANY, reportingComponent=STR,
                 reportingInstance=STR),
    "Deployment": top(V(
        replicas=INT, selector=LABEL_SELECTOR, template=POD_TEMPLATE,
        strategy=V(type=STR, rollingUpdate=S(maxUnavailable=IOS, maxSurge=IOS)),
        minReadySeconds=INT, revisionHistoryLimit=INT, paused=BOOL, progressDeadlineSeconds=INT),
        V(observedGeneration=INT, replicas=INT, updatedReplicas=INT, readyReplicas=INT,
          availableReplicas=INT, unavailableReplicas=INT, terminatingReplicas=INT,
          conditions=CONDITIONS, collisionCount=INT)),
    "ReplicaSet": top(V(replicas=INT, minReadySeconds=INT, selector=LABEL_SELECTOR,
                        template=POD_TEMPLATE),
                      V(replicas=INT, fullyLabeledReplicas=INT, readyReplicas=INT,
                        availableReplicas=INT, terminatingReplicas=INT, observedGeneration=INT,
                        conditions=CONDITIONS)),
    "Scale": top(V(replicas=INT), V(replicas=INT, selector=STR)),
}
METRIC_IDENTIFIER = V(name=STR, selector=LABEL_SELECTOR)
METRIC_TARGET = V(type=STR, value=QTY, averageValue=QTY, averageUtilization=INT)
METRIC_VALUE = V(value=QTY, averageValue=QTY, averageUtilization=INT)
OBJECT_REF = V(kind=STR, name=STR, apiVersion=STR)
SCALING_RULES = S(stabilizationWindowSeconds=INT, selectPolicy=STR,
                  policies=LA(S(type=STR, value=INT, periodSeconds=INT)), tolerance=QTY)
SCHEMAS["HorizontalPodAutoscaler"] = top(V(
    scaleTargetRef=OBJECT_REF, minReplicas=INT, maxReplicas=INT,
    metrics=LA(S(type=STR,
                 object=S(describedObject=OBJECT_REF, target=METRIC_TARGET,
                          metric=METRIC_IDENTIFIER),
                 pods=S(metric=METRIC_IDENTIFIER, target=METRIC_TARGET),
                 resource=S(name=STR, target=METRIC_TARGET),
                 containerResource=S(name=STR, target=METRIC_TARGET, container=STR),
                 external=S(metric=METRIC_IDENTIFIER, target=METRIC_TARGET))),
    behavior=S(scaleUp=SCALING_RULES, scaleDown=SCALING_RULES)),
    V(observedGeneration=INT, lastScaleTime=TIME, currentReplicas=INT, desiredReplicas=INT,
      currentMetrics=LA(S(type=STR,
                          object=S(metric=METRIC_IDENTIFIER, current=METRIC_VALUE,
                                   describedObject=OBJECT_REF),
                          pods=S(metric=METRIC_IDENTIFIER, current=METRIC_VALUE),
                          resource=S(name=STR, current=METRIC_VALUE),
                          containerResource=S(name=STR, current=METRIC_VALUE, container=STR),
                          external=S(metric=METRIC_IDENTIFIER, current=METRIC_VALUE))),
      conditions=CONDITIONS))
# Custom resources: structural schemas, where lists are atomic unless the
# CRD says otherwise, and conditions are a list-map keyed by type.
REQUIREMENT = S(key=STR, operator=STR, values=STRLIST, minValues=INT)
SCHEMAS["NodePool"] = top(S(
    template=S(metadata=S(labels=STRMAP, annotations=STRMAP),
               spec=S(nodeClassRef=S(group=STR, kind=STR, name=STR), taints=LA(TAINT),
                      startupTaints=LA(TAINT), requirements=LA(REQUIREMENT),
                      expireAfter=STR, terminationGracePeriod=STR)),
    disruption=S(consolidationPolicy=STR, consolidateAfter=STR,
                 budgets=LA(S(nodes=STR, schedule=STR, duration=STR, reasons=STRLIST))),
    limits=M(IOS), weight=INT),
    S(resources=M(IOS), conditions=CONDITIONS, nodeClassObservedGeneration=INT))
ISVC_COMPONENT = dict(POD_SPEC.fields)
ISVC_COMPONENT.update(
    containers=LA(CONTAINER), minReplicas=INT, maxReplicas=INT, scaleMetric=STR,
    scaleMetricType=STR, scaleTarget=INT, containerConcurrency=INT, timeout=INT,
    canaryTrafficPercent=INT, labels=STRMAP, annotations=STRMAP, deploymentStrategy=ANY,
    logger=ANY, batcher=ANY, workerSpec=ANY, storageUri=STR,
    model=S(modelFormat=S(name=STR, version=STR), runtime=STR, protocolVersion=STR,
            storageUri=STR, image=STR, command=STRLIST, args=STRLIST, env=LA(ENV_VAR),
            resources=S(limits=RESOURCES, requests=RESOURCES), ports=LA(CONTAINER_PORT),
            name=STR, readinessProbe=PROBE, livenessProbe=PROBE, volumeMounts=ANY),
    sklearn=ANY, xgboost=ANY, tensorflow=ANY, pytorch=ANY, triton=ANY, onnx=ANY,
    huggingface=ANY, pmml=ANY, lightgbm=ANY, paddle=ANY, tolerations=LA(TOLERATION),
    nodeSelector=STRMAP)
for _k in ("volumes", "initContainers", "imagePullSecrets", "hostAliases", "schedulingGates",
           "resourceClaims", "topologySpreadConstraints"):
    ISVC_COMPONENT[_k] = LA(ISVC_COMPONENT[_k].elem) if ISVC_COMPONENT[_k].kind == "list" else ANY
SCHEMAS["InferenceService"] = top(
    S(predictor=S(**ISVC_COMPONENT), transformer=ANY, explainer=ANY),
    S(url=STR, address=S(url=STR, CACerts=STR, audience=STR, name=STR), conditions=CONDITIONS,
      components=ANY, modelStatus=ANY, observedGeneration=INT, annotations=STRMAP,
      deploymentMode=STR))


# --------------------------------------------------------------------------
# The resources served
# --------------------------------------------------------------------------

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    short: tuple = ()
    categories: tuple = ()
    subresources: tuple = ()
    feature: str | None = None     # config switch that must be on
    crd: bool = False
    verbs: tuple = tuple(ALL_VERBS)

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def gv_path(self):
        return f"/apis/{self.group}/{self.version}" if self.group else "/api/v1"

    @property
    def key(self):
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def schema(self):
        return SCHEMAS[self.kind]


RESOURCES_TABLE = [
    Resource("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",),
             subresources=("status", "finalize"),
             verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    Resource("", "v1", "nodes", "Node", False, "node", ("no",), subresources=("status",)),
    Resource("", "v1", "pods", "Pod", True, "pod", ("po",), ("all",), ("status",)),
    Resource("", "v1", "services", "Service", True, "service", ("svc",), ("all",), ("status",),
             verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update",
                    "watch")),
    Resource("", "v1", "secrets", "Secret", True, "secret"),
    Resource("", "v1", "resourcequotas", "ResourceQuota", True, "resourcequota", ("quota",),
             subresources=("status",)),
    Resource("", "v1", "events", "Event", True, "event", ("ev",)),
    Resource("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
    Resource("apps", "v1", "deployments", "Deployment", True, "deployment", ("deploy",), ("all",),
             ("status", "scale")),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True, "replicaset", ("rs",), ("all",),
             ("status", "scale")),
    Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True,
             "horizontalpodautoscaler", ("hpa",), ("all",), ("status",)),
    Resource("karpenter.sh", "v1", "nodepools", "NodePool", False, "nodepool", (),
             ("karpenter",), ("status",), feature="karpenter", crd=True),
    Resource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService", True,
             "inferenceservice", ("isvc",), ("all",), ("status",), feature="kserve", crd=True),
]
BY_KEY = {r.key: r for r in RESOURCES_TABLE}
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES_TABLE}
R = {r.kind: r for r in RESOURCES_TABLE}
SCALE = Resource("autoscaling", "v1", "scale", "Scale", True, "scale")
GENERATION_KINDS = {"Deployment", "ReplicaSet", "HorizontalPodAutoscaler", "NodePool",
                    "InferenceService", "Service"}
METRICS_GROUPS = {"custom_metrics": ("custom.metrics.k8s.io", "v1beta2"),
                  "external_metrics": ("external.metrics.k8s.io", "v1beta1")}


# --------------------------------------------------------------------------
# Field paths and sets (structured-merge-diff's fieldpath, with elements
# spelled as in FieldsV1: f:name, k:{"key":value}, v:value, i:index)
# --------------------------------------------------------------------------

def key_element(item, t):
    key = {}
    for name in t.keys:
        value = item.get(name) if isinstance(item, dict) else None
        if value is None:
            value = t.key_defaults.get(name)
        if value is None:
            return None
        key[name] = value
    return "k:" + json.dumps(dict(sorted(key.items())), separators=(",", ":"), ensure_ascii=False)


def value_element(value):
    return "v:" + json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def path_string(path):
    """fieldpath.Path.String(): .spec.containers[name="web"].image"""
    out = []
    for element in path:
        kind, text = element[0], element[2:]
        if kind == "f":
            out.append("." + text)
        elif kind == "k":
            key = json.loads(text)
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]")
        elif kind == "v":
            out.append("[=" + text + "]")
        else:
            out.append("[" + text + "]")
    return "".join(out)


class SchemaError(Exception):
    def __init__(self, path, message):
        super().__init__(f"{path_string(path)}: {message}")
        self.path, self.message = path, message


def apply_fieldset(value, t, path=(), out=None):
    """TypedValue.ToFieldSet() for an applied configuration."""
    out = set() if out is None else out
    if t is None:
        raise SchemaError(path, "field not declared in schema")
    if t.kind in ("struct", "map") and not t.atomic and isinstance(value, dict):
        for key, child in value.items():
            ct = t.child(key)
            cpath = path + ("f:" + key,)
            if ct is None:
                raise SchemaError(cpath, "field not declared in schema")
            apply_fieldset(child, ct, cpath, out)
            if child is None or (isinstance(child, dict) and not child) or t.kind == "map":
                out.add(cpath)
        return out
    if t.kind == "any" and isinstance(value, dict):
        for key, child in value.items():
            cpath = path + ("f:" + key,)
            apply_fieldset(child, ANY, cpath, out)
            out.add(cpath)
        return out
    if t.kind == "list" and t.list_type != "atomic" and isinstance(value, list):
        for index, item in enumerate(value):
            if t.list_type == "set":
                out.add(path + (value_element(item),))
                continue
            element = key_element(item, t)
            if element is None:
                missing = [k for k in t.keys if not isinstance(item, dict) or item.get(k) is None]
                raise SchemaError(path, f"element {index}: associative list with keys has an "
                                        f"element that omits key field {go_quote(missing[0])} "
                                        "(and doesn't have default value)")
            cpath = path + (element,)
            apply_fieldset(item, t.elem, cpath, out)
            out.add(cpath)
        return out
    out.add(path)
    return out


def compare(old, new, t, path=(), parent_old=True, res=None):
    """typed.Compare: (added, modified, removed) between two objects."""
    if res is None:
        res = (set(), set(), set())
    added, modified, removed = res
    if old is None and t is not None and t.value_struct and parent_old and new is not None:
        old = {}        # Go's zero value of a struct embedded by value
    granular_map = t is not None and t.kind in ("struct", "map", "any") and not t.atomic
    granular_list = t is not None and t.kind == "list" and t.list_type != "atomic"
    if granular_map and (isinstance(old, dict) or isinstance(new, dict)):
        o = old if isinstance(old, dict) else None
        n = new if isinstance(new, dict) else None
        if not o and not n:
            _leaf(old, new, path, res)
            return res
        if o is None and n is not None:
            added.add(path)
        elif n is None and o is not None:
            removed.add(path)
        for key in list((o or {}).keys()) + [k for k in (n or {}) if k not in (o or {})]:
            ov = (o or {}).get(key)
            nv = (n or {}).get(key)
            ct = t.child(key) if t.kind != "any" else ANY
            cpath = path + ("f:" + key,)
            if ov is None and nv is None:
                if key in (o or {}) and key not in (n or {}):
                    removed.add(cpath)
                elif key in (n or {}) and key not in (o or {}):
                    added.add(cpath)
                continue
            if ct is None:
                _leaf(ov, nv, cpath, res)
            else:
                compare(ov, nv, ct, cpath, o is not None, res)
        return res
    if granular_list and (isinstance(old, list) or isinstance(new, list)):
        o = old if isinstance(old, list) else []
        n = new if isinstance(new, list) else []
        if not o and not n:
            _leaf(old, new, path, res)
            return res
        if t.list_type == "set":
            ov = {value_element(v) for v in o}
            nv = {value_element(v) for v in n}
            added.update(path + (e,) for e in nv - ov)
            removed.update(path + (e,) for e in ov - nv)
            return res
        oi = {key_element(i, t): i for i in o}
        ni = {key_element(i, t): i for i in n}
        for element in list(oi) + [e for e in ni if e not in oi]:
            if element is None:
                continue
            cpath = path + (element,)
            ov, nv = oi.get(element), ni.get(element)
            if ov is None:
                added.add(cpath)
            elif nv is None:
                removed.add(cpath)
            compare(ov, nv, t.elem, cpath, ov is not None, res)
        return res
    _leaf(old, new, path, res)
    return res


def _leaf(old, new, path, res):
    if old is None and new is None:
        return
    if old is None:
        res[0].add(path)
    elif new is None:
        res[2].add(path)
    elif old != new:
        res[1].add(path)


def merge_applied(live, config, t):
    """live.Merge(config): the applied configuration laid over the live object."""
    if config is None:
        return None
    if t is None:
        return deep(config)
    if t.kind in ("struct", "map", "any") and not t.atomic and isinstance(config, dict):
        out = dict(live) if isinstance(live, dict) else {}
        for key, value in config.items():
            if value is None:
                out.pop(key, None)
                continue
            ct = t.child(key) if t.kind != "any" else ANY
            out[key] = merge_applied(out.get(key), value, ct)
        return out
    if t.kind == "list" and t.list_type != "atomic" and isinstance(config, list):
        items = list(live) if isinstance(live, list) else []
        if t.list_type == "set":
            return items + [v for v in config if v not in items]
        index = {key_element(i, t): n for n, i in enumerate(items)}
        for item in config:
            element = key_element(item, t)
            if element in index:
                items[index[element]] = merge_applied(items[index[element]], item, t.elem)
            else:
                index[element] = len(items)
                items.append(deep(item))
        return items
    return deep(config)


def remove_path(doc, path, t):
    """Removes one field, list item or set value; prunes containers left empty."""
    if not path:
        return
    parents = []
    node, nt = doc, t
    for element in path[:-1]:
        parents.append((node, nt, element))
        node = _step(node, element, nt)
        nt = _step_type(nt, element)
        if node is None:
            return
    last = path[-1]
    if not _drop(node, last, nt):
        return
    # Containers that held only what was removed go too (maps, not structs).
    while parents and isinstance(node, (dict, list)) and not node:
        parent, pt, element = parents.pop()
        if pt is not None and pt.kind == "struct" and nt is not None and nt.value_struct:
            break
        _drop(parent, element, pt)
        node, nt = parent, pt


def _step(node, element, t):
    kind, text = element[0], element[2:]
    if kind == "f":
        return node.get(text) if isinstance(node, dict) else None
    if kind == "k" and isinstance(node, list):
        for item in node:
            if key_element(item, t) == element:
                return item
    return None


def _step_type(t, element):
    if t is None:
        return None
    if element[0] == "f":
        return t.child(element[2:])
    return t.elem if t.kind == "list" else None


def _drop(node, element, t):
    kind, text = element[0], element[2:]
    if kind == "f" and isinstance(node, dict) and text in node:
        del node[text]
        return True
    if kind == "k" and isinstance(node, list):
        for index, item in enumerate(node):
            if key_element(item, t) == element:
                del node[index]
                return True
    if kind == "v" and isinstance(node, list):
        value = json.loads(text)
        if value in node:
            node.remove(value)
            return True
    return False


def get_path(doc, path, t):
    node, nt = doc, t
    for element in path:
        if element[0] == "v":
            return json.loads(element[2:]) if isinstance(node, list) and json.loads(element[2:]) in node else None
        node = _step(node, element, nt)
        nt = _step_type(nt, element)
        if node is None:
            return None
    return node


def encode_fields(paths):
    """A path set as FieldsV1 JSON: '.' marks a member that has children."""
    tree = {}
    for path in paths:
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    order = {"f": 0, "k": 1, "v": 2, "i": 3}

    def emit(node, prefix):
        out = {}
        if node and prefix in paths:
            out["."] = {}
        for element in sorted(node, key=lambda e: (order.get(e[0], 9), e)):
            out[element] = emit(node[element], prefix + (element,))
        return out
    return emit(tree, ())


def decode_fields(doc, prefix=(), out=None):
    out = set() if out is None else out
    if not isinstance(doc, dict):
        return out
    for key, child in doc.items():
        if key == ".":
            out.add(prefix)
            continue
        path = prefix + (key,)
        if isinstance(child, dict) and child:
            decode_fields(child, path, out)
        else:
            out.add(path)
    return out


def has_descendant(paths, path):
    n = len(path)
    return any(len(p) > n and p[:n] == path for p in paths)


# --------------------------------------------------------------------------
# Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
# strategic merge patch (merge keys from the schemas above)
# --------------------------------------------------------------------------

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return deep(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise err_bad_request(f"add operation does not apply: doc is missing path: {go_quote(path)}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops):
    if not isinstance(ops, list):
        raise err_bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = deep(doc)
    for op in ops:
        if not isinstance(op, dict):
            raise err_bad_request("json: cannot unmarshal into Go value of type jsonpatch.Operation")
        kind = op.get("op")
        path = op.get("path", "")
        parts = _pointer(path)
        if kind in ("add", "replace", "test"):
            if "value" not in op:
                raise err_bad_request(f"{kind} operation does not apply: doc is missing path: {go_quote(path)}")
            value = deep(op["value"])
        if kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = deep(_json_get(doc, src, op.get("from", "")))
            if kind == "move":
                doc = _json_remove(doc, src, op.get("from", ""))
            doc = _json_add(doc, parts, value, path, replace=False)
        elif kind == "add":
            doc = _json_add(doc, parts, value, path, replace=False)
        elif kind == "replace":
            _json_get(doc, parts, path, verb="replace")
            doc = _json_add(doc, parts, value, path, replace=True)
        elif kind == "remove":
            doc = _json_remove(doc, parts, path)
        elif kind == "test":
            if _json_get(doc, parts, path) != value:
                raise KubeError(422, "Invalid", "the server rejected our request due to an error "
                                "in our request")
        else:
            raise err_bad_request(f"Unexpected kind: {kind}")
    return doc


def _json_get(doc, parts, path, verb="test"):
    node = doc
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KubeError(422, "Invalid", f"{verb} operation does not apply: doc is missing "
                            f"path: {go_quote(path)}: missing value")
    return node


def _json_add(doc, parts, value, path, replace):
    if not parts:
        return value
    parent = _json_get(doc, parts[:-1], path, "add")
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise KubeError(422, "Invalid", f"add operation does not apply: doc is missing path: "
                            f"{go_quote(path)}: missing value")
    return doc


def _json_remove(doc, parts, path):
    parent = _json_get(doc, parts[:-1], path, "remove")
    last = parts[-1] if parts else ""
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise KubeError(422, "Invalid", f"remove operation does not apply: doc is missing path: "
                        f"{go_quote(path)}: missing value")
    return doc


def strategic_merge(target, patch, t):
    """Strategic merge patch with the merge keys of the built-in types."""
    if not isinstance(patch, dict):
        return deep(patch)
    if patch.get("$patch") == "replace":
        return {k: deep(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            out[name] = [v for v in out.get(name) or [] if v not in (value or [])]
            continue
        ct = t.child(key) if t is not None and t.kind != "any" else None
        if value is None:
            out.pop(key, None)
        elif ct is not None and ct.kind == "list" and isinstance(value, list) and (
                ct.smp_key or ct.list_type == "set"):
            out[key] = _smp_list(out.get(key), value, ct)
        elif isinstance(value, dict) and (ct is None or ct.kind != "scalar") and not (
                ct is not None and ct.atomic and ct.kind == "map" and False):
            merged = strategic_merge(out.get(key), value, ct)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        else:
            out[key] = deep(value)
    return out


def _smp_list(live, patch, t):
    items = list(live) if isinstance(live, list) else []
    if t.list_type == "set" or not t.smp_key:
        return items + [v for v in patch if v not in items]
    key = t.smp_key
    for entry in patch:
        if not isinstance(entry, dict):
            continue
        if entry.get("$patch") == "replace":
            return [deep({k: v for k, v in e.items() if k != "$patch"}) for e in patch
                    if isinstance(e, dict) and e.get("$patch") != "replace"]
        match = next((n for n, i in enumerate(items)
                      if isinstance(i, dict) and i.get(key) == entry.get(key)), None)
        if entry.get("$patch") == "delete":
            if match is not None:
                del items[match]
        elif match is not None:
            items[match] = strategic_merge(items[match], entry, t.elem)
        else:
            items.append(strategic_merge({}, entry, t.elem))
    return items


# --------------------------------------------------------------------------
# YAML, as far as apply bodies need it (JSON is YAML; block YAML of
# mappings, sequences and plain or quoted scalars)
# --------------------------------------------------------------------------

def parse_yaml(text):
    text = text.strip()
    if not text or text[0] in "{[":
        return json.loads(text)
    lines = []
    for raw in text.splitlines():
        stripped = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if stripped.strip() in ("", "---"):
            continue
        lines.append((len(stripped) - len(stripped.lstrip()), stripped.strip()))
    value, _ = _yaml_block(lines, 0, lines[0][0] if lines else 0)
    return value


def _yaml_scalar(text):
    if text[:1] in "\"'":
        return json.loads(text) if text[0] == '"' else text[1:-1].replace("''", "'")
    if text in ("true", "True"):
        return True
    if text in ("false", "False"):
        return False
    if text in ("null", "~", ""):
        return None
    if text[:1] in "{[":
        return json.loads(text)
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"[-+]?[0-9]*\.[0-9]+([eE][-+]?[0-9]+)?", text):
        return float(text)
    return text


def _yaml_block(lines, pos, indent):
    if pos < len(lines) and lines[pos][1].startswith("- ") or (
            pos < len(lines) and lines[pos][1] == "-"):
        out = []
        while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("-"):
            rest = lines[pos][1][1:].strip()
            if not rest:
                value, pos = _yaml_block(lines, pos + 1, lines[pos + 1][0])
                out.append(value)
                continue
            inner = indent + 2
            lines[pos] = (inner, rest)
            if re.match(r"^[^\"'{\[][^:]*:( |$)", rest) or re.match(r"^\"[^\"]*\":( |$)", rest):
                value, pos = _yaml_block(lines, pos, inner)
            else:
                value, pos = _yaml_scalar(rest), pos + 1
            out.append(value)
        return out, pos
    out = {}
    while pos < len(lines) and lines[pos][0] == indent:
        line = lines[pos][1]
        m = re.match(r"^(\"[^\"]*\"|'[^']*'|[^:]+):(?: (.*))?$", line)
        if not m:
            raise ValueError(f"yaml: line {pos + 1}: could not find expected ':'")
        key = _yaml_scalar(m.group(1).strip())
        rest = (m.group(2) or "").strip()
        pos += 1
        if rest and rest not in ("|", ">", "|-", ">-"):
            out[str(key)] = _yaml_scalar(rest)
        elif rest:
            block = []
            while pos < len(lines) and lines[pos][0] > indent:
                block.append(lines[pos][1])
                pos += 1
            out[str(key)] = "\n".join(block) + ("" if rest.endswith("-") else "\n")
        elif pos < len(lines) and (lines[pos][0] > indent or (
                lines[pos][0] == indent and lines[pos][1].startswith("-"))):
            out[str(key)], pos = _yaml_block(lines, pos, lines[pos][0])
        else:
            out[str(key)] = None
    return out, pos


# --------------------------------------------------------------------------
# Decoding (strict / warn / ignore unknown fields), defaults, validation
# --------------------------------------------------------------------------

GO_SCALARS = {"string": "string", "int": "int32", "bool": "bool", "number": "float64",
              "quantity": "resource.Quantity", "intorstr": "intstr.IntOrString",
              "time": "v1.Time", "bytes": "[]uint8"}
JSON_TYPES = {str: "string", bool: "bool", int: "number", float: "number", dict: "object",
              list: "array"}


def go_type(t):
    if t.kind == "scalar":
        return GO_SCALARS[t.scalar]
    if t.kind == "list":
        return "[]" + go_type(t.elem)
    if t.kind == "map":
        return "map[string]" + go_type(t.elem)
    return f"v1.{t.go}" if t.go else "struct"


class Decoded:
    def __init__(self):
        self.unknown = []          # Go-style paths
        self.type_error = None     # message
        self.drops = []            # (container, key) to drop when ignoring


def decode_check(value, t, path="", parent_go="Object", out=None, container=None, key=None):
    """Walks a body against a schema the way the strict JSON decoder does."""
    out = out or Decoded()
    if value is None or t is None or t.kind == "any":
        return out
    ok = True
    if t.kind in ("struct", "map"):
        ok = isinstance(value, dict)
    elif t.kind == "list":
        ok = isinstance(value, list)
    elif t.scalar == "string" or t.scalar == "time":
        ok = isinstance(value, str)
    elif t.scalar == "int":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    elif t.scalar == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif t.scalar == "bool":
        ok = isinstance(value, bool)
    elif t.scalar == "intorstr":
        ok = isinstance(value, (int, str)) and not isinstance(value, bool)
    elif t.scalar == "quantity":
        try:
            parse_quantity(value)
        except ValueError as exc:
            if out.type_error is None:
                out.type_error = str(exc)
            return out
    elif t.scalar == "bytes":
        ok = isinstance(value, str)
        if ok:
            try:
                base64.b64decode(value, validate=True)
            except ValueError:
                if out.type_error is None:
                    out.type_error = "illegal base64 data at input byte 0"
                return out
    if not ok:
        if out.type_error is None:
            jt = JSON_TYPES.get(type(value), "value")
            out.type_error = (f"json: cannot unmarshal {jt} into Go struct field "
                              f"{parent_go}.{path} of type {go_type(t)}")
        return out
    if t.kind == "struct":
        for k, v in value.items():
            ct = t.fields.get(k)
            cpath = f"{path}.{k}" if path else k
            if ct is None:
                out.unknown.append(cpath)
                out.drops.append((value, k))
                continue
            decode_check(v, ct, cpath, t.go or parent_go, out)
    elif t.kind == "map":
        for k, v in value.items():
            decode_check(v, t.elem, f"{path}[{k}]", parent_go, out)
    elif t.kind == "list":
        for i, v in enumerate(value):
            decode_check(v, t.elem, f"{path}[{i}]", parent_go, out)
    return out


def crd_type_check(value, t, path, errs):
    """CRD structural schema type errors, as 422 field errors."""
    if value is None or t is None or t.kind == "any":
        return
    want = None
    if t.kind in ("struct", "map") and not isinstance(value, dict):
        want = "object"
    elif t.kind == "list" and not isinstance(value, list):
        want = "array"
    elif t.kind == "scalar" and t.scalar == "string" and not isinstance(value, str):
        want = "string"
    elif t.kind == "scalar" and t.scalar == "int" and (
            isinstance(value, bool) or not isinstance(value, int)):
        want = "integer"
    elif t.kind == "scalar" and t.scalar == "bool" and not isinstance(value, bool):
        want = "boolean"
    if want:
        got = {str: "string", bool: "boolean", int: "integer", float: "number", dict: "object",
               list: "array"}.get(type(value), "null")
        errs.append(invalid(path, got, f"{path} in body must be of type {want}: {go_quote(got)}"))
        return
    if t.kind == "struct":
        for k, v in value.items():
            crd_type_check(v, t.fields.get(k), f"{path}.{k}" if path else k, errs)
    elif t.kind == "map":
        for k, v in value.items():
            crd_type_check(v, t.elem, f"{path}.{k}", errs)
    elif t.kind == "list":
        for i, v in enumerate(value):
            crd_type_check(v, t.elem, f"{path}[{i}]", errs)


def image_pull_policy(image):
    tail = image.rsplit("/", 1)[-1]
    if "@" in tail:
        return "IfNotPresent"
    tag = tail.split(":", 1)[1] if ":" in tail else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def default_probe(probe):
    if not isinstance(probe, dict):
        return
    for k, v in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                 ("failureThreshold", 3)):
        probe.setdefault(k, v)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def default_container(c, is_pod):
    if not isinstance(c, dict):
        return
    c.setdefault("resources", {})
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if isinstance(c.get("image"), str):
        c.setdefault("imagePullPolicy", image_pull_policy(c["image"]))
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        ref = dig(env, "valueFrom", "fieldRef")
        if isinstance(ref, dict):
            ref.setdefault("apiVersion", "v1")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        default_probe(c.get(name))
    res = c.get("resources")
    if is_pod and isinstance(res, dict) and isinstance(res.get("limits"), dict):
        requests = res.setdefault("requests", {})
        if isinstance(requests, dict):
            for k, v in res["limits"].items():
                requests.setdefault(k, v)


def default_pod_spec(spec, is_pod):
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        default_container(c, is_pod)
    if is_pod:
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
        tolerations = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if isinstance(tolerations, list) and not any(
                    isinstance(t, dict) and t.get("key") == key for t in tolerations):
                tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                                    "tolerationSeconds": 300})


HPA_SCALE_UP = {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                             {"type": "Percent", "value": 100, "periodSeconds": 15}]}
HPA_SCALE_DOWN = {"selectPolicy": "Max",
                  "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


def apply_defaults(rt, obj):
    """What the apiserver's defaulting adds on decode (the fields kubectl
    shows that no one sent)."""
    spec = obj.get("spec")
    kind = rt.kind
    if kind == "Deployment" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                ru = strategy.setdefault("rollingUpdate", {})
                if isinstance(ru, dict):
                    ru.setdefault("maxUnavailable", "25%")
                    ru.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        default_pod_spec(dig(spec, "template", "spec"), False)
    elif kind == "ReplicaSet" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        default_pod_spec(dig(spec, "template", "spec"), False)
    elif kind == "Pod" and isinstance(spec, dict):
        default_pod_spec(spec, True)
        status = obj.setdefault("status", {})
        if isinstance(status, dict):
            status.setdefault("phase", "Pending")
            status.setdefault("qosClass", qos_class(spec))
    elif kind == "Service" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "port" in port:
                    port.setdefault("targetPort", port["port"])
        if spec["type"] != "ExternalName":
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if spec["type"] == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        obj.setdefault("status", {"loadBalancer": {}})
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif kind == "Namespace":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            spec.setdefault("finalizers", ["kubernetes"])
        status = obj.setdefault("status", {})
        if isinstance(status, dict):
            status.setdefault("phase", "Active")
        labels = obj["metadata"].setdefault("labels", {})
        if isinstance(labels, dict) and obj["metadata"].get("name"):
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif kind == "HorizontalPodAutoscaler" and isinstance(spec, dict):
        spec.setdefault("minReplicas", 1)
        if not spec.get("metrics"):
            spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 80}}}]
        behavior = spec.get("behavior")
        if isinstance(behavior, dict):
            for name, rules in (("scaleUp", HPA_SCALE_UP), ("scaleDown", HPA_SCALE_DOWN)):
                current = behavior.get(name)
                if not isinstance(current, dict):
                    behavior[name] = deep(rules)
                else:
                    for k, v in rules.items():
                        current.setdefault(k, deep(v))
    elif kind == "ResourceQuota":
        obj.setdefault("status", {})


def qos_class(spec):
    requests, limits, any_set = True, True, False
    for c in spec.get("containers") or []:
        res = (c or {}).get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in lim or req.get(name, lim.get(name)) != lim.get(name):
                limits = False
        requests = requests and bool(req)
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if limits else "Burstable"


CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                  "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation "
                  "is '[-._a-zA-Z0-9]+')")
NAME_RULES = {"Namespace": "label", "Service": "dns1035"}


def validate_meta(rt, meta, errs):
    name = meta.get("name")
    if not name and not meta.get("generateName"):
        errs.append(required("metadata.name", "name or generateName is required"))
    elif name:
        for msg in check_name(NAME_RULES.get(rt.kind, "subdomain"), name):
            errs.append(invalid("metadata.name", name, msg))
    errs.extend(check_labels(meta.get("labels"), "metadata.labels"))
    for key in meta.get("annotations") or {}:
        for msg in check_qualified_name(key):
            errs.append(invalid("metadata.annotations", key, msg))


def validate_resources(res, path, errs, is_pod):
    if not isinstance(res, dict):
        return
    limits = res.get("limits") or {}
    requests = res.get("requests") or {}
    for part, values in (("limits", limits), ("requests", requests)):
        for name, q in values.items():
            try:
                value = parse_quantity(q)
            except ValueError:
                continue
            if value < 0:
                errs.append(invalid(f"{path}.{part}[{name}]", q,
                                    "must be greater than or equal to 0"))
    for name, q in requests.items():
        std = name in ("cpu", "memory", "ephemeral-storage") or name.startswith("hugepages-")
        if name in limits:
            try:
                r, lim = parse_quantity(q), parse_quantity(limits[name])
            except ValueError:
                continue
            if std and r > lim:
                errs.append(invalid(f"{path}.requests", q,
                                    f"must be less than or equal to {name} limit of {limits[name]}"))
            elif not std and r != lim:
                errs.append(invalid(f"{path}.requests", q,
                                    f"must be equal to {name} limit of {limits[name]}"))
        elif not std:
            errs.append(required(f"{path}.limits",
                                 "Limit must be set for non overcommitable resources"))


def validate_pod_spec(spec, path, errs, template):
    if not isinstance(spec, dict):
        return
    containers = spec.get("containers")
    if not containers:
        errs.append(required(f"{path}.containers"))
    seen = set()
    for i, c in enumerate(containers or []):
        cp = f"{path}.containers[{i}]"
        if not isinstance(c, dict):
            continue
        name = c.get("name")
        if not name:
            errs.append(required(f"{cp}.name"))
        else:
            for msg in check_name("label", name):
                errs.append(invalid(f"{cp}.name", name, msg))
            if name in seen:
                errs.append(FieldErr("Duplicate value", f"{cp}.name", name))
            seen.add(name)
        if not c.get("image"):
            errs.append(required(f"{cp}.image"))
        for j, port in enumerate(c.get("ports") or []):
            pp = f"{cp}.ports[{j}]"
            cport = (port or {}).get("containerPort")
            if cport is None:
                errs.append(required(f"{pp}.containerPort"))
            elif not 1 <= int(cport) <= 65535:
                errs.append(invalid(f"{pp}.containerPort", int(cport),
                                    "must be between 1 and 65535, inclusive"))
            proto = (port or {}).get("protocol")
            if proto not in (None, "TCP", "UDP", "SCTP"):
                errs.append(unsupported(f"{pp}.protocol", proto, ["SCTP", "TCP", "UDP"]))
        for j, env in enumerate(c.get("env") or []):
            if not (env or {}).get("name"):
                errs.append(required(f"{cp}.env[{j}].name"))
            ref = dig(env, "valueFrom", "secretKeyRef")
            if isinstance(ref, dict) and not ref.get("key"):
                errs.append(required(f"{cp}.env[{j}].valueFrom.secretKeyRef.key"))
        validate_resources(c.get("resources"), f"{cp}.resources", errs, not template)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = dig(c, probe, "httpGet")
            if isinstance(get, dict) and get.get("port") in (None, "", 0):
                errs.append(required(f"{cp}.{probe}.httpGet.port"))
    policy = spec.get("restartPolicy")
    if template and policy not in (None, "Always"):
        errs.append(unsupported(f"{path}.restartPolicy", policy, ["Always"]))
    elif policy not in (None, "Always", "OnFailure", "Never"):
        errs.append(unsupported(f"{path}.restartPolicy", policy, ["Always", "Never", "OnFailure"]))
    errs.extend(check_labels(spec.get("nodeSelector"), f"{path}.nodeSelector"))
    for i, tol in enumerate(spec.get("tolerations") or []):
        op = (tol or {}).get("operator")
        if op not in (None, "", "Exists", "Equal"):
            errs.append(unsupported(f"{path}.tolerations[{i}].operator", op, ["Equal", "Exists"]))
        if op == "Exists" and (tol or {}).get("value"):
            errs.append(invalid(f"{path}.tolerations[{i}].operator", tol["value"],
                                "value must be empty when `operator` is 'Exists'"))
        effect = (tol or {}).get("effect")
        if effect not in (None, "", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            errs.append(unsupported(f"{path}.tolerations[{i}].effect", effect,
                                    ["NoExecute", "NoSchedule", "PreferNoSchedule"]))


def int_or_percent(value, total, round_up):
    if isinstance(value, str) and value.endswith("%"):
        pct = Fraction(int(value[:-1] or 0), 100) * total
        return int(-(-pct // 1)) if round_up else int(pct // 1)
    return int(value or 0)


def validate_object(rt, obj):
    errs = []
    meta = obj.get("metadata") or {}
    validate_meta(rt, meta, errs)
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    kind = rt.kind
    if kind in ("Deployment", "ReplicaSet"):
        replicas = spec.get("replicas")
        if isinstance(replicas, int) and replicas < 0:
            errs.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
        selector = spec.get("selector")
        template = spec.get("template") or {}
        labels = dig(template, "metadata", "labels") or {}
        if not selector:
            errs.append(required("spec.selector"))
        elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
            errs.append(invalid("spec.selector", "v1.LabelSelector{MatchLabels:map[string]"
                                "string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}",
                                "empty selector is invalid for deployment"))
        elif not Selector.from_label_selector(selector).matches(labels):
            errs.append(invalid("spec.template.metadata.labels", labels,
                                "`selector` does not match template `labels`"))
        errs.extend(check_labels(labels, "spec.template.metadata.labels"))
        validate_pod_spec(template.get("spec"), "spec.template.spec", errs, True)
        if kind == "Deployment":
            strategy = spec.get("strategy") or {}
            stype = strategy.get("type")
            if stype not in ("RollingUpdate", "Recreate"):
                errs.append(unsupported("spec.strategy.type", stype, ["Recreate", "RollingUpdate"]))
            ru = strategy.get("rollingUpdate")
            if stype == "Recreate" and ru:
                errs.append(FieldErr("Forbidden", "spec.strategy.rollingUpdate", None,
                                     "may not be specified when strategy `type` is 'Recreate'"))
            if stype == "RollingUpdate" and isinstance(ru, dict):
                surge = int_or_percent(ru.get("maxSurge"), 100, True)
                unavail = int_or_percent(ru.get("maxUnavailable"), 100, False)
                if surge == 0 and unavail == 0:
                    errs.append(invalid("spec.strategy.rollingUpdate.maxUnavailable",
                                        ru.get("maxUnavailable"), "may not be 0 when `maxSurge` is 0"))
            pds = spec.get("progressDeadlineSeconds")
            if isinstance(pds, int) and pds <= (spec.get("minReadySeconds") or 0):
                errs.append(invalid("spec.progressDeadlineSeconds", pds,
                                    "must be greater than minReadySeconds"))
            rhl = spec.get("revisionHistoryLimit")
            if isinstance(rhl, int) and rhl < 0:
                errs.append(invalid("spec.revisionHistoryLimit", rhl,
                                    "must be greater than or equal to 0"))
    elif kind == "Pod":
        validate_pod_spec(spec, "spec", errs, False)
    elif kind == "Service":
        stype = spec.get("type")
        if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
            errs.append(unsupported("spec.type", stype,
                                    ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]))
        ports = spec.get("ports") or []
        if not ports and spec.get("clusterIP") != "None" and stype != "ExternalName":
            errs.append(required("spec.ports"))
        names = set()
        for i, port in enumerate(ports):
            pp = f"spec.ports[{i}]"
            port = port or {}
            if len(ports) > 1 and not port.get("name"):
                errs.append(required(f"{pp}.name"))
            elif port.get("name"):
                if port["name"] in names:
                    errs.append(FieldErr("Duplicate value", f"{pp}.name", port["name"]))
                names.add(port["name"])
            number = port.get("port")
            if number is None:
                errs.append(invalid(f"{pp}.port", 0, "must be between 1 and 65535, inclusive"))
            elif not 1 <= int(number) <= 65535:
                errs.append(invalid(f"{pp}.port", int(number), "must be between 1 and 65535, inclusive"))
            if port.get("protocol") not in (None, "TCP", "UDP", "SCTP"):
                errs.append(unsupported(f"{pp}.protocol", port["protocol"], ["SCTP", "TCP", "UDP"]))
        errs.extend(check_labels(spec.get("selector"), "spec.selector"))
    elif kind in ("Secret", "ConfigMap"):
        for part in ("data", "stringData", "binaryData"):
            for key in obj.get(part) or {}:
                if not CONFIG_KEY.fullmatch(key):
                    errs.append(invalid(f"{part}[{key}]", key, CONFIG_KEY_MSG))
    elif kind == "ResourceQuota":
        for name, q in (spec.get("hard") or {}).items():
            try:
                if parse_quantity(q) < 0:
                    errs.append(invalid(f"spec.hard[{name}]", q, "must be greater than or equal to 0"))
            except ValueError:
                pass
    elif kind == "HorizontalPodAutoscaler":
        validate_hpa(spec, errs)
    elif kind == "InferenceService":
        pred = spec.get("predictor")
        if not isinstance(pred, dict):
            errs.append(required("spec.predictor"))
        else:
            for key in ("minReplicas", "maxReplicas"):
                if isinstance(pred.get(key), int) and pred[key] < 0:
                    errs.append(invalid(f"spec.predictor.{key}", pred[key],
                                        f"spec.predictor.{key} in body should be greater than or equal to 0"))
    elif kind == "NodePool":
        for name, q in (spec.get("limits") or {}).items():
            try:
                parse_quantity(q)
            except ValueError:
                errs.append(invalid(f"spec.limits[{name}]", q, QUANTITY_MSG))
        if rt.crd:
            errs_t = []
            crd_type_check(obj, rt.schema, "", errs_t)
            errs.extend(errs_t)
    if rt.crd and kind == "InferenceService":
        crd_type_check({"spec": obj.get("spec")}, S(spec=rt.schema.fields["spec"]), "", errs)
    return errs


HPA_METRIC_TYPES = ["ContainerResource", "External", "Object", "Pods", "Resource"]
HPA_SOURCE = {"Object": "object", "Pods": "pods", "Resource": "resource",
              "ContainerResource": "containerResource", "External": "external"}


def validate_hpa(spec, errs):
    ref = spec.get("scaleTargetRef") or {}
    if not ref.get("kind"):
        errs.append(required("spec.scaleTargetRef.kind"))
    if not ref.get("name"):
        errs.append(required("spec.scaleTargetRef.name"))
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    if isinstance(low, int) and low < 1:
        errs.append(invalid("spec.minReplicas", low, "must be greater than or equal to 1"))
    if not isinstance(high, int) or high < 1:
        errs.append(invalid("spec.maxReplicas", high or 0, "must be greater than 0"))
    elif isinstance(low, int) and high < low:
        errs.append(invalid("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`"))
    for i, metric in enumerate(spec.get("metrics") or []):
        mp = f"spec.metrics[{i}]"
        mtype = (metric or {}).get("type")
        if mtype not in HPA_METRIC_TYPES:
            if not mtype:
                errs.append(required(f"{mp}.type"))
            else:
                errs.append(unsupported(f"{mp}.type", mtype, HPA_METRIC_TYPES))
            continue
        source = metric.get(HPA_SOURCE[mtype])
        if not isinstance(source, dict):
            errs.append(required(f"{mp}.{HPA_SOURCE[mtype]}",
                                 "must populate information for the given metric source"))
            continue
        sp = f"{mp}.{HPA_SOURCE[mtype]}"
        target = source.get("target") or {}
        ttype = target.get("type")
        if not ttype:
            errs.append(required(f"{sp}.target.type", "must specify a metric target type"))
        elif ttype not in ("Utilization", "Value", "AverageValue"):
            errs.append(unsupported(f"{sp}.target.type", ttype,
                                    ["AverageValue", "Utilization", "Value"]))
        if mtype in ("Resource", "ContainerResource") and not source.get("name"):
            errs.append(required(f"{sp}.name", "resource name must be specified"))
        if mtype in ("Pods", "External", "Object") and not dig(source, "metric", "name"):
            errs.append(required(f"{sp}.metric.name", "must specify a metric name"))
        util = target.get("averageUtilization")
        if isinstance(util, int) and util < 1:
            errs.append(invalid(f"{sp}.target.averageUtilization", util, "must be greater than 0"))
    for direction in ("scaleUp", "scaleDown"):
        rules = dig(spec, "behavior", direction)
        if not isinstance(rules, dict):
            continue
        win = rules.get("stabilizationWindowSeconds")
        if isinstance(win, int) and not 0 <= win <= 3600:
            errs.append(invalid(f"spec.behavior.{direction}.stabilizationWindowSeconds", win,
                                "must be less than or equal to 3600" if win > 0 else
                                "must be greater than or equal to zero"))
        for j, policy in enumerate(rules.get("policies") or []):
            pt = (policy or {}).get("type")
            if pt not in ("Pods", "Percent"):
                errs.append(unsupported(f"spec.behavior.{direction}.policies[{j}].type", pt,
                                        ["Percent", "Pods"]))
            if not isinstance((policy or {}).get("value"), int) or policy["value"] <= 0:
                errs.append(invalid(f"spec.behavior.{direction}.policies[{j}].value",
                                    (policy or {}).get("value", 0), "must be greater than zero"))
            period = (policy or {}).get("periodSeconds")
            if not isinstance(period, int) or not 0 < period <= 1800:
                errs.append(invalid(f"spec.behavior.{direction}.policies[{j}].periodSeconds",
                                    period or 0, "must be greater than zero" if not period or
                                    period <= 0 else "must be less than or equal to 1800"))


# --------------------------------------------------------------------------
# The store: objects, one resourceVersion counter, event history, watchers
# --------------------------------------------------------------------------

HISTORY_LIMIT = 200_000


class Watcher:
    def __init__(self, rt, namespace, labels, fields):
        self.rt, self.namespace, self.labels, self.fields = rt, namespace, labels, fields
        self.events = []
        self.cond = threading.Condition(threading.Lock())
        self.closed = False

    def matches(self, obj):
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        for key, op, value in self.fields:
            actual = meta.get("name") if key == "metadata.name" else meta.get("namespace", "")
            if (actual == value) != (op == "="):
                return False
        return self.labels.matches(meta.get("labels"))

    def offer(self, etype, old, new, rv):
        if etype == "DELETED":
            if not self.matches(old):
                return
            event = ("DELETED", new)
        else:
            now_in, was_in = self.matches(new), self.matches(old)
            if now_in:
                event = (etype if was_in or etype == "ADDED" else "ADDED", new)
            elif was_in:
                event = ("DELETED", new)
            else:
                return
        with self.cond:
            self.events.append(event)
            self.cond.notify()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify()


class Store:
    def __init__(self):
        self.lock = threading.RLock()
        self.listeners = []
        self.watchers = {}
        self.reset()

    def reset(self):
        with self.lock:
            self.objects = {r.key: {} for r in RESOURCES_TABLE}
            self.rv = getattr(self, "rv", 0)
            self.history = []
            self.compacted = self.rv
            self.owners = {}
            self.by_node = {}
            self.node_used = {}       # node -> requested resources of its pods

    def next_rv(self):
        self.rv += 1
        return self.rv

    def get(self, rt, ns, name):
        return self.objects[rt.key].get((ns or "", name))

    def items(self, rt, ns=None):
        table = self.objects[rt.key]
        if ns is None:
            return list(table.values())
        return [o for (n, _), o in table.items() if n == ns]

    def put(self, rt, obj, etype=None):
        """Stores a new version (never mutated afterwards); returns it."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        table = self.objects[rt.key]
        old = table.get(key)
        meta["resourceVersion"] = str(self.next_rv())
        table[key] = obj
        self._index(rt, key, old, obj)
        self._emit(rt, etype or ("MODIFIED" if old is not None else "ADDED"), old, obj)
        return obj

    def remove(self, rt, obj):
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        old = self.objects[rt.key].pop(key, None)
        if old is None:
            return None
        gone = deep(old)
        gone["metadata"]["resourceVersion"] = str(self.next_rv())
        self._index(rt, key, old, None)
        self._emit(rt, "DELETED", old, gone)
        return gone

    def _index(self, rt, key, old, new):
        for doc, add in ((old, False), (new, True)):
            if doc is None:
                continue
            for ref in doc["metadata"].get("ownerReferences") or []:
                deps = self.owners.setdefault(ref.get("uid"), set())
                (deps.add if add else deps.discard)((rt.key, key[0], key[1]))
            if rt.kind == "Pod" and doc["spec"].get("nodeName"):
                node = doc["spec"]["nodeName"]
                pods = self.by_node.setdefault(node, set())
                (pods.add if add else pods.discard)(key)
                if dig(doc, "status", "phase") not in ("Succeeded", "Failed"):
                    used = self.node_used.setdefault(node, {"pods": 0})
                    sign = 1 if add else -1
                    used["pods"] += sign
                    for name, value in pod_requests(doc).items():
                        used[name] = used.get(name, 0) + sign * value

    def dependents(self, uid):
        out = []
        for rkey, ns, name in list(self.owners.get(uid, ())):
            obj = self.objects[rkey].get((ns, name))
            if obj is not None:
                out.append((BY_KEY[rkey], obj))
        return out

    def _emit(self, rt, etype, old, new):
        rv = self.rv
        self.history.append((rv, rt.key, etype, old, new))
        if len(self.history) > HISTORY_LIMIT:
            drop = len(self.history) // 2
            self.compacted = self.history[drop - 1][0]
            del self.history[:drop]
        for watcher in list(self.watchers.get(rt.key, ())):
            watcher.offer(etype, old, new, rv)
        for listener in self.listeners:
            listener(rt, etype, old, new)

    def compact(self):
        with self.lock:
            self.history.clear()
            self.compacted = self.rv

    def add_watcher(self, watcher, since):
        """Registers a watcher; replays history after `since` (None: the
        current state as ADDED).  Raises KubeError 410 when too old."""
        with self.lock:
            if since is not None and since < self.compacted:
                raise KubeError(410, "Expired", f"too old resource version: {since} "
                                f"({self.compacted + 1})")
            if since is None:
                for obj in self.items(watcher.rt, watcher.namespace):
                    if watcher.matches(obj):
                        watcher.events.append(("ADDED", obj))
            else:
                for rv, rkey, etype, old, new in self.history:
                    if rv > since and rkey == watcher.rt.key:
                        watcher.offer(etype, old, new, rv)
            self.watchers.setdefault(watcher.rt.key, set()).add(watcher)

    def drop_watcher(self, watcher):
        with self.lock:
            self.watchers.get(watcher.rt.key, set()).discard(watcher)

    def close_watchers(self):
        with self.lock:
            for group in self.watchers.values():
                for watcher in list(group):
                    watcher.close()

    def open_watches(self):
        with self.lock:
            return {k: len(v) for k, v in self.watchers.items() if v}


# --------------------------------------------------------------------------
# Managed fields
# --------------------------------------------------------------------------

STRIP_META = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
              "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields")
STATUS_SUBRESOURCE = {r.kind for r in RESOURCES_TABLE if "status" in r.subresources}


def ownership_view(rt, obj, part):
    """What field ownership is computed on (the fieldmanager's strip set and
    the strategies' reset fields)."""
    if obj is None:
        return None
    if part == "status":
        return {"status": obj.get("status")} if obj.get("status") is not None else {}
    if part == "scale":
        return {"spec": {"replicas": dig(obj, "spec", "replicas")}}
    doc = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    if rt.kind in STATUS_SUBRESOURCE:
        doc.pop("status", None)
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in STRIP_META}
    if meta:
        doc["metadata"] = meta
    else:
        doc.pop("metadata", None)
    return doc


def entry_identity(entry):
    op = entry.get("operation")
    return (entry.get("manager"), op, entry.get("apiVersion") if op == "Update" else "",
            entry.get("subresource") or "")


def print_manager(identity):
    manager, op, api_version, sub = identity
    text = go_quote(manager)
    if sub:
        text += f" with subresource {go_quote(sub)}"
    if op == "Update":
        text += f" using {api_version}"
    return text


def load_managers(obj):
    out = []
    for entry in obj["metadata"].get("managedFields") or []:
        out.append([entry_identity(entry), entry, decode_fields(entry.get("fieldsV1") or {})])
    return out


def store_managers(obj, managers):
    entries = []
    for identity, entry, paths in managers:
        if not paths:
            continue
        doc = {"manager": identity[0], "operation": identity[1],
               "apiVersion": entry.get("apiVersion"), "time": entry.get("time"),
               "fieldsType": "FieldsV1", "fieldsV1": encode_fields(paths)}
        if identity[3]:
            doc["subresource"] = identity[3]
        entries.append(doc)
    entries.sort(key=lambda e: (e["operation"], e.get("time") or "", e["manager"],
                                e["apiVersion"], e.get("subresource", "")))
    if entries:
        obj["metadata"]["managedFields"] = entries
    else:
        obj["metadata"].pop("managedFields", None)


def record_update(rt, old, new, manager, part="main", api_version=None):
    """Updater.Update: the manager takes what changed; others lose it."""
    managers = load_managers(old) if old is not None else []
    schema = rt.schema if part != "scale" else SCHEMAS["Deployment"]
    added, modified, removed = compare(ownership_view(rt, old, part) if old is not None else None,
                                       ownership_view(rt, new, part), schema)
    changed = added | modified
    for item in managers:
        item[2] -= changed
        item[2] -= removed
    identity = (manager, "Update", api_version or rt.api_version,
                "" if part == "main" else part)
    mine = next((m for m in managers if m[0] == identity), None)
    if mine is None:
        mine = [identity, {"apiVersion": identity[2]}, set()]
        managers.append(mine)
    mine[2] = (mine[2] - removed) | changed
    if changed or removed or old is None:
        mine[1] = {"apiVersion": identity[2], "time": now_iso()}
    mine[1].setdefault("time", now_iso())
    store_managers(new, managers)


class ApplyConflict(Exception):
    def __init__(self, conflicts):
        super().__init__("conflicts")
        self.conflicts = conflicts    # [(identity, path)]

    def error(self):
        conflicts = sorted(self.conflicts, key=lambda c: (c[0][0], c[1]))
        causes = [{"reason": "FieldManagerConflict",
                   "message": f"conflict with {print_manager(i)}", "field": path_string(p)}
                  for i, p in conflicts]
        if len(conflicts) == 1:
            identity, path = conflicts[0]
            message = (f"Apply failed with 1 conflict: conflict with {print_manager(identity)}: "
                       f"{path_string(path)}")
        else:
            lines, seen = [], []
            for identity, _ in conflicts:
                if identity not in seen:
                    seen.append(identity)
            for identity in sorted(seen, key=lambda i: i[0]):
                lines.append(f"conflicts with {print_manager(identity)}:")
                lines.extend(f"- {path_string(p)}" for i, p in conflicts if i == identity)
            message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
        return KubeError(409, "Conflict", message, {"causes": causes})


def server_side_apply(rt, live, config, manager, force):
    """Updater.Apply: merge, prune what the manager stopped applying, find
    conflicts with other managers, move ownership.  Returns the new object
    (without defaults) carrying managedFields."""
    config_view = ownership_view(rt, config, "main")
    if rt.kind in STATUS_SUBRESOURCE and config.get("status") is not None:
        config_view = dict(config_view, status=config["status"])
    new_set = apply_fieldset(config_view, rt.schema)
    if rt.kind in STATUS_SUBRESOURCE:
        new_set = {p for p in new_set if not p or p[0] != "f:status"}
    managers = load_managers(live) if live is not None else []
    identity = (manager, "Apply", "", "")
    mine = next((m for m in managers if m[0] == identity), None)
    last_set = mine[2] if mine else set()
    live_view = ownership_view(rt, live, "main") if live is not None else {}
    apply_view = {k: v for k, v in config_view.items() if k != "status"}
    merged = merge_applied(live_view, apply_view, rt.schema)
    # Prune: fields this manager applied before, omits now, and no one else owns.
    others = set().union(*(m[2] for m in managers if m[0] != identity)) if managers else set()
    for path in sorted(last_set - new_set, key=len, reverse=True):
        if path in others or has_descendant(new_set, path) or has_descendant(others, path):
            continue
        remove_path(merged, path, rt.schema)
    added, modified, removed = compare(live_view if live is not None else None, merged, rt.schema)
    changed = added | modified
    conflicts = []
    for ident, _, paths in managers:
        if ident == identity:
            continue
        for path in paths & changed:
            conflicts.append((ident, path))
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    for item in managers:
        if item[0] != identity:
            item[2] -= changed
            item[2] -= removed
    if mine is None:
        mine = [identity, {}, set()]
        managers.append(mine)
    mine[1] = {"apiVersion": rt.api_version, "time": now_iso()}
    mine[2] = new_set
    result = dict(merged)
    result["apiVersion"], result["kind"] = rt.api_version, rt.kind
    meta = dict(result.get("metadata") or {})
    for key in STRIP_META:
        if live is not None and key in live["metadata"]:
            meta[key] = live["metadata"][key]
    meta["name"] = config["metadata"]["name"]
    if rt.namespaced:
        meta["namespace"] = config["metadata"].get("namespace")
    result["metadata"] = meta
    if live is not None and "status" in live:
        result["status"] = live["status"]
    store_managers(result, managers)
    return result


# --------------------------------------------------------------------------
# Configuration, tokens, RBAC, faults, call log
# --------------------------------------------------------------------------

class ControlError(ValueError):
    pass


@dataclass
class Config:
    pod_ready_s: float = 0.3
    lb_ready_s: float = 0.3
    node_launch_s: float = 0.5
    isvc_ready_s: float = 0.5
    bookmark_interval_s: float = 1.0
    delete_s: float = 0.0
    crashloop_restart_s: float = 1.0
    karpenter: bool = False
    kserve: bool = False
    custom_metrics: bool = False
    external_metrics: bool = False
    image_failures: dict = field(default_factory=dict)

    def update(self, changes):
        if not isinstance(changes, dict):
            raise ControlError("config must be a JSON object")
        kinds = {f.name: f.type for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in kinds:
                raise ControlError(f"unknown config key {name!r}")
            kind = kinds[name]
            if kind == "bool" and not isinstance(value, bool):
                raise ControlError(f"{name} must be true or false")
            if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or value < 0):
                raise ControlError(f"{name} must be a non-negative number")
            if kind == "dict":
                if not isinstance(value, dict) or any(
                        v not in ("ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff")
                        for v in value.values()):
                    raise ControlError("image_failures maps image globs to ErrImagePull, "
                                       "ImagePullBackOff or CrashLoopBackOff")
        for name, value in changes.items():
            setattr(self, name, float(value) if kinds[name] == "float" else value)

    def to_json(self):
        return dataclasses.asdict(self)


FAULT_KINDS = ("status", "slow", "hang", "drop")


@dataclass
class Fault:
    kind: str
    code: int = 500
    verb: str | None = None
    resource: str | None = None
    count: int = 1
    seconds: float = 0.0
    message: str | None = None

    @classmethod
    def from_json(cls, doc):
        if not isinstance(doc, dict):
            raise ControlError("each fault must be a JSON object")
        unknown = set(doc) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ControlError(f"unknown fault fields {sorted(unknown)}")
        try:
            fault = cls(**doc)
        except TypeError as exc:
            raise ControlError(str(exc)) from None
        if fault.kind not in FAULT_KINDS:
            raise ControlError(f"fault kind must be one of {list(FAULT_KINDS)}")
        if not isinstance(fault.count, int) or fault.count < 1:
            raise ControlError("count must be a positive integer")
        if fault.kind == "status" and not (isinstance(fault.code, int) and 400 <= fault.code <= 599):
            raise ControlError("status faults need a code between 400 and 599")
        if fault.verb is not None and fault.verb not in ALL_VERBS:
            raise ControlError(f"verb must be one of {ALL_VERBS}")
        return fault

    def matches(self, verb, rt):
        if self.verb is not None and self.verb != verb:
            return False
        if self.resource is not None and (rt is None or self.resource not in (rt.plural, rt.key)):
            return False
        return True


class FaultQueue:
    def __init__(self):
        self._lock = threading.Lock()
        self._pending = []
        self.hang_generation = 0

    def add(self, faults):
        with self._lock:
            self._pending.extend(faults)

    def take(self, verb, rt):
        with self._lock:
            for index, fault in enumerate(self._pending):
                if fault.matches(verb, rt):
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


class CallLog:
    FIELDS = ("seq", "time", "method", "path", "verb", "resource", "subresource", "namespace",
              "name", "user", "status", "reason", "query", "field_manager", "user_agent",
              "content_type", "fault", "audit_id")

    def __init__(self):
        self._lock = threading.Lock()
        self._records = []
        self._seq = 0
        self.counts = {}

    def start(self, **fields):
        with self._lock:
            self._seq += 1
            record = dict.fromkeys(self.FIELDS)
            record.update(seq=self._seq, time=round(time.time(), 6), **fields)
            self._records.append(record)
            if len(self._records) > 100_000:
                del self._records[:50_000]
            return record

    def update(self, record, **fields):
        with self._lock:
            record.update(fields)
            if "verb" in fields and fields["verb"]:
                self.counts[fields["verb"]] = self.counts.get(fields["verb"], 0) + 1

    def snapshot(self, since=0):
        with self._lock:
            return [dict(r) for r in self._records if r["seq"] > since]

    def clear(self):
        with self._lock:
            self._records.clear()

    def last_seq(self):
        with self._lock:
            return self._seq


@dataclass
class Identity:
    user: str
    groups: list


# --------------------------------------------------------------------------
# The cluster: the apiserver's registry logic
# --------------------------------------------------------------------------

def parse_bool(value):
    return str(value).lower() in ("true", "1")


def type_meta(rt):
    return {"apiVersion": rt.api_version, "kind": rt.kind}


class Cluster:
    def __init__(self):
        self.store = Store()
        self.config = Config()
        self.faults = FaultQueue()
        self.calls = CallLog()
        self.tokens = {}
        self.deny = []
        self.controllers = None
        self.uid_counter = 0
        self.service_ips = set()
        self.node_ports = set()
        self.api_port = 0
        self.start_state()

    # --- start state ---------------------------------------------------------

    def start_state(self):
        with self.store.lock:
            self.store.reset()
            self.config = Config()
            self.deny = []
            self.service_ips = set()
            self.node_ports = set()
            for ns in ("default", "kube-system"):
                self.create(R["Namespace"], None, {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": ns}}, "kube-apiserver")
            self.add_node({"name": "node-1"})
            self.create(R["Service"], "default", {
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver",
                                                              "provider": "kubernetes"}},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 6443}],
                         "clusterIP": "10.96.0.1"}}, "kube-apiserver")

    def add_node(self, spec, extra_labels=None, manager="fake-control"):
        name = spec["name"]
        alloc = {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        alloc.update(spec.get("allocatable") or {})
        labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64"}
        labels.update(extra_labels or {})
        labels.update(spec.get("labels") or {})
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels},
                "spec": {"taints": spec["taints"]} if spec.get("taints") else {},
                "status": {
                    "capacity": dict(alloc), "allocatable": dict(alloc),
                    "conditions": [{"type": "Ready", "status": "True",
                                    "lastHeartbeatTime": now_iso(), "lastTransitionTime": now_iso(),
                                    "reason": "KubeletReady",
                                    "message": "kubelet is posting ready status"}],
                    "addresses": [{"type": "InternalIP",
                                   "address": f"10.0.{len(self.store.objects['nodes']) // 250}."
                                              f"{len(self.store.objects['nodes']) % 250 + 2}"},
                                  {"type": "Hostname", "address": name}],
                    "nodeInfo": {"kubeletVersion": "v1.32.0", "containerRuntimeVersion":
                                 "containerd://1.7.24", "operatingSystem": "linux",
                                 "architecture": "amd64"}}}
        with self.store.lock:
            errs = []
            validate_meta(R["Node"], node["metadata"], errs)
            if errs:
                raise err_invalid(R["Node"], name, errs)
            return self.create(R["Node"], None, node, manager)

    # --- helpers -------------------------------------------------------------

    def enabled(self, rt):
        return rt.feature is None or getattr(self.config, rt.feature)

    def resources(self):
        return [r for r in RESOURCES_TABLE if self.enabled(r)]

    def check_namespace(self, rt, ns, creating=False):
        if not rt.namespaced:
            return
        space = self.store.get(R["Namespace"], None, ns)
        if space is None:
            raise err_not_found(R["Namespace"], ns)
        if creating and space["metadata"].get("deletionTimestamp"):
            raise KubeError(403, "Forbidden",
                            f"{qualified(rt)} is forbidden: unable to create new content in "
                            f"namespace {ns} because it is being terminated",
                            dict(_details(None, rt.group, rt.plural), causes=[{
                                "reason": "NamespaceTerminating",
                                "message": f"namespace {ns} is being terminated",
                                "field": "metadata.namespace"}]))

    def must_get(self, rt, ns, name):
        obj = self.store.get(rt, ns, name)
        if obj is None:
            raise err_not_found(rt, name)
        return obj

    def decode_body(self, rt, body, validation, warnings, patch=False):
        """Strict/warn/ignore decoding of a full object."""
        checked = decode_check(body, rt.schema)
        if checked.type_error:
            if patch:
                raise KubeError(422, "Invalid", f' "" is invalid: patch: Invalid value: '
                                f'{go_quote(json.dumps(body, separators=(",", ":")))}: '
                                f'{checked.type_error}', {"causes": [{
                                    "reason": "FieldValueInvalid",
                                    "message": f"Invalid value: ...: {checked.type_error}",
                                    "field": "patch"}]})
            raise err_bad_request(f"{rt.kind} in version {go_quote(rt.version)} cannot be handled "
                                  f"as a {rt.kind}: {checked.type_error}")
        if checked.unknown:
            texts = [f"unknown field {go_quote(p)}" for p in checked.unknown]
            if validation == "Strict":
                message = "strict decoding error: " + ", ".join(texts)
                if not patch:
                    message = (f"{rt.kind} in version {go_quote(rt.version)} cannot be handled "
                               f"as a {rt.kind}: {message}")
                raise err_bad_request(message)
            if validation == "Warn":
                warnings.extend(texts)
            for container, key in checked.drops:
                container.pop(key, None)
        return body

    def check_kind(self, rt, body):
        if not isinstance(body, dict):
            raise err_bad_request("the object provided is unrecognized")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if not kind:
            raise err_bad_request(f"Object 'Kind' is missing in '{json.dumps(body)[:80]}'")
        if api_version and api_version != rt.api_version:
            raise err_bad_request(f"the API version in the data ({api_version}) does not match "
                                  f"the expected API version ({rt.api_version})")
        if kind != rt.kind:
            raise err_bad_request(f"the kind in the data ({kind}) does not match the expected "
                                  f"kind ({rt.kind})")

    def new_uid(self):
        return str(uuid.uuid4())

    def finish_new(self, rt, obj):
        meta = obj["metadata"]
        meta["uid"] = self.new_uid()
        meta["creationTimestamp"] = now_iso()
        if rt.kind in GENERATION_KINDS or rt.crd:
            meta["generation"] = 1
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)

    # --- verbs ---------------------------------------------------------------

    def create(self, rt, ns, body, manager, validation="Strict", warnings=None, dry_run=False,
               admission=True):
        warnings = [] if warnings is None else warnings
        with self.store.lock:
            self.check_kind(rt, body)
            obj = deep(body)
            self.decode_body(rt, obj, validation, warnings)
            meta = obj.setdefault("metadata", {})
            if not isinstance(meta, dict):
                meta = obj["metadata"] = {}
            if rt.namespaced:
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise err_bad_request("the namespace of the provided object does not match "
                                          "the namespace sent on the request")
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            meta.pop("managedFields", None)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + rand_suffix()
            self.check_namespace(rt, ns, creating=True)
            self.normalize(rt, obj)
            apply_defaults(rt, obj)
            errs = validate_object(rt, obj)
            if errs:
                raise err_invalid(rt, meta.get("name") or "", errs)
            if self.store.get(rt, ns, meta["name"]) is not None:
                raise err_already_exists(rt, meta["name"])
            self.admit_create(rt, obj, admission)
            self.finish_new(rt, obj)
            record_update(rt, None, obj, manager)
            self.on_create(rt, obj)
            if dry_run:
                obj["metadata"]["resourceVersion"] = str(self.store.rv)
                return obj
            return self.store.put(rt, obj)

    def normalize(self, rt, obj):
        """What registries do on every write (Secret stringData into data)."""
        if rt.kind == "Secret" and isinstance(obj.get("stringData"), dict):
            data = obj.setdefault("data", {})
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()

    def admit_create(self, rt, obj, admission):
        if rt.kind == "Pod" and admission and self.controllers is not None:
            self.controllers.admit_pod(obj)

    def on_create(self, rt, obj):
        if rt.kind == "Service":
            self.allocate_service(obj)

    def allocate_service(self, obj, old=None):
        spec = obj["spec"]
        if old is not None:
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                if key in old["spec"] and key not in spec:
                    spec[key] = old["spec"][key]
        if spec.get("type") == "ExternalName":
            return
        if not spec.get("clusterIP"):
            net = ipaddress.ip_network("10.96.0.0/12")
            while True:
                ip = str(net[10 + secrets.randbelow(net.num_addresses - 20)])
                if ip not in self.service_ips:
                    break
            spec["clusterIP"] = ip
        self.service_ips.add(spec["clusterIP"])
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        if spec["clusterIP"] != "None":
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            old_ports = {(p.get("port"), p.get("protocol")): p.get("nodePort")
                         for p in ((old or {}).get("spec") or {}).get("ports") or []}
            for port in spec.get("ports") or []:
                if not port.get("nodePort"):
                    port["nodePort"] = old_ports.get((port.get("port"), port.get("protocol"))) \
                        or self.free_node_port()
                self.node_ports.add(port["nodePort"])

    def free_node_port(self):
        while True:
            port = 30000 + secrets.randbelow(2768)
            if port not in self.node_ports:
                return port

    def update(self, rt, ns, name, body, manager, validation="Strict", warnings=None,
               subresource="", dry_run=False):
        warnings = [] if warnings is None else warnings
        with self.store.lock:
            if subresource == "scale":
                return self.update_scale(rt, ns, name, body, manager, dry_run)
            self.check_kind(rt, body)
            obj = deep(body)
            self.decode_body(rt, obj, validation, warnings)
            meta = obj.setdefault("metadata", {})
            if meta.get("name") and meta["name"] != name:
                raise err_bad_request(f"the name of the object ({meta['name']}) does not match "
                                      f"the name on the URL ({name})")
            meta["name"] = name
            if rt.namespaced:
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise err_bad_request("the namespace of the provided object does not match "
                                          "the namespace sent on the request")
                meta["namespace"] = ns
            self.check_namespace(rt, ns)
            old = self.store.get(rt, ns, name)
            if old is None:
                raise err_not_found(rt, name)     # no built-in kind here allows create-on-update
            if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise err_conflict(rt, name)
            return self.commit_update(rt, old, obj, manager, subresource, dry_run)

    def commit_update(self, rt, old, obj, manager, subresource="", dry_run=False,
                      managed=False, api_version=None):
        """Stores `obj` as the next version of `old` after the strategy's
        resets, defaults, validation and field ownership."""
        meta = obj.setdefault("metadata", {})
        keep = ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                "deletionGracePeriodSeconds", "namespace", "name")
        if subresource == "status":
            new = deep(old)
            new["status"] = obj.get("status")
            if new["status"] is None:
                new.pop("status")
        else:
            new = obj
            for key in keep:
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
            if rt.kind in STATUS_SUBRESOURCE and "status" in old:
                new["status"] = deep(old["status"])
            elif rt.kind in STATUS_SUBRESOURCE:
                new.pop("status", None)
            if old["metadata"].get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
                if added:
                    raise KubeError(422, "Invalid", f"{qualified_kind(rt)} {go_quote(old['metadata']['name'])} "
                                    "is invalid: metadata.finalizers: Forbidden: no new finalizers "
                                    "can be added if the object is being deleted, found new "
                                    f"finalizers {json.dumps(sorted(added))}")
        self.normalize(rt, new)
        if rt.kind == "Service":
            self.allocate_service(new, old)
        apply_defaults(rt, new)
        errs = validate_object(rt, new)
        if errs:
            raise err_invalid(rt, old["metadata"]["name"], errs)
        if rt.kind == "Namespace" and subresource != "status":
            new["status"] = deep(old.get("status") or {})
        if not managed:
            new["metadata"]["managedFields"] = deep(old["metadata"].get("managedFields") or [])
            record_update(rt, old, new, manager, subresource or "main", api_version)
        if (rt.kind in GENERATION_KINDS or rt.crd) and subresource != "status":
            strip = ("metadata", "status")
            if {k: v for k, v in old.items() if k not in strip} != \
                    {k: v for k, v in new.items() if k not in strip}:
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if self.unchanged(old, new):
            return old
        if dry_run:
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self.store.put(rt, new)
            return self.store.remove(rt, new)
        return self.store.put(rt, new)

    @staticmethod
    def unchanged(old, new):
        def strip(doc):
            meta = {k: v for k, v in doc["metadata"].items()
                    if k not in ("resourceVersion", "managedFields")}
            times = [{k: v for k, v in e.items() if k != "time"}
                     for e in doc["metadata"].get("managedFields") or []]
            return dict(doc, metadata=meta), times
        return strip(old) == strip(new)

    # --- scale subresource ---------------------------------------------------

    def scale_of(self, rt, obj):
        meta = obj["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                             "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
                             "creationTimestamp": meta["creationTimestamp"]},
                "spec": {"replicas": obj["spec"].get("replicas", 0)},
                "status": {"replicas": dig(obj, "status", "replicas", default=0),
                           "selector": selector_string(obj["spec"].get("selector") or {})}}

    def update_scale(self, rt, ns, name, body, manager, dry_run=False):
        old = self.must_get(rt, ns, name)
        if not isinstance(body, dict) or body.get("kind") not in (None, "Scale"):
            raise err_bad_request("the object provided is unrecognized (must be of type Scale)")
        checked = decode_check(body, SCHEMAS["Scale"])
        if checked.type_error:
            raise err_bad_request(f"Scale in version \"v1\" cannot be handled as a Scale: "
                                  f"{checked.type_error}")
        rv = dig(body, "metadata", "resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise err_conflict(rt, name)
        replicas = dig(body, "spec", "replicas", default=0)
        if replicas < 0:
            raise KubeError(422, "Invalid", f'Scale.autoscaling {go_quote(name)} is invalid: '
                            f'spec.replicas: Invalid value: {replicas}: must be greater than or '
                            'equal to 0', {"name": name, "group": "autoscaling", "kind": "Scale",
                                           "causes": [{"reason": "FieldValueInvalid",
                                                       "message": f"Invalid value: {replicas}: must be greater than or equal to 0",
                                                       "field": "spec.replicas"}]})
        new = deep(old)
        new["spec"]["replicas"] = replicas
        stored = self.commit_update(rt, old, new, manager, "scale", dry_run,
                                    api_version=rt.api_version)
        return self.scale_of(rt, stored)

    # --- patch ---------------------------------------------------------------

    def patch(self, rt, ns, name, ptype, raw, manager, force=False, validation="Strict",
              warnings=None, subresource="", dry_run=False):
        warnings = [] if warnings is None else warnings
        with self.store.lock:
            if ptype == "application/apply-patch+yaml":
                return self.apply(rt, ns, name, raw, manager, force, subresource, dry_run)
            try:
                patch = json.loads(raw or b"null")
            except (ValueError, UnicodeDecodeError) as exc:
                raise err_bad_request(f"error decoding patch: {exc}") from None
            old = self.must_get(rt, ns, name)
            current = self.scale_of(rt, old) if subresource == "scale" else old
            if ptype == "application/json-patch+json":
                new = json_patch(current, patch)
            elif ptype == "application/merge-patch+json":
                if not isinstance(patch, dict):
                    raise err_bad_request("json: cannot unmarshal into Go value of type map[string]interface {}")
                new = merge_patch(current, patch)
            else:
                schema = SCHEMAS["Scale"] if subresource == "scale" else rt.schema
                if not isinstance(patch, dict):
                    raise err_bad_request("json: cannot unmarshal into Go value of type map[string]interface {}")
                new = strategic_merge(current, patch, schema)
            if subresource == "scale":
                return self.update_scale(rt, ns, name, new, manager, dry_run)
            if not isinstance(new, dict):
                raise err_bad_request("the patched object is not a JSON object")
            self.decode_body(rt, new, validation, warnings, patch=True)
            meta = new.setdefault("metadata", {})
            if meta.get("name") != name:
                raise err_bad_request(f"the name of the object ({meta.get('name')}) does not "
                                      f"match the name on the URL ({name})")
            if meta.get("resourceVersion") and meta["resourceVersion"] != old["metadata"]["resourceVersion"]:
                raise err_conflict(rt, name)
            if rt.namespaced and meta.get("namespace") != ns:
                raise err_bad_request("the namespace of the provided object does not match the "
                                      "namespace sent on the request")
            return self.commit_update(rt, old, new, manager, subresource, dry_run)

    def apply(self, rt, ns, name, raw, manager, force, subresource="", dry_run=False):
        try:
            text = raw.decode() if isinstance(raw, bytes) else raw
            config = parse_yaml(text) if isinstance(text, str) else text
        except (ValueError, UnicodeDecodeError, IndexError) as exc:
            raise err_bad_request(f"error decoding YAML: {exc}") from None
        if not isinstance(config, dict):
            raise err_bad_request("error decoding YAML: the applied object must be a mapping")
        if subresource:
            raise KubeError(415, "UnsupportedMediaType", "apply patches to subresources are "
                            "not supported by the fake")
        meta = config.get("metadata")
        if not isinstance(meta, dict):
            meta = config["metadata"] = {}
        if config.get("apiVersion") != rt.api_version:
            raise err_bad_request("Incorrect version specified in apply patch. Specified patch "
                                  f"version: {config.get('apiVersion', '')}, expected: "
                                  f"{rt.api_version}")
        if config.get("kind") != rt.kind:
            raise err_bad_request(f"the kind in the data ({config.get('kind', '')}) does not "
                                  f"match the expected kind ({rt.kind})")
        if meta.get("name") and meta["name"] != name:
            raise err_bad_request(f"the name of the object ({meta['name']}) does not match the "
                                  f"name on the URL ({name})")
        meta["name"] = name
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise err_bad_request("the namespace of the provided object does not match "
                                      "the namespace sent on the request")
            meta["namespace"] = ns
        if meta.get("managedFields") is not None:
            raise err_bad_request("metadata.managedFields must be nil")
        self.check_namespace(rt, ns, creating=True)
        live = self.store.get(rt, ns, name)
        if live is not None and meta.get("resourceVersion") and \
                meta["resourceVersion"] != live["metadata"]["resourceVersion"]:
            raise err_conflict(rt, name)
        try:
            merged = server_side_apply(rt, live, config, manager, force)
        except SchemaError as exc:
            gvk = f"{rt.api_version if rt.group else '/v1'}, Kind={rt.kind}"
            raise KubeError(500, "", f"failed to create typed patch object "
                            f"({ns or ''}/{name}; {gvk}): {exc}") from None
        except ApplyConflict as conflict:
            raise conflict.error() from None
        checked = decode_check(merged, rt.schema)
        if checked.type_error:
            raise err_bad_request(f"{rt.kind} in version {go_quote(rt.version)} cannot be handled "
                                  f"as a {rt.kind}: {checked.type_error}")
        if live is None:
            obj = merged
            self.normalize(rt, obj)
            apply_defaults(rt, obj)
            errs = validate_object(rt, obj)
            if errs:
                raise err_invalid(rt, name, errs)
            self.admit_create(rt, obj, True)
            managed = obj["metadata"].get("managedFields")
            self.finish_new(rt, obj)
            obj["metadata"]["managedFields"] = managed
            self.on_create(rt, obj)
            if dry_run:
                return obj
            return self.store.put(rt, obj), True
        return self.commit_update(rt, live, merged, manager, "", dry_run, managed=True), False

    # --- delete --------------------------------------------------------------

    def delete(self, rt, ns, name, policy=None, preconditions=None, dry_run=False):
        with self.store.lock:
            obj = self.must_get(rt, ns, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise err_conflict(rt, name, f"Precondition failed: UID in precondition: "
                                   f"{pre['uid']}, UID in object meta: {obj['metadata']['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise err_conflict(rt, name, "Precondition failed: ResourceVersion in "
                                   f"precondition: {pre['resourceVersion']}, ResourceVersion in "
                                   f"object meta: {obj['metadata']['resourceVersion']}")
            if dry_run:
                return obj, False
            return self.delete_object(rt, obj, policy)

    def delete_object(self, rt, obj, policy=None):
        """Returns (object, gone)."""
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        pending = finalizers or rt.kind == "Namespace" or self.config.delete_s > 0
        if not pending:
            return self.store.remove(rt, obj), True
        if meta.get("deletionTimestamp") and finalizers == list(meta.get("finalizers") or []):
            return obj, False
        new = deep(obj)
        new["metadata"]["finalizers"] = finalizers
        if not finalizers:
            new["metadata"].pop("finalizers")
        new["metadata"].setdefault("deletionTimestamp", now_iso())
        new["metadata"].setdefault("deletionGracePeriodSeconds", 0)
        if rt.kind == "Namespace":
            new["status"] = dict(new.get("status") or {}, phase="Terminating")
        stored = self.store.put(rt, new)
        if self.controllers is not None:
            self.controllers.deleting(rt, stored)
        return stored, False

    def remove_finalizer(self, rt, obj, finalizer):
        new = deep(obj)
        new["metadata"]["finalizers"] = [f for f in obj["metadata"].get("finalizers") or []
                                         if f != finalizer]
        if not new["metadata"]["finalizers"]:
            new["metadata"].pop("finalizers")
        stored = self.store.put(rt, new)
        if not new["metadata"].get("finalizers") and self.config.delete_s <= 0 and \
                rt.kind != "Namespace":
            return self.store.remove(rt, stored)
        return stored

    # --- writes by controllers -------------------------------------------------

    def write_status(self, rt, obj, status, manager="kube-controller-manager"):
        """A controller's status update (subresource status, operation Update)."""
        if obj.get("status") == status:
            return obj
        new = deep(obj)
        new["status"] = status
        record_update(rt, obj, new, manager, "status")
        return self.store.put(rt, new)

    def write_spec(self, rt, obj, new, manager="kube-controller-manager"):
        record_update(rt, obj, new, manager)
        if (rt.kind in GENERATION_KINDS or rt.crd) and obj.get("spec") != new.get("spec"):
            new["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        return self.store.put(rt, new)


# --------------------------------------------------------------------------
# Protobuf bodies (kubectl's typed clients send application/vnd.kubernetes.protobuf
# for `create namespace|secret|configmap`); decoded for those kinds only
# --------------------------------------------------------------------------

PROTO_MAGIC = b"k8s\x00"


def proto_fields(data):
    pos, out = 0, []
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError("unsupported protobuf wire type")
        out.append((number, value))
    return out


def _varint(data, pos):
    shift = result = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated protobuf")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _proto_map(raw, bytes_values=False):
    key = value = None
    for number, item in proto_fields(raw):
        if number == 1:
            key = item.decode()
        elif number == 2:
            value = base64.b64encode(item).decode() if bytes_values else item.decode()
    return key, value or ""


def proto_object_meta(raw):
    meta = {}
    names = {1: "name", 2: "generateName", 3: "namespace", 6: "resourceVersion"}
    for number, value in proto_fields(raw):
        if number in names and value:
            meta[names[number]] = value.decode()
        elif number in (11, 12):
            key, text = _proto_map(value)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = text
        elif number == 14:
            meta.setdefault("finalizers", []).append(value.decode())
    return meta


def decode_protobuf(body, rt):
    """A JSON document from a protobuf-encoded Namespace, Secret or ConfigMap."""
    if not body.startswith(PROTO_MAGIC):
        raise err_bad_request("provided data does not appear to be a protobuf message, "
                              "expected prefix [107 56 115 0]")
    api_version = kind = None
    raw = b""
    for number, value in proto_fields(body[4:]):
        if number == 1:
            for n, v in proto_fields(value):
                if n == 1:
                    api_version = v.decode()
                elif n == 2:
                    kind = v.decode()
        elif number == 2:
            raw = value
    if rt.kind not in ("Namespace", "Secret", "ConfigMap") or kind != rt.kind:
        raise KubeError(415, "UnsupportedMediaType", "the fake decodes protobuf only for "
                        "Namespace, Secret and ConfigMap; send application/json", {})
    doc = {"apiVersion": api_version or rt.api_version, "kind": kind}
    for number, value in proto_fields(raw):
        if number == 1:
            doc["metadata"] = proto_object_meta(value)
        elif kind == "Namespace" and number == 2:
            fins = [v.decode() for n, v in proto_fields(value) if n == 1]
            if fins:
                doc["spec"] = {"finalizers": fins}
        elif kind == "Secret" and number in (2, 4):
            key, text = _proto_map(value, bytes_values=(number == 2))
            doc.setdefault("data" if number == 2 else "stringData", {})[key] = text
        elif kind == "Secret" and number == 3 and value:
            doc["type"] = value.decode()
        elif kind == "ConfigMap" and number in (2, 3):
            key, text = _proto_map(value, bytes_values=(number == 3))
            doc.setdefault("data" if number == 2 else "binaryData", {})[key] = text
        elif number in (5, 4) and isinstance(value, int):
            doc["immutable"] = bool(value)
    return doc


# --------------------------------------------------------------------------
# The HTTP face of the API: routing, authentication, authorization, faults
# --------------------------------------------------------------------------

@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)
    action: str = "reply"          # reply | drop | hang | watch
    watch: object = None


def json_answer(doc, status=200):
    return Answer(status, dumps(doc))


def error_answer(err):
    answer = json_answer(err.status(), err.code)
    answer.headers.update(err.headers)
    return answer


@dataclass
class Route:
    rt: Resource | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str = ""
    watch_path: bool = False
    special: str | None = None     # discovery and friends
    group: str = ""
    version: str = ""


class KubeApi:
    def __init__(self, cluster):
        self.cluster = cluster

    # --- routing ---------------------------------------------------------------

    def route(self, path):
        segs = [urllib.parse.unquote(s) for s in path.strip("/").split("/") if s]
        if not segs:
            return Route(special="root")
        if segs == ["version"]:
            return Route(special="version")
        if segs[0] in ("healthz", "livez", "readyz"):
            return Route(special="health")
        if segs[0] == "openapi":
            return Route(special="openapi")
        if segs[0] == "api":
            if len(segs) == 1:
                return Route(special="api")
            if segs[1] != "v1":
                return None
            group, version, rest = "", "v1", segs[2:]
        elif segs[0] == "apis":
            if len(segs) == 1:
                return Route(special="apis")
            if len(segs) == 2:
                return Route(special="group", group=segs[1])
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            return None
        if not rest:
            return Route(special="gv", group=group, version=version)
        watch = rest[0] == "watch"
        if watch:
            rest = rest[1:]
        known = {r.plural: r for r in self.cluster.resources()
                 if r.group == group and r.version == version}
        route = Route(watch_path=watch, group=group, version=version)
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in known and \
                known[rest[2]].namespaced:
            route.namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in known or len(rest) > 3:
            return None
        route.rt = known[rest[0]]
        if len(rest) > 1:
            route.name = rest[1]
        if len(rest) > 2:
            if rest[2] not in route.rt.subresources:
                return None
            route.subresource = rest[2]
        return route

    @staticmethod
    def verb(method, route, query):
        if route.rt is None:
            return method.lower()
        if route.watch_path or (method == "GET" and route.name is None and
                                parse_bool(query.get("watch", "false"))):
            return "watch"
        if method == "GET":
            return "get" if route.name else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if route.name else "deletecollection"}.get(method, method.lower())

    # --- authentication and authorization ---------------------------------

    def authenticate(self, req):
        cert = req.peer_cert
        if cert:
            subject = {}
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    subject.setdefault(key, []).append(value)
            if subject.get("commonName"):
                return Identity(subject["commonName"][0],
                                subject.get("organizationName", []) + ["system:authenticated"])
        header = req.header("authorization") or ""
        if header[:7].lower() == "bearer " and header[7:].strip():
            token = header[7:].strip()
            entry = self.cluster.tokens.get(token)
            if entry and (entry.get("expires") is None or entry["expires"] > time.time()):
                return Identity(entry["user"], list(entry.get("groups") or []) +
                                ["system:authenticated"])
        return None

    def authorize(self, identity, verb, route):
        rt = route.rt
        for rule in self.cluster.deny:
            if rule.get("user") not in (None, identity.user):
                continue
            if rule.get("verb") not in (None, "*", verb):
                continue
            if rule.get("resource") not in (None, "*", rt.plural):
                continue
            if rule.get("group") is not None and rule["group"] != rt.group:
                continue
            if rule.get("namespace") is not None and rule["namespace"] != (route.namespace or ""):
                continue
            if rule.get("subresource") is not None and rule["subresource"] != route.subresource:
                continue
            resource = rt.plural + (f"/{route.subresource}" if route.subresource else "")
            name = route.name if verb not in ("list", "watch", "create", "deletecollection") else ""
            namespace = route.namespace if rt.namespaced else None
            if rt.kind == "Namespace" and route.name:
                namespace = route.name
            where = (f"in the namespace {go_quote(namespace)}" if namespace
                     else "at the cluster scope")
            why = (f"User {go_quote(identity.user)} cannot {verb} resource {go_quote(resource)} "
                   f"in API group {go_quote(rt.group)} {where}")
            raise err_forbidden(rt.group, rt.plural, name, why)

    # --- entry point -------------------------------------------------------------

    def handle(self, req):
        audit_id = str(uuid.uuid4())
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(req.query, keep_blank_values=True).items()}
        route = self.route(req.path)
        verb = self.verb(req.method, route, query) if route else req.method.lower()
        record = self.cluster.calls.start(
            method=req.method, path=req.path, verb=None,
            resource=route.rt.plural if route and route.rt else None,
            subresource=(route.subresource or None) if route else None,
            namespace=route.namespace if route else None, name=route.name if route else None,
            query=query, field_manager=query.get("fieldManager"),
            user_agent=req.header("user-agent"), content_type=req.header("content-type"),
            audit_id=audit_id)
        self.cluster.calls.update(record, verb=verb)
        try:
            answer = self.process(req, route, verb, query, record)
        except KubeError as err:
            answer = error_answer(err)
        except Exception:  # a bug in the fake must not look like a network fault
            traceback.print_exc()
            answer = error_answer(KubeError(500, "InternalError", "Internal error occurred: "
                                            "the fake failed: see its stderr"))
        answer.headers["Audit-Id"] = audit_id
        answer.headers["Cache-Control"] = "no-cache, private"
        reason = None
        if answer.action == "reply" and answer.status >= 400:
            try:
                reason = json.loads(answer.body).get("reason")
            except ValueError:
                pass
        self.cluster.calls.update(record, status=answer.status if answer.action in
                                  ("reply", "watch") else None, reason=reason)
        return answer

    def process(self, req, route, verb, query, record):
        identity = self.authenticate(req)
        if identity is None:
            return error_answer(KubeError(401, "Unauthorized", "Unauthorized"))
        self.cluster.calls.update(record, user=identity.user)
        if route is None:
            raise err_not_found_path()
        fault = self.cluster.faults.take(verb, route.rt)
        if fault is not None:
            self.cluster.calls.update(record, fault=fault.kind)
            early = self.fault_answer(fault)
            if early is not None:
                return early
        if route.special:
            return self.special(req, route)
        self.authorize(identity, verb, route)
        return self.serve(req, route, verb, query, identity)

    @staticmethod
    def fault_answer(fault):
        if fault.kind == "slow":
            time.sleep(fault.seconds)
            return None
        if fault.kind in ("drop", "hang"):
            return Answer(action=fault.kind)
        if fault.code == 429:
            err = KubeError(429, "TooManyRequests", fault.message or
                            "Too many requests, please try again later.",
                            {"retryAfterSeconds": 1}, {"Retry-After": "1"})
            return error_answer(err)
        reasons = {500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
                   409: "Conflict", 404: "NotFound", 403: "Forbidden", 401: "Unauthorized",
                   400: "BadRequest", 410: "Expired", 422: "Invalid"}
        messages = {500: "Internal error occurred: injected fault",
                    503: "the server is currently unable to handle the request",
                    504: "the server was unable to return a response in the time allotted, but "
                         "may still be processing the request"}
        reason = reasons.get(fault.code) or http.HTTPStatus(fault.code).phrase.replace(" ", "")
        details = {"retryAfterSeconds": 1} if fault.code in (503, 504) else None
        return error_answer(KubeError(fault.code, reason, fault.message or messages.get(
            fault.code, f"injected fault {fault.code}"), details))

    # --- the resource verbs ------------------------------------------------------

    def serve(self, req, route, verb, query, identity):
        cluster, rt = self.cluster, route.rt
        ns = route.namespace if rt.namespaced else None
        if rt.namespaced and ns is None and verb not in ("list", "watch"):
            raise err_not_found_path()
        warnings = []
        manager = query.get("fieldManager") or self.default_manager(req)
        validation = query.get("fieldValidation") or "Strict"
        if validation not in ("Strict", "Warn", "Ignore"):
            raise KubeError(422, "Invalid", f'{"CreateOptions" if verb == "create" else "PatchOptions"}'
                            f'.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: '
                            f'{go_quote(validation)}: supported values: "Ignore", "Strict", "Warn"')
        dry_run = query.get("dryRun") == "All"
        if verb in ("list", "watch"):
            if verb == "watch":
                return self.watch(route, query)
            if req.method != "GET":
                raise err_method_not_allowed()
            return self.list(req, route, query)
        if verb == "get":
            obj = cluster.store.get(rt, ns, route.name)
            if obj is None:
                # The object's own NotFound, even where the namespace
                # is missing too.
                raise err_not_found(rt, route.name)
            if route.subresource == "scale":
                return json_answer(cluster.scale_of(rt, obj))
            return self.object_answer(req, rt, obj)
        if verb == "create":
            if route.name or route.subresource:
                raise err_method_not_allowed()
            obj = cluster.create(rt, ns, self.read_body(req, rt), manager, validation, warnings,
                                 dry_run)
            return self.with_warnings(self.object_answer(req, rt, obj, 201), warnings)
        if verb == "update":
            obj = cluster.update(rt, ns, route.name, self.read_body(req, rt), manager, validation,
                                 warnings, route.subresource, dry_run)
            if route.subresource == "scale":
                return json_answer(obj)
            return self.with_warnings(self.object_answer(req, rt, obj, 200), warnings)
        if verb == "patch":
            ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
            allowed = ["application/json-patch+json", "application/merge-patch+json",
                       "application/apply-patch+yaml"]
            if not rt.crd:
                allowed.insert(2, "application/strategic-merge-patch+json")
            if ctype not in allowed:
                raise KubeError(415, "UnsupportedMediaType",
                                "the body of the request was in an unknown format - accepted "
                                "media types include: " + ", ".join(allowed), {})
            force = query.get("force")
            if ctype == "application/apply-patch+yaml":
                if not query.get("fieldManager"):
                    raise KubeError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: '
                                    'fieldManager: Required value: is required for apply patch',
                                    {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                                        {"reason": "FieldValueRequired",
                                         "message": "Required value: is required for apply patch",
                                         "field": "fieldManager"}]})
            elif force is not None:
                raise KubeError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: force: '
                                'Forbidden: may not be specified for non-apply patch',
                                {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                                    {"reason": "FieldValueForbidden",
                                     "message": "Forbidden: may not be specified for non-apply patch",
                                     "field": "force"}]})
            result = cluster.patch(rt, ns, route.name, ctype, req.body, manager,
                                   parse_bool(force or "false"), validation, warnings,
                                   route.subresource, dry_run)
            status = 200
            if isinstance(result, tuple):
                result, created = result
                status = 201 if created else 200
            if route.subresource == "scale":
                return json_answer(result)
            return self.with_warnings(self.object_answer(req, rt, result, status), warnings)
        if verb == "delete":
            options = self.read_json(req, optional=True) or {}
            policy = query.get("propagationPolicy") or options.get("propagationPolicy")
            if policy is None and "orphanDependents" in options:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            if policy not in (None, "Foreground", "Background", "Orphan"):
                raise KubeError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: '
                                f'propagationPolicy: Unsupported value: {go_quote(policy)}: '
                                'supported values: "Foreground", "Background", "Orphan", "nil"')
            obj, gone = cluster.delete(rt, ns, route.name, policy, options.get("preconditions"),
                                       dry_run or options.get("dryRun") == ["All"])
            if gone and rt.kind not in ("Pod",):
                return json_answer({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                    "status": "Success", "details": _details(
                                        obj["metadata"]["name"], rt.group, rt.plural,
                                        uid=obj["metadata"]["uid"])})
            return self.object_answer(req, rt, obj, 200)
        if verb == "deletecollection":
            options = self.read_json(req, optional=True) or {}
            policy = query.get("propagationPolicy") or options.get("propagationPolicy")
            labels = Selector.parse(query.get("labelSelector"))
            with cluster.store.lock:
                if rt.namespaced:
                    cluster.check_namespace(rt, ns)
                victims = [o for o in cluster.store.items(rt, ns)
                           if labels.matches(o["metadata"].get("labels"))]
                for obj in victims:
                    cluster.delete_object(rt, obj, policy)
            return json_answer(self.list_doc(rt, victims, str(cluster.store.rv)))
        raise err_method_not_allowed()

    @staticmethod
    def default_manager(req):
        agent = req.header("user-agent") or ""
        prefix = agent.split("/")[0]
        return "".join(ch for ch in prefix if ch.isprintable())[:128] or "unknown"

    @staticmethod
    def with_warnings(answer, warnings):
        if warnings:
            answer.headers["Warning"] = ", ".join(
                "299 - " + go_quote(w) for w in warnings)
        return answer

    def read_body(self, req, rt):
        ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
        if ctype == "application/vnd.kubernetes.protobuf":
            try:
                return decode_protobuf(req.body, rt)
            except (ValueError, UnicodeDecodeError) as exc:
                raise err_bad_request(f"error decoding protobuf: {exc}") from None
        return self.read_json(req)

    @staticmethod
    def read_json(req, optional=False):
        if not req.body:
            if optional:
                return None
            raise err_bad_request("the object provided is unrecognized (must be of type "
                                  "object): Object 'Kind' is missing in ''")
        try:
            return json.loads(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise err_bad_request(f"couldn't get version/kind; json parse error: {exc}") from None

    def object_answer(self, req, rt, obj, status=200):
        if "as=Table" in (req.header("accept") or ""):
            return json_answer(self.table(rt, [obj], str(self.cluster.store.rv)), status)
        return Answer(status, dumps(obj))

    # --- list and watch -------------------------------------------------------

    @staticmethod
    def field_terms(text):
        terms = []
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", part)
            if not m or m.group(1) not in ("metadata.name", "metadata.namespace"):
                field_name = m.group(1) if m else part
                raise err_bad_request(f'field label not supported: {field_name}')
            terms.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
        return terms

    def selected(self, route, query):
        labels = Selector.parse(query.get("labelSelector"))
        fields = self.field_terms(query.get("fieldSelector"))
        watcher = Watcher(route.rt, route.namespace if route.rt.namespaced else None, labels,
                          fields)
        return watcher

    def list_doc(self, rt, items, rv, cont=None, remaining=None):
        meta = {"resourceVersion": rv}
        if cont:
            meta["continue"] = cont
            if remaining:
                meta["remainingItemCount"] = remaining
        if not rt.crd:
            items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in items]
        return {"kind": rt.kind + "List", "apiVersion": rt.api_version, "metadata": meta,
                "items": items}

    def list(self, req, route, query):
        cluster, rt = self.cluster, route.rt
        filt = self.selected(route, query)
        with cluster.store.lock:
            # A namespace that does not exist lists as empty, as on the
            # real server ("No resources found in NS namespace.").
            items = [o for o in cluster.store.items(rt, filt.namespace) if filt.matches(o)]
            rv = str(cluster.store.rv)
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        cont, remaining = None, None
        token = query.get("continue")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                start = tuple(state["start"])
                rv = state["rv"]
            except (ValueError, KeyError, TypeError):
                raise KubeError(400, "BadRequest", "continue key is not valid: illegal base64 "
                                "data at input byte 0") from None
            items = [o for o in items if (o["metadata"].get("namespace", ""),
                                          o["metadata"]["name"]) > start]
        limit = int(query.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            remaining = len(items) - limit
            items = items[:limit]
            cont = base64.urlsafe_b64encode(dumps({"rv": rv, "start": [
                last.get("namespace", ""), last["name"]]})).decode().rstrip("=")
        if "as=Table" in (req.header("accept") or ""):
            doc = self.table(rt, items, rv)
            if cont:
                doc["metadata"]["continue"] = cont
            return json_answer(doc)
        return Answer(200, dumps(self.list_doc(rt, items, rv, cont, remaining)))

    def watch(self, route, query):
        watcher = self.selected(route, query)
        rv = query.get("resourceVersion")
        since = None if rv in (None, "", "0") else rv
        if since is not None:
            try:
                since = int(since)
            except ValueError:
                raise err_bad_request(f"invalid resource version: {rv}") from None
        timeout = query.get("timeoutSeconds")
        answer = Answer(200, content_type="application/json", action="watch")
        answer.watch = {"watcher": watcher, "since": since,
                        "timeout": float(timeout) if timeout else 1800.0,
                        "bookmarks": parse_bool(query.get("allowWatchBookmarks", "false"))}
        answer.headers["Transfer-Encoding"] = "chunked"
        return answer

    # --- tables (kubectl's default output) --------------------------------------

    COLUMNS = {
        "Namespace": [("Status", "string", lambda o: dig(o, "status", "phase", default=""))],
        "Node": [("Status", "string", lambda o: "Ready" if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in dig(o, "status", "conditions", default=[])) else "NotReady"),
                 ("Roles", "string", lambda o: "<none>")],
        "Pod": [("Ready", "string", lambda o: "%d/%d" % (
            sum(1 for c in dig(o, "status", "containerStatuses", default=[]) if c.get("ready")),
            len(dig(o, "spec", "containers", default=[])))),
                ("Status", "string", lambda o: pod_display_status(o)),
                ("Restarts", "string", lambda o: str(sum(
                    c.get("restartCount", 0) for c in dig(o, "status", "containerStatuses",
                                                          default=[]))))],
        "Deployment": [("Ready", "string", lambda o: "%d/%d" % (
            dig(o, "status", "readyReplicas", default=0), dig(o, "spec", "replicas", default=0))),
                       ("Up-to-date", "integer", lambda o: dig(o, "status", "updatedReplicas", default=0)),
                       ("Available", "integer", lambda o: dig(o, "status", "availableReplicas", default=0))],
        "ReplicaSet": [("Desired", "integer", lambda o: dig(o, "spec", "replicas", default=0)),
                       ("Current", "integer", lambda o: dig(o, "status", "replicas", default=0)),
                       ("Ready", "integer", lambda o: dig(o, "status", "readyReplicas", default=0))],
        "Service": [("Type", "string", lambda o: dig(o, "spec", "type", default="")),
                    ("Cluster-IP", "string", lambda o: dig(o, "spec", "clusterIP", default="<none>")),
                    ("External-IP", "string", lambda o: ",".join(
                        i.get("ip", "") for i in dig(o, "status", "loadBalancer", "ingress", default=[]))
                     or ("<pending>" if dig(o, "spec", "type") == "LoadBalancer" else "<none>")),
                    ("Port(s)", "string", lambda o: ",".join(
                        f"{p.get('port')}" + (f":{p['nodePort']}" if p.get("nodePort") else "") +
                        f"/{p.get('protocol', 'TCP')}" for p in dig(o, "spec", "ports", default=[])))],
        "Secret": [("Type", "string", lambda o: o.get("type", "")),
                   ("Data", "integer", lambda o: len(o.get("data") or {}))],
        "HorizontalPodAutoscaler": [
            ("Reference", "string", lambda o: f"{dig(o, 'spec', 'scaleTargetRef', 'kind')}/"
                                              f"{dig(o, 'spec', 'scaleTargetRef', 'name')}"),
            ("MinPods", "integer", lambda o: dig(o, "spec", "minReplicas", default=1)),
            ("MaxPods", "integer", lambda o: dig(o, "spec", "maxReplicas", default=0)),
            ("Replicas", "integer", lambda o: dig(o, "status", "currentReplicas", default=0))],
    }

    def table(self, rt, items, rv):
        extra = self.COLUMNS.get(rt.kind, [])
        columns = [{"name": "Name", "type": "string", "format": "name",
                    "description": "Name must be unique within a namespace.", "priority": 0}]
        columns += [{"name": n, "type": t, "format": "", "description": n, "priority": 0}
                    for n, t, _ in extra]
        columns.append({"name": "Age", "type": "string", "format": "",
                        "description": "CreationTimestamp is a timestamp representing the server "
                                       "time when this object was created.", "priority": 0})
        rows = []
        for obj in items:
            meta = obj["metadata"]
            created = meta.get("creationTimestamp")
            age = "<unknown>"
            if created:
                seconds = max(0, int(time.time() - time.mktime(time.strptime(
                    created, "%Y-%m-%dT%H:%M:%SZ")) + time.mktime(time.gmtime(0))))
                age = f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"
            partial = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
            rows.append({"cells": [meta["name"]] + [f(obj) for _, _, f in extra] + [age],
                         "object": partial})
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": rv}, "columnDefinitions": columns, "rows": rows}

    # --- discovery -----------------------------------------------------------------

    def special(self, req, route):
        cluster = self.cluster
        if req.method != "GET":
            raise err_method_not_allowed()
        if route.special == "version":
            return json_answer(SERVER_VERSION)
        if route.special == "health":
            return Answer(200, b"ok", "text/plain; charset=utf-8")
        if route.special == "root":
            return json_answer({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez",
                                          "/openapi/v2", "/openapi/v3", "/readyz", "/version"]
                                + sorted({f"/apis/{g}" for g, _ in self.groups()} |
                                         {f"/apis/{g}/{v}" for g, v in self.groups()})})
        if route.special == "openapi":
            return self.openapi(req)
        if route.special == "api":
            return json_answer({"kind": "APIVersions", "versions": ["v1"],
                                "serverAddressByClientCIDRs": [{
                                    "clientCIDR": "0.0.0.0/0",
                                    "serverAddress": f"127.0.0.1:{cluster.api_port}"}]})
        if route.special == "apis":
            return json_answer({"kind": "APIGroupList", "apiVersion": "v1",
                                "groups": [self.group_doc(g, v) for g, v in self.groups()]})
        if route.special == "group":
            for g, v in self.groups():
                if g == route.group:
                    doc = self.group_doc(g, v)
                    doc.update(kind="APIGroup", apiVersion="v1")
                    return json_answer(doc)
            raise err_not_found_path()
        if route.special == "gv":
            if (route.group, route.version) not in set(self.groups()) | {("", "v1")}:
                raise err_not_found_path()
            return json_answer(self.resource_list(route.group, route.version))
        raise err_not_found_path()

    def groups(self):
        out = []
        for rt in self.cluster.resources():
            if rt.group and (rt.group, rt.version) not in out:
                out.append((rt.group, rt.version))
        for switch, gv in METRICS_GROUPS.items():
            if getattr(self.cluster.config, switch):
                out.append(gv)
        return out

    @staticmethod
    def group_doc(group, version):
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        return {"name": group, "versions": [gv], "preferredVersion": gv}

    def resource_list(self, group, version):
        resources = []
        for rt in self.cluster.resources():
            if rt.group != group or rt.version != version:
                continue
            doc = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                   "kind": rt.kind, "verbs": list(rt.verbs)}
            if rt.short:
                doc["shortNames"] = list(rt.short)
            if rt.categories:
                doc["categories"] = list(rt.categories)
            doc["storageVersionHash"] = base64.b64encode(hashlib.sha256(
                rt.key.encode()).digest()[:8]).decode()
            resources.append(doc)
            for sub in rt.subresources:
                if sub == "finalize":
                    resources.append({"name": f"{rt.plural}/finalize", "singularName": "",
                                      "namespaced": False, "kind": rt.kind, "verbs": ["update"]})
                elif sub == "scale":
                    resources.append({"name": f"{rt.plural}/scale", "singularName": "",
                                      "namespaced": rt.namespaced, "group": "autoscaling",
                                      "version": "v1", "kind": "Scale",
                                      "verbs": ["get", "patch", "update"]})
                else:
                    resources.append({"name": f"{rt.plural}/{sub}", "singularName": "",
                                      "namespaced": rt.namespaced, "kind": rt.kind,
                                      "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": resources}

    def openapi(self, req):
        """Just enough OpenAPI v3 for kubectl to learn that the server does
        field validation (the fieldValidation parameter on PATCH)."""
        parts = req.path.strip("/").split("/")
        if parts[:2] != ["openapi", "v3"]:
            raise err_not_found_path()
        gvs = [("", "v1")] + self.groups()
        if len(parts) == 2:
            paths = {}
            for g, v in gvs:
                key = f"apis/{g}/{v}" if g else "api/v1"
                digest = hashlib.sha512(f"{key}{self.cluster.config.karpenter}"
                                        f"{self.cluster.config.kserve}".encode()).hexdigest().upper()
                paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest[:128]}"}
            return json_answer({"paths": paths})
        key = "/".join(parts[2:])
        for g, v in gvs:
            if key == (f"apis/{g}/{v}" if g else "api/v1"):
                break
        else:
            raise err_not_found_path()
        params = [{"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
                  for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
        paths = {}
        for rt in self.cluster.resources():
            if rt.group != g or rt.version != v:
                continue
            base = rt.gv_path + ("/namespaces/{namespace}" if rt.namespaced else "") + \
                f"/{rt.plural}/{{name}}"
            gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
            paths[base] = {"patch": {"operationId": f"patch{rt.kind}",
                                     "x-kubernetes-action": "patch",
                                     "x-kubernetes-group-version-kind": gvk,
                                     "parameters": params}}
        return json_answer({"openapi": "3.0.0", "info": {"title": "Kubernetes",
                                                         "version": SERVER_VERSION["gitVersion"]},
                            "paths": paths, "components": {"schemas": {}}})


def pod_display_status(pod):
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    for c in dig(pod, "status", "containerStatuses", default=[]):
        waiting = dig(c, "state", "waiting", "reason")
        if waiting:
            return waiting
    return dig(pod, "status", "phase", default="Pending")


# --------------------------------------------------------------------------
# Controllers: deployments, replica sets, scheduler, kubelet, services, HPA,
# quota, garbage collection, namespaces, Karpenter, KServe
# --------------------------------------------------------------------------

INSTANCE_TYPES = {
    # name: (cpu, memory, gpus, gpu product)
    "m5.large": ("2", "8Gi", 0, None), "m5.xlarge": ("4", "16Gi", 0, None),
    "m5.2xlarge": ("8", "32Gi", 0, None), "m5.4xlarge": ("16", "64Gi", 0, None),
    "g5.xlarge": ("4", "16Gi", 1, "NVIDIA-A10G"), "g5.2xlarge": ("8", "32Gi", 1, "NVIDIA-A10G"),
    "g5.12xlarge": ("48", "192Gi", 4, "NVIDIA-A10G"), "g5.48xlarge": ("192", "768Gi", 8, "NVIDIA-A10G"),
    "g6.xlarge": ("4", "16Gi", 1, "NVIDIA-L4"), "g6.12xlarge": ("48", "192Gi", 4, "NVIDIA-L4"),
    "p4d.24xlarge": ("96", "1152Gi", 8, "NVIDIA-A100-SXM4-40GB"),
    "p5.48xlarge": ("192", "2Ti", 8, "NVIDIA-H100-80GB-HBM3"),
}
GPU = "nvidia.com/gpu"
QUOTA_POD_KEYS = {"pods", "count/pods", "cpu", "memory", "requests.cpu", "requests.memory",
                  "limits.cpu", "limits.memory"}


def pod_requests(pod, part="requests"):
    total = {}
    for c in dig(pod, "spec", "containers", default=[]):
        for name, q in (dig(c, "resources", part, default={}) or {}).items():
            try:
                total[name] = total.get(name, 0) + parse_quantity(q)
            except ValueError:
                pass
    return total


def tolerates(tolerations, taint):
    for tol in tolerations or []:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol["key"] == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def untolerated(pod_spec, taints):
    for taint in taints or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and \
                not tolerates(pod_spec.get("tolerations"), taint):
            return taint
    return None


def _requirement_holds(expr, value, present):
    op, values = expr.get("operator"), expr.get("values") or []
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, bound = int(value), int(values[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def node_affinity_holds(pod_spec, node):
    """requiredDuringSchedulingIgnoredDuringExecution as the scheduler reads
    it: the terms are ORed, each term's requirements ANDed, and a term with
    no requirement matches no node."""
    required = dig(pod_spec, "affinity", "nodeAffinity",
                   "requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True
    labels = node["metadata"].get("labels") or {}
    fields = {"metadata.name": node["metadata"]["name"]}
    for term in required.get("nodeSelectorTerms") or []:
        exprs = [(e, labels.get(e.get("key")), e.get("key") in labels)
                 for e in term.get("matchExpressions") or []]
        exprs += [(e, fields.get(e.get("key")), e.get("key") in fields)
                  for e in term.get("matchFields") or []]
        if exprs and all(_requirement_holds(e, v, p) for e, v, p in exprs):
            return True
    return False


def owner_ref(obj, block=True):
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": block}


def controller_of(obj):
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def template_hash(template):
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    value = int.from_bytes(digest[:8], "big")
    out = ""
    for _ in range(10):
        out += ALPHANUMS[value % len(ALPHANUMS)]
        value //= len(ALPHANUMS)
    return out


def condition(conds, ctype, status, reason, message, now, update_time=True, extra=None):
    """Sets a condition, keeping lastTransitionTime unless the status flips."""
    conds = [dict(c) for c in conds or []]
    for c in conds:
        if c.get("type") == ctype:
            if c.get("status") != status:
                c["lastTransitionTime"] = now
            if "lastUpdateTime" in c and (update_time or c.get("reason") != reason):
                c["lastUpdateTime"] = now
            c.update(status=status, reason=reason, message=message)
            if extra:
                c.update(extra)
            return conds
    doc = {"type": ctype, "status": status}
    if extra is None:
        doc.update(lastUpdateTime=now)
    doc.update(lastTransitionTime=now, reason=reason, message=message)
    if extra:
        doc.update(extra)
    conds.append(doc)
    return conds


def get_condition(obj, ctype):
    for c in dig(obj, "status", "conditions", default=[]):
        if c.get("type") == ctype:
            return c
    return None


class Controllers:
    TICK_S = 0.05

    def __init__(self, cluster):
        self.cluster = cluster
        self.store = cluster.store
        cluster.controllers = self
        self.dirty = {}
        self.timers = []
        self.seq = 0
        self.pending_pods = set()
        self.claims = {}          # claim id -> {"pool", "pods", "node"}
        self.claimed = {}         # (ns, pod) -> claim id
        self.events = {}
        self.hpa_targets = {}     # (ns, deployment) -> set(hpa names)
        self.crash = {}           # (ns, pod) -> restarts
        self.stopping = False
        self.store.listeners.append(self.observe)
        self.thread = threading.Thread(target=self.run, daemon=True, name="controllers")

    def reset(self):
        self.dirty.clear()
        self.timers.clear()
        self.pending_pods.clear()
        self.claims.clear()
        self.claimed.clear()
        self.events.clear()
        self.hpa_targets.clear()
        self.crash.clear()

    # --- queueing ------------------------------------------------------------

    def enqueue(self, *key):
        self.dirty[key] = True

    def later(self, delay, *key):
        self.seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.seq, key))

    def observe(self, rt, etype, old, new):
        meta = new["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        kind = rt.kind
        if etype == "DELETED":
            self.enqueue("gc", meta["uid"])
        elif meta.get("deletionTimestamp"):
            self.enqueue("finalize", rt.key, ns, name)
        if kind == "Deployment":
            self.enqueue("Deployment", ns, name)
            for hpa in self.hpa_targets.get((ns, name), ()):
                self.enqueue("HorizontalPodAutoscaler", ns, hpa)
        elif kind == "ReplicaSet":
            self.enqueue("ReplicaSet", ns, name)
            ref = controller_of(new)
            if ref and ref.get("kind") == "Deployment":
                self.enqueue("Deployment", ns, ref["name"])
        elif kind == "Pod":
            ref = controller_of(new)
            if ref and ref.get("kind") == "ReplicaSet":
                self.enqueue("ReplicaSet", ns, ref["name"])
            if etype == "DELETED":
                self.pending_pods.discard((ns, name))
                if new["spec"].get("nodeName"):
                    self.enqueue("reschedule")
            elif not new["spec"].get("nodeName") and (old is None or old["spec"] != new["spec"]):
                self.enqueue("schedule", ns, name)
            if old is None or etype == "DELETED" or old.get("spec") != new.get("spec") or \
                    dig(old, "status", "phase") != dig(new, "status", "phase"):
                self.enqueue("quota", ns)
        elif kind == "Node":
            self.enqueue("reschedule")
        elif kind == "Service" and etype != "DELETED":
            self.enqueue("Service", ns, name)
        elif kind == "HorizontalPodAutoscaler":
            if old is not None:
                self.hpa_targets.get((ns, dig(old, "spec", "scaleTargetRef", "name")), set()).discard(name)
            if etype != "DELETED":
                target = dig(new, "spec", "scaleTargetRef", "name")
                self.hpa_targets.setdefault((ns, target), set()).add(name)
                self.enqueue("HorizontalPodAutoscaler", ns, name)
        elif kind == "ResourceQuota" and etype != "DELETED":
            self.enqueue("quota", ns)
        elif kind == "NodePool":
            self.enqueue("NodePool", "", name)
            self.enqueue("reschedule")
        elif kind == "InferenceService" and etype != "DELETED":
            self.enqueue("InferenceService", ns, name)
        elif kind == "Namespace" and etype != "DELETED" and meta.get("deletionTimestamp"):
            self.enqueue("finalize", rt.key, "", name)

    def deleting(self, rt, obj):
        meta = obj["metadata"]
        self.enqueue("finalize", rt.key, meta.get("namespace", ""), meta["name"])

    # --- the loop -------------------------------------------------------------------

    def run(self):
        while not self.stopping:
            started = time.monotonic()
            try:
                with self.store.lock:
                    self.tick()
            except Exception:  # keep controlling; show the bug
                traceback.print_exc()
            time.sleep(max(0.005, self.TICK_S - (time.monotonic() - started)))

    def tick(self):
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, key = heapq.heappop(self.timers)
            self.enqueue(*key)
        for _ in range(20):
            if not self.dirty:
                break
            batch, self.dirty = self.dirty, {}
            for key in batch:
                try:
                    self.handle(key)
                except KubeError as err:
                    if err.code not in (404, 409):
                        print(f"kube_fake: controller {key}: {err.message}", file=sys.stderr)

    def handle(self, key):
        kind = key[0]
        handler = {
            "Deployment": self.sync_deployment, "ReplicaSet": self.sync_replicaset,
            "schedule": self.schedule_pod, "kubelet": self.kubelet, "crash": self.crashloop,
            "Service": self.sync_service, "lb": self.lb_ready,
            "HorizontalPodAutoscaler": self.sync_hpa, "quota": self.sync_quota,
            "gc": self.collect, "finalize": self.finalize, "final": self.final_removal,
            "NodePool": self.sync_nodepool, "launch": self.launch, "provision": self.provision,
            "InferenceService": self.sync_isvc,
        }.get(kind)
        if kind == "reschedule":
            for ns, name in sorted(self.pending_pods):
                self.enqueue("schedule", ns, name)
            return
        if handler is not None:
            handler(*key[1:])

    # --- events ---------------------------------------------------------------------

    def event(self, obj, etype, reason, message, component):
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        key = (meta["uid"], reason, message)
        now = now_iso()
        name = self.events.get(key)
        existing = self.store.get(R["Event"], ns, name) if name else None
        if existing is not None:
            new = deep(existing)
            new["count"] = existing.get("count", 1) + 1
            new["lastTimestamp"] = now
            self.store.put(R["Event"], new)
            return
        name = f"{meta['name']}.{time.time_ns():x}"[:253]
        self.events[key] = name
        if self.store.get(R["Namespace"], None, ns) is None:
            return
        doc = {"apiVersion": "v1", "kind": "Event",
               "metadata": {"name": name, "namespace": ns},
               "involvedObject": {"kind": obj["kind"], "namespace": meta.get("namespace"),
                                  "name": meta["name"], "uid": meta["uid"],
                                  "apiVersion": obj["apiVersion"],
                                  "resourceVersion": meta.get("resourceVersion")},
               "reason": reason, "message": message, "source": {"component": component},
               "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": etype,
               "eventTime": None, "reportingComponent": component, "reportingInstance": ""}
        if not doc["involvedObject"]["namespace"]:
            doc["involvedObject"].pop("namespace")
        doc.pop("eventTime")
        self.cluster.finish_new(R["Event"], doc)
        self.store.put(R["Event"], doc)

    # --- deployments ------------------------------------------------------------------

    def owned(self, obj, kind):
        return [o for rt, o in self.store.dependents(obj["metadata"]["uid"])
                if rt.kind == kind and (controller_of(o) or {}).get("uid") == obj["metadata"]["uid"]]

    def sync_deployment(self, ns, name):
        cluster = self.cluster
        dep = self.store.get(R["Deployment"], ns, name)
        if dep is None or dep["metadata"].get("deletionTimestamp"):
            return
        spec = dep["spec"]
        desired = spec.get("replicas", 1)
        template = spec["template"]
        tmpl_hash = template_hash(template)
        rss = self.owned(dep, "ReplicaSet")
        new_rs = next((r for r in rss if r["metadata"].get("labels", {}).get(
            "pod-template-hash") == tmpl_hash), None)
        old_rss = [r for r in rss if r is not new_rs]
        now = now_iso()
        revision = max([int(r["metadata"].get("annotations", {}).get(
            "deployment.kubernetes.io/revision", "0")) for r in rss] + [0])
        created = False
        if new_rs is None:
            created = True
            labels = dict(dig(template, "metadata", "labels", default={}), **{
                "pod-template-hash": tmpl_hash})
            tmpl = deep(template)
            tmpl.setdefault("metadata", {})["labels"] = labels
            selector = deep(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = tmpl_hash
            surge = self.surge(dep)
            rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "metadata": {"name": f"{name}-{tmpl_hash}", "namespace": ns, "labels": labels,
                               "annotations": {
                                   "deployment.kubernetes.io/desired-replicas": str(desired),
                                   "deployment.kubernetes.io/max-replicas": str(desired + surge),
                                   "deployment.kubernetes.io/revision": str(revision + 1)},
                               "ownerReferences": [owner_ref(dep)]},
                  "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds", 0),
                           "selector": selector, "template": tmpl}}
            try:
                new_rs = cluster.create(R["ReplicaSet"], ns, rs, "kube-controller-manager")
            except KubeError as err:
                if err.code != 409:
                    raise
                return
            revision += 1
            self.event(dep, "Normal", "ScalingReplicaSet",
                       f"Scaled up replica set {new_rs['metadata']['name']} from 0 to "
                       f"{min(desired, desired + surge)}" if False else
                       f"Created new replica set {new_rs['metadata']['name']}", "deployment-controller")
        elif new_rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision") \
                != str(revision) and old_rss:
            new_rs = self.set_rs(new_rs, annotations={"deployment.kubernetes.io/revision": str(revision + 1)})
            revision += 1
        # Scaling.
        strategy = dig(spec, "strategy", "type", default="RollingUpdate")
        if not spec.get("paused"):
            if not old_rss or all(r["spec"].get("replicas", 0) == 0 and
                                  dig(r, "status", "replicas", default=0) == 0 for r in old_rss):
                if new_rs["spec"].get("replicas") != desired:
                    new_rs = self.scale_rs(dep, new_rs, desired)
                for r in old_rss:
                    if r["spec"].get("replicas"):
                        self.scale_rs(dep, r, 0)
            elif strategy == "Recreate":
                for r in old_rss:
                    if r["spec"].get("replicas"):
                        self.scale_rs(dep, r, 0)
                if all(dig(r, "status", "replicas", default=0) == 0 for r in old_rss) and \
                        new_rs["spec"].get("replicas") != desired:
                    new_rs = self.scale_rs(dep, new_rs, desired)
            else:
                new_rs = self.rolling(dep, new_rs, old_rss, desired)
        # Status.
        rss = [new_rs] + old_rss
        total = sum(dig(r, "status", "replicas", default=0) for r in rss)
        ready = sum(dig(r, "status", "readyReplicas", default=0) for r in rss)
        available = sum(dig(r, "status", "availableReplicas", default=0) for r in rss)
        updated = dig(new_rs, "status", "replicas", default=0)
        status = dict(dep.get("status") or {})
        status["observedGeneration"] = dep["metadata"].get("generation", 1)
        for key, value in (("replicas", total), ("updatedReplicas", updated),
                           ("readyReplicas", ready), ("availableReplicas", available),
                           ("unavailableReplicas", max(desired - available, 0))):
            if value:
                status[key] = value
            else:
                status.pop(key, None)
        max_unavailable = self.max_unavailable(dep)
        conds = status.get("conditions") or []
        if available >= desired - max_unavailable:
            conds = condition(conds, "Available", "True", "MinimumReplicasAvailable",
                              "Deployment has minimum availability.", now, False)
        else:
            conds = condition(conds, "Available", "False", "MinimumReplicasUnavailable",
                              "Deployment does not have minimum availability.", now, False)
        rs_name = new_rs["metadata"]["name"]
        complete = (updated == desired and total == desired and available == desired and
                    dig(new_rs, "status", "availableReplicas", default=0) == desired)
        progressing = get_condition(dep, "Progressing")
        deadline = spec.get("progressDeadlineSeconds")
        if complete:
            conds = condition(conds, "Progressing", "True", "NewReplicaSetAvailable",
                              f'ReplicaSet "{rs_name}" has successfully progressed.', now,
                              progressing is None or progressing.get("reason") != "NewReplicaSetAvailable")
        elif created or progressing is None:
            conds = condition(conds, "Progressing", "True", "NewReplicaSetCreated",
                              f'Created new replica set "{rs_name}"', now)
            if deadline:
                self.later(deadline + 0.05, "Deployment", ns, name)
        else:
            last = progressing.get("lastUpdateTime") or now
            moved = dep.get("status", {}).get("updatedReplicas", 0) != updated or \
                dep.get("status", {}).get("availableReplicas", 0) != available or \
                dep.get("status", {}).get("readyReplicas", 0) != ready
            elapsed = time.time() - time.mktime(time.strptime(last, "%Y-%m-%dT%H:%M:%SZ")) + \
                time.mktime(time.gmtime(0))
            if moved:
                conds = condition(conds, "Progressing", "True", "ReplicaSetUpdated",
                                  f'ReplicaSet "{rs_name}" is progressing.', now)
                if deadline:
                    self.later(deadline + 0.05, "Deployment", ns, name)
            elif deadline and elapsed > deadline and progressing.get("reason") != "ProgressDeadlineExceeded":
                conds = condition(conds, "Progressing", "False", "ProgressDeadlineExceeded",
                                  f'ReplicaSet "{rs_name}" has timed out progressing.', now)
            elif deadline and progressing.get("status") == "True":
                self.later(max(0.05, deadline - elapsed + 0.05), "Deployment", ns, name)
        failure = get_condition(new_rs, "ReplicaFailure")
        if failure is not None:
            conds = condition(conds, "ReplicaFailure", "True", failure["reason"], failure["message"], now)
        else:
            conds = [c for c in conds if c.get("type") != "ReplicaFailure"]
        status["conditions"] = conds
        annotations = dep["metadata"].get("annotations") or {}
        if annotations.get("deployment.kubernetes.io/revision") != str(revision):
            new = deep(dep)
            new["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = str(revision)
            new["status"] = status
            record_update(R["Deployment"], dep, new, "kube-controller-manager", "status")
            self.store.put(R["Deployment"], new)
        else:
            cluster.write_status(R["Deployment"], dep, status)

    def surge(self, dep):
        ru = dig(dep, "spec", "strategy", "rollingUpdate", default={})
        if dig(dep, "spec", "strategy", "type") == "Recreate":
            return 0
        return int_or_percent(ru.get("maxSurge", "25%"), dep["spec"].get("replicas", 1), True)

    def max_unavailable(self, dep):
        if dig(dep, "spec", "strategy", "type") == "Recreate":
            return 0
        ru = dig(dep, "spec", "strategy", "rollingUpdate", default={})
        desired = dep["spec"].get("replicas", 1)
        value = int_or_percent(ru.get("maxUnavailable", "25%"), desired, False)
        if value == 0 and self.surge(dep) == 0:
            value = 1
        return min(value, desired)

    def rolling(self, dep, new_rs, old_rss, desired):
        surge, max_unavail = self.surge(dep), self.max_unavailable(dep)
        all_rss = [new_rs] + old_rss
        current = sum(r["spec"].get("replicas", 0) for r in all_rss)
        new_replicas = new_rs["spec"].get("replicas", 0)
        if current < desired + surge and new_replicas < desired:
            target = min(new_replicas + desired + surge - current, desired)
            new_rs = self.scale_rs(dep, new_rs, target)
            current += target - new_replicas
        available = sum(dig(r, "status", "availableReplicas", default=0) for r in all_rss)
        min_available = desired - max_unavail
        new_unavailable = new_rs["spec"].get("replicas", 0) - dig(new_rs, "status", "availableReplicas", default=0)
        can_down = min(current - min_available - new_unavailable, available - min_available)
        # Old replicas that are not available go first, whatever the budget.
        for r in old_rss:
            unhealthy = r["spec"].get("replicas", 0) - dig(r, "status", "availableReplicas", default=0)
            if unhealthy > 0:
                r = self.scale_rs(dep, r, r["spec"]["replicas"] - unhealthy)
        for r in sorted(old_rss, key=lambda o: o["metadata"]["creationTimestamp"]):
            r = self.store.get(R["ReplicaSet"], r["metadata"]["namespace"], r["metadata"]["name"]) or r
            if can_down <= 0:
                break
            have = r["spec"].get("replicas", 0)
            down = min(have, can_down)
            if down > 0:
                self.scale_rs(dep, r, have - down)
                can_down -= down
        return new_rs

    def scale_rs(self, dep, rs, replicas):
        if rs["spec"].get("replicas") == replicas:
            return rs
        before = rs["spec"].get("replicas", 0)
        new = deep(rs)
        new["spec"]["replicas"] = replicas
        annotations = new["metadata"].setdefault("annotations", {})
        annotations["deployment.kubernetes.io/desired-replicas"] = str(dep["spec"].get("replicas", 1))
        annotations["deployment.kubernetes.io/max-replicas"] = str(dep["spec"].get("replicas", 1) + self.surge(dep))
        stored = self.cluster.write_spec(R["ReplicaSet"], rs, new)
        verb = "up" if replicas > before else "down"
        self.event(dep, "Normal", "ScalingReplicaSet",
                   f"Scaled {verb} replica set {rs['metadata']['name']} from {before} to {replicas}",
                   "deployment-controller")
        return stored

    def set_rs(self, rs, annotations):
        new = deep(rs)
        new["metadata"].setdefault("annotations", {}).update(annotations)
        return self.cluster.write_spec(R["ReplicaSet"], rs, new)

    # --- replica sets ----------------------------------------------------------------

    def sync_replicaset(self, ns, name):
        cluster = self.cluster
        rs = self.store.get(R["ReplicaSet"], ns, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        pods = [p for p in self.owned(rs, "Pod") if not p["metadata"].get("deletionTimestamp")]
        want = rs["spec"].get("replicas", 1)
        failure = None
        if len(pods) < want:
            tmpl = rs["spec"]["template"]
            for _ in range(want - len(pods)):
                pod = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": dict(deep(tmpl.get("metadata") or {}),
                                        generateName=f"{name}-", namespace=ns,
                                        ownerReferences=[owner_ref(rs)]),
                       "spec": deep(tmpl["spec"])}
                pod["metadata"].pop("creationTimestamp", None)
                try:
                    created = cluster.create(R["Pod"], ns, pod, "kube-controller-manager")
                    pods.append(created)
                    self.event(rs, "Normal", "SuccessfulCreate",
                               f"Created pod: {created['metadata']['name']}", "replicaset-controller")
                except KubeError as err:
                    failure = err.message
                    self.event(rs, "Warning", "FailedCreate", f"Error creating: {err.message}",
                               "replicaset-controller")
                    self.later(1.0, "ReplicaSet", ns, name)
                    break
        elif len(pods) > want:
            def rank(p):
                ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in dig(p, "status", "conditions", default=[]))
                return (bool(p["spec"].get("nodeName")), ready, p["metadata"]["creationTimestamp"])
            victims = sorted(pods, key=rank)[:len(pods) - want]
            for pod in sorted(victims, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True):
                cluster.delete_object(R["Pod"], pod)
                self.event(rs, "Normal", "SuccessfulDelete",
                           f"Deleted pod: {pod['metadata']['name']}", "replicaset-controller")
                pods.remove(pod)
        ready = sum(1 for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                           for c in dig(p, "status", "conditions", default=[])))
        status = {"replicas": len(pods)}
        selector = Selector.from_label_selector(rs["spec"].get("selector"))
        labeled = sum(1 for p in pods if selector.matches(p["metadata"].get("labels")))
        if labeled:
            status["fullyLabeledReplicas"] = labeled
        if ready:
            status["readyReplicas"] = ready
            status["availableReplicas"] = ready
        status["observedGeneration"] = rs["metadata"].get("generation", 1)
        conds = [c for c in dig(rs, "status", "conditions", default=[])
                 if c.get("type") != "ReplicaFailure"]
        if failure:
            conds = condition(conds, "ReplicaFailure", "True", "FailedCreate", failure, now_iso(),
                              extra={})
        if conds:
            status["conditions"] = conds
        cluster.write_status(R["ReplicaSet"], rs, status)

    # --- quota ---------------------------------------------------------------------------

    def quota_usage(self, ns, skip=None):
        used = {}
        for pod in self.store.items(R["Pod"], ns):
            if pod["metadata"].get("name") == skip:
                continue
            if dig(pod, "status", "phase") in ("Succeeded", "Failed"):
                continue
            for key, value in self.pod_quota(pod).items():
                used[key] = used.get(key, 0) + value
        return used

    @staticmethod
    def pod_quota(pod):
        out = {"pods": 1, "count/pods": 1}
        for name, value in pod_requests(pod, "requests").items():
            out[f"requests.{name}"] = value
            if name in ("cpu", "memory"):
                out[name] = value
        for name, value in pod_requests(pod, "limits").items():
            out[f"limits.{name}"] = value
        return out

    def admit_pod(self, pod):
        ns = pod["metadata"]["namespace"]
        quotas = self.store.items(R["ResourceQuota"], ns)
        if not quotas:
            return
        wanted = self.pod_quota(pod)
        used = None
        for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
            hard = quota["spec"].get("hard") or {}
            tracked = {k: v for k, v in hard.items()
                       if k in wanted or k in QUOTA_POD_KEYS or k.startswith(("requests.", "limits."))}
            if not tracked:
                continue
            if used is None:
                used = self.quota_usage(ns)
            failed = []
            for key in sorted(tracked):
                limit = parse_quantity(tracked[key])
                ask = wanted.get(key, 0)
                if ask and used.get(key, 0) + ask > limit:
                    failed.append(key)
            if failed:
                def show(values, key):
                    return f"{key}={format_quantity(values.get(key, 0), is_binary(hard[key]))}"
                message = (f"exceeded quota: {quota['metadata']['name']}, requested: "
                           + ",".join(show(wanted, k) for k in failed) + ", used: "
                           + ",".join(show(used, k) for k in failed) + ", limited: "
                           + ",".join(f"{k}={hard[k]}" for k in failed))
                raise err_forbidden("", "pods", pod["metadata"]["name"], message)

    def sync_quota(self, ns):
        quotas = self.store.items(R["ResourceQuota"], ns)
        if not quotas:
            return
        used = self.quota_usage(ns)
        for quota in quotas:
            hard = quota["spec"].get("hard") or {}
            status = {"hard": dict(hard),
                      "used": {k: format_quantity(used.get(k, 0), is_binary(v))
                               for k, v in hard.items()}}
            self.cluster.write_status(R["ResourceQuota"], quota, status)

    # --- scheduler and kubelet --------------------------------------------------------

    def node_free(self, node):
        alloc = {}
        for name, q in (dig(node, "status", "allocatable", default={}) or {}).items():
            try:
                alloc[name] = parse_quantity(q)
            except ValueError:
                pass
        used = self.store.node_used.get(node["metadata"]["name"], {})
        for name, value in used.items():
            alloc[name] = alloc.get(name, 110 if name == "pods" else 0) - value
        return alloc

    def fit(self, pod, node):
        """(ok, [reasons], resolvable) for one node, in the filter plugins' order."""
        spec = pod["spec"]
        if dig(node, "spec", "unschedulable"):
            return False, ["node(s) were unschedulable"], False
        taint = untolerated(spec, dig(node, "spec", "taints", default=[]))
        if taint is not None:
            return False, [f"node(s) had untolerated taint {{{taint.get('key')}: "
                           f"{taint.get('value', '')}}}"], False
        labels = node["metadata"].get("labels") or {}
        for key, value in (spec.get("nodeSelector") or {}).items():
            if labels.get(key) != value:
                return False, ["node(s) didn't match Pod's node affinity/selector"], False
        if not node_affinity_holds(spec, node):
            return False, ["node(s) didn't match Pod's node affinity/selector"], False
        free = self.node_free(node)
        reasons = []
        if free.get("pods", 0) < 1:
            reasons.append("Too many pods")
        for name, value in sorted(pod_requests(pod).items()):
            if value > 0 and free.get(name, 0) < value:
                reasons.append(f"Insufficient {name}")
        return not reasons, reasons, True

    def schedule_pod(self, ns, name):
        pod = self.store.get(R["Pod"], ns, name)
        if pod is None or pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            self.pending_pods.discard((ns, name))
            return
        nodes = sorted(self.store.items(R["Node"]), key=lambda n: n["metadata"]["name"])
        histogram, preempt = {}, {}
        best = None
        for node in nodes:
            ok, reasons, resolvable = self.fit(pod, node)
            if ok:
                free = self.node_free(node)
                score = sum(float(v) for k, v in free.items() if k in ("cpu", GPU))
                if best is None or score > best[0]:
                    best = (score, node)
                continue
            for reason in reasons:
                histogram[reason] = histogram.get(reason, 0) + 1
            why = ("No preemption victims found for incoming pod" if resolvable else
                   "Preemption is not helpful for scheduling")
            preempt[why] = preempt.get(why, 0) + 1
        now = now_iso()
        if best is not None:
            node = best[1]
            new = deep(pod)
            new["spec"]["nodeName"] = node["metadata"]["name"]
            conds = condition(dig(pod, "status", "conditions", default=[]), "PodScheduled",
                              "True", None, None, now, extra={"lastProbeTime": None})
            for c in conds:
                if c["type"] == "PodScheduled":
                    c.pop("reason", None)
                    c.pop("message", None)
            new["status"]["conditions"] = conds
            record_update(R["Pod"], pod, new, "kube-scheduler", "binding")
            self.store.put(R["Pod"], new)
            self.pending_pods.discard((ns, name))
            self.event(new, "Normal", "Scheduled",
                       f"Successfully assigned {ns}/{name} to {node['metadata']['name']}",
                       "default-scheduler")
            self.later(self.cluster.config.pod_ready_s, "kubelet", ns, name)
            return
        total = len(nodes)
        message = f"0/{total} nodes are available:"
        if histogram:
            message += " " + ", ".join(sorted(f"{n} {r}" for r, n in histogram.items())) + "."
        if preempt:
            message += f" preemption: 0/{total} nodes are available: " + ", ".join(
                sorted(f"{n} {r}" for r, n in preempt.items())) + "."
        if not nodes:
            message = "no nodes available to schedule pods"
        self.pending_pods.add((ns, name))
        old_cond = get_condition(pod, "PodScheduled")
        if old_cond is None or old_cond.get("message") != message:
            status = deep(pod.get("status") or {})
            status["conditions"] = condition(status.get("conditions"), "PodScheduled", "False",
                                             "Unschedulable", message, now,
                                             extra={"lastProbeTime": None})
            status["phase"] = "Pending"
            self.cluster.write_status(R["Pod"], pod, status, "kube-scheduler")
            self.event(pod, "Warning", "FailedScheduling", message, "default-scheduler")
        if self.cluster.config.karpenter:
            self.enqueue("provision")

    def image_failure(self, image):
        for glob, reason in self.cluster.config.image_failures.items():
            if fnmatch.fnmatchcase(image or "", glob):
                return reason
        return None

    def kubelet(self, ns, name):
        pod = self.store.get(R["Pod"], ns, name)
        if pod is None or not pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return
        now = now_iso()
        node = self.store.get(R["Node"], None, pod["spec"]["nodeName"])
        status = deep(pod.get("status") or {})
        if not status.get("podIP"):
            status["hostIP"] = next((a["address"] for a in dig(node, "status", "addresses", default=[])
                                     if a.get("type") == "InternalIP"), "10.0.0.2")
            status["hostIPs"] = [{"ip": status["hostIP"]}]
            digest = hashlib.sha256(pod["metadata"]["uid"].encode()).digest()
            status["podIP"] = f"10.244.{digest[0]}.{digest[1] % 254 + 1}"
            status["podIPs"] = [{"ip": status["podIP"]}]
            status["startTime"] = now
        statuses, all_ready = [], True
        for c in pod["spec"].get("containers") or []:
            failure = self.image_failure(c.get("image"))
            restarts = self.crash.get((ns, name), 0)
            cs = {"name": c["name"], "state": {}, "lastState": {}, "ready": False,
                  "restartCount": 0, "image": c.get("image"), "imageID": "", "started": False}
            if failure is None:
                digest = hashlib.sha256((c.get("image") or "").encode()).hexdigest()
                cs.update(ready=True, started=True, state={"running": {"startedAt": now}},
                          imageID=f"{c.get('image')}@sha256:{digest}",
                          containerID=f"containerd://{hashlib.sha256((pod['metadata']['uid'] + c['name']).encode()).hexdigest()}")
            elif failure == "ErrImagePull":
                all_ready = False
                cs["state"] = {"waiting": {"reason": "ErrImagePull", "message": (
                    f'failed to pull and unpack image "{c.get("image")}": failed to resolve '
                    f'reference "{c.get("image")}": {c.get("image")}: not found')}}
            elif failure == "ImagePullBackOff":
                all_ready = False
                cs["state"] = {"waiting": {"reason": "ImagePullBackOff",
                                           "message": f'Back-off pulling image "{c.get("image")}"'}}
            else:
                all_ready = False
                backoff = min(10 * 2 ** max(restarts - 1, 0), 300)
                shown = f"{backoff // 60}m{backoff % 60}s" if backoff >= 60 else f"{backoff}s"
                cs.update(restartCount=restarts,
                          state={"waiting": {"reason": "CrashLoopBackOff", "message": (
                              f"back-off {shown} restarting failed container={c['name']} "
                              f"pod={name}_{ns}({pod['metadata']['uid']})")}},
                          lastState={"terminated": {"exitCode": 1, "reason": "Error",
                                                    "startedAt": now, "finishedAt": now,
                                                    "containerID": "containerd://" + "0" * 64}},
                          imageID=f"{c.get('image')}@sha256:" + "0" * 64)
            if failure is not None and failure != "CrashLoopBackOff":
                cs.pop("lastState")
                cs["lastState"] = {}
            statuses.append(cs)
        failing = [cs for cs in statuses if not cs["ready"]]
        status["phase"] = "Running" if not failing or any(
            cs["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff" for cs in failing) \
            else "Pending"
        status["containerStatuses"] = statuses
        conds = status.get("conditions") or []
        ready = "True" if all_ready else "False"
        extra = {"lastProbeTime": None}
        names = ",".join(cs["name"] for cs in failing)
        reason = None if all_ready else "ContainersNotReady"
        message = None if all_ready else f"containers with unready status: [{names}]"
        conds = condition(conds, "PodReadyToStartContainers", "True", None, None, now, extra=extra)
        conds = condition(conds, "Initialized", "True", None, None, now, extra=extra)
        conds = condition(conds, "Ready", ready, reason, message, now, extra=extra)
        conds = condition(conds, "ContainersReady", ready, reason, message, now, extra=extra)
        for c in conds:
            if c.get("reason") is None:
                c.pop("reason", None)
                c.pop("message", None)
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        conds.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else 9)
        status["conditions"] = conds
        self.cluster.write_status(R["Pod"], pod, status, "kubelet")
        for c in pod["spec"].get("containers") or []:
            failure = self.image_failure(c.get("image"))
            if failure in ("ErrImagePull", "ImagePullBackOff"):
                self.event(pod, "Warning", "Failed", f'Failed to pull image "{c.get("image")}": '
                           f'{statuses[0]["state"]["waiting"]["message"]}' if failure == "ErrImagePull"
                           else f'Error: {failure}', "kubelet")
            elif failure == "CrashLoopBackOff":
                self.event(pod, "Warning", "BackOff", "Back-off restarting failed container "
                           f"{c['name']} in pod {name}_{ns}({pod['metadata']['uid']})", "kubelet")
        if any(self.image_failure(c.get("image")) == "CrashLoopBackOff"
               for c in pod["spec"].get("containers") or []):
            self.later(self.cluster.config.crashloop_restart_s, "crash", ns, name)

    def crashloop(self, ns, name):
        pod = self.store.get(R["Pod"], ns, name)
        if pod is None:
            self.crash.pop((ns, name), None)
            return
        self.crash[(ns, name)] = self.crash.get((ns, name), 0) + 1
        self.kubelet(ns, name)

    # --- services ------------------------------------------------------------------------

    def sync_service(self, ns, name):
        svc = self.store.get(R["Service"], ns, name)
        if svc is None or svc["spec"].get("type") != "LoadBalancer":
            return
        if dig(svc, "status", "loadBalancer", "ingress"):
            return
        self.later(self.cluster.config.lb_ready_s, "lb", ns, name)

    def lb_ready(self, ns, name):
        svc = self.store.get(R["Service"], ns, name)
        if svc is None or svc["spec"].get("type") != "LoadBalancer" or \
                dig(svc, "status", "loadBalancer", "ingress"):
            return
        digest = hashlib.sha256(svc["metadata"]["uid"].encode()).digest()
        status = deep(svc.get("status") or {})
        status["loadBalancer"] = {"ingress": [{"ip": f"172.18.{digest[0]}.{digest[1] % 254 + 1}",
                                               "ipMode": "VIP"}]}
        self.cluster.write_status(R["Service"], svc, status, "service-controller")
        self.event(svc, "Normal", "EnsuredLoadBalancer", "Ensured load balancer", "service-controller")

    # --- HPA -------------------------------------------------------------------------------

    def sync_hpa(self, ns, name):
        hpa = self.store.get(R["HorizontalPodAutoscaler"], ns, name)
        if hpa is None:
            return
        spec = hpa["spec"]
        ref = spec.get("scaleTargetRef") or {}
        now = now_iso()
        status = deep(hpa.get("status") or {})
        conds = status.get("conditions") or []
        extra = {}
        target = None
        if ref.get("kind") == "Deployment":
            target = self.store.get(R["Deployment"], ns, ref.get("name"))
        if target is None:
            conds = condition(conds, "AbleToScale", "False", "FailedGetScale",
                              f"the HPA controller was unable to get the target's current scale: "
                              f"{(ref.get('kind') or '').lower()}s/scale.apps {go_quote(ref.get('name') or '')} "
                              "not found", now, extra=extra)
            status.setdefault("currentReplicas", 0)
            status.setdefault("desiredReplicas", 0)
        else:
            current = dig(target, "spec", "replicas", default=0)
            status["currentReplicas"] = dig(target, "status", "replicas", default=0)
            status["desiredReplicas"] = current
            conds = condition(conds, "AbleToScale", "True", "ReadyForNewScale",
                              "recommended size matches current size", now, extra=extra)
            failure = None
            metrics = []
            cfg = self.cluster.config
            for metric in spec.get("metrics") or []:
                mtype = metric.get("type")
                if mtype in ("Pods", "Object") and not cfg.custom_metrics:
                    mname = dig(metric, "pods" if mtype == "Pods" else "object", "metric", "name")
                    failure = ("FailedGetPodsMetric" if mtype == "Pods" else "FailedGetObjectMetric",
                               f"the HPA was unable to compute the replica count: unable to get "
                               f"metric {mname}: unable to fetch metrics from custom metrics API: "
                               "the server could not find the descriptor for the metric")
                    break
                if mtype == "External" and not cfg.external_metrics:
                    mname = dig(metric, "external", "metric", "name")
                    failure = ("FailedGetExternalMetric",
                               f"the HPA was unable to compute the replica count: unable to get "
                               f"external metric {ns}/{mname}/nil: unable to fetch metrics from "
                               "external metrics API: the server could not find the requested "
                               f"resource (get {mname}.external.metrics.k8s.io)")
                    break
                if mtype == "Resource":
                    metrics.append({"type": "Resource", "resource": {
                        "name": dig(metric, "resource", "name"),
                        "current": {"averageValue": "0", "averageUtilization": 0}}})
                else:
                    key = {"Pods": "pods", "Object": "object", "External": "external",
                           "ContainerResource": "containerResource"}[mtype]
                    doc = {"metric": deep(dig(metric, key, "metric", default={})),
                           "current": {"averageValue": "0"}} if key != "containerResource" else {
                        "name": dig(metric, key, "name"), "container": dig(metric, key, "container"),
                        "current": {"averageValue": "0", "averageUtilization": 0}}
                    metrics.append({"type": mtype, key: doc})
            if failure:
                conds = condition(conds, "ScalingActive", "False", failure[0], failure[1], now, extra=extra)
            else:
                first = (spec.get("metrics") or [{}])[0]
                what = {"Resource": f"{dig(first, 'resource', 'name')} resource utilization "
                                    "(percentage of request)" if dig(first, "resource", "target", "type") == "Utilization"
                        else f"{dig(first, 'resource', 'name')} resource",
                        "Pods": f"pods metric {dig(first, 'pods', 'metric', 'name')}",
                        "External": f"external metric {dig(first, 'external', 'metric', 'name')}(nil)",
                        "Object": f"{dig(first, 'object', 'metric', 'name')} metric"}.get(first.get("type"), "metrics")
                conds = condition(conds, "ScalingActive", "True", "ValidMetricFound",
                                  f"the HPA was able to successfully calculate a replica count from {what}",
                                  now, extra=extra)
                status["currentMetrics"] = metrics
            low, high = spec.get("minReplicas", 1), spec.get("maxReplicas", 1)
            if current > high:
                conds = condition(conds, "ScalingLimited", "True", "TooManyReplicas",
                                  "the desired replica count is more than the maximum replica count",
                                  now, extra=extra)
            elif current < low:
                conds = condition(conds, "ScalingLimited", "True", "TooFewReplicas",
                                  "the desired replica count is less than the minimum replica count",
                                  now, extra=extra)
            else:
                conds = condition(conds, "ScalingLimited", "False", "DesiredWithinRange",
                                  "the desired count is within the acceptable range", now, extra=extra)
        status["conditions"] = conds
        status["observedGeneration"] = hpa["metadata"].get("generation", 1)
        self.cluster.write_status(R["HorizontalPodAutoscaler"], hpa, status,
                                  "kube-controller-manager")

    # --- deletion: garbage collector, finalizers, namespaces -------------------------------

    def collect(self, uid):
        for rt, dep in self.store.dependents(uid):
            refs = dep["metadata"].get("ownerReferences") or []
            alive = [r for r in refs if r.get("uid") != uid and self.owner_exists(r, dep)]
            if alive:
                new = deep(dep)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                self.store.put(rt, new)
            elif not dep["metadata"].get("deletionTimestamp"):
                self.cluster.delete_object(rt, dep, "Background")

    def owner_exists(self, ref, dep):
        for rt in RESOURCES_TABLE:
            if rt.kind == ref.get("kind"):
                owner = self.store.get(rt, dep["metadata"].get("namespace"), ref.get("name"))
                return owner is not None and owner["metadata"]["uid"] == ref.get("uid")
        return False

    def finalize(self, rkey, ns, name):
        rt = BY_KEY[rkey]
        obj = self.store.get(rt, ns or None, name)
        if obj is None or not obj["metadata"].get("deletionTimestamp"):
            return
        finalizers = obj["metadata"].get("finalizers") or []
        uid = obj["metadata"]["uid"]
        if "orphan" in finalizers:
            for drt, dep in self.store.dependents(uid):
                new = deep(dep)
                new["metadata"]["ownerReferences"] = [r for r in dep["metadata"].get("ownerReferences") or []
                                                      if r.get("uid") != uid]
                if not new["metadata"]["ownerReferences"]:
                    new["metadata"].pop("ownerReferences")
                self.store.put(drt, new)
            obj = self.cluster.remove_finalizer(rt, obj, "orphan")
            if obj is None or obj["metadata"]["resourceVersion"] is None:
                return
        elif "foregroundDeletion" in finalizers:
            deps = self.store.dependents(uid)
            for drt, dep in deps:
                if not dep["metadata"].get("deletionTimestamp"):
                    self.cluster.delete_object(drt, dep, "Foreground")
            if not self.store.dependents(uid):
                self.cluster.remove_finalizer(rt, obj, "foregroundDeletion")
            else:
                self.later(0.05, "finalize", rkey, ns, name)
            return
        if rt.kind == "Namespace":
            left = 0
            for other in RESOURCES_TABLE:
                if not other.namespaced:
                    continue
                for item in self.store.items(other, name):
                    left += 1
                    if not item["metadata"].get("deletionTimestamp"):
                        self.cluster.delete_object(other, item, "Background")
            if left and any(self.store.items(o, name) for o in RESOURCES_TABLE if o.namespaced):
                self.later(0.05, "finalize", rkey, ns, name)
                return
        current = self.store.get(rt, ns or None, name)
        if current is not None and not (current["metadata"].get("finalizers") or []) or \
                (rt.kind == "Namespace" and current is not None and
                 current["metadata"].get("finalizers") is None):
            self.schedule_final(rt, current)
        elif current is not None and rt.kind == "Namespace":
            if set(current["metadata"].get("finalizers") or []) <= {"kubernetes"}:
                self.schedule_final(rt, current)

    def schedule_final(self, rt, obj):
        meta = obj["metadata"]
        stamp = time.mktime(time.strptime(meta["deletionTimestamp"], "%Y-%m-%dT%H:%M:%SZ")) - \
            time.mktime(time.gmtime(0))
        delay = max(0.0, stamp + self.cluster.config.delete_s - time.time()) \
            if self.cluster.config.delete_s > 0 else 0.0
        if delay > 0:
            self.later(delay, "final", rt.key, meta.get("namespace", ""), meta["name"], meta["uid"])
        else:
            self.final_removal(rt.key, meta.get("namespace", ""), meta["name"], meta["uid"])

    def final_removal(self, rkey, ns, name, uid):
        rt = BY_KEY[rkey]
        obj = self.store.get(rt, ns or None, name)
        if obj is None or obj["metadata"]["uid"] != uid:
            return
        leftover = [f for f in obj["metadata"].get("finalizers") or [] if f != "kubernetes"]
        if leftover and rt.kind != "Namespace":
            return
        if rt.kind == "Namespace" and leftover:
            return
        self.store.remove(rt, obj)

    # --- Karpenter ---------------------------------------------------------------------------

    def sync_nodepool(self, _ns, name):
        pool = self.store.get(R["NodePool"], None, name)
        if pool is None or pool["metadata"].get("deletionTimestamp"):
            for node in self.store.items(R["Node"]):
                if (node["metadata"].get("labels") or {}).get("karpenter.sh/nodepool") == name:
                    self.remove_node(node)
            for cid in [c for c, claim in self.claims.items() if claim["pool"] == name]:
                self.drop_claim(cid)
            return
        now = now_iso()
        status = deep(pool.get("status") or {})
        conds = status.get("conditions") or []
        gen = {"observedGeneration": pool["metadata"].get("generation", 1)}
        for ctype in ("NodeClassReady", "ValidationSucceeded", "Ready"):
            conds = condition(conds, ctype, "True", ctype, "", now, extra=gen)
        status["conditions"] = conds
        status["resources"] = self.pool_resources(name)
        self.cluster.write_status(R["NodePool"], pool, status, "karpenter")

    def pool_nodes(self, name):
        return [n for n in self.store.items(R["Node"])
                if (n["metadata"].get("labels") or {}).get("karpenter.sh/nodepool") == name]

    def pool_resources(self, name):
        totals = {"nodes": 0}
        for node in self.pool_nodes(name):
            totals["nodes"] += 1
            for key, q in (dig(node, "status", "capacity", default={}) or {}).items():
                totals[key] = totals.get(key, 0) + parse_quantity(q)
        return {k: format_quantity(v, k in ("memory", "ephemeral-storage")) for k, v in totals.items()}

    def remove_node(self, node):
        for key in list(self.store.by_node.get(node["metadata"]["name"], ())):
            pod = self.store.objects["pods"].get(key)
            if pod is not None:
                self.store.remove(R["Pod"], pod)
        self.store.remove(R["Node"], node)

    def pool_labels(self, pool, pod_selector):
        labels = dict(dig(pool, "spec", "template", "metadata", "labels", default={}) or {})
        labels["karpenter.sh/nodepool"] = pool["metadata"]["name"]
        for req in dig(pool, "spec", "template", "spec", "requirements", default=[]) or []:
            key, op, values = req.get("key"), req.get("operator"), req.get("values") or []
            if op == "In" and values:
                wanted = pod_selector.get(key)
                labels[key] = wanted if wanted in values else values[0]
        return labels

    def instance_for(self, pool, labels, pod):
        need = pod_requests(pod)
        allowed = None
        for req in dig(pool, "spec", "template", "spec", "requirements", default=[]) or []:
            if req.get("key") == "node.kubernetes.io/instance-type" and req.get("operator") == "In":
                allowed = req.get("values") or []
        candidates = allowed if allowed else sorted(
            INSTANCE_TYPES, key=lambda n: (INSTANCE_TYPES[n][2], parse_quantity(INSTANCE_TYPES[n][0])))
        for name in candidates:
            cpu, mem, gpus, product = INSTANCE_TYPES.get(name, ("32", "128Gi", 8, "NVIDIA-H100-80GB-HBM3"))
            if labels.get("nvidia.com/gpu.product") and product and \
                    labels["nvidia.com/gpu.product"] != product and name in INSTANCE_TYPES and not allowed:
                continue
            cap = {"cpu": parse_quantity(cpu), "memory": parse_quantity(mem), GPU: gpus}
            if all(need.get(k, 0) <= cap.get(k, 0) for k in need if k in cap) and \
                    all(k in cap for k in need if need[k] > 0):
                return name, cpu, mem, gpus, product
        return None

    def provision(self):
        if not self.cluster.config.karpenter:
            return
        pools = [p for p in self.store.items(R["NodePool"]) if not p["metadata"].get("deletionTimestamp")]
        pools.sort(key=lambda p: (-(p["spec"].get("weight") or 0), p["metadata"]["name"]))
        for ns, name in sorted(self.pending_pods):
            if (ns, name) in self.claimed:
                continue
            pod = self.store.get(R["Pod"], ns, name)
            if pod is None or pod["spec"].get("nodeName"):
                continue
            selector = pod["spec"].get("nodeSelector") or {}
            for pool in pools:
                labels = self.pool_labels(pool, selector)
                if any(labels.get(k) != v for k, v in selector.items()):
                    continue
                taints = dig(pool, "spec", "template", "spec", "taints", default=[]) or []
                if untolerated(pod["spec"], taints) is not None:
                    continue
                # Room on a claim already in flight for this pool?
                fitted = False
                for cid, claim in self.claims.items():
                    if claim["pool"] != pool["metadata"]["name"] or claim["labels"] != labels:
                        continue
                    need = pod_requests(pod)
                    if all(claim["free"].get(k, 0) >= v for k, v in need.items() if v > 0):
                        for k, v in need.items():
                            claim["free"][k] = claim["free"].get(k, 0) - v
                        claim["pods"].add((ns, name))
                        self.claimed[(ns, name)] = cid
                        fitted = True
                        break
                if fitted:
                    break
                shape = self.instance_for(pool, labels, pod)
                if shape is None:
                    continue
                itype, cpu, mem, gpus, product = shape
                if not self.within_limits(pool, gpus):
                    continue
                labels = dict(labels)
                labels["node.kubernetes.io/instance-type"] = itype
                labels.setdefault("topology.kubernetes.io/zone", "us-east-1a")
                labels.setdefault("karpenter.sh/capacity-type", "on-demand")
                if gpus and product:
                    labels.setdefault("nvidia.com/gpu.product", product)
                cid = f"{pool['metadata']['name']}-{rand_suffix()}"
                free = {"cpu": parse_quantity(cpu), "memory": parse_quantity(mem), GPU: gpus}
                for k, v in pod_requests(pod).items():
                    free[k] = free.get(k, 0) - v
                self.claims[cid] = {"pool": pool["metadata"]["name"], "labels": self.pool_labels(pool, selector),
                                    "node_labels": labels, "pods": {(ns, name)}, "free": free,
                                    "shape": shape, "taints": taints}
                self.claimed[(ns, name)] = cid
                self.event(pod, "Normal", "Nominated",
                           f"Pod should schedule on: nodeclaim/{cid}", "karpenter")
                self.later(self.cluster.config.node_launch_s, "launch", cid)
                break

    def within_limits(self, pool, gpus):
        limits = pool["spec"].get("limits") or {}
        name = pool["metadata"]["name"]
        nodes = len(self.pool_nodes(name)) + sum(1 for c in self.claims.values() if c["pool"] == name)
        if "nodes" in limits and nodes + 1 > parse_quantity(limits["nodes"]):
            return False
        if GPU in limits:
            used = sum(parse_quantity(dig(n, "status", "capacity", GPU, default="0"))
                       for n in self.pool_nodes(name))
            used += sum(c["shape"][3] for c in self.claims.values() if c["pool"] == name)
            if used + gpus > parse_quantity(limits[GPU]):
                return False
        return True

    def drop_claim(self, cid):
        claim = self.claims.pop(cid, None)
        for key in (claim or {}).get("pods", ()):
            self.claimed.pop(key, None)

    def launch(self, cid):
        claim = self.claims.get(cid)
        if claim is None:
            return
        pool = self.store.get(R["NodePool"], None, claim["pool"])
        self.drop_claim(cid)
        if pool is None or not self.cluster.config.karpenter:
            return
        itype, cpu, mem, gpus, _ = claim["shape"]
        alloc = {"cpu": cpu, "memory": mem, "pods": "110"}
        if gpus:
            alloc[GPU] = str(gpus)
        self.cluster.add_node({"name": cid, "allocatable": alloc, "taints": claim["taints"]},
                              claim["node_labels"], manager="karpenter")
        self.enqueue("NodePool", "", claim["pool"])
        self.enqueue("reschedule")

    # --- KServe ------------------------------------------------------------------------------

    def sync_isvc(self, ns, name):
        isvc = self.store.get(R["InferenceService"], ns, name)
        if isvc is None or not self.cluster.config.kserve:
            return
        gen = isvc["metadata"].get("generation", 1)
        if dig(isvc, "status", "observedGeneration") == gen:
            return
        created = time.mktime(time.strptime(isvc["metadata"]["creationTimestamp"],
                                            "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(time.gmtime(0))
        marker = ("isvc-started", ns, name, gen)
        if marker not in self.dirty and getattr(self, "_isvc_wait", {}).get((ns, name)) != gen:
            self._isvc_wait = getattr(self, "_isvc_wait", {})
            self._isvc_wait[(ns, name)] = gen
            status = deep(isvc.get("status") or {})
            now = now_iso()
            conds = status.get("conditions") or []
            for ctype in ("PredictorReady", "Ready"):
                conds = condition(conds, ctype, "Unknown", None, None, now, extra={})
                for c in conds:
                    if c.get("reason") is None:
                        c.pop("reason", None)
                        c.pop("message", None)
            status["conditions"] = conds
            self.cluster.write_status(R["InferenceService"], isvc, status, "kserve-controller")
            self.later(self.cluster.config.isvc_ready_s, "InferenceService", ns, name)
            return
        del created
        pred = isvc["spec"].get("predictor") or {}
        images = [c.get("image") for c in pred.get("containers") or []]
        if dig(pred, "model", "image"):
            images.append(pred["model"]["image"])
        failure = next(((img, self.image_failure(img)) for img in images if self.image_failure(img)), None)
        now = now_iso()
        status = deep(isvc.get("status") or {})
        conds = status.get("conditions") or []
        if failure:
            img, reason = failure
            message = (f'Back-off pulling image "{img}"' if reason == "ImagePullBackOff" else
                       f'failed to pull and unpack image "{img}"' if reason == "ErrImagePull" else
                       "back-off 10s restarting failed container")
            for ctype in ("PredictorReady", "Ready"):
                conds = condition(conds, ctype, "False", reason, message, now, extra={})
        else:
            for ctype in ("IngressReady", "PredictorReady", "Ready"):
                conds = condition(conds, ctype, "True", None, None, now, extra={})
                for c in conds:
                    if c.get("reason") is None:
                        c.pop("reason", None)
                        c.pop("message", None)
            status["url"] = f"http://{name}.{ns}.example.com"
            status["address"] = {"url": f"http://{name}-predictor.{ns}.svc.cluster.local"}
        status["conditions"] = sorted(conds, key=lambda c: c["type"])
        status["observedGeneration"] = isvc["metadata"].get("generation", 1)
        self._isvc_wait.pop((ns, name), None)
        self.cluster.write_status(R["InferenceService"], isvc, status, "kserve-controller")


# --------------------------------------------------------------------------
# Control API (plain HTTP)
# --------------------------------------------------------------------------

class ControlApi:
    def __init__(self, fake):
        self.fake = fake
        self.routes = {
            ("GET", "/_fake/health"): self.health,
            ("GET", "/_fake/config"): self.get_config,
            ("POST", "/_fake/config"): self.set_config,
            ("GET", "/_fake/faults"): lambda doc, q: {"faults": self.cluster.faults.pending()},
            ("POST", "/_fake/faults"): self.add_faults,
            ("POST", "/_fake/faults/clear"): self.clear_faults,
            ("GET", "/_fake/tokens"): self.get_tokens,
            ("POST", "/_fake/tokens"): self.change_tokens,
            ("GET", "/_fake/rbac"): lambda doc, q: {"deny": self.cluster.deny},
            ("POST", "/_fake/rbac"): self.set_rbac,
            ("GET", "/_fake/calls"): self.calls,
            ("POST", "/_fake/calls/clear"): self.clear_calls,
            ("GET", "/_fake/stats"): self.stats,
            ("GET", "/_fake/state"): self.state,
            ("POST", "/_fake/apply"): self.apply,
            ("POST", "/_fake/nodes"): self.nodes,
            ("POST", "/_fake/compact"): self.compact,
            ("POST", "/_fake/watches/close"): self.close_watches,
            ("POST", "/_fake/reset"): self.reset,
        }

    @property
    def cluster(self):
        return self.fake.cluster

    def handle(self, req):
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            known = {path for _, path in self.routes}
            status = 405 if req.path in known else 404
            return json_answer({"error": f"no such control call: {req.method} {req.path}"}, status)
        try:
            doc = json.loads(req.body) if req.body.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return json_answer({"error": "body must be JSON"}, 400)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(req.query).items()}
        try:
            result = handler(doc, query)
        except ControlError as exc:
            return json_answer({"error": str(exc)}, 400)
        except KubeError as err:
            return json_answer({"error": err.message, "status": err.status()}, 400)
        return json_answer(result)

    def health(self, doc, query):
        return {"ok": True, "api": self.fake.api_port, "control": self.fake.control_port}

    def get_config(self, doc, query):
        return self.cluster.config.to_json()

    def set_config(self, doc, query):
        with self.cluster.store.lock:
            before = self.cluster.config.to_json()
            self.cluster.config.update(doc)
            ctl = self.fake.controllers
            if doc.get("karpenter") and not before["karpenter"]:
                for pool in self.cluster.store.items(R["NodePool"]):
                    ctl.enqueue("NodePool", "", pool["metadata"]["name"])
                ctl.enqueue("reschedule")
            if doc.get("kserve") and not before["kserve"]:
                for isvc in self.cluster.store.items(R["InferenceService"]):
                    ctl.enqueue("InferenceService", isvc["metadata"]["namespace"],
                                isvc["metadata"]["name"])
            if "image_failures" in doc:
                for pod in self.cluster.store.items(R["Pod"]):
                    if pod["spec"].get("nodeName"):
                        ctl.enqueue("kubelet", pod["metadata"]["namespace"], pod["metadata"]["name"])
                for isvc in self.cluster.store.items(R["InferenceService"]):
                    ctl.enqueue("InferenceService", isvc["metadata"]["namespace"],
                                isvc["metadata"]["name"])
            return self.cluster.config.to_json()

    def add_faults(self, doc, query):
        items = doc.get("faults", doc) if isinstance(doc, dict) else doc
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise ControlError("expected a fault, a list of faults or {\"faults\": [...]}")
        faults = [Fault.from_json(item) for item in items]
        self.cluster.faults.add(faults)
        return {"faults": self.cluster.faults.pending()}

    def clear_faults(self, doc, query):
        self.cluster.faults.clear()
        return {"faults": []}

    def get_tokens(self, doc, query):
        return {"tokens": [{"user": t["user"], "groups": t.get("groups") or [],
                            "expires": t.get("expires")} for t in self.cluster.tokens.values()]}

    def change_tokens(self, doc, query):
        if not isinstance(doc, dict):
            raise ControlError("expected {\"add\": [...], \"remove\": [...]}")
        added = []
        for item in doc.get("add") or []:
            if not isinstance(item, dict) or not isinstance(item.get("token"), str) or \
                    not item["token"] or not isinstance(item.get("user"), str):
                raise ControlError("each token needs \"token\" and \"user\" strings")
            expires = item.get("expires_in_s")
            if expires is not None and (not isinstance(expires, (int, float)) or isinstance(expires, bool)):
                raise ControlError("expires_in_s must be a number")
            added.append((item["token"], {"user": item["user"],
                                          "groups": list(item.get("groups") or []),
                                          "expires": None if expires is None else time.time() + expires}))
        for token, entry in added:
            self.cluster.tokens[token] = entry
        for token in doc.get("remove") or []:
            self.cluster.tokens.pop(token, None)
        return self.get_tokens(doc, query)

    def set_rbac(self, doc, query):
        rules = doc.get("deny") if isinstance(doc, dict) else None
        if not isinstance(rules, list):
            raise ControlError("expected {\"deny\": [rules]}")
        known = {"user", "verb", "resource", "group", "namespace", "subresource"}
        for rule in rules:
            if not isinstance(rule, dict) or set(rule) - known or "verb" not in rule or \
                    "resource" not in rule:
                raise ControlError(f"each rule needs verb and resource, and only {sorted(known)}")
        self.cluster.deny = rules
        return {"deny": rules}

    def calls(self, doc, query):
        try:
            since = int(query.get("since", 0))
        except ValueError:
            raise ControlError("since must be an integer") from None
        return {"calls": self.cluster.calls.snapshot(since), "last": self.cluster.calls.last_seq()}

    def clear_calls(self, doc, query):
        self.cluster.calls.clear()
        return {"calls": []}

    def stats(self, doc, query):
        watches = self.cluster.store.open_watches()
        return {"requests": dict(self.cluster.calls.counts), "open_watches": sum(watches.values()),
                "watches_by_resource": watches, "resource_version": self.cluster.store.rv,
                "objects": {k: len(v) for k, v in self.cluster.store.objects.items()}}

    def state(self, doc, query):
        with self.cluster.store.lock:
            out = {}
            for key, table in self.cluster.store.objects.items():
                by_ns = {}
                for (ns, name), obj in table.items():
                    by_ns.setdefault(ns, {})[name] = obj
                out[key] = by_ns
            return {"objects": out, "resource_version": self.cluster.store.rv}

    def apply(self, doc, query):
        if not isinstance(doc, dict) or not isinstance(doc.get("manager"), str) or \
                not isinstance(doc.get("body"), dict):
            raise ControlError("expected {\"manager\": M, \"body\": {object}, \"force\"?: bool}")
        body = doc["body"]
        rt = BY_KIND.get((body.get("apiVersion"), body.get("kind")))
        if rt is None:
            raise ControlError(f"unknown kind {body.get('apiVersion')}/{body.get('kind')}")
        name = dig(body, "metadata", "name")
        ns = dig(body, "metadata", "namespace") or ("default" if rt.namespaced else None)
        result = self.cluster.patch(rt, ns, name, "application/apply-patch+yaml", json.dumps(body),
                                    doc["manager"], bool(doc.get("force")))
        return result[0] if isinstance(result, tuple) else result

    def nodes(self, doc, query):
        if not isinstance(doc, dict):
            raise ControlError("expected {\"add\": [...], \"remove\": [...]}")
        with self.cluster.store.lock:
            for item in doc.get("add") or []:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise ControlError("each node needs a name")
                for q in (item.get("allocatable") or {}).values():
                    try:
                        parse_quantity(q)
                    except ValueError as exc:
                        raise ControlError(str(exc)) from None
                self.cluster.add_node(item)
            for name in doc.get("remove") or []:
                node = self.cluster.store.get(R["Node"], None, name)
                if node is not None:
                    self.fake.controllers.remove_node(node)
            return {"nodes": sorted(n["metadata"]["name"] for n in self.cluster.store.items(R["Node"]))}

    def compact(self, doc, query):
        self.cluster.store.compact()
        return {"compacted": self.cluster.store.compacted}

    def close_watches(self, doc, query):
        count = sum(self.cluster.store.open_watches().values())
        self.cluster.store.close_watchers()
        return {"closed": count}

    def reset(self, doc, query):
        with self.cluster.store.lock:
            self.cluster.store.close_watchers()
            self.cluster.faults.clear()
            self.cluster.calls.clear()
            self.fake.controllers.reset()
            self.cluster.start_state()
        return {"ok": True}


# --------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------

class BodyTooLarge(Exception):
    pass


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict
    body: bytes
    peer_cert: dict | None = None

    def header(self, name):
        values = self.headers.get(name.lower())
        return values[-1] if values else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-fake"
    sys_version = ""
    timeout = 300

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    @property
    def fake(self):
        return self.server.fake

    def do_GET(self):
        try:
            req = self.read_request()
        except BodyTooLarge:
            self.close_connection = True
            self.deliver(json_answer({"error": "request body too large"}, 413))
            return
        except ValueError:
            self.close_connection = True
            self.deliver(json_answer({"error": "malformed request body"}, 400))
            return
        if self.server.control:
            self.deliver(self.fake.control.handle(req))
        else:
            self.deliver(self.fake.api.handle(req))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def read_request(self):
        path, _, query = self.path.partition("?")
        headers = {}
        for name in dict.fromkeys(k.lower() for k in self.headers.keys()):
            headers[name] = self.headers.get_all(name)
        cert = None
        if isinstance(self.connection, ssl.SSLSocket):
            cert = self.connection.getpeercert() or None
        return Request(self.command, path, query, headers, self.read_body(), cert)

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                if len(body) + size > MAX_BODY_BYTES:
                    raise BodyTooLarge()
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > MAX_BODY_BYTES:
            raise BodyTooLarge()
        return self.rfile.read(length) if length else b""

    def deliver(self, answer):
        if answer.action == "drop":
            self.close_connection = True
            return
        if answer.action == "hang":
            self.hang()
            self.close_connection = True
            return
        if answer.action == "watch":
            self.stream(answer)
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def hang(self):
        generation = self.fake.cluster.faults.hang_generation
        while self.fake.cluster.faults.hang_generation == generation and not self.server.stopping:
            try:
                self.connection.settimeout(0.2)
                if not self.connection.recv(1):
                    return
            except (TimeoutError, ssl.SSLWantReadError, socket.timeout):
                continue
            except OSError:
                return

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def stream(self, answer):
        cluster = self.fake.cluster
        store = cluster.store
        spec = answer.watch
        watcher = spec["watcher"]
        rt = watcher.rt
        self.close_connection = True
        self.send_response(200)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        try:
            try:
                store.add_watcher(watcher, spec["since"])
            except KubeError as err:
                self.chunk(dumps({"type": "ERROR", "object": err.status()}) + b"\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            started = time.monotonic()
            deadline = started + spec["timeout"]
            interval = max(cluster.config.bookmark_interval_s, 0.01)
            next_bookmark = started + interval
            while True:
                now = time.monotonic()
                wait = min(deadline, next_bookmark if spec["bookmarks"] else deadline) - now
                with watcher.cond:
                    if not watcher.events and not watcher.closed and wait > 0:
                        watcher.cond.wait(min(wait, 0.5))
                with store.lock:
                    with watcher.cond:
                        events, watcher.events = watcher.events, []
                        closed = watcher.closed
                    rv = store.rv
                for etype, obj in events:
                    self.chunk(dumps({"type": etype, "object": obj}) + b"\n")
                now = time.monotonic()
                if closed or self.server.stopping or now >= deadline:
                    break
                if spec["bookmarks"] and now >= next_bookmark:
                    self.chunk(dumps({"type": "BOOKMARK", "object": {
                        "kind": rt.kind, "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": str(rv)}}}) + b"\n")
                    next_bookmark = now + max(cluster.config.bookmark_interval_s, 0.01)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (OSError, ValueError):
            pass
        finally:
            store.drop_watcher(watcher)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address, fake, control, tls=None, verbose=False):
        self.fake, self.control, self.tls, self.verbose = fake, control, tls, verbose
        self.stopping = False
        super().__init__(address, Handler)

    def get_request(self):
        sock, address = self.socket.accept()
        if self.tls is None:
            return sock, address
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError, OSError)):
            return
        super().handle_error(request, client_address)


# --------------------------------------------------------------------------
# Certificates and kubeconfig
# --------------------------------------------------------------------------

CA_CONFIG = """[req]
distinguished_name = dn
prompt = no
x509_extensions = ca
[dn]
CN = kube-fake CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
"""
SERVER_CONFIG = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = kube-apiserver
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
CLIENT_CONFIG = """[req]
distinguished_name = dn
prompt = no
[dn]
O = system:masters
CN = cert-admin
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
"""
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_tls(openssl="openssl"):
    """(server context, CA PEM, client cert PEM, client key PEM), made in a
    temporary folder that is gone once they are loaded."""
    with tempfile.TemporaryDirectory(prefix="kube_fake_tls_") as folder:
        path = Path(folder)
        (path / "ca.cnf").write_text(CA_CONFIG)
        (path / "server.cnf").write_text(SERVER_CONFIG)
        (path / "client.cnf").write_text(CLIENT_CONFIG)
        steps = [["req", "-x509", *EC_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
                  "-config", "ca.cnf"]]
        for who in ("server", "client"):
            steps += [
                ["req", "-new", *EC_KEY, "-keyout", f"{who}.key", "-out", f"{who}.csr",
                 "-config", f"{who}.cnf"],
                ["x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "30",
                 "-extfile", f"{who}.cnf", "-extensions", "ext", "-out", f"{who}.pem"]]
        for step in steps:
            done = subprocess.run([openssl, *step], cwd=folder, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"openssl {step[0]} failed: {done.stderr.strip()}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(path / "server.pem", path / "server.key")
        context.load_verify_locations(path / "ca.pem")
        context.verify_mode = ssl.CERT_OPTIONAL
        return (context, (path / "ca.pem").read_text(), (path / "client.pem").read_text(),
                (path / "client.key").read_text())


def write_private(path, text, mode=0o600):
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def b64(text):
    return base64.b64encode(text.encode()).decode()


def kubeconfig_text(port, ca_pem, token, client_pem, client_key):
    return f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority-data: {b64(ca_pem)}
users:
- name: admin
  user:
    token: {token}
- name: cert-admin
  user:
    client-certificate-data: {b64(client_pem)}
    client-key-data: {b64(client_key)}
contexts:
- name: fake
  context:
    cluster: fake
    user: admin
- name: fake-cert
  context:
    cluster: fake
    user: cert-admin
current-context: fake
preferences: {{}}
"""


class Fake:
    def __init__(self):
        self.cluster = Cluster()
        self.controllers = Controllers(self.cluster)
        self.api = KubeApi(self.cluster)
        self.control = ControlApi(self)
        self.api_port = self.control_port = 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Fake Kubernetes API server on loopback.")
    parser.add_argument("--port-file", required=True,
                        help='write {"api": PORT, "control": PORT} here once listening')
    parser.add_argument("--kubeconfig", required=True, help="write a kubeconfig here")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        tls, ca_pem, client_pem, client_key = make_tls()
    except (OSError, RuntimeError) as exc:
        print(f"kube_fake: cannot make certificates: {exc}", file=sys.stderr)
        return 1
    fake = Fake()
    token = secrets.token_urlsafe(32)
    fake.cluster.tokens[token] = {"user": "admin", "groups": ["system:masters"], "expires": None}
    api = Server(("127.0.0.1", 0), fake, False, tls, args.verbose)
    control = Server(("127.0.0.1", 0), fake, True, None, args.verbose)
    fake.api_port = fake.cluster.api_port = api.server_address[1]
    fake.control_port = control.server_address[1]
    kubeconfig = Path(args.kubeconfig)
    write_private(kubeconfig, kubeconfig_text(fake.api_port, ca_pem, token, client_pem, client_key))
    write_private(f"{kubeconfig}.ca.pem", ca_pem, 0o644)
    write_private(f"{kubeconfig}.client.pem", client_pem)
    write_private(f"{kubeconfig}.client-key.pem", client_key)
    fake.controllers.thread.start()

    def stop(*_):
        for server in (api, control):
            server.stopping = True
        fake.controllers.stopping = True
        fake.cluster.store.close_watchers()
        fake.cluster.faults.clear()
        threading.Thread(target=api.shutdown, daemon=True).start()
        threading.Thread(target=control.shutdown, daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    threading.Thread(target=api.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    tmp = f"{args.port_file}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        json.dump({"api": fake.api_port, "control": fake.control_port}, handle)
    os.replace(tmp, args.port_file)
    print(f"kube_fake: API https://127.0.0.1:{fake.api_port}, control "
          f"http://127.0.0.1:{fake.control_port}", file=sys.stderr, flush=True)
    try:
        control.serve_forever(poll_interval=0.2)
    finally:
        api.server_close()
        control.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
