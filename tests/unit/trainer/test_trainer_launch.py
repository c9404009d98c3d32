"""The launcher: env -> torchrun command, exit-code choice, and the real entrypoint's fast paths."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from unit.trainer.trainer_helpers import LTJ_TRAIN, REPO, child_env, write_config

from ltj_trainer import config
from ltj_trainer.config import ConfigError
from ltj_trainer.launch import Layout, exit_code, layout, torchrun_args

pytestmark = pytest.mark.unit

CFG = config.parse({"model_class": "digits_cnn", "devices": 2, "num_nodes": 3}, {})


def operator_env(n: int, g: int, i: int) -> dict[str, str]:
    """What the operator injects into pod i of an n-node job with g GPUs per node (ltj_api.trainer)."""
    return {
        "MASTER_ADDR": "job-node-0.job", "MASTER_PORT": "29500", "WORLD_SIZE": str(n * max(1, g)), "RANK": str(i),
        "PET_NNODES": str(n), "PET_NPROC_PER_NODE": str(max(1, g)), "PET_NODE_RANK": str(i),
        "PET_MASTER_ADDR": "job-node-0.job", "PET_MASTER_PORT": "29500",
        "LTJ_CONFIG": "/etc/ltj/trainer.yaml", "LTJ_JOB_NAME": "job", "LTJ_ATTEMPT": "0",
    }


def test_operator_env_gives_a_static_torchrun_rendezvous() -> None:
    lay = layout(operator_env(4, 8, 2), CFG)
    assert lay == Layout(4, 8, 2, "job-node-0.job", 29500, standalone=False)
    assert torchrun_args(lay, ["--config", "/etc/ltj/trainer.yaml"]) == [
        "--nnodes=4", "--nproc-per-node=8", "--node-rank=2", "--master-addr=job-node-0.job", "--master-port=29500",
        "--rdzv-backend=static", "--module", "ltj_trainer.main", "--config", "/etc/ltj/trainer.yaml",
    ]


def test_cpu_pods_run_one_process() -> None:
    assert layout(operator_env(2, 0, 1), CFG) == Layout(2, 1, 1, "job-node-0.job", 29500, standalone=False)


def test_pytorchjob_style_env_without_pet_variables() -> None:
    env = {"MASTER_ADDR": "m", "MASTER_PORT": "1234", "WORLD_SIZE": "6", "RANK": "1"}
    # processes per node from the config (devices=2) -> 3 nodes; node rank from RANK
    assert layout(env, CFG) == Layout(3, 2, 1, "m", 1234, standalone=False)


def test_what_kubeflows_training_operator_sets_for_a_pytorchjob() -> None:
    # v1.9, Master + 2 Workers, no nprocPerNode: PET_NPROC_PER_NODE=auto, as torchrun takes it.
    env = {"MASTER_ADDR": "job-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "3", "RANK": "2",
           "PET_NNODES": "3", "PET_NPROC_PER_NODE": "auto", "PET_NODE_RANK": "2",
           "PET_MASTER_ADDR": "job-master-0", "PET_MASTER_PORT": "23456"}
    assert layout(env, CFG) == Layout(3, 2, 2, "job-master-0", 23456, standalone=False)


def test_one_node_or_no_cluster_env_is_standalone() -> None:
    assert layout({}, CFG) == Layout(1, 2, 0, None, 29500, standalone=True)
    single = layout(operator_env(1, 4, 0), CFG)
    assert single.standalone and single.nproc_per_node == 4
    assert torchrun_args(single, []) == ["--standalone", "--nnodes=1", "--nproc-per-node=4", "--module", "ltj_trainer.main"]


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({**operator_env(2, 1, 0), "PET_NODE_RANK": "2"}, "PET_NODE_RANK"),
        ({**operator_env(2, 1, 0), "PET_NPROC_PER_NODE": "x"}, "PET_NPROC_PER_NODE"),
        ({**operator_env(2, 1, 0), "PET_MASTER_PORT": "70000"}, "PET_MASTER_PORT"),
        ({"PET_NNODES": "2", "PET_NODE_RANK": "1"}, "MASTER_ADDR"),
        ({"MASTER_ADDR": "m", "WORLD_SIZE": "3", "RANK": "0"}, "WORLD_SIZE"),
    ],
)
def test_bad_cluster_env_names_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        layout(env, CFG)
    assert err.value.field == field


def test_exit_code_prefers_a_workers_own_failure() -> None:
    assert exit_code({0: 143, 1: 1}) == 1  # rank 1 crashed, rank 0 was stopped
    assert exit_code({1: 2, 3: 1}) == 2  # lowest rank's own code
    assert exit_code({0: -9}) == 137  # killed by SIGKILL (OOM)
    assert exit_code({0: 143, 1: -15}) == 143
    assert exit_code({}) == 1


def test_dry_run_prints_the_torchrun_command(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "t.yaml", model_class="digits_cnn", default_root_dir=str(tmp_path))
    out = subprocess.run(
        [LTJ_TRAIN, "--config", str(cfg), "--dry-run"], env=child_env(operator_env(2, 4, 1)),
        capture_output=True, text=True, timeout=60, cwd=str(REPO),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "torchrun --nnodes=2 --nproc-per-node=4 --node-rank=1 --master-addr=job-node-0.job --master-port=29500 "
        f"--rdzv-backend=static --module ltj_trainer.main --config {cfg}"
    )
    # As the operator starts it: no arguments, LTJ_CONFIG in the env (the workers inherit it).
    env = child_env({**operator_env(1, 0, 0), "LTJ_CONFIG": str(cfg)})
    out = subprocess.run([LTJ_TRAIN, "--dry-run"], env=env, capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "torchrun --standalone --nnodes=1 --nproc-per-node=1 --module ltj_trainer.main"


def test_bad_config_exits_2_naming_the_field_before_starting_anything(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "t.yaml", model_class="digits_cnn", precision="fp8", default_root_dir=str(tmp_path / "out"))
    term = tmp_path / "termination-log"
    out = subprocess.run(
        [LTJ_TRAIN, "--config", str(cfg)], env=child_env({"LTJ_TERMINATION_LOG": str(term)}),
        capture_output=True, text=True, timeout=60, cwd=str(REPO),
    )
    assert out.returncode == 2
    assert "config: precision: must be one of fp16, bf16, fp32, got 'fp8'" in out.stderr
    assert "torchrun" not in out.stderr  # failed before building a launch
    assert not (tmp_path / "out").exists()
    assert json.loads(term.read_text())["error"].startswith("config: precision:")


def test_check_validates_the_arguments_and_a_laptop_run_writes_under_the_working_directory(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "t.yaml", model_class="resnet", model_args={"depth": 50}, data_class="parquet",
                       data_args={"path": "imagenet32.parquet", "image_size": 32})
    out = subprocess.run([LTJ_TRAIN, "--config", str(cfg), "--check"], env=child_env(), capture_output=True,
                         text=True, timeout=120, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"config ok: model resnet, data parquet, output {tmp_path / 'ltj-output'}"
    assert list(tmp_path.iterdir()) == [cfg]  # nothing read, nothing written


def test_unregistered_model_exits_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "t.yaml", model_class="gpt5", default_root_dir=str(tmp_path))
    out = subprocess.run([LTJ_TRAIN, "--config", str(cfg), "--dry-run"], env=child_env(), capture_output=True,
                         text=True, timeout=60, cwd=str(REPO))
    assert out.returncode == 2
    assert "config: model_class: 'gpt5' is not a registered model" in out.stderr
