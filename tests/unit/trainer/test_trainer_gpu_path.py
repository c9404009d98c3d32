"""The GPU path up to the GPU, on any machine: a pod's nvidia.com/gpu becomes torchrun's processes
and Lightning's devices, and the GPU plan (precision, SyncBatchNorm, DDP) reaches the Trainer.
tests/gpu runs the same path on a real GPU."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ltj_operator import constants as C
from ltj_operator.config import OperatorConfig
from ltj_operator.render import render_pods, trainer_config_text
from ltj_trainer import config, registry
from ltj_trainer.callbacks import EventRecorder
from ltj_trainer.launch import layout, torchrun_args
from ltj_trainer.signals import SigtermFlag
from ltj_trainer.trainer_factory import GPU_PRECISION, DistEnv, build_trainer, plan
from unit.operator.operator_helpers import make_job
from unit.trainer.trainer_helpers import gpu_env, pod_env

pytestmark = pytest.mark.unit

OPERATOR = OperatorConfig(default_trainer_image="ltj-trainer:dev", operator_image="ltj-operator:dev")


@pytest.mark.parametrize(("nodes", "gpus"), [(2, 4), (1, 2), (3, 1)])
def test_nvidia_gpu_resource_becomes_processes_and_devices(nodes: int, gpus: int) -> None:
    job = make_job(name="job", nodes=nodes, gpusPerNode=gpus, training={"precision": "bf16"})
    cfg = config.parse(yaml.safe_load(trainer_config_text(job)), {}, known_models=registry.model_names(),
                       known_data=registry.data_names())
    for rank, pod in enumerate(render_pods(job, attempt=0, config=OPERATOR)):
        (container,) = [c for c in pod["spec"]["containers"] if c["name"] == C.TRAINER_CONTAINER]
        assert container["resources"]["limits"][C.GPU_RESOURCE] == str(gpus)
        env = {e["name"]: e["value"] for e in container["env"]}
        # The device plugin makes exactly the pod's GPUs visible, numbered from 0; a
        # CUDA_VISIBLE_DEVICES from the operator would contradict it.
        assert "CUDA_VISIBLE_DEVICES" not in env
        # The tests' pods (trainer_helpers.pod_env) get the same env, with loopback for the Service.
        local = {**env, "MASTER_ADDR": "127.0.0.1", "PET_MASTER_ADDR": "127.0.0.1", "LTJ_JOB_NAME": "ddp"}
        del local["LTJ_CONFIG"]  # the tests pass --config instead
        assert local == pod_env(nodes, gpus, rank, C.DIST_PORT)

        lay = layout(env, cfg)
        args = torchrun_args(lay, [])
        assert f"--nproc-per-node={gpus}" in args and f"--nnodes={nodes}" in args
        assert lay.standalone == (nodes == 1) and lay.node_rank == (rank if nodes > 1 else 0)
        for local_rank in range(gpus):
            # What torchrun's agent sets for each worker it starts.
            worker = {"TORCHELASTIC_RUN_ID": "job", "WORLD_SIZE": str(nodes * gpus), "LOCAL_WORLD_SIZE": str(gpus),
                      "RANK": str(rank * gpus + local_rank), "LOCAL_RANK": str(local_rank)}
            dist = DistEnv.from_env(worker, cfg)
            p = plan(cfg, dist, cuda_available=True)
            assert (p.accelerator, p.precision, p.num_nodes, p.devices) == ("gpu", "bf16-mixed", nodes, gpus)
            assert (p.strategy, p.sync_batchnorm) == (("ddp", True) if nodes * gpus > 1 else ("single_device", False))
            # Lightning puts local rank k on cuda:k of the visible devices (DDPStrategy.root_device).
            assert dist.local_rank == local_rank < p.devices


@pytest.mark.parametrize(("precision", "lightning"), sorted(GPU_PRECISION.items()))
def test_gpu_plan_reaches_the_trainer(precision: str, lightning: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The Lightning arguments build_trainer passes on a GPU node (a real Trainer for the GPU
    accelerator cannot be built without CUDA; tests/gpu builds it on one)."""
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy

    passed: dict[str, Any] = {}
    monkeypatch.setattr(pl, "Trainer", lambda **kwargs: passed.update(kwargs))
    cfg = config.parse({"model_class": "resnet", "precision": precision, "default_root_dir": str(tmp_path),
                        "ddp_timeout_seconds": 77}, {})
    two_nodes = DistEnv(torchelastic=True, rank=5, local_rank=1, world_size=8, local_world_size=4)
    p = plan(cfg, two_nodes, cuda_available=True)
    build_trainer(cfg, p, EventRecorder(None, cfg.monitor, {}), attempt=0, sigterm_flag=SigtermFlag())
    assert (passed["accelerator"], passed["precision"], passed["sync_batchnorm"]) == ("gpu", lightning, True)
    assert (passed["devices"], passed["num_nodes"]) == (4, 2)
    assert isinstance(passed["strategy"], DDPStrategy) and passed["strategy"]._timeout == timedelta(seconds=77)
    # The started event tells the relay (and the user) what actually ran.
    started = p.started_fields(cfg, attempt=0)
    assert (started["precision"], started["sync_batchnorm"], started["sync_batchnorm_note"]) == (lightning, True, None)


def test_pods_sharing_a_gpu_are_separate_hosts_to_nccl() -> None:
    # Enough GPUs: each pod its own, NCCL left alone (P2P / NVLink between the processes).
    assert [gpu_env(i, pods=2, gpus_per_pod=1, gpu_count=2) for i in range(2)] == [
        {"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert gpu_env(0, pods=1, gpus_per_pod=2, gpu_count=2) == {"CUDA_VISIBLE_DEVICES": "0,1"}
    # One GPU for two pods: both use it, each its own NCCL host (NCCL refuses duplicate GPUs in one host).
    shared = [gpu_env(i, pods=2, gpus_per_pod=1, gpu_count=1) for i in range(2)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in shared] == ["0", "0"]
    assert shared[0]["NCCL_HOSTID"] != shared[1]["NCCL_HOSTID"]
    assert all(e["NCCL_SOCKET_IFNAME"] == "lo" and e["NCCL_IB_DISABLE"] == "1" for e in shared)
