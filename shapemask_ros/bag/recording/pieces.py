"""Recordings as fleets write them: a bag split into several storage files, compressed per file.

rosbag2 splits a long recording (`--max-bag-size`, `--max-bag-duration`) into `<name>_0.mcap`,
`<name>_1.mcap`, ... and, with `--compression-mode file`, zstd-compresses each finished piece
(`<name>_0.mcap.zstd`). Fleets copy such recordings piece by piece, so a piece can be missing, and
`metadata.yaml` (written last) can be missing too. `rosbags` refuses a split bag with one piece missing and
cannot read compressed pieces without their metadata.

`bag_layout` finds the pieces of a bag directory (from `metadata.yaml`, else from the file names) in
recording order, which are missing, and whether they are zstd-compressed (from the metadata, the `.zstd`
suffix, or the zstd magic `28 b5 2f fd`). `PiecewiseReader` reads the present pieces one after the other,
each with a single-file reader (so a damaged piece is recovered as a single bag is), presents one merged
list of connections, and describes what is missing in one `Damage` record.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from rosbags.interfaces import Connection

from shapemask_ros.bag.recording.errors import BagError
from shapemask_ros.bag.recording.recover import ZSTD_MAGIC, Damage

log = logging.getLogger(__name__)

STORAGE_SUFFIXES = (".mcap", ".db3")
ZSTD_SUFFIX = ".zstd"
_INDEX = re.compile(r"_(\d+)$")  # rosbag2's split index: <name>_<n>.<storage>[.zstd]


class PieceReader(Protocol):
    """What `PiecewiseReader` needs of a single-file reader (BagReader provides it)."""

    damage: Damage | None

    @property
    def connections(self) -> list[Connection]: ...

    @property
    def reader(self) -> Any: ...

    def messages(self, topics: Collection[str] | None = None) -> Iterator[Any]: ...

    def close(self) -> None: ...


@dataclass
class Piece:
    """One storage file of a bag, as listed (or as found)."""

    name: str  # as listed in metadata.yaml (or found on disk)
    path: Path | None  # the file on disk; None when missing
    compressed: bool = False  # zstd file compression
    expected: int | None = None  # messages metadata.yaml counts in it


@dataclass
class Layout:
    """The storage files of a bag in recording order."""

    root: Path
    pieces: list[Piece]
    storage: str  # 'mcap' | 'sqlite3' | 'unknown'
    compression_mode: str | None = None  # from metadata.yaml ('file' also when detected)
    message_count: int | None = None  # from metadata.yaml
    missing: list[str] = field(default_factory=list)

    @property
    def present(self) -> list[Piece]:
        return [p for p in self.pieces if p.path is not None]

    @property
    def simple(self) -> bool:
        """One uncompressed file, nothing missing: the ordinary single-file path reads it."""
        return len(self.pieces) == 1 and not self.missing and not self.pieces[0].compressed


def is_storage_file(path: Path) -> bool:
    """A rosbag2 storage file: `.mcap`/`.db3`, optionally with `.zstd` (file compression)."""
    name = path.name[: -len(ZSTD_SUFFIX)] if path.name.endswith(ZSTD_SUFFIX) else path.name
    return Path(name).suffix in STORAGE_SUFFIXES


def _stem_suffix(name: str) -> tuple[str, str]:
    base = name[: -len(ZSTD_SUFFIX)] if name.endswith(ZSTD_SUFFIX) else name
    p = Path(base)
    return p.stem, p.suffix


def _split_index(name: str) -> int | None:
    m = _INDEX.search(_stem_suffix(name)[0])
    return int(m.group(1)) if m else None


def _order_key(path: Path) -> tuple[str, int, str]:
    """Natural order of split pieces (`x_2` before `x_10`); names without an index sort by name."""
    stem = _stem_suffix(path.name)[0]
    idx = _split_index(path.name)
    return (_INDEX.sub("", stem), -1 if idx is None else idx, path.name)


def is_zstd_file(path: Path) -> bool:
    """zstd-compressed: by suffix, or by the zstd frame magic (a renamed or suffix-less copy)."""
    if path.name.endswith(ZSTD_SUFFIX):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == ZSTD_MAGIC
    except OSError:
        return False


def _find(root: Path, name: str) -> Path | None:
    """The file of a listed piece: as listed, or decompressed / compressed by hand after recording."""
    base = Path(name).name
    plain = base[: -len(ZSTD_SUFFIX)] if base.endswith(ZSTD_SUFFIX) else base
    for cand in (base, plain, plain + ZSTD_SUFFIX):
        if (root / cand).is_file():
            return root / cand
    return None


def _storage_of(name: str) -> str:
    return {".mcap": "mcap", ".db3": "sqlite3"}.get(_stem_suffix(name)[1], "unknown")


def bag_layout(target: Path) -> Layout:
    """The pieces of `target` (a bag directory or one storage file), present and missing, in order."""
    if target.is_file():
        return Layout(target.parent, [Piece(target.name, target, is_zstd_file(target))], _storage_of(target.name))
    meta = None
    try:
        meta = yaml.safe_load((target / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        names = [str(n) for n in meta["relative_file_paths"]]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        meta = None
    if meta is not None:
        counts: dict[str, int] = {}
        for f in meta.get("files") or []:
            try:
                counts[Path(str(f["path"])).name] = int(f["message_count"])
            except (KeyError, TypeError, ValueError):
                continue
        mode = str(meta.get("compression_mode") or "").lower() or None
        mode = None if mode == "none" else mode
        pieces = []
        for n in names:
            path = _find(target, n)
            # by the file itself: a piece decompressed by hand after recording is read as it is
            compressed = path is not None and is_zstd_file(path)
            pieces.append(Piece(Path(n).name, path, compressed, counts.get(Path(n).name)))
        try:
            total: int | None = int(meta["message_count"])
        except (KeyError, TypeError, ValueError):
            total = None
        storage = str(meta.get("storage_identifier") or (_storage_of(names[0]) if names else "unknown"))
    else:  # no metadata.yaml (a recorder that was killed, or a copy without it): the files on disk
        files = sorted((p for p in target.iterdir() if p.is_file() and is_storage_file(p)), key=_order_key)
        pieces = [Piece(p.name, p, is_zstd_file(p)) for p in files]
        # a gap in the split indices (x_0, x_2) is a missing piece
        idx = [_split_index(p.name) for p in files]
        if files and all(i is not None for i in idx):
            stem, suffix = _stem_suffix(files[0].name)
            prefix = _INDEX.sub("", stem)
            suffix += ZSTD_SUFFIX if files[0].name.endswith(ZSTD_SUFFIX) else ""
            have = {i for i in idx if i is not None}
            for i in sorted(set(range(max(have) + 1)) - have):
                pieces.append(Piece(f"{prefix}_{i}{suffix}", None))
            pieces.sort(key=lambda p: (_split_index(p.name) or 0, p.name))
        mode = "file" if any(p.compressed for p in pieces) else None
        total = None
        storage = _storage_of(files[0].name) if files else "unknown"
    if any(p.compressed for p in pieces):
        mode = "file"
    return Layout(target, pieces, storage, mode, total, [p.name for p in pieces if p.path is None])


def decompress_file(src: Path, dst: Path) -> str | None:
    """zstd-decompress `src` into `dst`, streaming; None when complete, else why it stopped (what was
    decompressed before the error stays in `dst`, to be read as a cut file)."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    obj, pending = dctx.decompressobj(), False  # pending: inside a frame whose end has not been seen
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(1 << 20):
                while chunk:  # a file may hold several frames (pzstd, concatenated copies)
                    fout.write(obj.decompress(chunk))
                    pending = not obj.eof
                    chunk = b""
                    if obj.eof:
                        chunk, obj = obj.unused_data, dctx.decompressobj()
    except (zstandard.ZstdError, OSError) as e:
        return f"zstd decompression of {src.name} failed: {e}"
    # the stream decoder does not complain about a cut file: a frame without its end is the sign
    return f"zstd decompression of {src.name} failed: the file ends inside a frame (cut copy?)" if pending else None


class PiecewiseReader:
    """The present pieces of a bag read in order, one single-file reader at a time (rosbags-Reader-like:
    `connections`, `messages`, `duration`, `compression_mode/format`, `close`)."""

    def __init__(self, layout: Layout, open_piece: Callable[[Path], PieceReader], strict: bool = False) -> None:
        self.layout = layout
        self.strict = strict
        self._open_piece = open_piece
        self.compression_mode = layout.compression_mode
        self.compression_format = "zstd" if layout.compression_mode else None
        self.connections: list[Connection] = []
        self.damage: Damage | None = None
        self._readers: list[tuple[Piece, PieceReader]] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._problems: list[str] = []
        self._noted: set[int] = set()  # id() of the piece readers whose damage is in _problems

    def open(self) -> PiecewiseReader:
        """Open every present piece (decompressing compressed ones to a temporary directory). Raises
        ValueError when nothing at all is readable, or on the first missing/damaged piece when strict."""
        lay = self.layout
        if lay.missing:
            msg = f"{len(lay.missing)} of {len(lay.pieces)} pieces missing: {', '.join(lay.missing)}"
            if self.strict:
                raise BagError(f"cannot read bag {lay.root}: {msg}")
            self._problems.append(msg)
        for piece in lay.present:
            assert piece.path is not None
            path = piece.path
            if piece.compressed:
                if self._tmp is None:
                    self._tmp = tempfile.TemporaryDirectory(prefix="shapemask-pieces-")
                name = piece.path.name[: -len(ZSTD_SUFFIX)] if piece.path.name.endswith(ZSTD_SUFFIX) else piece.name
                if Path(name).suffix not in STORAGE_SUFFIXES:
                    name += "." + {"sqlite3": "db3"}.get(lay.storage, lay.storage)
                path = Path(self._tmp.name) / name
                why = decompress_file(piece.path, path)
                if why is not None:
                    if self.strict:
                        raise BagError(f"cannot read bag {lay.root}: {why}")
                    self._problems.append(why)
            try:
                reader = self._open_piece(path)
            except BagError as e:
                if self.strict:
                    raise
                self._problems.append(f"{piece.name} unreadable: {e}")
                continue
            self._readers.append((piece, reader))
            self._check_piece(piece, reader)
        if not self._readers:
            self.close()
            raise BagError(f"cannot read bag {lay.root}: no readable piece ({'; '.join(self._problems)})")
        merged: dict[tuple[str, str], Connection] = {}
        for _piece, reader in self._readers:
            for c in reader.connections:
                key = (c.topic, c.msgtype)
                prev = merged.get(key)
                if prev is None:
                    merged[key] = c._replace(id=len(merged) + 1, owner=self)
                else:
                    merged[key] = prev._replace(msgcount=prev.msgcount + c.msgcount)
        self.connections = list(merged.values())
        self._update_damage()
        return self

    def _check_piece(self, piece: Piece, reader: PieceReader) -> None:
        """Record a piece's damage once (found when it is opened, or only while reading it)."""
        if reader.damage is not None and id(reader) not in self._noted:
            self._noted.add(id(reader))
            self._problems.append(f"{piece.name}: {reader.damage.reason}")

    def _update_damage(self) -> None:
        """`damage` from the problems so far (updated in place: BagReader holds the same record)."""
        if not self._problems:
            return
        lay = self.layout
        read = sum(c.msgcount for c in self.connections)
        if self.damage is None:
            self.damage = Damage(
                lay.storage,
                str(lay.root),
                "",
                file_bytes=sum(p.path.stat().st_size for p in lay.present if p.path is not None),
                messages_expected=lay.message_count,
                missing_files=list(lay.missing),
            )
        self.damage.reason = "; ".join(self._problems)
        self.damage.messages_read = read

    @property
    def start_time(self) -> int:
        return min((r.reader.start_time for _p, r in self._readers), default=0)

    @property
    def end_time(self) -> int:
        return max((r.reader.end_time for _p, r in self._readers), default=0)

    @property
    def duration(self) -> int:
        return max(self.end_time - self.start_time, 0)

    def messages(
        self, connections: Collection[Connection] = (), start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[Connection, int, bytes | memoryview]]:
        """Messages of `connections` (empty = all), piece after piece in recording order."""
        wanted = {c.topic for c in connections} or None
        merged = {(c.topic, c.msgtype): c for c in self.connections}
        for piece, reader in self._readers:
            for m in reader.messages(wanted):
                conn = merged.get((m.topic, m.connection.msgtype))
                if conn is not None:
                    yield conn, m.log_time_ns, m.raw
            self._check_piece(piece, reader)  # damage only reading finds (rows whose data is unreadable)
            self._update_damage()

    def close(self) -> None:
        for _piece, reader in self._readers:
            try:
                reader.close()
            except Exception as e:  # closing a damaged piece: nothing more to do with it
                log.debug("closing %s: %s", _piece.name, e)
        self._readers = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
