"""The repo's prefect.yaml on a real Prefect server: `prefect deploy --all`, then a process
worker runs `prefect deployment run dub-film/local` on a generated 2-shot film.

About the pools: `prefect deploy --all` stops at the first deployment whose work pool does
not exist (exit 1, "references work pool 'dub-film-gpu' which does not exist"), so both
pools are created first.  The `gpu` pool is created with its real type, `docker`: creating a
docker pool needs no prefect-docker (the job template ships with Prefect), only its workers do.
"""

from __future__ import annotations

import asyncio
import json
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from dubcore.timebase import samples_for_frames
from lipsync.media.probe import probe
from lipsync.media.synth import make_film, write_tone
from prefect_server import ROOT, prefect_server

pytestmark = pytest.mark.slow

FPS = Fraction(25)
SHOTS = [20, 25]


@pytest.fixture(scope="module")
def server():
    with prefect_server() as s:
        yield s


@pytest.fixture(scope="module")
def deployed(server, tmp_path_factory):
    """Pools, a worker (started now so that its startup overlaps the deploy), `prefect deploy --all`."""
    server.cli_parallel(
        ["work-pool", "create", "dub-film-local", "--type", "process"],
        ["work-pool", "create", "dub-film-gpu", "--type", "docker"],
    )
    # The worker runs outside the checkout: only the pull step (DUB_FILM_HOME) brings the
    # flow's code in reach.
    worker_cwd = tmp_path_factory.mktemp("worker")
    worker = server.start_worker("dub-film-local", cwd=worker_cwd,
                                 extra_env={"DUB_FILM_HOME": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1"})
    proc = server.cli("deploy", "--all", "--no-prompt", cwd=ROOT, timeout=300)
    assert "Deployment 'dub-film/local' successfully created" in proc.stdout
    assert "Deployment 'dub-film/gpu' successfully created" in proc.stdout
    return worker


def api(server, fn):
    """Run ``await fn(client)`` with a Prefect client of ``server``."""
    from prefect.client.orchestration import get_client

    async def go():
        async with get_client() as client:
            return await fn(client)

    with server.settings():
        return asyncio.run(go())


def _schema_descriptions(schema: dict[str, Any]) -> dict[str, list[str]]:
    """Per model of the parameter schema, the fields without a description."""
    missing: dict[str, list[str]] = {}
    for name, model in (schema.get("definitions") or schema.get("$defs") or {}).items():
        props = model.get("properties") or {}
        missing[name] = [f for f, spec in props.items() if not spec.get("description")]
    return missing


def test_deployments_have_limits_pull_step_schema_and_trigger(server, deployed):
    async def read(client):
        local = await client.read_deployment_by_name("dub-film/local")
        gpu = await client.read_deployment_by_name("dub-film/gpu")
        autos = await client.read_resource_related_automations(f"prefect.deployment.{gpu.id}")
        train = await client.read_deployment_by_name("dub-film-train/train")
        return local, gpu, autos, train

    local, gpu, automations, train = api(server, read)

    # The training deployment: its own flow, one run at a time on the GPU pool, every parameter described.
    assert train.entrypoint == "flows/train.py:dub_film_train" and train.work_pool_name == "dub-film-gpu"
    assert train.global_concurrency_limit.limit == 1 and train.enforce_parameter_schema
    tprops = train.parameter_openapi_schema["properties"]
    assert {"output", "films", "dataset", "expert_steps", "wav2lip_steps", "gan"} <= set(tprops)
    assert train.parameter_openapi_schema.get("required") == ["output"]
    assert [p for p, spec in tprops.items() if not spec.get("description")] == []

    assert local.work_pool_name == "dub-film-local" and gpu.work_pool_name == "dub-film-gpu"
    assert local.global_concurrency_limit.limit == 1
    assert gpu.global_concurrency_limit.limit == 4
    assert local.concurrency_options.collision_strategy == "ENQUEUE"
    assert gpu.concurrency_options.collision_strategy == "ENQUEUE"
    assert gpu.concurrency_options.grace_period_seconds == 900
    assert local.enforce_parameter_schema and gpu.enforce_parameter_schema
    # The pull step keeps its placeholder: resolved on the worker, at run time.
    assert local.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $DUB_FILM_HOME }}"}}]

    # The UI form: typed parameters, each described, and every field of the job described.
    schema = local.parameter_openapi_schema
    assert schema == gpu.parameter_openapi_schema
    props = schema["properties"]
    assert {"job", "manifest"} <= set(props)
    assert not schema.get("required")  # `job` or `manifest`: neither is required by itself
    assert [p for p, spec in props.items() if not spec.get("description")] == []
    assert {"$ref": "#/definitions/DubJob"} in props["job"]["anyOf"]
    missing = _schema_descriptions(schema)
    assert {"DubJob", "DubTracks", "JobOptions"} <= set(missing)
    assert not any(missing.values()), f"fields without a description: {missing}"

    # The S3 trigger of the gpu deployment, with its Jinja template kept verbatim.
    assert len(automations) == 1
    auto = automations[0]
    assert auto.enabled
    trigger = auto.trigger
    assert trigger.expect == {"s3.object.created"}
    assert trigger.match.model_dump() == {"prefect.resource.id": "s3://*", "dub-film.kind": "job-manifest"}
    [action] = auto.actions
    assert action.type == "run-deployment" and action.deployment_id == gpu.id
    assert action.parameters == {"manifest": "s3://{{ event.resource['s3.bucket'] }}/{{ event.resource['s3.key'] }}"}


def test_local_deployment_runs_a_two_shot_film(server, deployed, tmp_path):
    from prefect.client.schemas.objects import StateType
    from prefect.utilities.schema_tools import validate

    film = make_film(tmp_path / "film.mp4", SHOTS, fps=FPS)
    write_tone(tmp_path / "dialogue.wav", samples_for_frames(film.frame_count, FPS, 48000), 48000, freq=300.0, seed=3)
    out = tmp_path / "out"
    job = {"film": str(film.path), "dub": {"dialogue": str(tmp_path / "dialogue.wav")}, "output": str(out),
           "title": "two shots"}

    local = api(server, lambda c: c.read_deployment_by_name("dub-film/local"))
    validate({"job": job}, local.parameter_openapi_schema, raise_on_error=True)  # what the UI form checks

    proc = server.cli("deployment", "run", "dub-film/local", "--params", json.dumps({"job": job}),
                      "--watch", "--watch-timeout", "300", cwd=tmp_path, timeout=360, check=False)
    context = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n--- worker\n{server.child_log(deployed)}"
    assert proc.returncode == 0, context
    m = re.search(r"UUID: ([0-9a-f-]{36})", proc.stdout)
    assert m, context

    run = api(server, lambda c: c.read_flow_run(m.group(1)))
    assert run.state is not None and run.state.type == StateType.COMPLETED, context
    assert run.deployment_id == local.id
    assert run.parameters["job"]["film"] == str(film.path)

    dubbed = probe(out / "film.dubbed.mp4").require_video()
    assert dubbed.frame_count == sum(SHOTS) == 45
    assert dubbed.fps == FPS
    shots = json.loads((out / "shots.json").read_text())
    assert [s["frames"] for s in shots["shots"]] == [[0, 20], [20, 45]]
    assert (out / "report.json").exists()
    assert not list(Path(out).glob(".partial-*"))
