"""Every job users are shown passes the trainer's own config check as the operator renders it.

The jobs: each YAML under crds/samples and each LightningTrainingJob YAML block in README.md and
docs/*.md (and the docs' flat trainer configs, for ``ltj-train --config``). Each is parsed as the operator admits it, rendered into rank 0's pod (the trainer config
annotation plus the container's env, whose LTJ_* variables override it), and checked as
``ltj-train --check`` does: the settings, the registered names, and model_args / data_args naming
arguments of the model's and datamodule's constructors. No data is read and nothing trains.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ltj_api.trainer import ENV_JOB_NAME
from ltj_operator import constants as C
from ltj_operator.config import OperatorConfig
from ltj_operator.render import render_pod
from ltj_operator.spec import parse_job
from ltj_trainer import config, registry
from ltj_trainer.config import ConfigError
from ltj_trainer.main import check_args
from unit.trainer.trainer_helpers import REPO

pytestmark = pytest.mark.unit

OPERATOR = OperatorConfig(default_trainer_image="ltj-trainer:dev", operator_image="ltj-operator:dev")
_YAML_BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def doc_yaml() -> list[tuple[str, Any]]:
    """Every YAML document in README.md's and docs/*.md's yaml blocks, named by where it is."""
    docs: list[tuple[str, Any]] = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for n, block in enumerate(_YAML_BLOCK.findall(path.read_text())):
            docs += [(f"{path.relative_to(REPO)} yaml block {n}", doc) for doc in yaml.safe_load_all(block)]
    return docs


def documented_jobs() -> list[tuple[str, dict[str, Any]]]:
    jobs = [(str(path.relative_to(REPO)), doc) for path in sorted((REPO / "crds" / "samples").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    return jobs + [(w, doc) for w, doc in doc_yaml() if isinstance(doc, dict) and doc.get("kind") == C.KIND]


JOBS = documented_jobs()
# Files for `ltj-train --config`: the trainer's flat settings.
TRAINER_CONFIGS = [(w, doc) for w, doc in doc_yaml() if isinstance(doc, dict) and "model_class" in doc]


def rendered_config(body: dict[str, Any]) -> config.TrainerConfig:
    """The trainer config rank 0 of this job reads, validated as the launcher validates it."""
    # As the API server stores it: with a uid (each job's own output directory is named by it).
    stored = {**body, "metadata": {**body["metadata"], "uid": "2f1c7a52-0d3e-4c7b-9a51-6f3b0e1d2c4a"}}
    pod = render_pod(parse_job(stored), 0, 0, OPERATOR)
    (trainer,) = [c for c in pod["spec"]["containers"] if c["name"] == C.TRAINER_CONTAINER]
    env = {e["name"]: e["value"] for e in trainer["env"] if "value" in e}
    assert ENV_JOB_NAME in env  # how the trainer tells a pod from a laptop (its default output)
    raw = yaml.safe_load(pod["metadata"]["annotations"][C.ANNOTATION_TRAINER_CONFIG])
    return config.parse(raw, env, known_models=registry.model_names(), known_data=registry.data_names())


def test_the_samples_and_the_docs_jobs_are_all_found() -> None:
    where = [w for w, _ in JOBS]
    assert {"crds/samples/cpu-digits-2node.yaml", "crds/samples/gpu-resnet-4node.yaml"} <= set(where)
    assert any(w.startswith("docs/trainer.md") for w in where)  # the plugin example
    assert any(w.startswith("docs/trainer.md") for w, _ in TRAINER_CONFIGS)  # the plugin on a laptop


@pytest.mark.parametrize("body", [b for _, b in JOBS], ids=[w for w, _ in JOBS])
def test_documented_job_passes_the_trainers_config_check(body: dict[str, Any], on_path: None) -> None:
    # on_path: the docs' plugin example names the example plugin's model and datamodule.
    check_args(rendered_config(body))


@pytest.mark.parametrize("raw", [c for _, c in TRAINER_CONFIGS], ids=[w for w, _ in TRAINER_CONFIGS])
def test_documented_trainer_config_passes_the_check(raw: dict[str, Any], on_path: None) -> None:
    check_args(config.parse(raw, {}, known_models=registry.model_names(), known_data=registry.data_names()))


def test_the_check_catches_what_the_trainer_would_reject_at_start() -> None:
    body = yaml.safe_load((REPO / "crds" / "samples" / "gpu-resnet-4node.yaml").read_text())
    body["spec"]["model"]["args"]["layers"] = 50  # torchvision's name is depth
    with pytest.raises(ConfigError, match=r"^config: model_args.layers: not an argument of 'resnet' "
                                          r"\(ResNet takes: .*depth"):
        check_args(rendered_config(body))
    body = yaml.safe_load((REPO / "crds" / "samples" / "cpu-digits-2node.yaml").read_text())
    body["spec"]["data"]["args"] = {"image_size": 8}
    with pytest.raises(ConfigError, match=r"^config: data_args.image_size: not an argument of 'digits'"):
        check_args(rendered_config(body))


def test_the_gpu_sample_builds_the_resnet_and_images_it_names(tmp_path: Path) -> None:
    """What the check cannot see (values): the sample's arguments build a ResNet-50 and 3x32x32 images."""
    import numpy as np
    import pyarrow as pa
    from pyarrow import parquet

    from ltj_trainer.main import build_modules

    body = yaml.safe_load((REPO / "crds" / "samples" / "gpu-resnet-4node.yaml").read_text())
    rng = np.random.default_rng(0)
    columns = {f"p{i}": rng.random(40, dtype=np.float32) for i in range(3 * 32 * 32)}
    parquet.write_table(pa.table({**columns, "label": rng.integers(0, 1000, 40)}), tmp_path / "imagenet32.parquet")
    body["spec"]["data"]["args"]["path"] = str(tmp_path / "imagenet32.parquet")
    cfg = rendered_config(body)
    dm, model = build_modules(config.parse({**cfg.to_dict(), "default_root_dir": str(tmp_path)}, {}))
    assert dm.data_spec().input_shape == (3, 32, 32)
    assert model.hparams.depth == 50 and sum(p.numel() for p in model.parameters()) > 23_000_000
