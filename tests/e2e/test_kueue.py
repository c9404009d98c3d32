"""Kueue end to end on a real cluster (the local real node, started with Kueue's controller beside it):
a high-priority job preempts a low-priority one that is training; the low one's rank saves a checkpoint
on SIGTERM, its quota goes to the high job, and once that one has finished the low one is admitted
again, resumes from the checkpoint its SIGTERM saved and succeeds, with no restart counted. A cluster
without Kueue (kind in the GitHub workflow) skips it."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kubetest import apply, condition, dump, job, pods, status, wait_for, wait_status, wait_terminal
from ltj_operator import constants as C
from realcluster import RealCluster, assert_events_complete, first_checkpoint, job_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

API = "kueue.x-k8s.io/v1beta2"


def queue_objects(ns: str) -> list[dict[str, Any]]:
    """A ClusterQueue (named after the namespace) whose CPU quota admits one one-node sample job at a time (its
    trainer's 500m and the relay's 10m: a second job would need 1020m) and that preempts lower priorities, its
    LocalQueue `cpus` in ``ns``, and WorkloadPriorityClasses `<ns>-low` and `<ns>-high`."""
    return [
        {"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": ns}},
        {"apiVersion": API, "kind": "ClusterQueue", "metadata": {"name": ns},
         "spec": {"namespaceSelector": {}, "preemption": {"withinClusterQueue": "LowerPriority"},
                  "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [
                      {"name": ns, "resources": [{"name": "cpu", "nominalQuota": "1"},
                                                 {"name": "memory", "nominalQuota": "100Gi"}]}]}]}},
        {"apiVersion": API, "kind": "LocalQueue", "metadata": {"name": "cpus", "namespace": ns},
         "spec": {"clusterQueue": ns}},
        *({"apiVersion": API, "kind": "WorkloadPriorityClass", "metadata": {"name": f"{ns}-{name}"}, "value": value}
          for name, value in (("low", 10), ("high", 1000))),
    ]


def queued(name: str, ns: str, priority: str, epochs: int) -> dict[str, Any]:
    manifest = job(name, nodes=1, training={"maxEpochs": epochs, "earlyStopping": {"enabled": False}})
    manifest["metadata"]["labels"] = {C.LABEL_KUEUE_QUEUE: "cpus", C.LABEL_KUEUE_PRIORITY_CLASS: f"{ns}-{priority}"}
    return manifest


def test_a_preempted_job_checkpoints_waits_and_resumes_from_its_checkpoint(real_cluster: RealCluster, ns: str):
    kube = real_cluster.kube
    if API not in kube.kubectl("api-versions").stdout.split():
        pytest.skip(f"{real_cluster.name}: Kueue is not installed")
    objects = queue_objects(ns)
    kube.kubectl("create", "-f", "-", input=yaml.safe_dump_all(objects))
    try:
        # As long as the suspension test's job: still training when the preemption lands.
        low = apply(kube, ns, queued("low", ns, "low", epochs=30))
        first_checkpoint(real_cluster, ns, low)
        high = apply(kube, ns, queued("high", ns, "high", epochs=1))

        st = wait_status(kube, ns, low, lambda st: st.get("evictions") == 1, 180, "Kueue's preemption on record")
        assert st["phase"] == "Suspended" and st["lastEviction"]["reason"] == "Preempted", dump(kube, ns)
        assert condition(st, "Suspended")["reason"] == C.Reason.WORKLOAD_EVICTED
        wait_for(lambda: not pods(kube, ns, low), 300, what="the low job's pod stopped")
        assert not status(kube, ns, low).get("training", {}).get("finished"), \
            "the low job finished before the preemption took effect: make it longer"

        st = wait_terminal(kube, ns, high, timeout=600)
        assert st["phase"] == "Succeeded", dump(kube, ns)
        st = wait_terminal(kube, ns, low, timeout=900)
        assert st["phase"] == "Succeeded", dump(kube, ns)
        assert (st["restarts"], st["evictions"], st["attempt"]) == (0, 1, 1), st
        resumed = condition(st, "Suspended")
        assert (resumed["status"], resumed["reason"]) == ("False", C.Reason.RESUMED), resumed

        # The SIGTERM of the preemption saved a checkpoint, which the second attempt restored: no epoch was
        # trained twice but the interrupted one.
        evs = job_events(real_cluster, ns, low)
        assert_events_complete(evs, attempts=2)
        saved = [e for e in evs if e["type"] == "checkpoint" and e.get("kind") == "sigterm"]
        assert saved, [e["type"] for e in evs]
        assert [e for e in evs if e["type"] == "started"][1]["resumed_from"] == saved[-1]["path"]
        assert st["training"]["resumedFrom"] == saved[-1]["path"]
        # Its Workload is marked Finished, which gave the quota back.
        wait_status(kube, ns, low, lambda st: (st.get("queue") or {}).get("finished") is True, 60,
                    "its Workload finished")
    finally:
        kube.kubectl("delete", "ltj", "--all", "-n", ns, "--wait=true", check=False, timeout=300)
        kube.kubectl("delete", "clusterqueue", ns, "--wait=false", check=False)
        kube.kubectl("delete", "resourceflavor", ns, "--wait=false", check=False)
        kube.kubectl("delete", "workloadpriorityclass", f"{ns}-low", f"{ns}-high", check=False)
