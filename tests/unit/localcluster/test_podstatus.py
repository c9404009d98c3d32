from __future__ import annotations

import pytest

from ltj_localcluster.podstatus import (
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    ContainerView,
    PodView,
    Running,
    Terminated,
    Waiting,
    build_status,
    compute_phase,
)

pytestmark = pytest.mark.unit

T0 = 1_700_000_000.0


def spec(policy: str = "Never", inits: tuple[str, ...] = (), sidecars: tuple[str, ...] = (), main: tuple[str, ...] = ("main",)) -> dict:
    init_list = [{"name": n} for n in inits] + [{"name": n, "restartPolicy": "Always"} for n in sidecars]
    return {"restartPolicy": policy, "initContainers": init_list, "containers": [{"name": n} for n in main]}


def running(name: str, started: bool = True, ready: bool = True) -> ContainerView:
    return ContainerView(name, "img", Running(T0), started=started, ready=ready)


def exited(name: str, code: int, last: Terminated | None = None) -> ContainerView:
    return ContainerView(name, "img", Terminated(code, "Completed" if code == 0 else "Error", T0, T0 + 1), last_state=last, ready=code == 0)


def waiting(name: str, reason: str = "PodInitializing", last: Terminated | None = None) -> ContainerView:
    return ContainerView(name, "img", Waiting(reason), last_state=last)


@pytest.mark.parametrize(
    ("s", "inits", "regular", "terminal", "initialized", "want"),
    [
        # nothing started yet
        (spec(), (), (waiting("main", "ContainerCreating"),), False, False, PENDING),
        (spec(), (), (running("main"),), False, True, RUNNING),
        (spec(), (), (exited("main", 0),), False, True, SUCCEEDED),
        (spec(), (), (exited("main", 1),), False, True, FAILED),
        # OnFailure: a failed container restarts, the pod keeps running
        (spec("OnFailure"), (), (waiting("main", "CrashLoopBackOff", Terminated(1, "Error", T0, T0)),), False, True, RUNNING),
        (spec("OnFailure"), (), (exited("main", 0),), False, True, SUCCEEDED),
        # Always: all exited -> still Running (restarting) unless the pod is terminal
        (spec("Always"), (), (exited("main", 0),), False, True, RUNNING),
        (spec("Always"), (), (exited("main", 143),), True, True, FAILED),
        (spec("Always"), (), (exited("main", 0),), True, True, SUCCEEDED),
        # init containers
        (spec(inits=("i",)), (running("i", ready=False),), (waiting("main"),), False, False, PENDING),
        (spec(inits=("i",)), (exited("i", 1),), (waiting("main"),), False, False, FAILED),
        (spec("OnFailure", inits=("i",)), (waiting("i", "CrashLoopBackOff", Terminated(1, "Error", T0, T0)),), (waiting("main"),), False, False, PENDING),
        (spec(inits=("i",)), (exited("i", 0),), (running("main"),), False, True, RUNNING),
        # native sidecars: a running sidecar keeps the pod Running after main finished
        (spec(sidecars=("s",)), (running("s"),), (exited("main", 0),), False, True, RUNNING),
        (spec(sidecars=("s",)), (exited("s", 0),), (exited("main", 0),), True, True, SUCCEEDED),
        (spec(sidecars=("s",)), (exited("s", 137),), (exited("main", 0),), True, True, SUCCEEDED),
        (spec(sidecars=("s",)), (running("s", started=False),), (waiting("main"),), False, False, PENDING),
        (spec(sidecars=("s",)), (waiting("s", "ContainerCreating"),), (waiting("main"),), False, False, PENDING),
    ],
)
def test_phase(s: dict, inits: tuple, regular: tuple, terminal: bool, initialized: bool, want: str) -> None:
    assert compute_phase(s, inits, regular, terminal, initialized) == want


def pod(s: dict, conditions: list | None = None, phase: str | None = None) -> dict:
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": s, "status": {"conditions": conditions or [], **({"phase": phase} if phase else {})}}


def conds(status: dict) -> dict:
    return {c["type"]: c for c in status["conditions"]}


def test_running_pod_status() -> None:
    s = spec(inits=("i",), sidecars=("side",))
    view = PodView(
        sandbox_ready=True,
        host_ip="127.0.0.1",
        pod_ip="10.250.1.2",
        start_time=T0,
        init_statuses=(exited("i", 0), running("side")),
        statuses=(running("main"),),
        has_initialized=True,
    )
    st = build_status(pod(s), view, T0 + 5)
    assert st["phase"] == RUNNING
    c = conds(st)
    assert c["PodReadyToStartContainers"]["status"] == "True"
    assert c["Initialized"]["status"] == "True"
    assert c["ContainersReady"]["status"] == "True" and c["Ready"]["status"] == "True"
    assert st["podIP"] == "10.250.1.2" and st["podIPs"] == [{"ip": "10.250.1.2"}]
    assert st["hostIP"] == "127.0.0.1"
    assert [x["name"] for x in st["initContainerStatuses"]] == ["i", "side"]
    assert st["initContainerStatuses"][0]["ready"] is True
    assert st["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert st["containerStatuses"][0]["state"] == {"running": {"startedAt": "2023-11-14T22:13:20Z"}}


def test_pending_pod_explains_unready_and_uninitialized_containers() -> None:
    s = spec(inits=("i",))
    view = PodView(sandbox_ready=True, host_ip="127.0.0.1", init_statuses=(running("i", ready=False),), statuses=(waiting("main"),))
    c = conds(build_status(pod(s), view, T0))
    assert c["Initialized"] == {
        "type": "Initialized",
        "status": "False",
        "reason": "ContainersNotInitialized",
        "message": "containers with incomplete status: [i]",
        "lastProbeTime": None,
        "lastTransitionTime": "2023-11-14T22:13:20Z",
    }
    assert c["ContainersReady"]["message"] == "containers with unready status: [main]"
    assert c["Ready"]["reason"] == "ContainersNotReady"


def test_succeeded_pod_conditions_and_transition_times() -> None:
    s = spec()
    previous = [{"type": "Initialized", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]
    view = PodView(sandbox_ready=False, host_ip="127.0.0.1", statuses=(exited("main", 0),), terminal=True, has_initialized=True)
    st = build_status(pod(s, previous), view, T0)
    c = conds(st)
    assert st["phase"] == SUCCEEDED
    assert c["Ready"]["reason"] == "PodCompleted" and c["ContainersReady"]["status"] == "False"
    assert c["Initialized"]["lastTransitionTime"] == "2020-01-01T00:00:00Z"  # unchanged status keeps its time
    assert c["PodReadyToStartContainers"]["status"] == "False"


def test_terminal_phase_is_sticky_and_override_wins() -> None:
    view = PodView(sandbox_ready=True, host_ip="127.0.0.1", statuses=(running("main"),))
    assert build_status(pod(spec(), phase=FAILED), view, T0)["phase"] == FAILED
    over = PodView(sandbox_ready=True, host_ip="127.0.0.1", statuses=(exited("main", 0),), phase_override=FAILED, reason="DeadlineExceeded")
    st = build_status(pod(spec()), over, T0)
    assert st["phase"] == FAILED and st["reason"] == "DeadlineExceeded"


def test_terminated_state_fields() -> None:
    term = Terminated(137, "Error", T0, T0 + 2, message="bye", signal=9, container_id="ltj://x")
    view = PodView(sandbox_ready=True, host_ip="127.0.0.1", statuses=(ContainerView("main", "img", term, last_state=term, restart_count=2),))
    cs = build_status(pod(spec()), view, T0)["containerStatuses"][0]
    assert cs["state"]["terminated"] == {
        "exitCode": 137,
        "reason": "Error",
        "startedAt": "2023-11-14T22:13:20Z",
        "finishedAt": "2023-11-14T22:13:22Z",
        "message": "bye",
        "signal": 9,
        "containerID": "ltj://x",
    }
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    assert cs["restartCount"] == 2


def test_readiness_gates_hold_ready_back() -> None:
    s = {**spec(), "readinessGates": [{"conditionType": "example.com/ok"}]}
    view = PodView(sandbox_ready=True, host_ip="127.0.0.1", statuses=(running("main"),), has_initialized=True)
    assert conds(build_status(pod(s), view, T0))["Ready"]["reason"] == "ReadinessGatesNotReady"
    ok = pod(s, [{"type": "example.com/ok", "status": "True"}])
    assert conds(build_status(ok, view, T0))["Ready"]["status"] == "True"
