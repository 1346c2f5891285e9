"""Which bags a fleet evaluation reads: paths, directories of bags, globs, or a manifest file.

A manifest (YAML or JSON) lists bags with their own topics and ground truth, on top of the command line's:

    defaults: {image_topic: /cam/color/image_raw, detections_topic: /detector/detections}
    bags:
      - robot3/2026-12-01_0900          # a path, relative to the manifest
      - {bag: robot4/2026-12-01_0900, gt: gt/robot4.json, image_topic: /cam2/image_raw}
"""

from __future__ import annotations

import glob as _glob
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from shapemask_ros.bag.recording.pieces import is_storage_file
from shapemask_ros.bag.recording.reader import BagError

# per-bag settings a manifest may give (the rest of the options are the run's)
TOPIC_KEYS = ("image_topic", "detections_topic", "depth_topic", "camera_info_topic", "gt", "gt_topic")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class BagJob:
    """One bag of the fleet and its per-bag settings."""

    id: str  # unique, file-name safe: the bag's output directory under <out>/bags/
    bag: str  # as given (relative paths stay relative: reports record them as given)
    image_topic: str = ""
    detections_topic: str = ""
    depth_topic: str = ""
    camera_info_topic: str = ""
    gt: str = ""
    gt_topic: str = ""

    def settings(self) -> dict[str, str]:
        """The per-bag settings (topics and ground truth)."""
        return {k: getattr(self, k) for k in TOPIC_KEYS}


def is_bag(path: Path) -> bool:
    """A rosbag2 directory (metadata.yaml or storage files directly inside) or one storage file."""
    if path.is_file():
        return is_storage_file(path)
    if not path.is_dir():
        return False
    return (path / "metadata.yaml").is_file() or any(p.is_file() and is_storage_file(p) for p in path.iterdir())


def _bags_under(root: Path) -> list[Path]:
    """`root` when it is a bag, else every bag below it (a bag's own directory is not searched further)."""
    if is_bag(root):
        return [root]
    found = []
    for dirpath, dirnames, _files in os.walk(root):
        here = Path(dirpath)
        if here != root and is_bag(here):
            found.append(here)
            dirnames[:] = []
            continue
        dirnames.sort()
    return sorted(found)


def expand(item: str, base: Path | None = None) -> list[str]:
    """The bags one command-line or manifest entry names (a path, a directory of bags, a glob)."""
    text = str(Path(base, item)) if base is not None and not os.path.isabs(item) else item
    if _GLOB_CHARS.search(text):
        matches = sorted(_glob.glob(text, recursive=True))
        if not matches:
            raise BagError(f"no bag matches {item!r}")
        return [b for m in matches for b in expand(m)]
    path = Path(text)
    if not path.exists():
        raise BagError(f"bag not found: {text}")
    bags = _bags_under(path)
    if not bags:
        raise BagError(f"{text}: no rosbag2 bag in it (no metadata.yaml or .mcap/.db3 files)")
    return [str(b) for b in bags]


def read_manifest(path: str) -> list[tuple[str, dict[str, str]]]:
    """(bag path, per-bag settings) of every manifest entry; paths are relative to the manifest."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise BagError(f"cannot read manifest {path}: {e}") from None
    except yaml.YAMLError as err:
        raise BagError(f"manifest {path} is not YAML/JSON: {' '.join(str(err).split())}") from None
    defaults: dict[str, Any] = {}
    entries = data
    if isinstance(data, dict):
        defaults = data.get("defaults") or {}
        entries = data.get("bags")
    if not isinstance(entries, list) or not isinstance(defaults, dict):
        raise BagError(f"manifest {path}: expected a list of bags, or {{defaults: {{...}}, bags: [...]}}")
    base = Path(path).parent
    out = []
    for k, item in enumerate(entries):
        entry = {"bag": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or not isinstance(entry.get("bag"), str):
            raise BagError(f"manifest {path}: entry {k} has no 'bag' path")
        unknown = set(entry) - {"bag", *TOPIC_KEYS}
        if unknown | (set(defaults) - set(TOPIC_KEYS)):
            raise BagError(f"manifest {path}: unknown keys {sorted(unknown | (set(defaults) - set(TOPIC_KEYS)))}")
        settings = {**defaults, **{k2: v for k2, v in entry.items() if k2 != "bag"}}
        if settings.get("gt") and not os.path.isabs(settings["gt"]):
            settings["gt"] = str(base / settings["gt"])
        for bag in expand(entry["bag"], base):
            out.append((bag, {k2: str(v) for k2, v in settings.items()}))
    return out


def _job_id(path: str, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).as_posix().strip("/.").replace("/", "__")) or "bag"
    name, k = stem[-100:], 1
    while name in taken:
        k += 1
        name = f"{stem[-96:]}~{k}"
    taken.add(name)
    return name


def collect_jobs(bags: list[str], manifest: str, defaults: dict[str, str]) -> list[BagJob]:
    """BagJobs of the command line's bags (with `defaults`: the command line's topics) and the manifest's
    (its settings over `defaults`); BagError on a missing bag, an empty directory, a bag listed twice, or a
    bag without an image topic."""
    listed: list[tuple[str, dict[str, str]]] = [(b, {}) for item in bags for b in expand(item)]
    if manifest:
        listed += read_manifest(manifest)
    if not listed:
        raise BagError("no bags given (--bag PATH|DIR|GLOB ... or --manifest FILE)")
    seen: dict[str, str] = {}
    jobs: list[BagJob] = []
    taken: set[str] = set()
    names = {f.name for f in fields(BagJob)}
    common = os.path.commonpath([os.path.abspath(b) for b, _ in listed]) if len(listed) > 1 else ""
    for bag, settings in listed:
        real = os.path.realpath(bag)
        if real in seen:
            raise BagError(f"bag listed twice: {bag} (also as {seen[real]})")
        seen[real] = bag
        merged = {**{k: v for k, v in defaults.items() if v}, **settings}
        if not merged.get("image_topic"):
            raise BagError(f"{bag}: no image topic (--image-topic, or image_topic in the manifest)")
        rel = os.path.relpath(os.path.abspath(bag), common) if common else Path(bag).name
        given: dict[str, Any] = {k: v for k, v in merged.items() if k in names}
        jobs.append(replace(BagJob(id=_job_id(rel, taken), bag=bag), **given))
    return jobs
