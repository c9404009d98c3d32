"""Map container images to this checkout's installed commands (Contract 2).

There is no container runtime here, so an image only selects an ENTRYPOINT: the ltj images'
entrypoints are the console scripts installed in the repo's virtual environment.
"""

from __future__ import annotations

from collections.abc import Sequence

# Substring of the image name -> the image's ENTRYPOINT. First match wins.
IMAGE_ENTRYPOINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ltj-trainer", ("ltj-train",)),
    ("ltj-operator", ("ltj-relay",)),
)


class ImageError(ValueError):
    pass


def image_name(image: str) -> str:
    """The repository part of an image reference, without registry, tag or digest."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref = ref[: len(ref) - len(last)] + last.split(":", 1)[0]
    return ref.rsplit("/", 1)[-1]


def entrypoint_for(image: str) -> tuple[str, ...] | None:
    name = image_name(image)
    for needle, entrypoint in IMAGE_ENTRYPOINTS:
        if needle in name:
            return entrypoint
    return None


def resolve_argv(image: str, command: Sequence[str] | None, args: Sequence[str] | None) -> list[str]:
    """Docker's ENTRYPOINT/CMD rules with the image's ENTRYPOINT from IMAGE_ENTRYPOINTS.

    command replaces the ENTRYPOINT (and drops the image CMD); args replace the CMD.
    Our images have no CMD.
    """
    if command:
        return [*command, *(args or [])]
    entry = entrypoint_for(image)
    if entry is None:
        raise ImageError(
            f"image {image!r} has no known entrypoint on this node agent; give the container a command "
            f"(known images: {', '.join(n for n, _ in IMAGE_ENTRYPOINTS)})"
        )
    return [*entry, *(args or [])]
