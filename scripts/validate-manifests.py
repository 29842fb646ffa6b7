#!/usr/bin/env python3
"""Validates Courier's Kubernetes manifests offline.

Usage: validate-manifests.py [--kubernetes-versions 1.30,1.37] [--alerts FILE] [DIR]

DIR (default deploy/kubernetes) is a kustomize directory. Checks, each error on one line:
  - kustomization.yaml lists every *.yaml of DIR, and every file it lists exists;
  - every resource of a built-in kind validates against the Kubernetes schemas of each
    version given (kubernetes-validate, strict: unknown fields are errors);
  - every KEDA / Prometheus Operator resource validates against its CRD's openAPIV3Schema in
    DIR/schemas/<group>_<kind>_<version>.json (jsonschema; unknown fields are errors too);
  - a kind that has neither schema is an error, never skipped;
  - Courier's own rules: non-root, read-only root filesystem, no capabilities, requests and
    limits; probes on /readyz and /healthz at the port the process listens on; the workers'
    terminationGracePeriodSeconds above COURIER_DRAIN_TIMEOUT_SECS; Services, the
    PodDisruptionBudget and the ScaledObject select what exists; every Secret key and
    ConfigMap referenced exists; the ServiceMonitor gives the job names deploy/alerts.yml
    uses; the PrometheusRule carries exactly deploy/alerts.yml's groups.
Exits 1 if anything failed. Runs in the tools venv (scripts/ensure-tools.sh --python).
"""
import argparse
import copy
import json
import pathlib
import re
import sys

import jsonschema
import kubernetes_validate
import yaml

DEFAULT_DRAIN_TIMEOUT_SECS = 25  # `courier worker --help`: COURIER_DRAIN_TIMEOUT_SECS
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.checked = 0

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")


class Resource:
    def __init__(self, file: str, doc: dict) -> None:
        self.file = file
        self.doc = doc
        self.kind = doc.get("kind", "")
        self.api_version = doc.get("apiVersion", "")
        self.name = (doc.get("metadata") or {}).get("name", "")

    @property
    def where(self) -> str:
        return f"{self.file}: {self.kind or '?'}/{self.name or '?'}"

    @property
    def spec(self) -> dict:
        return self.doc.get("spec") or {}


# --- loading ----------------------------------------------------------------------------------
def load_resources(directory: pathlib.Path, report: Report) -> tuple[list[Resource], str | None]:
    kustomization = directory / "kustomization.yaml"
    if not kustomization.exists():
        report.error(str(kustomization), "missing")
        return [], None
    kust = yaml.safe_load(kustomization.read_text()) or {}
    listed = kust.get("resources") or []
    present = sorted(p.name for p in directory.iterdir()
                     if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml")
    for name in present:
        if name not in listed:
            report.error(f"{directory / name}", "not listed in kustomization.yaml resources")
    resources = []
    for name in listed:
        path = directory / name
        if not path.is_file():
            report.error(str(kustomization), f"lists {name}, which is not a file of {directory}")
            continue
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            report.error(str(path), f"not valid YAML: {e}")
            continue
        if not docs:
            report.error(str(path), "holds no resource")
        for doc in docs:
            if not isinstance(doc, dict):
                report.error(str(path), "a document that is not a mapping")
                continue
            resources.append(Resource(name, doc))
    return resources, kust.get("namespace")


# --- schemas ----------------------------------------------------------------------------------
def strict(schema):
    """Makes an openAPIV3Schema refuse unknown fields, as kubectl's strict field validation
    does: every object that lists its properties, allows no others unless it says so."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_schema_path(directory: pathlib.Path, resource: Resource) -> pathlib.Path | None:
    group, _, version = resource.api_version.rpartition("/")
    path = directory / "schemas" / f"{group}_{resource.kind}_{version}.json"
    return path if group and path.exists() else None


def json_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(root)"


def validate_schema(directory: pathlib.Path, resource: Resource, versions: list[str],
                    report: Report) -> None:
    for field in ("apiVersion", "kind"):
        if not resource.doc.get(field):
            report.error(resource.where, f"{field} missing")
            return
    if not resource.name:
        report.error(resource.where, "metadata.name missing")
    elif not DNS_1123_SUBDOMAIN.match(resource.name) or len(resource.name) > 253:
        report.error(resource.where, f"metadata.name {resource.name!r} is not a DNS-1123 name")
    schema_path = crd_schema_path(directory, resource)
    if schema_path is not None:
        schema = strict(json.loads(schema_path.read_text()))
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(resource.doc),
                        key=lambda e: list(e.absolute_path))
        for e in errors:
            report.error(resource.where, f"{json_path(e)}: {e.message} "
                         f"(CRD schema schemas/{schema_path.name})")
        report.checked += 1
        return
    for version in versions:
        try:
            kubernetes_validate.validate(resource.doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            report.error(resource.where,
                         f"{json_path(e)}: {e.message} (Kubernetes {e.version} schema)")
        except kubernetes_validate.SchemaNotFoundError as e:
            report.error(resource.where, f"no schema: {e.message}; a custom resource needs "
                         f"its CRD's schema in {directory / 'schemas'}")
            return
        except kubernetes_validate.VersionNotSupportedError as e:
            report.error(resource.where, f"kubernetes-validate has no schemas for {e.version}")
            return
    report.checked += 1


# --- Courier's rules --------------------------------------------------------------------------
def listen_port(value: str | None, default: int) -> int:
    if not value:
        return default
    return int(value.rsplit(":", 1)[1])


def port_number(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                      r"(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
SUFFIX = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(value) -> float | None:
    """A Kubernetes resource quantity (`500m`, `128Mi`, `2`) as a number, or None."""
    m = QUANTITY.match(str(value))
    if not m:
        return None
    suffix = m.group(2)
    if suffix and suffix[0] in "eE":
        return float(m.group(1) + suffix)
    return float(m.group(1)) * SUFFIX[suffix]


def check_pod_security(res: Resource, pod: dict, report: Report) -> None:
    pod_sc = pod.get("securityContext") or {}
    if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        report.error(res.where, "pod securityContext.seccompProfile.type must be RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        report.error(res.where, "automountServiceAccountToken must be false (Courier needs no "
                     "Kubernetes API)")
    for c in pod.get("containers") or []:
        where = f"{res.where}: container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            report.error(where, "runAsNonRoot must be true")
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if uid is None or uid == 0:
            report.error(where, "runAsUser must be a non-zero uid (the image's user is 65532)")
        if sc.get("readOnlyRootFilesystem") is not True:
            report.error(where, "securityContext.readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            report.error(where, "securityContext.allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            report.error(where, "securityContext.capabilities.drop must contain ALL")
        if (sc.get("capabilities") or {}).get("add"):
            report.error(where, "securityContext.capabilities.add must be empty")
        resources = c.get("resources") or {}
        for kind, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
            for key in keys:
                if key not in (resources.get(kind) or {}):
                    report.error(where, f"resources.{kind}.{key} missing")
        amounts = {}
        for kind in ("requests", "limits"):
            for key, value in (resources.get(kind) or {}).items():
                amount = quantity(value)
                if amount is None:
                    report.error(where, f"resources.{kind}.{key}: {value!r} is not a quantity")
                amounts[kind, key] = amount
        for key in ("cpu", "memory"):
            request, limit = amounts.get(("requests", key)), amounts.get(("limits", key))
            if request is not None and limit is not None and request > limit:
                report.error(where, f"resources.requests.{key} exceeds resources.limits.{key}")


def check_courier(resources: list[Resource], alerts: pathlib.Path, report: Report) -> None:
    by_kind: dict[str, list[Resource]] = {}
    for r in resources:
        by_kind.setdefault(r.kind, []).append(r)
    configmaps = {r.name: (r.doc.get("data") or {}) for r in by_kind.get("ConfigMap", [])}
    secrets = {r.name: {**(r.doc.get("data") or {}), **(r.doc.get("stringData") or {})}
               for r in by_kind.get("Secret", [])}
    services = by_kind.get("Service", [])
    deployments = by_kind.get("Deployment", [])
    roles = {}

    for d in deployments:
        pod = (d.spec.get("template") or {}).get("spec") or {}
        pod_labels = ((d.spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not labels_match((d.spec.get("selector") or {}).get("matchLabels") or {}, pod_labels):
            report.error(d.where, "spec.selector.matchLabels does not match the pod labels")
        check_pod_security(d, pod, report)
        containers = pod.get("containers") or []
        if len(containers) != 1:
            report.error(d.where, "one container, the courier binary, expected")
            continue
        c = containers[0]
        env = {}
        for ref in c.get("envFrom") or []:
            name = (ref.get("configMapRef") or {}).get("name")
            if name is not None:
                if name not in configmaps:
                    report.error(d.where, f"envFrom names ConfigMap {name}, which is not here")
                env.update(configmaps.get(name, {}))
            name = (ref.get("secretRef") or {}).get("name")
            if name is not None and name not in secrets:
                report.error(d.where, f"envFrom names Secret {name}, which is not here")
        for var in c.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                if ref.get("name") not in secrets:
                    report.error(d.where, f"env {var['name']} names Secret {ref.get('name')}, "
                                 "which is not here")
                elif ref.get("key") not in secrets[ref["name"]]:
                    report.error(d.where, f"env {var['name']}: Secret {ref['name']} has no key "
                                 f"{ref.get('key')}")
            if "value" in var:
                env[var["name"]] = var["value"]
        command = (c.get("args") or [None])[0]
        if command == "api":
            port = listen_port(env.get("COURIER_API_LISTEN"), 8080)
        elif command == "worker":
            port = listen_port(env.get("COURIER_METRICS_LISTEN"), 9000)
        else:
            report.error(d.where, f"args must start with `api` or `worker`, not {command!r}")
            continue
        roles[command] = (d, pod_labels, c, port)
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = (c.get(probe) or {}).get("httpGet")
            if not get:
                report.error(d.where, f"{probe} must be an httpGet of {path}")
                continue
            if get.get("path") != path:
                report.error(d.where, f"{probe} must probe {path}, not {get.get('path')}")
            if port_number(c, get.get("port")) != port:
                report.error(d.where, f"{probe} probes port {get.get('port')}, but `courier "
                             f"{command}` serves {path} on {port}")
        if command == "worker":
            drain = int(env.get("COURIER_DRAIN_TIMEOUT_SECS", DEFAULT_DRAIN_TIMEOUT_SECS))
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if grace <= drain:
                report.error(d.where, f"terminationGracePeriodSeconds ({grace}) must exceed "
                             f"COURIER_DRAIN_TIMEOUT_SECS ({drain}), or the kubelet kills "
                             "workers that are still draining")
            mounts = {m.get("mountPath") for m in c.get("volumeMounts") or []}
            if "/tmp" not in mounts:
                report.error(d.where, "needs a writable /tmp (XLSX spills to temporary files "
                             "and the root filesystem is read-only)")

    for role in ("api", "worker"):
        if role not in roles:
            report.error("kustomization.yaml", f"no Deployment runs `courier {role}`")

    # Services select the pods and name ports the container has.
    service_of = {}
    for s in services:
        selector = s.spec.get("selector") or {}
        matched = [role for role, (_, labels, _, _) in roles.items()
                   if labels_match(selector, labels)]
        if not matched:
            report.error(s.where, "spec.selector matches no Deployment's pods")
            continue
        _, _, container, _ = roles[matched[0]]
        service_of[s.name] = (s, matched[0])
        for p in s.spec.get("ports") or []:
            if port_number(container, p.get("targetPort", p.get("port"))) is None:
                report.error(s.where, f"targetPort {p.get('targetPort')} is not a port of the "
                             f"{matched[0]} container")
    if "api" in roles and not any(role == "api" for _, role in service_of.values()):
        report.error("kustomization.yaml", "no Service in front of the API")

    for pdb in by_kind.get("PodDisruptionBudget", []):
        selector = (pdb.spec.get("selector") or {}).get("matchLabels") or {}
        if not any(labels_match(selector, labels) for _, labels, _, _ in roles.values()):
            report.error(pdb.where, "spec.selector matches no Deployment's pods")
    if "worker" in roles and not any(
            labels_match((p.spec.get("selector") or {}).get("matchLabels") or {},
                         roles["worker"][1]) for p in by_kind.get("PodDisruptionBudget", [])):
        report.error("kustomization.yaml", "no PodDisruptionBudget covers the workers")

    # KEDA scales the worker Deployment on the waiting queue.
    scaled = by_kind.get("ScaledObject", [])
    if not scaled:
        report.error("kustomization.yaml", "no KEDA ScaledObject for the workers")
    for so in scaled:
        target = so.spec.get("scaleTargetRef") or {}
        if "worker" not in roles or target.get("name") != roles["worker"][0].name:
            report.error(so.where, f"scaleTargetRef names {target.get('name')!r}, not the "
                         "worker Deployment")
        for t in so.spec.get("triggers") or []:
            meta = t.get("metadata") or {}
            if t.get("type") != "prometheus":
                report.error(so.where, f"trigger {t.get('type')!r}: expected prometheus")
                continue
            for key in ("serverAddress", "query", "threshold"):
                if not meta.get(key):
                    report.error(so.where, f"prometheus trigger needs metadata.{key}")
            try:
                if float(meta.get("threshold", "")) <= 0:
                    raise ValueError
            except ValueError:
                report.error(so.where, f"threshold {meta.get('threshold')!r} is not a positive "
                             "number")
            query = meta.get("query", "")
            if ('courier_queue_depth{state="waiting"}' not in query
                    and "courier_queue_oldest_waiting_age_seconds" not in query):
                report.error(so.where, "the query must read courier_queue_depth{state=\"waiting\"} "
                             "or courier_queue_oldest_waiting_age_seconds")

    # Prometheus: the job names the alerts use, and the alerts themselves.
    alert_groups = (yaml.safe_load(alerts.read_text()) or {}).get("groups")
    wanted_jobs = set(re.findall(r'job="([^"]+)"', alerts.read_text()))
    monitors = by_kind.get("ServiceMonitor", [])
    if not monitors:
        report.error("kustomization.yaml", "no ServiceMonitor")
    jobs = set()
    for sm in monitors:
        selector = (sm.spec.get("selector") or {}).get("matchLabels") or {}
        job_label = sm.spec.get("jobLabel")
        ports = {e.get("port") for e in sm.spec.get("endpoints") or []}
        selected = [s for s, _ in service_of.values()
                    if labels_match(selector, (s.doc.get("metadata") or {}).get("labels") or {})]
        if not selected:
            report.error(sm.where, "spec.selector matches no Service")
        for s in selected:
            labels = (s.doc.get("metadata") or {}).get("labels") or {}
            jobs.add(labels.get(job_label, s.name) if job_label else s.name)
            if not ports & {p.get("name") for p in s.spec.get("ports") or []}:
                report.error(sm.where, f"no endpoint port matches a port of Service {s.name}")
    missing = wanted_jobs - jobs
    if monitors and missing:
        report.error(monitors[0].where, f"scrapes jobs {sorted(jobs)}, but {alerts.name} "
                     f"expects {sorted(missing)} too")
    rules = by_kind.get("PrometheusRule", [])
    if not rules:
        report.error("kustomization.yaml", "no PrometheusRule")
    for pr in rules:
        if pr.spec.get("groups") != alert_groups:
            report.error(pr.where, f"spec.groups differ from {alerts}: regenerate with "
                         "scripts/gen-prometheusrule.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", nargs="?", default="deploy/kubernetes")
    parser.add_argument("--kubernetes-versions", default="1.30,1.37",
                        help="comma-separated Kubernetes versions to validate against")
    parser.add_argument("--alerts", default=None,
                        help="the alerting rules (default: DIR/../alerts.yml)")
    args = parser.parse_args()
    directory = pathlib.Path(args.directory)
    alerts = pathlib.Path(args.alerts) if args.alerts else directory.parent / "alerts.yml"
    versions = [v.strip() for v in args.kubernetes_versions.split(",") if v.strip()]

    report = Report()
    resources, _ = load_resources(directory, report)
    for r in resources:
        validate_schema(directory, r, versions, report)
    check_courier(resources, alerts, report)

    for e in report.errors:
        print(f"ERROR {e}")
    kinds = sorted({r.kind for r in resources})
    print(f"validate-manifests: {len(resources)} resources in {directory} ({', '.join(kinds)}); "
          f"{report.checked} valid against their schemas (Kubernetes {', '.join(versions)}; "
          f"CRDs from {directory / 'schemas'}); {len(report.errors)} errors")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
