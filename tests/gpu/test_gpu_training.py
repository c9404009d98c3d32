"""The GPU path on a real GPU, through the image's entrypoint (`ltj-train` -> torchrun ->
ltj_trainer.main) with the env the operator gives pods: 16-mixed and bf16-mixed training that
converges, DDP over NCCL with SyncBatchNorm really in the model, gang restart from the last
checkpoint, SIGTERM mid-epoch, and the event log folding into the same status fields as on CPU.

Without a CUDA device every test here skips with one reason; benchmarks/gpu/run.sh runs them on a
GPU machine. On a machine with one GPU the two pods of a DDP job share it (see gpu_env).
"""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from unit.trainer.trainer_helpers import (
    TrainProcess, digits_config, gpu_env, last_checkpoint_saved, load_ckpt, of_type, read_events,
    sigterm_then_resume, start_pods, status_matches_lightning, wait_while_running, write_config,
)

GPU_COUNT = torch.cuda.device_count() if torch.cuda.is_available() else 0

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(GPU_COUNT == 0, reason="no CUDA device: torch.cuda.is_available() is False "
                                               "(benchmarks/gpu/run.sh runs these on a GPU machine)"),
]

RUN_TIMEOUT = 90  # seconds; a run should take ~15 s on an H100 machine, mostly imports
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def probe_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PYTHONPATH on which the trainer finds the `syncbn_probe` model: the metadata an installed
    distribution leaves (what importlib.metadata reads for entry points) plus this directory, before
    whatever PYTHONPATH the run already has."""
    site = tmp_path_factory.mktemp("probe-site")
    info = site / "ltj_gpu_probe-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ltj-gpu-probe\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[ltj.models]\nsyncbn_probe = syncbn_probe:SyncBNProbe\n")
    return os.pathsep.join(filter(None, [str(site), str(HERE), os.environ.get("PYTHONPATH")]))


def _validation_metrics(root: Path) -> list[dict[str, Any]]:
    return [v.get("metrics") for v in of_type(read_events(root), "validation")]


def _probes(root: Path, world: int) -> list[dict[str, Any]]:
    return [torch.load(root / f"probe-rank{r}.pt", weights_only=False) for r in range(world)]


def _assert_batchnorm_synchronised(probes: list[dict[str, Any]]) -> None:
    for probe in probes:
        assert probe["norm_types"] and set(probe["norm_types"]) == {"SyncBatchNorm"}, probe["norm_types"]
        assert probe["backend"] == "nccl"
    # SyncBatchNorm normalises with the global batch's statistics, so after a training step every
    # rank holds the same running mean and variance; plain BatchNorm would have updated them from
    # its own shard of the batch (seen on CPU: the ranks' statistics differ there).
    first = probes[0]["buffers"]
    variances = [v for k, v in first.items() if k.endswith("running_var")]
    assert variances and not all(torch.equal(v, torch.ones_like(v)) for v in variances)  # really trained
    for other in probes[1:]:
        assert other["buffers"].keys() == first.keys()
        for name, value in first.items():
            torch.testing.assert_close(other["buffers"][name], value, msg=f"{name} differs between ranks")


# Each precision on one of the two image models (the DDP and SIGTERM tests train the digits CNN in
# bf16 and fp16 too): the whole file has to fit the GPU machine's one call (benchmarks/gpu/run.sh).
@pytest.mark.parametrize(("precision", "lightning", "model"), [
    ("fp16", "16-mixed", "digits_cnn"), ("bf16", "bf16-mixed", "resnet"),
])
def test_mixed_precision_training_converges(precision: str, lightning: str, model: str, tmp_path: Path) -> None:
    if model == "resnet":
        settings = digits_config(tmp_path, model_class="resnet", model_args={"widths": [16, 32], "blocks": [1, 1]},
                                 data_class="synthetic_images",
                                 data_args={"num_samples": 2048, "image_size": 16, "num_classes": 10}, max_epochs=4)
    else:  # lr 3e-3: ~0.97 val_acc in 8 epochs in 32-true on CPU
        settings = digits_config(tmp_path, model_args={"lr": 3e-3}, max_epochs=8)
    cfg = write_config(tmp_path / "trainer.yaml", **{**settings, "precision": precision, "accelerator": "gpu",
                                                     "early_stopping": False})
    proc = TrainProcess(cfg, tmp_path / "log.txt", env=gpu_env(0, pods=1, gpus_per_pod=1, gpu_count=GPU_COUNT))
    assert proc.wait(RUN_TIMEOUT) == 0, proc.tail()

    root = tmp_path / "output"
    (started,) = of_type(read_events(root), "started")
    assert (started.get("accelerator"), started.get("precision"), started.get("strategy")) == (
        "gpu", lightning, "single_device")
    metrics = _validation_metrics(root)
    # Untrained, a 10-class cross-entropy is ln(10) = 2.30 and accuracy 0.1.
    assert metrics[-1]["val_loss"] < min(metrics[0]["val_loss"], math.log(10) / 2), metrics
    assert metrics[-1]["val_acc"] >= 0.85, metrics
    status_matches_lightning(root, world_size=1, attempt=0)


@pytest.mark.skipif(0 < GPU_COUNT < 2, reason=f"needs 2 CUDA devices for one pod with nvidia.com/gpu: 2; "
                                             f"this machine has {GPU_COUNT}")
def test_one_pod_with_two_gpus_runs_a_process_per_gpu(probe_path: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "trainer.yaml", **digits_config(
        tmp_path, model_class="syncbn_probe", precision="bf16", accelerator="gpu", devices=2, max_epochs=2,
        early_stopping=False, ddp_timeout_seconds=60))
    gpus = gpu_env(0, pods=1, gpus_per_pod=2, gpu_count=GPU_COUNT)
    (pod,) = start_pods(cfg, tmp_path, nodes=1, procs_per_node=2, env=lambda i: {**gpus, "PYTHONPATH": probe_path})
    assert pod.wait(RUN_TIMEOUT) == 0, pod.tail()
    root = tmp_path / "output"
    (started,) = of_type(read_events(root), "started")
    assert (started.get("world_size"), started.get("num_nodes"), started.get("devices")) == (2, 1, 2)
    probes = _probes(root, 2)
    for rank, probe in enumerate(probes):
        # No CUDA_VISIBLE_DEVICES from the operator: local rank k uses the pod's k-th GPU.
        assert (probe["local_rank"], probe["device"]) == (rank, f"cuda:{rank}")
    _assert_batchnorm_synchronised(probes)
    status_matches_lightning(root, world_size=2, attempt=0)


def test_sigterm_mid_epoch_saves_a_resumable_checkpoint(tmp_path: Path) -> None:
    from ltj_trainer.data import DigitsDataModule

    cfg = write_config(tmp_path / "trainer.yaml", **digits_config(
        tmp_path, batch_size=8, max_epochs=3, early_stopping=False, precision="fp16", accelerator="gpu"))
    run = sigterm_then_resume(cfg, tmp_path, RUN_TIMEOUT,
                              env=gpu_env(0, pods=1, gpus_per_pod=1, gpu_count=GPU_COUNT))
    steps_per_epoch = math.ceil(len(DigitsDataModule().splits.train[1]) / 8)
    assert run.saved.get("step") % steps_per_epoch != 0, "saved at an epoch boundary, not mid-epoch"
    # 16-mixed's GradScaler state is in the checkpoint, so the resumed run keeps its loss scale.
    assert run.state["MixedPrecision"]["scale"] > 0
    assert run.resumed[0].get("precision") == "16-mixed"
    status_matches_lightning(tmp_path / "output", world_size=1, attempt=1)


def test_two_pods_ddp_over_nccl_sync_batchnorm_and_gang_restart(probe_path: str, tmp_path: Path) -> None:
    """Two 1-GPU pods (sharing the GPU on a one-GPU machine) train with DDP over NCCL; the gang is
    SIGKILLed after epoch 1's checkpoint and restarted as attempt 1, which resumes from last.ckpt."""
    cfg = write_config(tmp_path / "trainer.yaml", **digits_config(
        tmp_path, model_class="syncbn_probe", model_args={"lr": 3e-3}, precision="bf16", accelerator="gpu",
        num_nodes=2, batch_size=8, max_epochs=5, early_stopping=False, ddp_timeout_seconds=60))
    root = tmp_path / "output"
    last = root / "checkpoints" / "last.ckpt"

    def pod(i: int) -> dict[str, str]:
        return {**gpu_env(i, pods=2, gpus_per_pod=1, gpu_count=GPU_COUNT), "PYTHONPATH": probe_path}

    first = start_pods(cfg, tmp_path, env=pod)
    wait_while_running(first[0], last_checkpoint_saved(root, min_epoch=1), RUN_TIMEOUT, "the epoch-1 checkpoint")
    for p in first:  # node loss: the whole gang dies at once
        p.kill_tree(signal.SIGKILL)
    for p in first:
        p.wait(30)
    before = read_events(root)
    assert not of_type(before, "fit_end"), "the run finished before it was killed"
    (started,) = of_type(before, "started")
    assert (started.get("world_size"), started.get("num_nodes"), started.get("devices")) == (2, 2, 1)
    assert (started.get("accelerator"), started.get("strategy"), started.get("precision")) == ("gpu", "ddp", "bf16-mixed")
    assert started.get("sync_batchnorm") is True and started.get("sync_batchnorm_note") is None
    killed_epoch = load_ckpt(last)["epoch"]

    second = start_pods(cfg, tmp_path, env=lambda i: {**pod(i), "LTJ_ATTEMPT": "1"}, prefix="restart")
    codes = [p.wait(RUN_TIMEOUT) for p in second]
    assert codes == [0, 0], "\n\n".join(p.tail() for p in second)
    after = read_events(root)[len(before):]
    assert after[0].type == "started" and after[0].get("resumed_from") == str(last)
    assert [v.get("epoch") for v in of_type(after, "validation")] == list(range(killed_epoch + 1, 5))
    status_matches_lightning(root, world_size=2, attempt=1)

    probes = _probes(root, 2)
    for rank, probe in enumerate(probes):
        assert (probe["global_rank"], probe["local_rank"], probe["world_size"]) == (rank, 0, 2)
        # Each pod sees the GPU it was given as cuda:0.
        assert probe["device"] == "cuda:0" and probe["cuda_visible_devices"] == gpu_env(
            rank, pods=2, gpus_per_pod=1, gpu_count=GPU_COUNT)["CUDA_VISIBLE_DEVICES"]
        assert probe["autocast_dtype"] == "torch.bfloat16"
    _assert_batchnorm_synchronised(probes)
