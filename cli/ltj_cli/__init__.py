"""``kubectl ltj``: a kubectl plugin for LightningTrainingJobs.

- :mod:`ltj_cli.main`: the command line (get, watch, logs, plot, describe) and its exit codes
- :mod:`ltj_cli.cluster`: the thin I/O layer over the Kubernetes API (kubeconfig, jobs, events, pods, logs)
- :mod:`ltj_cli.view`: pure renderings of a job's status (tables, the progress view, describe)
- :mod:`ltj_cli.plot`: metric curves from ``status.training.history``, in the terminal or as a PNG
- :mod:`ltj_cli.logs`: following each rank's logs across gang restarts
"""
