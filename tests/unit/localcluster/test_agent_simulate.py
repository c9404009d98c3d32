"""The node agent's --simulate mode: plans from annotations, the statuses it reports, its IPs."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from ltj_localcluster.agent import parse_args
from ltj_localcluster.podstatus import build_status
from ltj_localcluster.simulate import (EXIT_CODE_ANNOTATION, RUN_SECONDS_ANNOTATION, SimIpPool, SimPlan, plan_of,
                                       simulated_view)

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0


def pod(annotations: dict[str, str] | None = None, restart_policy: str = "Never", sidecar: bool = True) -> dict:
    init = [{"name": "setup", "image": "busybox"}]
    if sidecar:
        init.append({"name": "relay", "image": "ltj-operator:dev", "restartPolicy": "Always"})
    return {
        "metadata": {"name": "j-node-0", "namespace": "ns", "uid": "u-1", "annotations": annotations or {}},
        "spec": {"restartPolicy": restart_policy, "nodeName": "ltj-node-0", "initContainers": init,
                 "containers": [{"name": "trainer", "image": "ltj-trainer:dev"}]},
    }


def state(status: dict, name: str) -> dict:
    for s in [*status.get("initContainerStatuses", []), *status["containerStatuses"]]:
        if s["name"] == name:
            return s["state"]
    raise KeyError(name)


def test_plan_from_annotations() -> None:
    assert plan_of(pod()) == SimPlan(None, 0.0)
    assert plan_of(pod({EXIT_CODE_ANNOTATION: "0"})) == SimPlan(0, 0.0)
    assert plan_of(pod({EXIT_CODE_ANNOTATION: "3", RUN_SECONDS_ANNOTATION: "2.5"})) == SimPlan(3, 2.5)
    # Malformed values never stop a pod: it keeps running, or ends at once.
    assert plan_of(pod({EXIT_CODE_ANNOTATION: "x"})) == SimPlan(None, 0.0)
    assert plan_of(pod({EXIT_CODE_ANNOTATION: "1", RUN_SECONDS_ANNOTATION: "-4"})) == SimPlan(1, 0.0)
    assert plan_of(pod({EXIT_CODE_ANNOTATION: "1", RUN_SECONDS_ANNOTATION: "nan"})) == SimPlan(1, 0.0)


def test_running_status_has_ip_and_running_containers() -> None:
    p = pod()
    status = build_status(p, simulated_view(p, "100.64.0.7", "127.0.0.1", T0), T0)
    assert status["phase"] == "Running"
    assert status["podIP"] == "100.64.0.7" and status["podIPs"] == [{"ip": "100.64.0.7"}]
    assert "running" in state(status, "trainer") and "running" in state(status, "relay")
    assert state(status, "setup")["terminated"]["exitCode"] == 0
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready == {"PodReadyToStartContainers": "True", "Initialized": "True", "Ready": "True",
                     "ContainersReady": "True"}


@pytest.mark.parametrize(("code", "phase", "policy"), [(0, "Succeeded", "Never"), (2, "Failed", "Never"),
                                                       (0, "Succeeded", "Always"), (137, "Failed", "OnFailure")])
def test_finished_pod_is_terminal_whatever_its_restart_policy(code: int, phase: str, policy: str) -> None:
    p = pod(restart_policy=policy)
    status = build_status(p, simulated_view(p, "100.64.0.7", "127.0.0.1", T0, T0 + 1, code), T0 + 1)
    assert status["phase"] == phase
    assert state(status, "trainer")["terminated"]["exitCode"] == code
    assert state(status, "relay")["terminated"]["exitCode"] == 0  # the sidecar stops with the pod


def test_pod_without_init_containers() -> None:
    p = pod(sidecar=False)
    p["spec"].pop("initContainers")
    status = build_status(p, simulated_view(p, "100.64.0.9", "127.0.0.1", T0), T0)
    assert status["phase"] == "Running" and "initContainerStatuses" not in status


def test_ip_pool_gives_distinct_addresses_and_reuses_released_ones() -> None:
    pool = SimIpPool(ipaddress.IPv4Network("100.64.0.0/29"))  # 6 usable addresses
    ips = [pool.take() for _ in range(6)]
    assert len(set(ips)) == 6 and all(ipaddress.IPv4Address(ip) in pool.network for ip in ips)
    with pytest.raises(RuntimeError, match="no free simulated pod IP"):
        pool.take()
    pool.release(ips[2])
    assert pool.take() == ips[2]
    pool.release(ips[4])
    assert pool.take(ips[4]) == ips[4]  # an adopted pod keeps its address when it is free


def test_adopted_address_outside_the_pool_or_taken_is_replaced() -> None:
    pool = SimIpPool(ipaddress.IPv4Network("100.64.0.0/28"))
    first = pool.take("100.64.0.5")
    assert first == "100.64.0.5"
    assert pool.take("100.64.0.5") != "100.64.0.5"
    assert pool.take("10.0.0.1").startswith("100.64.0.")


def test_cli_flag(tmp_path: Path) -> None:
    info = tmp_path / "cluster.json"
    info.write_text('{"kubeconfig": "k", "server": "https://127.0.0.1:1", "api_host": "127.0.0.1", "api_port": 1,'
                    ' "bridge": "b", "bridge_ip": "10.250.1.1", "subnet": "10.250.1.0/24", "pki_dir": "p"}')
    base = ["--cluster-info", str(info), "--state-dir", str(tmp_path / "s")]
    assert parse_args(base)[0].simulate is False
    assert parse_args([*base, "--simulate"])[0].simulate is True
