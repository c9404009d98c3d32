"""Example ltj trainer plugin: ``moons_mlp`` (model) and ``moons`` (data)."""
