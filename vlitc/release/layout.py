"""The release folder, in one room: the name of every file a release holds and who writes it,
the manifest, where a build may write, how a release is staged and swapped in whole, and how a
release is verified against its manifest.

    <release>/manifest.json          every file below with its sha256, records and step (build)
    <release>/README.md              the dataset card                       (report op)
    <release>/report.html            the visual report                      (report op)
    <release>/indicators.json        the quality indicators                 (report op)
    <release>/vlitc.lock             what the release was built from        (report op)
    <release>/llm_responses.jsonl    the LLM responses the build used       (build)
    <release>/pools/<name>.json      the pools an LLM expanded              (build)
    <release>/<outputs[].path>       the exported samples, images under ``image_dir`` (exporters)

A module that adds a file to every release reserves its name with :func:`register` (at import):
an output whose path collides with a registered file is a located recipe error, and readers
that look for sample data skip registered files.

A build never edits a release in place: :func:`publish` stages the whole new release next to
the old one (unchanged files hard-linked, the others copied from the cache and checked against
their sha256), then swaps the folders, so a failed update leaves the old release as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from vlitc.errors import InputError, Location, UserError
from vlitc.hashing import sha256_file
from vlitc.paths import atomic_write
from vlitc.run.store import CorruptObject


@dataclass(frozen=True)
class ReleaseFile:
    """A file (or, ending in ``/``, a folder) that every release may hold."""

    path: str
    writer: str  # who writes it: "build", or the step that does ("report")
    about: str
    data: bool = False  # holds samples a reader of the release should load
    #: a registry that several exports in one folder share (one JSON object, entries by name)
    shared: bool = False

    @property
    def folder(self) -> bool:
        return self.path.endswith("/")


_REGISTRY: dict[str, ReleaseFile] = {}


def register(path: str, writer: str, about: str, data: bool = False, shared: bool = False) -> str:
    """Reserve a release file name (a folder ends in ``/``) and return it, so that the module
    that writes it names it once: ``DROP_LOG = layout.register("dropped.jsonl", "build", ...)``.
    Names compare case-insensitively (releases are copied onto case-insensitive disks).
    ``shared``: a JSON object of entries by name that each export in a folder writes beside its
    data; the build publishes one with every export's entries (:func:`combine`)."""
    key = path.rstrip("/").casefold()
    old = _REGISTRY.get(key)
    if old is not None and (old.writer, old.folder) != (writer, path.endswith("/")):
        raise ValueError(f"release file {path!r} is already registered by {old.writer}")
    _REGISTRY[key] = ReleaseFile(path, writer, about, data, shared)
    return path


def registry_bytes(entries: dict) -> bytes:
    """The bytes of a shared registry file (see :func:`register`), however many wrote it."""
    return (json.dumps(entries, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def combine(files: list[dict], read: Callable[[str], bytes],
            put: Callable[[bytes], tuple[str, int]]) -> list[dict]:
    """The release files with each path once, where several steps name it: the same bytes (an
    image two exports copy into one folder) are one file; a shared registry (LLaMA-Factory's
    ``dataset_info.json`` of two exports in one folder) is one object holding every export's
    entries, its bytes put with ``put``. Different bytes of any other file stay, for
    :func:`publish` to refuse."""
    groups: dict[str, list[dict]] = {}
    for f in files:
        groups.setdefault(str(PurePosixPath(f["path"])).casefold(), []).append(f)
    out: list[dict] = []
    for f in files:
        group = groups[str(PurePosixPath(f["path"])).casefold()]
        if f is not group[0]:
            continue
        if len({g["sha256"] for g in group}) == 1:
            out.append(f)
            continue
        known = _REGISTRY.get(PurePosixPath(f["path"]).name.casefold())
        if known is None or not known.shared:
            out.extend(group)
            continue
        merged: dict = {}
        for g in group:
            for name, entry in json.loads(read(g["sha256"])).items():
                if name in merged:
                    raise UserError(f"two exports register the dataset {name!r} in {f['path']} "
                                    f"({group[0]['step']} and {g['step']}): give one a `name:`")
                merged[name] = entry
        sha, size = put(registry_bytes(merged))
        out.append({**f, "sha256": sha, "size": size,
                    "step": "+".join(str(g.get("step", "?")) for g in group)})
    return out


MANIFEST = register("manifest.json", "build", "every file of the release with its sha256")
CARD = register("README.md", "report", "the dataset card")
REPORT = register("report.html", "report", "the visual report")
INDICATORS = register("indicators.json", "report", "the quality indicators")
LOCK = register("vlitc.lock", "report", "what the release was built from")
RESPONSES = register("llm_responses.jsonl", "build", "the LLM responses the build used")
POOLS = register("pools/", "build", "the instruction pools an LLM expanded")
#: the files the ``release`` report op writes, in the order it returns them
REPORT_FILES = (CARD, REPORT, INDICATORS, LOCK)

#: prefixes of the temp folders a build leaves next to (or inside) a release while it swaps
STAGING_PREFIX = ".vlitc-staging-"
OLD_PREFIX = ".vlitc-old-"


def registered() -> list[ReleaseFile]:
    """Every registered release file, sorted by path."""
    return sorted(_REGISTRY.values(), key=lambda f: f.path.casefold())


def pool_path(name: str) -> str:
    """Where the release keeps the templates of the pool ``name`` that an LLM expanded."""
    return f"{POOLS}{name}.json"


def not_data(rel: str) -> bool:
    """Whether a release-relative path is a registered file that holds no samples."""
    f = collision(rel)
    return f is not None and not f.data


def collision(path: str) -> ReleaseFile | None:
    """The registered release file that writing ``path`` (relative to the release) would
    overwrite, fall inside of or shadow; ``None`` when the name is free."""
    parts = [p.casefold() for p in PurePosixPath(path).parts if p not in ("", ".")]
    if not parts:
        return None
    joined = "/".join(parts)
    for f in _REGISTRY.values():
        name = f.path.rstrip("/").casefold()
        if joined == name or joined.startswith(name + "/") or name.startswith(joined + "/"):
            return f
    return None


# the manifest ------------------------------------------------------------------------------
def manifest(head: dict, steps: list[dict], files: Iterable[dict], llm: dict | None) -> dict:
    """The manifest of a build: ``head`` (name, version, recipe, seed, seconds), the steps, and
    each release file with its sha256, records and the step that wrote it."""
    out = {**head, "steps": steps,
           "outputs": [{"path": f["path"], "sha256": f["sha256"], "records": f["records"],
                        "step": f["step"]} for f in files]}
    if llm is not None:
        out["llm"] = llm
    return out


def read_manifest(release: Path) -> dict:
    """The manifest of a release folder, or ``{}`` when it has none that vlitc wrote."""
    try:
        data = json.loads((Path(release) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    ok = isinstance(data, dict) and "vlitc" in data and isinstance(data.get("outputs"), list)
    return data if ok and all(isinstance(o, dict) and "path" in o for o in data["outputs"]) else {}


def file_hashes(m: dict) -> dict[str, str]:
    """``{path: sha256}`` of the files a manifest lists."""
    return {str(o["path"]): str(o.get("sha256")) for o in m.get("outputs", [])}


def verify(release: Path) -> list[str]:
    """Every file a release's manifest lists that is missing or whose bytes differ from its
    recorded sha256, as ``path: what`` lines (empty: the release is what its manifest says)."""
    release = Path(release)
    m = read_manifest(release)
    if not m:
        return [f"{MANIFEST}: missing or not written by vlitc"]
    out = []
    for rel, sha in sorted(file_hashes(m).items()):
        path = release / rel
        if not path.is_file():
            out.append(f"{rel}: missing")
        elif sha256_file(path) != sha:
            out.append(f"{rel}: bytes differ from the manifest")
    return out


# where a build may write --------------------------------------------------------------------
def check_out_dir(out_dir: Path, cache_dir: Path | None = None) -> None:
    """A build writes only into a new or empty folder (hidden entries such as ``.git`` aside)
    or into an earlier release, never over a folder of other files (``--out .`` in a project
    would replace its README.md); the cache may not live inside the release."""
    out_dir = Path(out_dir)
    where = Location(str(out_dir))
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("the output folder is a file", where, hint="choose a folder with --out")
    if cache_dir is not None and _inside(Path(cache_dir), out_dir):
        raise InputError(f"the cache folder {cache_dir} is inside the output folder", where,
                         hint="a build replaces its output folder whole: keep the cache elsewhere")
    if not out_dir.is_dir() or read_manifest(out_dir):
        return
    others = sorted(e.name for e in os.scandir(out_dir) if not e.name.startswith("."))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise InputError(
            f"the output folder holds files that are not a vlitc release ({shown})", where,
            hint="a build replaces what its output folder holds: write into a new or empty "
                 "folder, or into an earlier release (one with a manifest.json)")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _holds_cwd(folder: Path) -> bool:
    """Whether the working directory is ``folder`` or inside it (a folder that cannot move)."""
    try:
        return _inside(Path.cwd(), folder)
    except FileNotFoundError:  # the working directory was removed
        return False


def current_umask() -> int:
    """The process umask, read without changing it where the system says it (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# staging and swapping -----------------------------------------------------------------------
def copy_verified(src: Path, dst: Path, sha: str) -> None:
    """Copy ``src`` to a new file ``dst`` (mode from the umask), checking the bytes against
    ``sha`` on the way; on a mismatch ``dst`` is removed and :class:`CorruptObject` raised."""
    h = hashlib.sha256()
    try:
        with open(src, "rb") as fin, open(dst, "xb") as fout:
            while block := fin.read(1 << 20):
                h.update(block)
                fout.write(block)
    except FileNotFoundError as e:
        if e.filename == str(src) or not Path(src).exists():
            Path(dst).unlink(missing_ok=True)
            raise CorruptObject(sha, src) from None
        raise
    if h.hexdigest() != sha:
        Path(dst).unlink(missing_ok=True)
        raise CorruptObject(sha, src)


Source = Callable[[str], Path]


@dataclass
class _Plan:
    files: list[dict]
    out_dir: Path
    old: dict[str, str]  # path -> sha256 in the old manifest
    known: dict[str, list]  # dest path -> [size, mtime_ns, sha256] as last written


def publish(files: list[dict], out_dir: Path, manifest_data: dict, source: Source,
            state_path: Path) -> None:
    """Make ``out_dir`` the release of ``files`` (``path``, ``sha256``, ``size`` each) and
    ``manifest_data``, in whole: the new release is staged first; only a complete stage is
    swapped in, so a failure at any point before leaves the old release untouched.
    ``source(sha)`` is where the cache keeps a file's bytes; ``state_path`` remembers what was
    written (size, mtime, sha256) so unchanged files are neither read nor copied again."""
    out_dir = Path(out_dir).resolve()
    _check_paths(files)
    check_out_dir(out_dir)
    try:
        known = json.loads(Path(state_path).read_text())
    except (OSError, ValueError):
        known = {}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _sweep(out_dir)
    plan = _Plan(files, out_dir, file_hashes(read_manifest(out_dir)), known)
    if plan.old and _all_unchanged(plan):  # a rebuild that changed no file: a new manifest only
        tmp = out_dir / f"{STAGING_PREFIX}{MANIFEST}"
        tmp.unlink(missing_ok=True)
        _write_manifest(tmp, manifest_data)
        os.replace(tmp, out_dir / MANIFEST)
    elif out_dir.is_dir() and _holds_cwd(out_dir):
        _publish_in_place(plan, manifest_data, source)
    else:
        _publish_swapped(plan, manifest_data, source)
    atomic_write(Path(state_path), json.dumps(plan.known).encode())


def _check_paths(files: list[dict]) -> None:
    seen: dict[str, str] = {}
    for f in files:
        key = str(PurePosixPath(f["path"])).casefold()
        if key in seen:
            raise UserError(f"two steps write the release file {f['path']} ({seen[key]} and "
                            f"{f.get('step', '?')}): give the outputs distinct paths")
        seen[key] = str(f.get("step", "?"))


def _sweep(out_dir: Path) -> None:
    """Clear what an interrupted swap left behind: staging folders are removed; an old release
    set aside by a swap that was killed before the new one took its place is put back."""
    parent, name = out_dir.parent, out_dir.name
    if not parent.is_dir():
        return
    olds = sorted((e.path for e in os.scandir(parent) if e.name.startswith(f".{name}{OLD_PREFIX}")),
                  key=os.path.getmtime)
    if olds and not out_dir.exists():
        os.rename(olds.pop(), out_dir)
    for e in os.scandir(parent):
        if e.name.startswith(f".{name}{STAGING_PREFIX}") or e.path in olds:
            shutil.rmtree(e.path, ignore_errors=True)
    if out_dir.is_dir():
        for e in os.scandir(out_dir):
            if e.name.startswith(STAGING_PREFIX):
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)


def _unchanged(plan: _Plan, f: dict) -> bool:
    dest = plan.out_dir / f["path"]
    rec = plan.known.get(str(dest))
    try:
        st = dest.stat()
    except OSError:
        return False
    return dest.is_file() and rec == [st.st_size, st.st_mtime_ns, f["sha256"]] and st.st_size == f["size"]


def _all_unchanged(plan: _Plan) -> bool:
    same_names = {str(PurePosixPath(f["path"])) for f in plan.files} == set(plan.old)
    return same_names and all(plan.old[str(PurePosixPath(f["path"]))] == f["sha256"]
                              and _unchanged(plan, f) for f in plan.files)


def _stage(plan: _Plan, staging: Path, source: Source, link_unchanged: bool) -> list[dict]:
    """Write the files into ``staging``; returns those staged (all, when linking unchanged)."""
    mode = 0o666 & ~current_umask()
    staged = []
    for f in plan.files:
        if _unchanged(plan, f) and not link_unchanged:
            continue
        dst = staging / f["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        if _unchanged(plan, f):
            _link_or_copy(plan.out_dir / f["path"], dst)
            if os.stat(dst).st_mode & 0o777 != mode:
                os.chmod(dst, mode)
        else:
            copy_verified(source(f["sha256"]), dst, f["sha256"])
        staged.append(f)
    return staged


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_manifest(path: Path, data: dict) -> None:
    with open(path, "wb") as fh:
        fh.write(json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")


def _remember(plan: _Plan, root: Path, staged: list[dict]) -> None:
    for f in staged:
        st = (root / f["path"]).stat()
        plan.known[str(plan.out_dir / f["path"])] = [st.st_size, st.st_mtime_ns, f["sha256"]]


def _publish_swapped(plan: _Plan, data: dict, source: Source) -> None:
    out_dir = plan.out_dir
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}{STAGING_PREFIX}"))
    try:
        os.chmod(staging, 0o777 & ~current_umask())
        staged = _stage(plan, staging, source, True)
        _carry_over(plan, staging)
        _write_manifest(staging / MANIFEST, data)
        _remember(plan, staging, staged)
        _swap(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _carry_over(plan: _Plan, staging: Path) -> None:
    """Files in the old folder that no build wrote (a ``.git``, notes) go into the new one."""
    if not plan.out_dir.is_dir():
        return
    ours = {p.casefold() for p in plan.old} | {MANIFEST.casefold()}
    ours |= {str(PurePosixPath(f["path"])).casefold() for f in plan.files}
    for dirpath, dirnames, filenames in os.walk(plan.out_dir):
        rel_dir = Path(dirpath).relative_to(plan.out_dir)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if not d.startswith(STAGING_PREFIX)]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = (rel_dir / name).as_posix()
            if rel.casefold() in ours:
                continue
            src, dst = Path(dirpath) / name, staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
            else:
                _link_or_copy(src, dst)


def _swap(staging: Path, out_dir: Path) -> None:
    """Put ``staging`` where ``out_dir`` is, in one step where the system can exchange two
    folders atomically (Linux), else by two renames (the old folder set aside, then removed)."""
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    if _exchange(staging, out_dir):
        return  # staging now holds the old release, removed by the caller
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}{OLD_PREFIX}"))
    os.rmdir(old)
    os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2: Any = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def _publish_in_place(plan: _Plan, data: dict, source: Source) -> None:
    """When the working directory is inside the release (``--out .``), the folder itself stays:
    every changed file is staged inside it, then each is renamed into place, stale files are
    removed and the manifest comes last."""
    out_dir = plan.out_dir
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=STAGING_PREFIX))
    try:
        staged = _stage(plan, staging, source, False)
        _write_manifest(staging / MANIFEST, data)
        for f in staged:
            dest = out_dir / f["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / f["path"], dest)
        _remember(plan, out_dir, staged)
        current = {str(PurePosixPath(f["path"])) for f in plan.files}
        for rel, sha in plan.old.items():
            stale = out_dir / rel
            if rel not in current and stale.is_file() and sha256_file(stale) == sha:
                stale.unlink()
        os.replace(staging / MANIFEST, out_dir / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
