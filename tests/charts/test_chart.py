"""The Helm chart charts/api-metrics-exporter, rendered offline with Helm's own Go code.

helm-python-sdk embeds Helm (v4) as a shared library: `Chart.load(...).render(...)`
is `helm template`, `lint(...)` is `helm lint`, and rendering validates the values
against values.schema.json as an install would. Rendered objects are validated
with kubernetes-validate (the API server's OpenAPI schemas, strict: unknown fields
fail); the prometheus-operator kinds, which it has no schema for, against a
structural subset of their CRDs below. The rendered exporter.toml goes through
`python -m exporter check` with the pod's mounts laid out in a temporary directory.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "api-metrics-exporter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
EXAMPLE = CHART / "examples" / "sidecar.yaml"
KUBE_VERSIONS = ("1.25.0", "1.33.0")  # the chart's kubeVersion floor and a recent one
RELEASE, NAMESPACE = "demo", "monitoring"
FULLNAME = f"{RELEASE}-api-metrics-exporter"
CONTAINER = "api-metrics-exporter"
SECRETS_DIR = "/etc/api-metrics-exporter/secrets"
STATE_DIR = "/var/lib/api-metrics-exporter"
CONFIG_PATH = "/etc/api-metrics-exporter/exporter.toml"
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
RULES_FILE = REPO / "monitoring" / "api-metrics-exporter.rules.yml"


def package_version() -> str:
    text = (REPO / "exporter" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.M)
    assert match, "exporter/__init__.py has no __version__ = '...'"
    return match.group(1)


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (the API server's decoder does too)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {sorted(duplicates)}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


def render(values: dict | None = None, chart: Path = CHART, name: str = RELEASE) -> dict[str, list[dict]]:
    """template path -> the objects it renders (NOTES.txt is kept as {"NOTES": text})."""
    with helm_python.Chart.load(chart) as loaded:
        manifests = loaded.render(values=values or {}, name=name, namespace=NAMESPACE, is_install=True)
    out: dict[str, list[dict]] = {}
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            out[path] = [{"NOTES": text}]
            continue
        docs = [d for d in yaml.load_all(text, Loader=StrictLoader) if d]
        if docs:
            out[path] = docs
    return out


def objects(rendered: dict[str, list[dict]]) -> list[dict]:
    return [doc for path, docs in rendered.items() if not path.endswith("NOTES.txt") for doc in docs]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def exporter_container(pod_spec: dict) -> dict:
    found = [c for c in pod_spec["containers"] if c["name"] == CONTAINER]
    assert len(found) == 1, [c["name"] for c in pod_spec["containers"]]
    return found[0]


def workload(objs):
    """The Deployment, or the StatefulSet when sharding is enabled."""
    kinds = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
    assert len(kinds) == 1, [o["kind"] for o in kinds]
    return kinds[0]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("APIMETRICS_")}
    # As in a pod: the host name is the pod name (a StatefulSet's ends in its ordinal).
    env["HOSTNAME"] = "api-metrics-exporter-0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


VALUE_SETS = pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name.removesuffix("-values.yaml"))


def test_ci_values_files_exist():
    assert {p.name for p in CI_VALUES} >= {"default-values.yaml", "all-features-values.yaml"}


# --- metadata and lint --------------------------------------------------------------------


def test_chart_metadata():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "api-metrics-exporter"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", meta["version"])
    assert meta["appVersion"] == package_version(), "Chart appVersion must equal exporter.__version__"
    with helm_python.Chart.load(CHART) as chart:
        assert chart.metadata["appVersion"] == package_version()
        assert chart.schema is not None


@VALUE_SETS
def test_lint_is_clean_in_strict_mode(values_file):
    report = helm_python.lint(CHART, load_values(values_file), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


# --- rendering and validation ------------------------------------------------------------

DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer", "minimum": 0},
        "replacement": {"type": "string"},
        "action": {"type": "string", "enum": [
            "replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap", "LabelMap",
            "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
            "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]},
    },
}
ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "string", "minLength": 1},
        "path": {"type": "string", "pattern": "^/"},
        "scheme": {"type": "string", "enum": ["http", "https", "HTTP", "HTTPS"]},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "relabelings": {"type": "array", "items": RELABEL},
        "metricRelabelings": {"type": "array", "items": RELABEL},
    },
}
SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": STRMAP, "matchExpressions": {"type": "array", "items": {"type": "object"}}},
}


def monitor_schema(kind: str, endpoints_key: str, target_labels_key: str) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                    "namespace": {"type": "string"},
                    "labels": STRMAP,
                    "annotations": STRMAP,
                },
            },
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", endpoints_key],
                "properties": {
                    "jobLabel": {"type": "string"},
                    target_labels_key: {"type": "array", "items": {"type": "string"}},
                    "selector": SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
                    },
                    endpoints_key: {"type": "array", "minItems": 1, "items": ENDPOINT},
                },
            },
        },
    }


# The rule shape of the PrometheusRule CRD (monitoring.coreos.com/v1), structural subset.
RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
    "properties": {
        "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "alert": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": DURATION,
        "keep_firing_for": DURATION,
        "labels": STRMAP,
        "annotations": STRMAP,
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": monitor_schema("PrometheusRule", "x", "y")["properties"]["metadata"],
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "rules": {"type": "array", "items": RULE},
                        },
                    },
                },
            },
        },
    },
}

MONITOR_SCHEMAS = {
    "ServiceMonitor": monitor_schema("ServiceMonitor", "endpoints", "targetLabels"),
    "PodMonitor": monitor_schema("PodMonitor", "podMetricsEndpoints", "podTargetLabels"),
    "PrometheusRule": PROMETHEUS_RULE_SCHEMA,
}


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", duration))


def validate(obj: dict) -> None:
    if obj["kind"] in CRD_KINDS:
        jsonschema.validate(obj, MONITOR_SCHEMAS[obj["kind"]])
        if obj["kind"] == "PrometheusRule":
            return
        key = "endpoints" if obj["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
        for endpoint in obj["spec"][key]:
            if endpoint.get("interval") and endpoint.get("scrapeTimeout"):
                assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


@VALUE_SETS
def test_every_rendered_object_validates(values_file):
    objs = objects(render(load_values(values_file)))
    assert objs
    for obj in objs:
        try:
            validate(obj)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "api-metrics-exporter"
        if obj["kind"] not in {"Namespace"}:
            assert obj["metadata"].get("namespace") == NAMESPACE


def test_default_objects():
    objs = objects(render())
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objs)
    assert kinds == sorted([("ConfigMap", FULLNAME), ("Deployment", FULLNAME), ("Service", FULLNAME),
                            ("ServiceAccount", FULLNAME)])
    service = one(objs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9687, "targetPort": "metrics", "protocol": "TCP"}]
    assert one(objs, "ServiceAccount")["automountServiceAccountToken"] is False


def test_all_features_objects():
    objs = objects(render(load_values(CHART / "ci" / "all-features-values.yaml")))
    kinds = {o["kind"] for o in objs}
    assert kinds == {"ConfigMap", "Secret", "Deployment", "Service", "ServiceAccount", "ServiceMonitor", "PodMonitor",
                     "PrometheusRule", "NetworkPolicy", "PodDisruptionBudget", "PersistentVolumeClaim"}
    assert len([o for o in objs if o["kind"] == "ConfigMap"]) == 2  # config + dashboard


@VALUE_SETS
def test_pod_spec(values_file):
    values = load_values(values_file)
    objs = objects(render(values))
    deployment = workload(objs)
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    container = exporter_container(spec)
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    port = container["ports"][0]
    assert port["name"] == "metrics" and port["containerPort"] == 9687
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["args"][:3] == ["run", "--config", CONFIG_PATH]
    tag = values.get("image", {}).get("tag") or package_version()
    assert container["image"].endswith(f":{tag}")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts[CONFIG_PATH]["subPath"] == "exporter.toml" and mounts[CONFIG_PATH]["readOnly"] is True
    assert volumes[mounts[CONFIG_PATH]["name"]]["configMap"]["name"] == FULLNAME
    assert set(m["name"] for m in container["volumeMounts"]) == set(volumes)
    annotations = pod["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert one(objs, "Service")["spec"]["selector"] == selector


def test_all_features_pod_spec():
    values = load_values(CHART / "ci" / "all-features-values.yaml")
    objs = objects(render(values))
    deployment = workload(objs)
    spec = deployment["spec"]["template"]["spec"]
    container = exporter_container(spec)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts[SECRETS_DIR]["name"]]["secret"]["secretName"] == FULLNAME
    assert mounts[SECRETS_DIR]["readOnly"] is True
    claim = volumes[mounts[STATE_DIR]["name"]]["persistentVolumeClaim"]["claimName"]
    assert one(objs, "PersistentVolumeClaim", claim)["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert container["args"][3:] == ["--log-level", "debug", "--log-format", "text"]
    assert container["env"] == [{"name": "TZ", "value": "UTC"}]
    assert spec["priorityClassName"] == "monitoring"
    assert spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    assert deployment["spec"]["template"]["metadata"]["labels"]["tier"] == "monitoring"
    for obj in objs:
        assert obj["metadata"]["labels"]["team"] == "observability"


# --- the config passes the exporter's own check ------------------------------------------


def lay_out_pod_files(root: Path, spec: dict, objs: list[dict]) -> Path:
    """Write the exporter container's mounts under `root`; return the config file path.

    Absolute mount paths in the config (secret files, state dir) are rewritten to
    their place under `root`, so `check` reads the files the pod would see.
    """
    container = exporter_container(spec)
    volumes = {v["name"]: v for v in spec["volumes"]}
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    dirs = []
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = root / mount["mountPath"].lstrip("/")
        if "configMap" in volume or "secret" in volume:
            if "configMap" in volume:
                source = by_name[("ConfigMap", volume["configMap"]["name"])]
                files = dict(source.get("data", {}))
            else:
                source = by_name[("Secret", volume["secret"]["secretName"])]
                files = {k: base64.b64decode(v).decode() for k, v in source.get("data", {}).items()}
                files.update(source.get("stringData", {}))
            if "subPath" in mount:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(files[mount["subPath"]])
                continue
            target.mkdir(parents=True, exist_ok=True)
            for key, text in files.items():
                (target / key).write_text(text)
        else:  # emptyDir, persistentVolumeClaim
            target.mkdir(parents=True, exist_ok=True)
        dirs.append(mount["mountPath"])
    args = container["args"]
    config = root / args[args.index("--config") + 1].lstrip("/")
    alternatives = "|".join(re.escape(d.rstrip("/")) for d in sorted(dirs, key=len, reverse=True))
    text = re.sub(f'"({alternatives})(?=[/"])', lambda m: f'"{root.as_posix()}{m.group(1)}', config.read_text())
    config.write_text(text)
    return config


def exporter_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "check", "--config", str(config)],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120,
    )


@VALUE_SETS
def test_rendered_config_passes_exporter_check(values_file, tmp_path):
    objs = objects(render(load_values(values_file)))
    spec = workload(objs)["spec"]["template"]["spec"]
    config = lay_out_pod_files(tmp_path / "pod", spec, objs)
    result = exporter_check(config)
    assert result.returncode == 0, f"{config.read_text()}\n{result.stdout}\n{result.stderr}"


def test_default_config_is_the_simulator_demo():
    cm = one(objects(render()), "ConfigMap", FULLNAME)
    config = tomllib.loads(cm["data"]["exporter.toml"])
    assert config["server"]["listen"] == "0.0.0.0:9687"
    assert config["simulator"]["enabled"] is True
    assert "state" not in config
    [source] = config["sources"]
    assert source["type"] == "k6_cloud" and source["name"] == "k6-demo"
    assert source["test_run_ids"] == [103054]
    assert type(source["test_run_ids"][0]) is int  # Helm's float64 numbers are turned back into ints
    assert not any(k.startswith("token") for k in source)


def test_secret_file_references_point_into_the_secret():
    objs = objects(render(load_values(CHART / "ci" / "all-features-values.yaml")))
    config = tomllib.loads(one(objs, "ConfigMap", FULLNAME)["data"]["exporter.toml"])
    secret = one(objs, "Secret")
    refs = [v for source in config["sources"] for k, v in source.items() if k.endswith("_file")]
    assert refs
    for ref in refs:
        assert ref.startswith(SECRETS_DIR + "/")
        assert ref.rsplit("/", 1)[1] in secret["data"]
    assert config["state"]["dir"] == STATE_DIR


# --- secrets ------------------------------------------------------------------------------

SECRET_VALUE = "s3cr3t-Value-that-must-not-leak-91b7"


def test_secrets_only_in_the_secret_object():
    values = load_values(CHART / "ci" / "all-features-values.yaml")
    values["secrets"] = {"k6-token": SECRET_VALUE, "other.key": SECRET_VALUE + "-2"}
    objs = objects(render(values))
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    secret = one(objs, "Secret")
    assert secret["type"] == "Opaque"
    assert secret["data"]["k6-token"] == encoded
    assert "stringData" not in secret
    assert SECRET_VALUE not in yaml.safe_dump(secret)
    for obj in objs:
        if obj is secret:
            continue
        dumped = yaml.safe_dump(obj)
        assert SECRET_VALUE not in dumped and encoded not in dumped, f"secret leaks into {obj['kind']}"
    spec = workload(objs)["spec"]["template"]["spec"]
    for container in spec["containers"]:
        for env in container.get("env", []):
            assert "secretKeyRef" not in env.get("valueFrom", {}), "secrets are files, never env values"
        assert not container.get("envFrom")
    notes = next(docs[0]["NOTES"] for path, docs in render(values).items() if path.endswith("NOTES.txt"))
    assert SECRET_VALUE not in notes


# --- the schema ---------------------------------------------------------------------------

INVALID_VALUES = {
    "unknown top-level key": "replicas: 2\n",
    "unknown nested key": "service:\n  nodePort: 30000\n",
    "wrong type": "replicaCount: two\n",
    "wrong type nested": "serviceMonitor:\n  enabled: \"yes\"\n",
    "bad enum": "image:\n  pullPolicy: Sometimes\n",
    "bad duration": "serviceMonitor:\n  interval: 30 seconds\n",
    "plain secret in config": "config:\n  sources:\n    - {type: k6_cloud, name: a, token: abc}\n",
    "secret as env value": "extraEnv:\n  - {name: APIMETRICS_SOURCES__0__TOKEN, value: abc}\n",
    "bad state type": "state:\n  enabled: true\n  type: hostPath\n",
    "bad secret key": "secrets:\n  'a/b': x\n",
    "unknown alert": "prometheusRule:\n  alerts:\n    ApiMetricsNoSuchAlert: {for: 5m}\n",
    "unknown alert parameter": "prometheusRule:\n  alerts:\n    ApiMetricsTargetDown: {threshold: 1}\n",
    "bad alert for": "prometheusRule:\n  alerts:\n    ApiMetricsTargetDown: {for: soon}\n",
    "threshold as a string": "prometheusRule:\n  alerts:\n    ApiMetricsBirdFlowRunsFailing: {threshold: high}\n",
    "bad rule label name": "prometheusRule:\n  additionalRuleLabels: {bad-name: x}\n",
}


@pytest.mark.parametrize("text", INVALID_VALUES.values(), ids=INVALID_VALUES.keys())
def test_schema_rejects_invalid_values_files(text, tmp_path):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(text)
    values = helm_python.values_from_yaml(values_file.read_text())
    with pytest.raises(helm_python.HelmValuesError):
        render(values)
    report = helm_python.lint(CHART, values, strict=True)
    assert report["errors"], report


def test_schema_accepts_every_ci_values_file():
    with helm_python.Chart.load(CHART) as chart:
        for path in CI_VALUES:
            chart.validate_schema(load_values(path))
        chart.validate_schema(load_values(CHART / "values.yaml"))


def walk_schema(node: dict, path: str = ""):
    for key, sub in node.get("properties", {}).items():
        yield f"{path}{key}", sub
        yield from walk_schema(sub, f"{path}{key}.")
    items = node.get("items")
    if isinstance(items, dict):
        yield from walk_schema(items, f"{path}[].")


def test_schema_describes_every_key_and_is_strict():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    for definition in schema.get("definitions", {}).values():
        assert definition.get("description")
    missing = [path for path, sub in walk_schema(schema) if not sub.get("description")]
    assert not missing, f"schema keys without a description: {missing}"
    # Chart-owned objects are closed; `config` is the exporter's (it rejects unknown keys itself).
    for path, sub in walk_schema(schema):
        if sub.get("type") == "object" and sub.get("properties") and not path.startswith("config"):
            assert sub.get("additionalProperties") is False, f"{path} accepts unknown keys"


def values_paths(node, path=""):
    """helm-docs style keys of values.yaml: leaves, empty maps and lists."""
    if isinstance(node, dict) and node:
        for key, sub in node.items():
            yield from values_paths(sub, f"{path}.{key}" if path else key)
    else:
        yield path


def test_values_yaml_is_documented_everywhere():
    values_text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(values_text)
    readme = (CHART / "README.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    schema_paths = {p for p, _ in walk_schema(schema)}
    stop = ("resources.", "podSecurityContext.", "securityContext.", "config.sources")
    for path in values_paths(values):
        documented = path if not path.startswith(stop) else next(s.rstrip(".") for s in stop if path.startswith(s))
        assert f"| {documented} |" in readme, f"README.md values table lacks {documented}"
        top = path.split(".")[0]
        assert top in schema["properties"], f"{top} missing from the schema"
        if not path.startswith(("config.", *stop)):
            assert path in schema_paths, f"{path} missing from the schema"
    # Every documented key carries a `# --` comment in values.yaml, helm-docs style.
    described = described_keys(values_text)
    for path in values_paths(values):
        documented = path if not path.startswith(stop) else next(s.rstrip(".") for s in stop if path.startswith(s))
        assert documented in described, f"values.yaml: {documented} lacks a '# --' comment"


def described_keys(text: str) -> set[str]:
    """Dotted keys of values.yaml preceded by a `# --` comment (continued on `#` lines)."""
    described, stack, pending = set(), [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = True
            continue
        if stripped.startswith("#") or not stripped:
            continue
        m = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9_]*):", line)
        if m:
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, m.group(2)))
            if pending:
                described.add(".".join(key for _, key in stack))
        pending = False
    return described


# --- features -----------------------------------------------------------------------------


def pod_annotations(values: dict) -> dict:
    return one(objects(render(values)), "Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_checksum_annotations_follow_config_and_secrets():
    base = pod_annotations({})
    again = pod_annotations({})
    assert base == again
    changed_config = pod_annotations({"config": {"server": {"listen": "0.0.0.0:9687"}, "simulator": {"enabled": True},
                                                 "sources": [{"type": "k6_cloud", "name": "k6-demo", "interval": "30s",
                                                              "test_run_ids": [103054]}]}})
    assert changed_config["checksum/config"] != base["checksum/config"]
    assert changed_config["checksum/secret"] == base["checksum/secret"]
    state = pod_annotations({"state": {"enabled": True}})
    assert state["checksum/config"] != base["checksum/config"]  # [state] dir is part of the config
    secret = pod_annotations({"secrets": {"k6-token": "a"}})
    rotated = pod_annotations({"secrets": {"k6-token": "b"}})
    assert secret["checksum/config"] == base["checksum/config"]
    assert len({base["checksum/secret"], secret["checksum/secret"], rotated["checksum/secret"]}) == 3


def test_state_volume_variants():
    objs = objects(render({"state": {"enabled": True}}))
    spec = workload(objs)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in exporter_container(spec)["volumeMounts"]}
    volume = next(v for v in spec["volumes"] if v["name"] == mounts[STATE_DIR])
    assert volume["emptyDir"] == {"sizeLimit": "1Gi"}
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    assert tomllib.loads(one(objs, "ConfigMap")["data"]["exporter.toml"])["state"] == {"dir": STATE_DIR}

    objs = objects(render({"state": {"enabled": True, "type": "pvc", "existingClaim": "keep-me", "storageClass": "-"}}))
    spec = workload(objs)["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["keep-me"]
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]

    pvc = one(objects(render({"state": {"enabled": True, "type": "pvc", "storageClass": "-"}})), "PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == ""

    with pytest.raises(helm_python.HelmError, match="state.enabled"):
        render({"config": {"state": {"dir": "/data"}}})


def test_existing_configmap_and_secret():
    objs = objects(render({"existingConfigMap": "my-config", "existingSecret": "my-secret"}))
    assert not [o for o in objs if o["kind"] in {"ConfigMap", "Secret"}]
    spec = workload(objs)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in exporter_container(spec)["volumeMounts"]}
    assert volumes[mounts[CONFIG_PATH]]["configMap"]["name"] == "my-config"
    assert volumes[mounts[SECRETS_DIR]]["secret"]["secretName"] == "my-secret"


def test_listen_port_drives_the_container_port():
    values = {"config": {"server": {"listen": "[::]:9100"}, "simulator": {"enabled": True}, "sources": []},
              "portName": "apimetrics", "networkPolicy": {"enabled": True}, "podMonitor": {"enabled": True}}
    objs = objects(render(values))
    container = exporter_container(workload(objs)["spec"]["template"]["spec"])
    assert container["ports"] == [{"name": "apimetrics", "containerPort": 9100, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"]["port"] == "apimetrics"
    assert one(objs, "Service")["spec"]["ports"][0]["targetPort"] == "apimetrics"
    assert one(objs, "NetworkPolicy")["spec"]["ingress"][0]["ports"] == [{"port": 9100, "protocol": "TCP"}]
    assert one(objs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "apimetrics"


def test_monitors_target_the_real_ports_and_labels():
    values = load_values(CHART / "ci" / "all-features-values.yaml")
    objs = objects(render(values))
    service = one(objs, "Service")
    pod = workload(objs)["spec"]["template"]
    port_names = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    sm = one(objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("60s", "20s")
    assert endpoint["relabelings"] == values["serviceMonitor"]["relabelings"]
    assert endpoint["metricRelabelings"] == values["serviceMonitor"]["metricRelabelings"]
    pm = one(objs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [endpoint] = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in port_names
    assert endpoint["relabelings"] == values["podMonitor"]["relabelings"]
    assert endpoint["metricRelabelings"] == values["podMonitor"]["metricRelabelings"]


def test_network_policy():
    values = load_values(CHART / "ci" / "all-features-values.yaml")
    objs = objects(render(values))
    policy = one(objs, "NetworkPolicy")["spec"]
    pod_labels = workload(objs)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["ingress"]
    assert ingress["ports"] == [{"port": 9687, "protocol": "TCP"}]
    assert ingress["from"] == values["networkPolicy"]["ingressFrom"]
    dns, https = policy["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert https == values["networkPolicy"]["egress"]["rules"][0]

    policy = one(objects(render({"networkPolicy": {"enabled": True}})), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"] and "egress" not in policy
    assert "from" not in policy["ingress"][0]


def test_pod_disruption_budget():
    pdb = one(objects(render({"podDisruptionBudget": {"enabled": True}})), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    pdb = one(objects(render({"podDisruptionBudget": {"enabled": True, "minAvailable": "50%"}})), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == "50%" and "maxUnavailable" not in pdb["spec"]


def test_dashboard_configmap():
    dashboard_file = CHART / "dashboards" / "api-metrics-exporter.json"
    cm = one(objects(render({"dashboard": {"enabled": True}})), "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["api-metrics-exporter.json"]) == json.loads(dashboard_file.read_text())
    cm = one(objects(render({"dashboard": {"enabled": True, "label": "grafana.io/dashboard", "labelValue": "yes",
                                           "namespace": "grafana", "annotations": {"grafana_folder": "Exporters"}}})),
             "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana.io/dashboard"] == "yes"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Exporters"}


# --- PrometheusRule ---------------------------------------------------------------------------


def prometheus_rule(values: dict | None = None) -> dict:
    obj = one(objects(render({"prometheusRule": {"enabled": True, **(values or {})}})), "PrometheusRule")
    validate(obj)
    return obj


def rules_by_name(obj: dict) -> dict[str, dict]:
    return {rule.get("alert") or rule["record"]: rule for group in obj["spec"]["groups"] for rule in group["rules"]}


def test_prometheus_rule_groups_equal_the_rules_file():
    obj = prometheus_rule()
    assert obj["metadata"]["name"] == FULLNAME and obj["metadata"]["namespace"] == NAMESPACE
    assert obj["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"]
    assert {g["name"] for g in obj["spec"]["groups"]} == {
        "api-metrics-exporter.records", "api-metrics-exporter.exporter", "api-metrics-exporter.vendors"}


def test_prometheus_rule_overrides():
    default = rules_by_name(prometheus_rule())
    obj = prometheus_rule({
        "namespace": "observability",
        "labels": {"release": "kube-prometheus-stack"},
        "annotations": {"example.com/owner": "sre"},
        "additionalRuleLabels": {"team": "sre", "severity": "ignored: an alert's own labels win"},
        "runbookBaseUrl": "https://wiki.example.com/runbooks/apimetrics",
        "alerts": {
            "ApiMetricsTargetDown": {"for": "30m", "severity": "critical"},
            "ApiMetricsWhatsAppFlowAvailabilityLow": {"threshold": 0.9},
            "ApiMetricsPlutoRunStalled": {"threshold": 7200},
            "ApiMetricsExporterAbsent": {"selector": '{namespace="apps"}'},
            "ApiMetricsLabelValuesTruncated": {"enabled": False},
        },
    })
    assert obj["metadata"]["namespace"] == "observability"
    assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert obj["metadata"]["annotations"] == {"example.com/owner": "sre"}
    rules = rules_by_name(obj)
    assert set(default) - set(rules) == {"ApiMetricsLabelValuesTruncated"}
    down = rules["ApiMetricsTargetDown"]
    assert down["for"] == "30m"
    assert down["labels"] == {"severity": "critical", "team": "sre"}
    assert down["annotations"]["runbook_url"] == "https://wiki.example.com/runbooks/apimetrics#apimetricstargetdown"
    assert down["expr"] == default["ApiMetricsTargetDown"]["expr"]
    availability = rules["ApiMetricsWhatsAppFlowAvailabilityLow"]
    assert default["ApiMetricsWhatsAppFlowAvailabilityLow"]["expr"].endswith(" < 0.95")
    assert availability["expr"] == default["ApiMetricsWhatsAppFlowAvailabilityLow"]["expr"].replace(" < 0.95", " < 0.9")
    assert availability["for"] == "30m" and availability["labels"] == {"severity": "warning", "team": "sre"}
    assert "> 7200\n" in rules["ApiMetricsPlutoRunStalled"]["expr"]
    assert rules["ApiMetricsExporterAbsent"]["expr"] == 'absent(apimetrics_build_info{namespace="apps"})'
    for name, rule in rules.items():
        if "record" in rule:
            assert rule == default[name]
        else:
            assert rule["annotations"]["summary"] == default[name]["annotations"]["summary"]
            assert rule["labels"]["team"] == "sre"
    # A group whose alerts are all disabled is left out, not rendered empty.
    groups = prometheus_rule()["spec"]["groups"]
    vendors = [r["alert"] for g in groups if g["name"].endswith(".vendors") for r in g["rules"]]
    obj = prometheus_rule({"alerts": {name: {"enabled": False} for name in vendors}})
    assert [g["name"] for g in obj["spec"]["groups"]] == [g["name"] for g in groups if not g["name"].endswith(".vendors")]


@pytest.mark.integration
@pytest.mark.parametrize("values", [{}, {"alerts": {"ApiMetricsTargetDown": {"for": "1h"},
                                                    "ApiMetricsBirdFlowRunsFailing": {"threshold": 0.5}},
                                         "additionalRuleLabels": {"team": "sre"}}], ids=["default", "overridden"])
def test_promtool_checks_the_rendered_prometheus_rule(values, tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package 'prometheus' (make test does)"
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(prometheus_rule(values)["spec"]))
    result = subprocess.run([promtool, "check", "rules", str(spec)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines[0] == f"Checking {spec}" and re.fullmatch(r"SUCCESS: \d+ rules found", lines[1]) and len(lines) == 2


def test_alert_overrides_in_the_schema_follow_the_rules():
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["prometheusRule"]["properties"]
    overrides = schema["alerts"]["properties"]
    master = yaml.safe_load((CHART / "rules" / "rules.yaml").read_text())
    alerts = {r["alert"]: r for g in master["groups"] for r in g["rules"] if "alert" in r}
    assert set(overrides) == set(alerts)
    for name, rule in alerts.items():
        assert set(overrides[name]["properties"]) == {"enabled", "for", "severity", *(rule.get("params") or {})}


def test_image_reference():
    container = exporter_container(one(objects(render({"image": {"digest": "sha256:" + "a" * 64}})),
                                       "Deployment")["spec"]["template"]["spec"])
    assert container["image"] == "ghcr.io/api-metrics-exporter/api-metrics-exporter@sha256:" + "a" * 64


def test_names_are_truncated():
    long = "r" * 60
    objs = objects(render({}, name=long[:53]))
    for obj in objs:
        assert len(obj["metadata"]["name"]) <= 63
    assert workload(objs)["metadata"]["name"] == (long[:53] + "-api-metrics-exporter")[:63].rstrip("-")


def test_notes_explain_how_to_reach_metrics():
    notes = next(docs[0]["NOTES"] for path, docs in render().items() if path.endswith("NOTES.txt"))
    assert f"port-forward service/{FULLNAME} 9687:9687" in notes
    assert "/metrics" in notes and "/healthz" in notes and "/readyz" in notes


# --- sidecar mode -------------------------------------------------------------------------

WRAPPER_POD = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-app
  namespace: {{ .Release.Namespace }}
  labels:
    app.kubernetes.io/name: app
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: app
  template:
    metadata:
      labels:
        app.kubernetes.io/name: app
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      containers:
        - name: app
          image: nginxinc/nginx-unprivileged:1.27-alpine
          ports:
            - name: metrics
              containerPort: 8080
        - {{- include "api-metrics-exporter.container" (index .Subcharts "api-metrics-exporter") | nindent 10 }}
      volumes:
        - name: app-data
          emptyDir: {}
        {{- include "api-metrics-exporter.volumes" (index .Subcharts "api-metrics-exporter") | nindent 8 }}
"""


def make_wrapper_chart(root: Path, sub_values: dict) -> Path:
    wrapper = root / "wrapper"
    (wrapper / "templates").mkdir(parents=True)
    (wrapper / "charts").mkdir()
    shutil.copytree(CHART, wrapper / "charts" / "api-metrics-exporter",
                    ignore=shutil.ignore_patterns("ci", "examples", "__pycache__"))
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (wrapper / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "wrapper", "version": "0.1.0", "appVersion": "1.0.0",
        "description": "A tiny app chart with the exporter as a sidecar.",
        "icon": meta["icon"],
        "dependencies": [{"name": "api-metrics-exporter", "version": meta["version"]}],
    }))
    (wrapper / "values.yaml").write_text(yaml.safe_dump({"api-metrics-exporter": sub_values}))
    (wrapper / "templates" / "app.yaml").write_text(WRAPPER_POD)
    return wrapper


SIDECAR_VALUES = {
    "deployment": {"enabled": False},
    "portName": "exporter",
    "secrets": {"k6-token": SECRET_VALUE},
    "config": {
        "server": {"listen": "0.0.0.0:9687"},
        "simulator": {"enabled": True},
        "sources": [{"type": "k6_cloud", "name": "app-load-tests", "interval": "60s",
                     "token_file": f"{SECRETS_DIR}/k6-token", "test_run_ids": [103054]}],
    },
}


def test_container_template_renders_in_a_wrapper_chart(tmp_path):
    wrapper = make_wrapper_chart(tmp_path, SIDECAR_VALUES)
    report = helm_python.lint(wrapper, strict=True, with_subcharts=True, namespace=NAMESPACE)
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report
    rendered = render(chart=wrapper)
    objs = objects(rendered)
    for obj in objs:
        validate(obj)
    # deployment.enabled=false: the subchart renders only what the sidecar needs.
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objs) == sorted(
        [("Deployment", f"{RELEASE}-app"), ("ConfigMap", FULLNAME), ("Secret", FULLNAME)])
    spec = workload(objs)["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["app", CONTAINER]
    sidecar = exporter_container(spec)
    # The same container the chart's own Deployment runs with the same values.
    standalone_values = copy.deepcopy(SIDECAR_VALUES)
    standalone_values["deployment"]["enabled"] = True
    standalone = one(objects(render(standalone_values)), "Deployment")["spec"]["template"]["spec"]
    assert sidecar == exporter_container(standalone)
    assert sidecar["image"].endswith(":" + package_version())
    assert sidecar["ports"][0]["name"] == "exporter"
    mounted = {m["name"] for m in sidecar["volumeMounts"]}
    assert mounted <= {v["name"] for v in spec["volumes"]}
    assert len({v["name"] for v in spec["volumes"]}) == len(spec["volumes"])
    config = lay_out_pod_files(tmp_path / "pod", spec, objs)
    result = exporter_check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    for obj in objs:
        if obj["kind"] != "Secret":
            assert SECRET_VALUE not in yaml.safe_dump(obj)


def test_example_sidecar_manifest(tmp_path):
    objs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    assert [o["kind"] for o in objs] == ["ConfigMap", "Secret", "Pod"]
    for obj in objs:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    pod = one(objs, "Pod")
    spec = pod["spec"]
    assert len(spec["containers"]) == 2 and spec["enableServiceLinks"] is False
    example = exporter_container(spec)
    # In step with what the chart renders for the same setup.
    chart_spec = one(objects(render({"secrets": {"k6-token": "x"}})), "Deployment")["spec"]["template"]["spec"]
    assert example == exporter_container(chart_spec)
    assert {v["name"] for v in spec["volumes"]} == {v["name"] for v in chart_spec["volumes"]}
    for container in spec["containers"]:
        assert not container.get("env") and not container.get("envFrom")
    config = lay_out_pod_files(tmp_path / "pod", spec, objs)
    assert f'"{SECRETS_DIR}' not in config.read_text()  # rewritten to the laid-out secret files
    result = exporter_check(config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sharding_renders_a_statefulset_whose_pods_split_the_targets(tmp_path):
    values = load_values(CHART / "ci" / "sharding-values.yaml")
    objs = objects(render(values))
    sts = workload(objs)
    assert sts["kind"] == "StatefulSet" and sts["spec"]["replicas"] == 3
    assert not [o for o in objs if o["kind"] == "Deployment"]
    config = tomllib.loads(one(objs, "ConfigMap", FULLNAME)["data"]["exporter.toml"])
    assert config["sharding"] == {"total": 3, "index_from_hostname": True}
    # The ServiceMonitor selects the Service, whose endpoints are every replica.
    monitor = one(objs, "ServiceMonitor")
    service = one(objs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()


def test_sharding_with_a_pvc_is_refused():
    values = load_values(CHART / "ci" / "sharding-values.yaml")
    values["state"] = {"enabled": True, "type": "pvc"}
    with pytest.raises(Exception, match="one claim cannot serve every shard"):
        render(values)
