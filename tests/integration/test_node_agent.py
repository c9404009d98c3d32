"""The local node agent against the real control plane: pods run as processes, like a kubelet runs them."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetest import Kube, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PY = "python3"
# Containers share the host's filesystem, and missing mountpoints are created on it: the tests keep
# theirs under one directory (paths below are spelled out so the scripts read plainly).


def apply(kube: Kube, ns: str, *docs: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(docs))


def pod_manifest(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "agent-test"}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": containers, **spec},
    }


def get_pod(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return kube.get("pod", name, "-n", ns)


def wait_phase(kube: Kube, ns: str, name: str, phases: tuple[str, ...], timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pod = get_pod(kube, ns, name)
        return pod if pod.get("status", {}).get("phase") in phases else None

    try:
        return wait_for(check, timeout, what=f"pod {name} in {phases}")
    except AssertionError:
        pod = kube.kubectl("get", "pod", name, "-n", ns, "-o", "yaml", check=False).stdout
        logs = kube.kubectl("logs", name, "-n", ns, "--all-containers", check=False)
        raise AssertionError(f"pod {name} not in {phases}:\n{pod}\nlogs:\n{logs.stdout}{logs.stderr}") from None


def logs(kube: Kube, ns: str, name: str, *args: str) -> str:
    return kube.kubectl("logs", name, "-n", ns, *args).stdout


def condition(pod: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in pod["status"]["conditions"] if c["type"] == ctype)


def pid_file(kube: Kube, ns: str, pod: str, container: str) -> Path:
    return kube.agent_state / "pods" / ns / pod / f"{container}.pid"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_pod_with_env_downward_api_and_volumes_succeeds(kube: Kube, namespace: str) -> None:
    script = r"""
import os, pathlib
for k in ("GREETING", "PASSWORD", "POD", "NS", "UID", "NODE", "SA", "IP", "HOSTIP", "TEAM", "MEM_MI", "DERIVED", "CM_extra"):
    print(f"{k}={os.environ.get(k)}")
print("cmfile=" + pathlib.Path("/tmp/ltj-agent-test/app/config.txt").read_text())
print("secretfile=" + pathlib.Path("/tmp/ltj-agent-test/secret/password").read_text())
print("labels=" + pathlib.Path("/tmp/ltj-agent-test/podinfo/labels").read_text().replace(chr(10), ","))
print("init=" + pathlib.Path("/tmp/ltj-agent-test/data/from-init.txt").read_text().strip())
pathlib.Path("/tmp/ltj-agent-test/data/from-main.txt").write_text("main was here")
pathlib.Path("/tmp/ltj-agent-test/scratch/x").write_text("tmp")
print("scratch=" + pathlib.Path("/tmp/ltj-agent-test/scratch/x").read_text())
print("shm=" + [l for l in open("/proc/self/mounts") if " /tmp/ltj-agent-test/scratch " in l][0].split()[2])
print("args=" + "|".join(os.sys.argv[1:]))
pathlib.Path("/tmp/ltj-agent-test/nested/f").write_text("via subPath")
print("single=" + pathlib.Path("/tmp/ltj-agent-test/single.txt").read_text())
try:
    pathlib.Path("/tmp/ltj-agent-test/ro/x").write_text("no")
except OSError as e:
    print("ro-errno=" + str(e.errno))
"""
    apply(
        kube,
        namespace,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}, "data": {"greeting": "hello", "config.txt": "cfg-value", "extra": "e"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}},
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "ltj-local", "resources": {"requests": {"storage": "1Gi"}}},
        },
        pod_manifest(
            "env",
            [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": [PY, "-c", script],
                    "args": ["$(POD)-arg", "$$(POD)"],
                    "resources": {"limits": {"memory": "512Mi"}},
                    "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "CM_"}],
                    "env": [
                        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "greeting"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "HOSTIP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                        {"name": "DERIVED", "value": "$(GREETING)-$(POD)"},
                    ],
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/tmp/ltj-agent-test/app"},
                        {"name": "secret", "mountPath": "/tmp/ltj-agent-test/secret"},
                        {"name": "podinfo", "mountPath": "/tmp/ltj-agent-test/podinfo"},
                        {"name": "data", "mountPath": "/tmp/ltj-agent-test/data"},
                        {"name": "scratch", "mountPath": "/tmp/ltj-agent-test/scratch"},
                        {"name": "data", "mountPath": "/tmp/ltj-agent-test/nested", "subPath": "nested/dir"},
                        {"name": "data", "mountPath": "/tmp/ltj-agent-test/ro", "readOnly": True},
                        {"name": "cfg", "mountPath": "/tmp/ltj-agent-test/single.txt", "subPath": "config.txt"},
                    ],
                }
            ],
            initContainers=[
                {
                    "name": "prepare",
                    "image": "busybox",
                    "command": ["sh", "-c", "echo prepared > /tmp/ltj-agent-test/data/from-init.txt"],
                    "volumeMounts": [{"name": "data", "mountPath": "/tmp/ltj-agent-test/data"}],
                }
            ],
            volumes=[
                {"name": "cfg", "configMap": {"name": "app", "items": [{"key": "config.txt", "path": "config.txt"}]}},
                {"name": "secret", "secret": {"secretName": "creds"}},
                {"name": "podinfo", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "emptyDir": {"medium": "Memory"}},
            ],
        ),
    )
    pod = wait_phase(kube, namespace, "env", ("Succeeded", "Failed"))
    out = logs(kube, namespace, "env")
    assert pod["status"]["phase"] == "Succeeded", out
    uid = pod["metadata"]["uid"]
    ip = pod["status"]["podIP"]
    expected = [
        "GREETING=hello",
        "PASSWORD=s3cret",
        "POD=env",
        f"NS={namespace}",
        f"UID={uid}",
        f"NODE={pod['spec']['nodeName']}",
        "SA=default",
        f"IP={ip}",
        "HOSTIP=127.0.0.1",
        "TEAM=agent-test",
        "MEM_MI=512",
        "DERIVED=hello-env",
        "CM_extra=e",
        "cmfile=cfg-value",
        "secretfile=s3cret",
        'labels=app="agent-test"',
        "init=prepared",
        "scratch=tmp",
        "shm=tmpfs",
        "args=env-arg|$(POD)",
        "single=cfg-value",
        "ro-errno=30",  # EROFS
    ]
    for line in expected:
        assert line in out.splitlines(), f"{line!r} missing from:\n{out}"
    cluster = json.loads((kube.run_dir / "cluster.json").read_text())
    assert ip.startswith(cluster["subnet"].rsplit(".", 1)[0] + ".") and ip != cluster["bridge_ip"]
    assert pod["status"]["hostIP"] == "127.0.0.1"
    assert condition(pod, "Initialized")["status"] == "True"
    assert condition(pod, "Ready")["reason"] == "PodCompleted"
    assert condition(pod, "PodScheduled")["status"] == "True"  # the scheduler's condition survives our patches
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed" and init["ready"] is True
    main = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert main["exitCode"] == 0 and main["reason"] == "Completed"
    # The claim is a directory on the host (the agent's provisioner), shared with the pods.
    pvc = kube.get("pvc", "data", "-n", namespace)
    assert pvc["status"]["phase"] == "Bound"
    pv = kube.get("pv", pvc["spec"]["volumeName"])
    assert pv["spec"]["accessModes"] == ["ReadWriteMany"] and pv["spec"]["capacity"]["storage"] == "1Gi"
    host_dir = Path(pv["spec"]["hostPath"]["path"])
    assert (host_dir / "from-main.txt").read_text() == "main was here"
    assert (host_dir / "nested" / "dir" / "f").read_text() == "via subPath"
    assert not (host_dir / "x").exists()
    # Deleting the claim releases the volume; the provisioner removes the directory and the PV.
    kube.kubectl("delete", "pod", "env", "-n", namespace, "--wait=true")
    kube.kubectl("delete", "pvc", "data", "-n", namespace, "--wait=true")
    wait_for(lambda: not host_dir.exists(), 60, what="the released volume's directory to be deleted")
    wait_for(lambda: kube.kubectl("get", "pv", pv["metadata"]["name"], check=False).returncode != 0, 60, what="PV deleted")


def test_pods_resolve_each_other_and_talk_over_tcp(kube: Kube, namespace: str) -> None:
    server = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 29500)); s.listen()
print("listening", socket.gethostname(), flush=True)
c, addr = s.accept()
print("got", c.recv(100).decode(), "from", addr[0], flush=True)
c.sendall(b"pong from " + socket.gethostname().encode())
"""
    client = r"""
import socket, time, sys
peer = sys.argv[1]
for _ in range(200):
    try:
        s = socket.create_connection((peer, 29500), timeout=2); break
    except OSError as e:
        time.sleep(0.2)
else:
    sys.exit("could not connect to " + peer)
s.sendall(b"ping"); print("reply:", s.recv(100).decode(), flush=True)
"""
    # Each pair uses the same port: pods have their own network namespaces, so nothing clashes.
    docs = []
    for i in range(2):
        docs.append(pod_manifest(f"server-{i}", [{"name": "main", "image": "busybox", "command": [PY, "-c", server]}],
                                 hostname=f"srv-{i}", subdomain="grp"))
        peer = [f"srv-{i}.grp", f"srv-{i}.grp.{namespace}.svc.cluster.local"][i]
        docs.append(pod_manifest(f"client-{i}", [{"name": "main", "image": "busybox", "command": [PY, "-c", client, peer]}],
                                 hostname=f"cli-{i}", subdomain="grp"))
    apply(kube, namespace, *docs)
    for i in range(2):
        wait_phase(kube, namespace, f"client-{i}", ("Succeeded",))
        srv = wait_phase(kube, namespace, f"server-{i}", ("Succeeded",))
        cli = get_pod(kube, namespace, f"client-{i}")
        assert logs(kube, namespace, f"client-{i}").strip() == f"reply: pong from srv-{i}"
        assert f"got ping from {cli['status']['podIP']}" in logs(kube, namespace, f"server-{i}")
        assert srv["status"]["podIP"] != cli["status"]["podIP"]


def test_hosts_file_updates_in_place_for_late_peers(kube: Kube, namespace: str) -> None:
    watcher = r"""
import os, socket, time
ino = os.stat("/etc/hosts").st_ino
for _ in range(300):
    try:
        print("resolved", socket.gethostbyname("late-0.grp"), flush=True); break
    except OSError:
        time.sleep(0.1)
print("same-inode", os.stat("/etc/hosts").st_ino == ino, flush=True)
"""
    apply(kube, namespace, pod_manifest("early", [{"name": "main", "image": "busybox", "command": [PY, "-c", watcher]}],
                                        hostname="early-0", subdomain="grp"))
    wait_phase(kube, namespace, "early", ("Running", "Succeeded"))
    time.sleep(1)
    apply(kube, namespace, pod_manifest("late", [{"name": "main", "image": "busybox", "command": ["sleep", "30"]}],
                                        hostname="late-0", subdomain="grp"))
    wait_phase(kube, namespace, "early", ("Succeeded",))
    late = wait_phase(kube, namespace, "late", ("Running",))
    out = logs(kube, namespace, "early")
    assert f"resolved {late['status']['podIP']}" in out
    assert "same-inode True" in out


def test_termination_messages_exit_codes_and_restarts(kube: Kube, namespace: str) -> None:
    flaky = r"""
import pathlib, sys
marker = pathlib.Path("/tmp/ltj-agent-test/state/attempted")
print("attempt", "second" if marker.exists() else "first", flush=True)
if not marker.exists():
    marker.write_text("x"); sys.exit(3)
pathlib.Path("/dev/termination-log").write_text('{"result": "ok"}')
"""
    apply(
        kube,
        namespace,
        pod_manifest("msgfile", [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo -n summary > /tmp/ltj-agent-test/msg; exit 0"],
                                  "terminationMessagePath": "/tmp/ltj-agent-test/msg"}]),
        pod_manifest("fallback", [{"name": "main", "image": "busybox", "terminationMessagePolicy": "FallbackToLogsOnError",
                                   "command": ["sh", "-c", "echo line1; echo boom >&2; exit 42"]}]),
        pod_manifest("flaky", [{"name": "main", "image": "busybox", "command": [PY, "-c", flaky],
                                "volumeMounts": [{"name": "work", "mountPath": "/tmp/ltj-agent-test/state"}]}],
                     restartPolicy="OnFailure", volumes=[{"name": "work", "emptyDir": {}}]),
        pod_manifest("noimage", [{"name": "main", "image": "busybox"}]),
    )
    ok = wait_phase(kube, namespace, "msgfile", ("Succeeded",))
    assert ok["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "summary"
    failed = wait_phase(kube, namespace, "fallback", ("Failed",))
    term = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (42, "Error")
    assert term["message"] == "line1\nboom\n"
    flaky_pod = wait_phase(kube, namespace, "flaky", ("Succeeded",))
    cs = flaky_pod["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 1
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    assert cs["state"]["terminated"]["message"] == '{"result": "ok"}'
    assert logs(kube, namespace, "flaky").strip() == "attempt second"
    assert logs(kube, namespace, "flaky", "--previous").strip() == "attempt first"
    bad = wait_phase(kube, namespace, "noimage", ("Failed",))
    term = bad["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "StartError" and "give the container a command" in term["message"]


def test_logs_follow_tail_and_timestamps(kube: Kube, namespace: str) -> None:
    apply(kube, namespace, pod_manifest("chatty", [{"name": "main", "image": "busybox",
                                                    "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.4; done"]}]))
    wait_phase(kube, namespace, "chatty", ("Running", "Succeeded"))
    followed = kube.kubectl("logs", "-f", "chatty", "-n", namespace, timeout=30).stdout  # returns when the container ends
    assert followed.split() == ["line1", "line2", "line3", "line4", "line5"]
    assert logs(kube, namespace, "chatty", "--tail=2").split() == ["line4", "line5"]
    stamped = logs(kube, namespace, "chatty", "--timestamps", "--tail=1").strip()
    ts, text = stamped.split(" ", 1)
    assert text == "line5" and ts.endswith("Z") and "T" in ts
    assert logs(kube, namespace, "chatty", "--limit-bytes=8") == "line1\nli"


def test_deletion_sends_sigterm_then_sigkill_after_grace(kube: Kube, namespace: str) -> None:
    polite = "trap 'echo got-term; exit 0' TERM; echo up; while true; do sleep 0.1; done"
    stubborn = "trap 'echo ignoring-term' TERM; echo up; while true; do sleep 0.1; done"
    apply(
        kube,
        namespace,
        pod_manifest("polite", [{"name": "main", "image": "busybox", "command": ["sh", "-c", polite]}], terminationGracePeriodSeconds=30),
        pod_manifest("stubborn", [{"name": "main", "image": "busybox", "command": ["sh", "-c", stubborn]}], terminationGracePeriodSeconds=3),
    )
    for name in ("polite", "stubborn"):
        wait_phase(kube, namespace, name, ("Running",))
        wait_for(lambda n=name: "up" in logs(kube, namespace, n), 30, what=f"{name} up")
    pids = {n: int(wait_for(lambda n=n: pid_file(kube, namespace, n, "main").read_text() if pid_file(kube, namespace, n, "main").exists() else "", 30))
            for n in ("polite", "stubborn")}
    assert all(alive(p) for p in pids.values())
    t0 = time.monotonic()
    kube.kubectl("delete", "pod", "polite", "-n", namespace, "--wait=true")
    assert time.monotonic() - t0 < 10  # exited on SIGTERM, long before its 30 s grace period
    assert not alive(pids["polite"])
    t0 = time.monotonic()
    kube.kubectl("delete", "pod", "stubborn", "-n", namespace, "--wait=true")
    took = time.monotonic() - t0
    assert 2.5 <= took < 15, took  # SIGTERM ignored: SIGKILL after the 3 s grace period
    assert not alive(pids["stubborn"])
    log_dir = next((kube.agent_state / "logs").glob(f"{namespace}_stubborn_*"))
    assert "ignoring-term" in (log_dir / "main" / "0.log").read_text()


def test_native_sidecar_runs_beside_main_and_stops_after_it(kube: Kube, namespace: str) -> None:
    sidecar = r"""
import pathlib, signal, sys, time
restarts = pathlib.Path("/tmp/ltj-agent-test/shared/sidecar-starts")
n = int(restarts.read_text()) + 1 if restarts.exists() else 1
restarts.write_text(str(n))
def stop(*_):
    print("sidecar got SIGTERM; main done:", pathlib.Path("/tmp/ltj-agent-test/shared/main-done").exists(), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("sidecar start", n, flush=True)
if n == 1:
    time.sleep(0.5); sys.exit(5)  # crash once: restarted while the pod runs
while True:
    pathlib.Path("/tmp/ltj-agent-test/shared/heartbeat").write_text(str(time.time())); time.sleep(0.1)
"""
    main = r"""
import pathlib, time
for _ in range(300):
    if pathlib.Path("/tmp/ltj-agent-test/shared/heartbeat").exists() and pathlib.Path("/tmp/ltj-agent-test/shared/sidecar-starts").read_text() == "2":
        break
    time.sleep(0.1)
print("main saw sidecar restart:", pathlib.Path("/tmp/ltj-agent-test/shared/sidecar-starts").read_text(), flush=True)
pathlib.Path("/tmp/ltj-agent-test/shared/main-done").write_text("1")
"""
    apply(
        kube,
        namespace,
        pod_manifest(
            "withsidecar",
            [{"name": "main", "image": "busybox", "command": [PY, "-c", main], "volumeMounts": [{"name": "shared", "mountPath": "/tmp/ltj-agent-test/shared"}]}],
            initContainers=[{"name": "side", "image": "busybox", "restartPolicy": "Always", "command": [PY, "-c", sidecar],
                             "volumeMounts": [{"name": "shared", "mountPath": "/tmp/ltj-agent-test/shared"}]}],
            volumes=[{"name": "shared", "emptyDir": {}}],
        ),
    )
    pod = wait_phase(kube, namespace, "withsidecar", ("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Succeeded"
    assert "main saw sidecar restart: 2" in logs(kube, namespace, "withsidecar", "-c", "main")
    side_log = logs(kube, namespace, "withsidecar", "-c", "side")
    assert "sidecar got SIGTERM; main done: True" in side_log
    side = pod["status"]["initContainerStatuses"][0]
    assert side["name"] == "side" and side["restartCount"] == 1
    assert side["state"]["terminated"]["exitCode"] == 0
    assert side["lastState"]["terminated"]["exitCode"] == 5
    main_state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert main_state["finishedAt"] <= side["state"]["terminated"]["finishedAt"]


def test_projected_service_account_token_works_against_the_api(kube: Kube, namespace: str) -> None:
    whoami = r"""
import json, os, ssl, sys, urllib.request
d = sys.argv[1]
ctx = ssl.create_default_context(cafile=d + "/ca.crt")
url = "https://%s:%s/apis/authentication.k8s.io/v1/selfsubjectreviews" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()
req = urllib.request.Request(url, data=body, headers={"Authorization": "Bearer " + open(d + "/token").read(), "Content-Type": "application/json"})
info = json.load(urllib.request.urlopen(req, context=ctx))["status"]["userInfo"]
print("user", info["username"]); print("pod", info["extra"]["authentication.kubernetes.io/pod-name"][0])
print("ns-file", open(d + "/namespace").read())
"""
    apply(
        kube,
        namespace,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reporter"}},
        pod_manifest(
            "token",
            [
                {"name": "auto", "image": "busybox", "command": [PY, "-c", whoami, "/var/run/secrets/kubernetes.io/serviceaccount"]},
                {"name": "explicit", "image": "busybox", "command": [PY, "-c", whoami, "/tmp/ltj-agent-test/token"],
                 "volumeMounts": [{"name": "tok", "mountPath": "/tmp/ltj-agent-test/token", "readOnly": True}]},
            ],
            serviceAccountName="reporter",
            volumes=[{"name": "tok", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]}}],
        ),
    )
    pod = wait_phase(kube, namespace, "token", ("Succeeded", "Failed"))
    for container in ("auto", "explicit"):
        out = logs(kube, namespace, "token", "-c", container)
        assert pod["status"]["phase"] == "Succeeded", out
        assert f"user system:serviceaccount:{namespace}:reporter" in out
        assert "pod token" in out  # the token is bound to this pod
        assert f"ns-file {namespace}" in out


def test_sigkill_of_the_main_process_fails_the_pod(kube: Kube, namespace: str) -> None:
    apply(kube, namespace, pod_manifest("victim", [{"name": "trainer", "image": "busybox", "command": ["sh", "-c", "sleep 300 & wait"]}]))
    wait_phase(kube, namespace, "victim", ("Running",))
    path = pid_file(kube, namespace, "victim", "trainer")
    pid = int(wait_for(lambda: path.read_text() if path.exists() else "", 30, what="pid file"))
    os.kill(pid, signal.SIGKILL)
    pod = wait_phase(kube, namespace, "victim", ("Failed",))
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"], term.get("signal")) == (137, "Error", 9)
    wait_for(lambda: not path.exists(), 10, what="pid file removed")


def test_force_deleted_pod_processes_are_killed(kube: Kube, namespace: str) -> None:
    apply(kube, namespace, pod_manifest("forced", [{"name": "main", "image": "busybox", "command": ["sh", "-c", "trap '' TERM; sleep 300 & wait"]}],
                                        terminationGracePeriodSeconds=300))
    wait_phase(kube, namespace, "forced", ("Running",))
    path = pid_file(kube, namespace, "forced", "main")
    pid = int(wait_for(lambda: path.read_text() if path.exists() else "", 30, what="pid file"))
    kube.kubectl("delete", "pod", "forced", "-n", namespace, "--force", "--grace-period=0")
    wait_for(lambda: not alive(pid), 20, what="force-deleted pod's process to die")


def test_nodes_have_capacity_ready_condition_and_renewed_leases(kube: Kube) -> None:
    nodes = {n["metadata"]["name"]: n for n in kube.get("nodes")["items"]}
    assert {"ltj-node-0", "ltj-node-1"} <= set(nodes)
    agent = json.loads((kube.agent_state / "agent.ready").read_text())
    for name in ("ltj-node-0", "ltj-node-1"):
        node = nodes[name]
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
        assert node["status"]["capacity"]["cpu"] == "8" and node["status"]["capacity"]["memory"] == "16Gi"
        assert condition(node, "Ready")["status"] == "True"
        assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
        assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == agent["kubelet_port"]
        assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.")
        assert not any(t["key"] == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints") or [])
    first = kube.get("lease", "ltj-node-0", "-n", "kube-node-lease")
    assert first["spec"]["holderIdentity"] == "ltj-node-0"
    assert first["metadata"]["ownerReferences"][0]["uid"] == nodes["ltj-node-0"]["metadata"]["uid"]
    wait_for(lambda: kube.get("lease", "ltj-node-0", "-n", "kube-node-lease")["spec"]["renewTime"] != first["spec"]["renewTime"],
             20, what="the lease to be renewed")


def test_informer_relist_reports_changes_missed_while_disconnected(kube: Kube, namespace: str) -> None:
    import asyncio

    from ltj_localcluster.kubeapi import Informer, KubeApi

    def cm(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": name}}

    async def scenario() -> list[tuple[str, str]]:
        api = KubeApi.from_kubeconfig(kube.kubeconfig)
        seen: list[tuple[str, str]] = []

        async def handler(kind: str, obj: dict[str, Any]) -> None:
            if obj["metadata"]["name"] != "kube-root-ca.crt":
                seen.append((kind, obj["metadata"]["name"]))

        async def until(event: tuple[str, str]) -> None:
            for _ in range(200):
                if event in seen:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{event} not seen: {seen}")

        path = f"/api/v1/namespaces/{namespace}/configmaps"
        informer = Informer(api, path, handler, name="test")
        try:
            task = asyncio.create_task(informer.run())
            await informer.synced.wait()
            await api.create(path, cm("a"))
            await until(("UPSERT", "a"))
            task.cancel()  # disconnected: changes happen meanwhile
            await asyncio.gather(task, return_exceptions=True)
            await api.delete(f"{path}/a")
            await api.create(path, cm("b"))
            seen.clear()
            informer.synced.clear()
            task = asyncio.create_task(informer.run())  # relists: the cache diff reports both
            await until(("DELETE", "a"))
            await until(("UPSERT", "b"))
            await api.patch(f"{path}/b", {"data": {"k": "changed"}})
            for _ in range(100):
                if informer.cache.get(f"{namespace}/b", {}).get("data", {}).get("k") == "changed":
                    break
                await asyncio.sleep(0.05)
            assert informer.cache[f"{namespace}/b"]["data"]["k"] == "changed"
            assert f"{namespace}/a" not in informer.cache
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            await api.close()
        return seen

    asyncio.run(scenario())
