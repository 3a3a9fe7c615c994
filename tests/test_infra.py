"""Static checks of infra/: work-pool templates, the worker image, the Ray cluster and Terraform.

Nothing here builds an image, talks to a cluster or to AWS: the files are parsed and
checked against what the code and Prefect expect of them.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
WORKPOOLS = {"docker": INFRA / "workpool" / "gpu-docker.json", "kubernetes": INFRA / "workpool" / "gpu-kubernetes.json"}
TERRAFORM = INFRA / "terraform"

# Prefect's job templates: "{{ name }}" placeholders; "$ENV" and "prefect.*" are resolved elsewhere.
PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


def _template(kind: str) -> dict:
    return json.loads(WORKPOOLS[kind].read_text())


def _placeholders(obj) -> set[str]:  # type: ignore[no-untyped-def]
    found: set[str] = set()
    if isinstance(obj, dict):
        for value in obj.values():
            found |= _placeholders(value)
    elif isinstance(obj, list):
        for value in obj:
            found |= _placeholders(value)
    elif isinstance(obj, str):
        found |= {n for n in PLACEHOLDER.findall(obj) if not n.startswith(("$", "prefect."))}
    return found


def _defaults(kind: str) -> dict:
    props = _template(kind)["variables"]["properties"]
    return {name: spec["default"] for name, spec in props.items() if "default" in spec}


@pytest.mark.parametrize("kind", sorted(WORKPOOLS))
def test_workpool_template_shape(kind: str) -> None:
    tpl = _template(kind)
    assert set(tpl) >= {"job_configuration", "variables"}
    variables = tpl["variables"]
    assert variables["type"] == "object"
    props = variables["properties"]
    used = _placeholders(tpl["job_configuration"])
    assert used, "no {{ variable }} in job_configuration"
    missing = sorted(used - set(props))
    assert not missing, f"{WORKPOOLS[kind].name}: placeholders not declared in variables.properties: {missing}"
    for name, spec in props.items():
        assert "type" in spec or "allOf" in spec or "$ref" in spec, f"{name}: no type"
    # The gpu deployment sets `image` (prefect.yaml: "{{ $DUB_FILM_IMAGE }}", a string).
    assert props["image"]["type"] == "string"
    assert "{{ image }}" in json.dumps(tpl["job_configuration"])
    assert _defaults(kind)["env"]["DUB_MODEL_STORE"] == "/models"


def test_docker_workpool_requests_gpus_and_model_store() -> None:
    tpl = _template("docker")
    # prefect-docker passes container_create_kwargs to docker-py's containers.create.
    assert tpl["job_configuration"]["container_create_kwargs"] == "{{ container_create_kwargs }}"
    kwargs = _defaults("docker")["container_create_kwargs"]
    requests = kwargs["device_requests"]
    assert any(r.get("driver") == "nvidia" and r.get("count") == -1 and ["gpu"] in r.get("capabilities", []) for r in requests)
    volumes = _defaults("docker")["volumes"]
    assert any(v.split(":")[1] == "/models" for v in volumes)


def test_docker_device_requests_build_for_docker_py() -> None:
    from docker.types import DeviceRequest

    for request in _defaults("docker")["container_create_kwargs"]["device_requests"]:
        built = DeviceRequest(**request)
        assert built["Driver"] == "nvidia" and built["Count"] == -1 and built["Capabilities"] == [["gpu"]]


def test_kubernetes_workpool_requests_gpus() -> None:
    tpl = _template("kubernetes")
    pod = tpl["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    defaults = _defaults("kubernetes")
    assert defaults["gpu_count"] >= 1
    assert pod["nodeSelector"] == "{{ node_selector }}" and defaults["node_selector"]
    assert pod["tolerations"] == "{{ tolerations }}"
    assert any(t.get("key") == "nvidia.com/gpu" for t in defaults["tolerations"])
    # Every mount names a volume, and the model store is mounted where DUB_MODEL_STORE points.
    volumes = {v["name"] for v in defaults["volumes"]}
    mounts = defaults["volume_mounts"]
    assert {m["name"] for m in mounts} <= volumes
    assert any(m["mountPath"] == "/models" for m in mounts)
    # prefect-kubernetes refuses a job manifest without these.
    assert {"parallelism", "completions", "restartPolicy"} <= set(pod)


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (INFRA / "docker" / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # line continuations
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_copy_sources_exist() -> None:
    copies = [rest for op, rest in _dockerfile_instructions() if op in ("COPY", "ADD")]
    assert copies
    checked = 0
    for rest in copies:
        args = rest.split()
        if any(a.startswith("--from") for a in args):
            continue
        args = [a for a in args if not a.startswith("--")]
        for src in args[:-1]:
            assert (ROOT / src).exists(), f"Dockerfile copies {src!r}, which is not in the repository"
            checked += 1
    assert checked >= 5
    # The build context's .dockerignore must not hide what the Dockerfile copies.
    ignore = ROOT / ".dockerignore"
    if ignore.exists():
        patterns = [p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")]
        for rest in copies:
            for src in [a for a in rest.split() if not a.startswith("--")][:-1]:
                assert src not in patterns, f".dockerignore excludes {src!r}, which the Dockerfile copies"


def test_dockerfile_gpu_runtime_and_ffmpeg() -> None:
    instructions = _dockerfile_instructions()
    runs = " ".join(rest for op, rest in instructions if op == "RUN")
    envs = " ".join(rest for op, rest in instructions if op == "ENV")
    assert re.search(r"apt-get install[^;&]*\bffmpeg\b", runs)
    match = re.search(r"NVIDIA_DRIVER_CAPABILITIES=(\S+)", envs)
    assert match and {"compute", "utility", "video"} <= set(match.group(1).split(","))
    assert re.search(r"DUB_MODEL_STORE=/models\b", envs) and "DUB_FILM_HOME=/opt/dub-film" in envs
    # The base: an nvidia/cuda runtime image, named directly or through an ARG default.
    args = dict(re.findall(r"(\w+)=(\S+)", " ".join(rest for op, rest in instructions if op == "ARG")))
    bases = [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest.split()[0])
             for op, rest in instructions if op == "FROM"]
    assert bases and all(re.match(r"nvidia/cuda:[\w.-]*runtime", b) for b in bases), bases
    assert re.search(r"pip install[^;&]*-e \.", runs)
    users = [rest for op, rest in instructions if op == "USER"]
    assert users and not users[-1].startswith(("root", "0")), "the image must not run as root"
    assert not any(op == "HEALTHCHECK" for op, _ in instructions)


# --------------------------------------------------------------------------- Ray


def test_kuberay_cluster_gpu_workers() -> None:
    docs = [d for d in yaml.safe_load_all((INFRA / "ray" / "kuberay-cluster.yaml").read_text()) if d]
    clusters = [d for d in docs if d.get("kind") == "RayCluster"]
    assert len(clusters) == 1
    spec = clusters[0]["spec"]
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in group["template"]["spec"]["containers"]:
            limits = container["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) >= 1, f"worker group {group['groupName']} requests no GPU"
    # The head takes no lip-sync actor, and every pod mounts the model store and the shared area.
    assert spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in groups]
    for pod in pods:
        paths = {m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert {"/models", "/shared"} <= paths
    # rayVersion matches the pin in pyproject.toml.
    pin = re.search(r'"ray==([0-9.]+)\.\*"', (ROOT / "pyproject.toml").read_text())
    assert pin and spec["rayVersion"].startswith(pin.group(1) + ".")


def test_ray_vm_cluster_config() -> None:
    cfg = yaml.safe_load((INFRA / "ray" / "ray-vms.yaml").read_text())
    assert cfg["provider"]["type"] == "aws"
    workers = {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}
    assert workers and all(v["resources"].get("GPU", 0) >= 1 for v in workers.values())
    assert cfg["available_node_types"][cfg["head_node_type"]]["resources"].get("GPU", 0) == 0


def test_ray_address_variable_documented_exists() -> None:
    from lipsync.render import pool as distributed

    assert distributed.ADDRESS_ENV == "DUB_RAY_ADDRESS"
    assert distributed.ADDRESS_ENV in (INFRA / "ray" / "README.md").read_text()


# --------------------------------------------------------------------------- Terraform


def test_terraform_fmt() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not on PATH")
    proc = subprocess.run([terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"terraform fmt -check failed:\n{proc.stdout}\n{proc.stderr}"


def _tf_text() -> str:
    return "\n".join(p.read_text() for p in sorted(TERRAFORM.glob("*.tf")))


def _tf_variable_default(name: str):  # type: ignore[no-untyped-def]
    """The default of ``variable "name"`` for a string or a list of strings (HCL, parsed simply)."""
    text = (TERRAFORM / "variables.tf").read_text()
    block = re.search(r'variable\s+"%s"\s*\{(.*?)\n\}' % re.escape(name), text, re.S)
    assert block, f"variable {name} not in variables.tf"
    default = re.search(r"^\s*default\s*=\s*(.+)$", block.group(1), re.M)
    assert default, f"variable {name} has no default"
    return json.loads(default.group(1).strip())


def _bridge_keys():  # type: ignore[no-untyped-def]
    path = INFRA / "bridge" / "keys.py"
    if not path.exists():
        return None
    name = "_dub_infra_bridge_keys"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception:
        sys.modules.pop(name, None)
        return None
    return module


def test_terraform_notification_matches_bridge() -> None:
    tf = _tf_text()
    prefix = _tf_variable_default("jobs_prefix")
    suffixes = _tf_variable_default("job_suffixes")
    assert prefix == "jobs/" and ".yaml" in suffixes

    # S3 filters and the bridge's key policy are fed from the same variables.
    notification = re.search(r'resource\s+"aws_s3_bucket_notification"[^{]*\{(.*?)\n\}', tf, re.S)
    assert notification, "no aws_s3_bucket_notification"
    body = notification.group(1)
    assert re.search(r"filter_prefix\s*=\s*var\.jobs_prefix\b", body)
    assert re.search(r"for_each\s*=\s*var\.job_suffixes\b", body) and re.search(r"filter_suffix\s*=\s*queue\.value\b", body)
    assert re.search(r'events\s*=\s*\["s3:ObjectCreated:\*"\]', body)
    assert re.search(r"DUB_BRIDGE_PREFIX\s*=\s*var\.jobs_prefix\b", tf)
    assert re.search(r'DUB_BRIDGE_SUFFIXES\s*=\s*join\(",",\s*var\.job_suffixes\)', tf)
    assert re.search(r"DUB_BRIDGE_BUCKET\s*=\s*aws_s3_bucket\.", tf)
    assert re.search(r'handler\s*=\s*"bridge\.lambda_handler"', tf)
    assert re.search(r'function_response_types\s*=\s*\["ReportBatchItemFailures"\]', tf)

    keys = _bridge_keys()
    if keys is None:
        pytest.skip("infra/bridge/keys.py is not importable: checked the Terraform side only")
    # The defaults agree, and the bridge accepts exactly what S3 forwards.
    assert list(keys.DEFAULT_SUFFIXES) == suffixes
    policy = keys.KeyPolicy.create("bucket", prefix, ",".join(suffixes))
    assert policy.prefix == prefix, "the bridge normalises the prefix differently from the S3 filter"
    for suffix in suffixes:
        ref = keys.ObjectRef(bucket="bucket", key=f"{prefix}film1{suffix}", event_name="ObjectCreated:Put", source="s3")
        assert policy.check(ref) is None
    outside = keys.ObjectRef(bucket="bucket", key="inputs/film1.yaml", event_name="ObjectCreated:Put", source="s3")
    assert policy.check(outside) is not None


def test_terraform_bucket_and_queue_settings() -> None:
    tf = _tf_text()
    assert re.search(r'resource\s+"aws_s3_bucket_versioning".*?status\s*=\s*"Enabled"', tf, re.S)
    block = re.search(r'resource\s+"aws_s3_bucket_public_access_block"[^{]*\{(.*?)\n\}', tf, re.S)
    assert block and len(re.findall(r"=\s*true\b", block.group(1))) == 4
    assert 'resource "aws_s3_bucket_server_side_encryption_configuration"' in tf
    assert re.search(r"redrive_policy\s*=\s*jsonencode\(\{\s*deadLetterTargetArn\s*=\s*aws_sqs_queue\.", tf)
    assert re.search(r'runtime\s*=\s*"python3\.11"', tf)
    # The bridge's Lambda package is infra/bridge, where bridge.py (with lambda_handler) lives.
    assert '"${path.module}/../bridge"' in tf
    bridge = INFRA / "bridge" / "bridge.py"
    if bridge.exists():
        assert re.search(r"^def lambda_handler\(event", bridge.read_text(), re.M)
