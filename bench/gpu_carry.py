"""Stages, on this machine, what the lent GPU machine lacks for bench/gpu_check.py, and prints the
two device-tool calls that run it (docs/gpu-check.md). Run in the repository root:

    .venv/bin/python bench/gpu_carry.py [--ham10000 PATH]

Writes `.gpu_carry/` (ignored by git; the device tool carries it):
- `site.tar.xz`: the Python packages attnsweep imports (trainer, study driver, report) that the GPU
  machine's image lacks (`DEVICE_PACKAGES`), as cp312 manylinux wheels of the versions installed
  here, unpacked; ray without its Java jars, RLlib and dashboard web client (the driver starts no
  dashboard), so that it fits one call's 64 MiB;
- `ham10000/`: the HAM10000 metadata and images (56 MB: the second call carries only them).
Needs pip's access to the package registry (here, not there: nothing can be fetched there)."""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".gpu_carry"
CALL_LIMIT = 64 * 2**20  # what one device call carries, the working tree included

# The GPU machine's Python packages (.library/device/KINDS.md, image 'cuda', read 2026-11-17; Python 3.12).
DEVICE_PACKAGES = {
    "absl-py", "accelerate", "aiofiles", "aiohappyeyeballs", "aiohttp", "aiosignal", "annotated-doc", "anyio", "attrs",
    "botorch", "build", "certifi", "charset-normalizer", "chex", "click", "cloudpickle", "cmake", "colorama",
    "contourpy", "coverage", "cuda-bindings", "cuda-core", "cuda-pathfinder", "cuda-toolkit", "cupy-cuda13x", "cycler",
    "cython", "diffrax", "e3nn", "einops", "equinox", "etils", "execnet", "filelock", "flatbuffers", "flax",
    "fonttools", "formulaic", "frozenlist", "fsspec", "gpytorch", "grpcio", "h11", "h5py", "hf-xet", "httpcore",
    "httpx", "humanize", "huggingface-hub", "hypothesis", "idna", "imageio", "iniconfig", "interface-meta", "jax",
    "jax-cuda13-pjrt", "jax-cuda13-plugin", "jaxlib", "jaxtyping", "jinja2", "joblib", "kiwisolver", "lazy-loader",
    "lightning", "lightning-utilities", "linear-operator", "lineax", "llvmlite", "lxml", "markdown", "markdown-it-py",
    "markupsafe", "matplotlib", "mdurl", "meson", "ml-dtypes", "mpi4py", "mpmath", "msgpack", "multidict",
    "multipledispatch", "mypy-extensions", "nanobind", "narwhals", "networkx", "ninja", "numba", "numba-cuda", "numpy",
    "numpyro", "nvidia-cublas", "nvidia-cuda-cupti", "nvidia-cuda-nvrtc", "nvidia-cuda-runtime", "nvidia-cudnn-cu13",
    "nvidia-cufft", "nvidia-cufile", "nvidia-curand", "nvidia-cusolver", "nvidia-cusparse", "nvidia-cusparselt-cu13",
    "nvidia-ml-py", "nvidia-nccl-cu13", "nvidia-nvjitlink", "nvidia-nvshmem-cu13", "nvidia-nvtx", "onnx", "onnx-ir",
    "onnxruntime", "onnxscript", "opencv-python-headless", "optax", "opt-einsum", "opt-einsum-fx", "optimistix",
    "orbax-checkpoint", "packaging", "pandas", "pathspec", "patsy", "peft", "pillow", "pip", "pluggy", "portalocker",
    "prometheus-client", "propcache", "protobuf", "psutil", "pyarrow", "pybind11", "py-cpuinfo", "pygments",
    "pyparsing", "pyproject-hooks", "pyre-extensions", "pytest", "pytest-benchmark", "pytest-cov", "pytest-mock",
    "pytest-timeout", "pytest-xdist", "python-dateutil", "pytorch-lightning", "pyyaml", "regex", "requests", "rich",
    "sacrebleu", "safetensors", "scikit-build-core", "scikit-image", "scikit-learn", "scipy", "seaborn",
    "sentencepiece", "sentence-transformers", "setuptools", "shellingham", "simplejson", "six", "sortedcontainers",
    "statsmodels", "sympy", "tabulate", "tensorboard", "tensorboard-data-server", "tensorstore", "threadpoolctl",
    "tifffile", "tiktoken", "timm", "tokenizers", "toolz", "torch", "torchaudio", "torchdiffeq", "torch-geometric",
    "torchmetrics", "torchvision", "tqdm", "transformers", "treescope", "triton", "typer", "typing-extensions",
    "typing-inspect", "urllib3", "uvloop", "wadler-lindig", "werkzeug", "wheel", "wrapt", "xarray", "xxhash", "yarl",
    "zipp", "attnsweep"
}

# Imported here, in a fresh interpreter, to list the distributions a GPU run loads: the trainer,
# the study driver with its MLflow store (sqlite: SQLAlchemy, alembic), the report with Grad-CAM.
_CLOSURE = """
import importlib, importlib.metadata as md, sys, tempfile
for m in ["attnsweep.pipelines.cli.run", "attnsweep.pipelines.sweep.orchestrate", "attnsweep.pipelines.report.build",
          "attnsweep.pipelines.report.explain", "attnsweep.pipelines.trial.trainer", "attnsweep.pipelines.trial.executors",
          "ray.tune", "ray.tune.search.optuna", "optuna", "mlflow", "pytorch_grad_cam", "submitit.local._local"]:
    importlib.import_module(m)
from mlflow.tracking import MlflowClient
MlflowClient(tracking_uri=f"sqlite:///{tempfile.mkdtemp()}/m.db").search_experiments()
names = md.packages_distributions()
for dist in sorted({d for m in list(sys.modules) for d in names.get(m.split(".")[0], [])}):
    print(dist, md.version(dist))
"""
_WHEEL_PLATFORM = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:", *(
    a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                "manylinux1_x86_64", "any") for a in ("--platform", p))]
# Not needed by a run that starts no Ray dashboard and no Java or RLlib workers: 60 MB unpacked.
_TRIM = ("ray/jars", "ray/rllib", "ray/dashboard/client/build")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_distributions() -> list[str]:
    """`name==version` of what a GPU run imports that the GPU machine lacks."""
    lines = subprocess.run([sys.executable, "-c", _CLOSURE], capture_output=True, text=True, check=True,
                           cwd=REPO).stdout.split("\n")
    pins = [line.split() for line in lines if line.strip()]
    return sorted(f"{name}=={version}" for name, version in pins if norm(name) not in DEVICE_PACKAGES)


def download(requirement: str, into: Path) -> None:
    """A cp312 Linux wheel of `requirement`; a pure-Python sdist is built into a wheel here."""
    pip = [sys.executable, "-m", "pip"]
    got = subprocess.run([*pip, "download", "-q", "--no-deps", *_WHEEL_PLATFORM, "-d", str(into), requirement],
                         capture_output=True, text=True, check=False)
    if got.returncode != 0:
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(into), requirement], check=True)


def pack_site(requirements: list[str], dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp, "wheels"), Path(tmp, "site")
        wheels.mkdir()
        for req in requirements:
            download(req, wheels)
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(site)
        for rel in _TRIM:
            shutil.rmtree(site / rel, ignore_errors=True)
        for junk in site.rglob("*.js.map"):
            junk.unlink()
        with tarfile.open(dest, "w:xz") as tar:
            tar.add(site, arcname=".")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ham10000", type=Path, default=REPO.parent / "shared" / "data" / "ham10000")
    args = ap.parse_args()
    if not (args.ham10000 / "HAM10000_metadata.csv").is_file():
        print(f"error: --ham10000 {args.ham10000}: no HAM10000_metadata.csv there", file=sys.stderr)
        return 2
    CARRY.mkdir(exist_ok=True)
    requirements = missing_distributions()
    print(f"{len(requirements)} packages the GPU machine lacks: {' '.join(requirements)}")
    pack_site(requirements, CARRY / "site.tar.xz")
    ham = CARRY / "ham10000"
    if not ham.is_dir():
        shutil.copytree(args.ham10000, ham, ignore=shutil.ignore_patterns("sample", "original_resolution"))
    sizes = {name: sum(f.stat().st_size for f in (CARRY / name).rglob("*") if f.is_file()) if (CARRY / name).is_dir()
             else (CARRY / name).stat().st_size for name in ("site.tar.xz", "ham10000")}
    for name, size in sizes.items():
        print(f".gpu_carry/{name}: {size / 2**20:.1f} MiB{'  OVER one call' if size > CALL_LIMIT else ''}")
    print("now the two device calls of docs/gpu-check.md, one right after the other (the machine stays warm 30 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
