"""The store root: feature sets, encoders, manifests, splits and results under one folder."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection

from iqa_store.fingerprint import fingerprint
from iqa_store.store.featureset import DONE, FeatureSet, build_feature_set, now_iso
from iqa_store.store.files import FileLock, read_json, storage_errors, write_json_atomic
from iqa_store.store.scope import Scope

if TYPE_CHECKING:
    import pandas as pd

    from iqa_store.datasets.manifest import Manifest
    from iqa_store.splits import ProtocolSpec, Split

_TMP_GRACE_SECONDS = 3600  # temporary files live milliseconds; older ones were left by a crash
DEFAULT_CHUNK_BYTES = 1 << 20  # at least ~1 MB per row chunk: few, large files on disk
_VERSIONED_PACKAGES = ("iqa-store", "numpy", "torch", "open_clip_torch", "zarr", "pillow", "scipy")


class StoreError(RuntimeError):
    """A feature set name that resolves to nothing or to several sets, or a busy store."""


class ScopedFeatureError(StoreError):
    """A name whose only feature sets were trained per split: it resolves per split, with a scope."""


@dataclass(frozen=True)
class FeatureIdentity:
    """What the store needs to know of the extractor behind a feature set (never the extractor itself)."""

    name: str
    fingerprint: str  # covers weights, preprocessing and version
    inputs: dict[str, Any]  # what the fingerprint was computed from, kept for people
    settings: dict[str, Any]
    dim: int
    scope: Scope | None = None  # the split its weights were trained on; None: usable everywhere


def default_root() -> Path:
    return Path(os.environ.get("IQA_STORE", "stores"))


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass(frozen=True)
class GcItem:
    path: str
    reason: str


class FeatureStore:
    """A store root on the local filesystem (``--store``, ``$IQA_STORE`` or ``./stores``)."""

    def __init__(self, root: str | Path | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.chunk_bytes = int(chunk_bytes)

    features_dir = property(lambda self: self.root / "features")
    manifests_dir = property(lambda self: self.root / "manifests")
    encoders_dir = property(lambda self: self.root / "encoders")
    results_dir = property(lambda self: self.root / "results")
    splits_dir = property(lambda self: self.root / "splits")
    pretrain_dir = property(lambda self: self.root / "pretrain")  # checkpoints of unfinished training runs
    texts_dir = property(lambda self: self.root / "texts")  # text annotations (iqa_store.store.texts)
    staging_dir = property(lambda self: self.root / ".staging")
    reports_dir = property(lambda self: self.root / "reports")  # iqa-store report's default output
    plots_dir = property(lambda self: self.root / "plots")  # figures a pipeline writes beside its store (demo)

    def staging_path(self) -> Path:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        return self.staging_dir / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"

    # --- feature sets --------------------------------------------------------------------
    def feature_sets(self, dataset: str | None = None, extractor: str | None = None) -> list[FeatureSet]:
        pattern = f"{dataset or '*'}/{extractor or '*'}/*/zarr.json"
        return [FeatureSet(p.parent) for p in sorted(self.features_dir.glob(pattern))]

    def rows_per_chunk(self, dim: int) -> int:
        return max(1, -(-self.chunk_bytes // (4 * dim)))

    def open_or_create(self, manifest: "Manifest", extractor: FeatureIdentity) -> tuple[FeatureSet, bool]:
        """The feature set for this manifest and extractor; created (empty) if new.

        The fingerprint covers the extractor (weights, preprocessing, version), its scope and
        the manifest (ids, file sizes and mtimes): a changed input is a new set, never an overwrite.
        """
        manifest_hash = manifest.manifest_hash()
        identity: dict[str, Any] = {"extractor": extractor.fingerprint, "manifest": manifest_hash}
        if extractor.scope is not None:  # unscoped sets keep the fingerprints they had before scopes existed
            identity["scope"] = extractor.scope.to_dict()
        fp = fingerprint(identity)
        path = self.features_dir / manifest.dataset / extractor.name / fp
        if (path / "zarr.json").exists():
            return FeatureSet(path), False
        with storage_errors(f"feature set {manifest.dataset}/{extractor.name}/{fp} in store {self.root}"):
            return self._create(path, manifest, manifest_hash, extractor, fp), True

    def _create(self, path: Path, manifest: "Manifest", manifest_hash: str, extractor: FeatureIdentity,
                fp: str) -> FeatureSet:
        """Build the set in the staging folder and rename it into place (a failed build leaves nothing)."""
        self.save_manifest(manifest, manifest_hash)
        attrs = {"dataset": manifest.dataset, "extractor": extractor.name, "fingerprint": fp,
                 "extractor_fingerprint": extractor.fingerprint, "fingerprint_inputs": extractor.inputs,
                 "extractor_settings": extractor.settings, "manifest_hash": manifest_hash,
                 "scope": None if extractor.scope is None else extractor.scope.to_dict(),
                 "dataset_root": str(manifest.root), "package_versions": package_versions(), "created": now_iso()}
        staging = self.staging_path()
        try:
            return build_feature_set(path, staging, attrs, manifest.ids, manifest.table["path"].tolist(),
                                     manifest.file_identity(), extractor.dim, self.rows_per_chunk(extractor.dim))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def get(self, name: str) -> FeatureSet:
        """A set by full name ``dataset/extractor/fingerprint`` (a unique fingerprint prefix is enough)."""
        parts = name.strip("/").split("/")
        if len(parts) != 3:
            raise StoreError(f"feature set name {name!r} must look like DATASET/EXTRACTOR/FINGERPRINT (see `iqa-store ls`)")
        dataset, extractor, prefix = parts
        matches = [fs for fs in self.feature_sets(dataset, extractor) if fs.fingerprint.startswith(prefix)]
        if not matches:
            raise StoreError(f"no feature set {name!r} in {self.root}")
        if len(matches) > 1:
            raise StoreError(f"{name!r} is ambiguous: " + ", ".join(fs.name for fs in matches))
        return matches[0]

    def resolve(self, short: str, dataset: str, manifest_hash: str | None = None,
                scope: Scope | None = None, extractors: Collection[str] = ()) -> FeatureSet:
        """Resolve a short feature name for one dataset, among the sets of one scope.

        ``clip-vitb16`` (exact extractor), ``clip`` (the only extractor named ``clip-*``),
        ``clip-vitb16@3fa2`` (fingerprint prefix) or a full name. A name in ``extractors`` (the
        registered extractor names, which the store does not know) is never widened to its
        family: ``qualiclip`` must not find ``qualiclip-embedding`` when it has no set of its own. Among complete sets the one
        built on ``manifest_hash`` wins; anything still ambiguous is an error listing candidates.
        ``scope`` None looks at unscoped sets only; a name that has only scoped sets raises
        ``ScopedFeatureError`` (resolve it per split); a scope looks at the sets of exactly that
        split, and when there are none says which scopes there are.
        """
        if short.count("/") == 2:
            return self._scope_checked(self.get(short), scope)
        base, _, fp_prefix = short.partition("@")
        every = [fs for fs in self.feature_sets(dataset) if fs.is_complete]
        complete = [fs for fs in every if fs.scope == scope]
        candidates = [fs for fs in complete if fs.extractor == base]
        if not candidates and base not in extractors:
            candidates = [fs for fs in complete if fs.extractor.startswith(base + "-")]
        if fp_prefix:
            candidates = [fs for fs in candidates if fs.fingerprint.startswith(fp_prefix)]
        if manifest_hash and len(candidates) > 1:
            current = [fs for fs in candidates if fs.attrs["manifest_hash"] == manifest_hash]
            candidates = current or candidates
        if not candidates:
            self._explain_scopes(short, dataset, [fs for fs in every if _named(fs, base, fp_prefix, extractors)], scope)
            have = sorted({fs.extractor for fs in complete}) or ["none"]
            raise StoreError(f"no complete feature set {short!r} for dataset {dataset!r}; it has: {', '.join(have)}")
        if len(candidates) > 1:
            listing = "\n  ".join(f"{fs.name}  {fs.attrs['extractor_settings']}" for fs in candidates)
            raise StoreError(f"{short!r} is ambiguous for dataset {dataset!r}; name one of:\n  {listing}")
        return candidates[0]

    @staticmethod
    def _scope_checked(fs: FeatureSet, scope: Scope | None) -> FeatureSet:
        if fs.scope != scope:
            have = "unscoped" if fs.scope is None else fs.scope.describe()
            want = "an unscoped set" if scope is None else scope.describe()
            raise StoreError(f"{fs.name} was trained for {have}, and this needs {want}")
        return fs

    @staticmethod
    def _explain_scopes(short: str, dataset: str, named: list[FeatureSet], scope: Scope | None) -> None:
        """Why a name has no set of the wanted scope, when it has sets of other scopes."""
        scopes = sorted({fs.scope for fs in named if fs.scope is not None}, key=lambda s: (s.splits_key, s.split))
        if not scopes:
            return
        if scope is None:
            raise ScopedFeatureError(f"{short!r} on {dataset!r} was trained per split ({scopes[0].protocol}, "
                                     f"splits {scopes[0].splits_key}): it is only used split by split")
        trained = sorted({f"{s.protocol} (splits {s.splits_key})" for s in scopes if s.dataset == scope.dataset})
        if scope.split not in {s.split for s in scopes if s.same_split_set(scope)}:
            what = ", ".join(trained) if trained else f"other datasets ({', '.join(sorted({s.dataset for s in scopes}))})"
            raise StoreError(f"{short!r} on {dataset!r} has no feature set trained for {scope.describe()}; it was "
                             f"trained for {what}. A feature learned from MOS is only used on the split it was "
                             f"trained on: train and extract it for these splits (iqa-store train / extract with "
                             f"--protocol {scope.protocol} and the same --splits and split seed)")

    def splits(self, manifest: "Manifest", spec: "ProtocolSpec") -> list["Split"]:
        """The splits of ``spec`` on ``manifest``: read from the store, or made and saved there.

        The same settings give the same file, so a training stage and every later fit use
        exactly the same rows (``iqa_store.splits.stored``).
        """
        from iqa_store.splits import stored_splits
        return stored_splits(self.splits_dir, manifest, spec)

    def reusable_rows(self, target: FeatureSet) -> dict[int, tuple[FeatureSet, int]]:
        """Rows of ``target`` already computed, with the same extractor fingerprint, in other sets.

        An image matches when id, size and mtime agree: a dataset that gains images only
        computes the new ones.
        """
        wanted = {identity: row for row, identity in enumerate(target.file_identity())}
        found: dict[int, tuple[FeatureSet, int]] = {}
        for other in self.feature_sets(target.dataset, target.extractor):
            if other.path == target.path or other.attrs["extractor_fingerprint"] != target.attrs["extractor_fingerprint"]:
                continue
            done = other.status() == DONE
            for row, identity in enumerate(other.file_identity()):
                if done[row] and identity in wanted:
                    found.setdefault(wanted[identity], (other, row))
        return found

    def remove(self, name: str) -> FeatureSet:
        fs = self.get(name)
        with self.writer_lock(fs, exclusive=True, blocking=False) as held:
            if not held:
                raise StoreError(f"{fs.name} is busy: an extraction is writing it ({FileLock(self._writers(fs)).holder()})")
            trash = self.staging_path()
            fs.path.rename(trash)  # one rename makes it disappear for readers; then delete at leisure
        shutil.rmtree(trash)
        return fs

    # --- writers and garbage ----------------------------------------------------------------
    @staticmethod
    def _writers(fs: FeatureSet) -> Path:
        return fs.path / "locks" / "writers.lock"

    def writer_lock(self, fs: FeatureSet, exclusive: bool = False, blocking: bool = True) -> "_WriterLock":
        return _WriterLock(self._writers(fs), exclusive, blocking)

    def gc(self, dry_run: bool = False) -> list[GcItem]:
        """Remove partial feature sets nobody is writing, and leftovers of crashed writers."""
        items: list[GcItem] = []
        for staged in sorted(self.staging_dir.glob("*")) if self.staging_dir.is_dir() else []:
            pid = staged.name.split("-")[0]
            if pid.isdigit() and _pid_alive(int(pid)) and int(pid) != os.getpid():
                continue  # a live process is still building it
            items.append(GcItem(str(staged), "staging leftover of a finished or crashed process"))
        trash: list[Path] = []
        for fs in self.feature_sets():
            if fs.is_complete:
                continue
            with self.writer_lock(fs, exclusive=True, blocking=False) as held:
                if held:
                    done = len(fs.done_chunks())
                    items.append(GcItem(str(fs.path), f"partial feature set {fs.name} ({done}/{fs.n_chunks} chunks), no writer"))
                    if not dry_run:  # make it disappear while no writer can start on it; delete at leisure
                        trash.append(self.staging_path())
                        fs.path.rename(trash[-1])
        # ours (.NAME.XXXX.tmp, files.py) anywhere; zarr's (NAME.<uuid>.partial) in feature sets' chunk folders
        leftovers = [*self.root.glob("**/.*.tmp"), *self.features_dir.glob("**/*.partial")]
        for tmp in leftovers:
            try:
                age = time.time() - tmp.stat().st_mtime
            except OSError:
                continue  # renamed into place by its writer meanwhile
            if age > _TMP_GRACE_SECONDS and not any(t in tmp.parents for t in trash):  # younger: a live writer may rename it now
                items.append(GcItem(str(tmp), "unfinished temporary file"))
        if not dry_run:
            for item in items:
                path = Path(item.path)
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            for path in trash:
                shutil.rmtree(path, ignore_errors=True)
        return items

    # --- manifests ---------------------------------------------------------------------------
    def save_manifest(self, manifest: "Manifest", manifest_hash: str | None = None) -> Path:
        """Keep the labels next to the features, so a fit needs only the store."""
        manifest_hash = manifest_hash or manifest.manifest_hash()
        path = self.manifests_dir / manifest.dataset / f"{manifest_hash}.json"
        if not path.exists():
            table = manifest.table.astype(object).where(manifest.table.notna(), None)
            with storage_errors(f"the labels of dataset {manifest.dataset} in store {self.root}"):
                write_json_atomic(path, {"dataset": manifest.dataset, "root": str(manifest.root), "hash": manifest_hash,
                                     "mos_range": list(manifest.mos_range), "original_direction": manifest.original_direction,
                                     "info": manifest.info, "saved": now_iso(), "table": table.to_dict(orient="list")})
        return path

    def load_manifest(self, dataset: str, manifest_hash: str | None = None) -> "Manifest":
        """The manifest saved with ``manifest_hash``, or the most recently saved one."""
        import pandas as pd

        from iqa_store.datasets.manifest import Manifest
        folder = self.manifests_dir / dataset
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        if manifest_hash:
            files = [p for p in files if p.stem == manifest_hash]
        if not files:
            raise StoreError(f"no labels for dataset {dataset!r} in {self.root}: extract a feature for it first")
        data = read_json(files[-1])
        return Manifest(dataset, Path(data["root"]), pd.DataFrame(data["table"]), tuple(data["mos_range"]),
                        data["original_direction"], data["info"])

    def datasets(self) -> list[str]:
        return sorted(p.name for p in self.manifests_dir.glob("*") if p.is_dir()) if self.manifests_dir.is_dir() else []

    # --- text annotations --------------------------------------------------------------------
    def save_texts(self, dataset: str, key: str, table: "pd.DataFrame", info: dict[str, Any] | None = None) -> Path:
        """Keep a text table (``iqa_store.texts``) under ``key``: the caller's fingerprint of images and settings."""
        from iqa_store.store.texts import save_texts
        return save_texts(self.texts_dir, dataset, key, table, info)

    def load_texts(self, dataset: str, key: str | None = None) -> "pd.DataFrame | None":
        """The text table saved under ``key`` (the latest for ``dataset`` when None), or None."""
        from iqa_store.store.texts import load_texts
        return load_texts(self.texts_dir, dataset, key)


class _WriterLock:
    """Shared lock held by every extraction writing a set; rm and gc take it exclusively."""

    def __init__(self, path: Path, exclusive: bool, blocking: bool) -> None:
        import fcntl
        self.path, self._fd = path, None
        self._flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)

    def __enter__(self) -> bool:
        import fcntl

        # Never create the folder: a set removed (rm, gc) while we waited must stay removed,
        # not come back as an empty locks/ folder that blocks it from being created again.
        try:
            self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        except FileNotFoundError as error:
            raise StoreError(f"feature set {self.path.parent.parent} was removed while opening it; run again") from error
        try:
            fcntl.flock(self._fd, self._flags)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _named(fs: FeatureSet, base: str, fp_prefix: str, extractors: Collection[str]) -> bool:
    """Whether a short name (``clip``, ``clip-vitb16``, with an optional ``@fingerprint``) names ``fs``."""
    family = base not in extractors and fs.extractor.startswith(base + "-")
    return (fs.extractor == base or family) and fs.fingerprint.startswith(fp_prefix)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__: list[str] = ["FeatureIdentity", "FeatureStore", "GcItem", "ScopedFeatureError", "StoreError", "default_root",
                      "package_versions"]
