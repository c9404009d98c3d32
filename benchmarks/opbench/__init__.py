"""The operator benchmark's harness (benchmarks/operator_scale.py runs it): `cluster` (a private
control plane with an audit log, kwok nodes, the one API client), `systems` (ltj, the peer, the
floors), `measure` (the runs and their observations), `report` (tables, CSV, plot)."""
