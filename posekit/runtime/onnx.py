"""Exported posekit ONNX files read and run through onnxruntime alone (no torch, no onnx package).

The metadata `posekit export` writes (see `posekit.engine.onnx_backend`) is the model's
`metadata_props`; onnxruntime exposes it as `InferenceSession.get_modelmeta().custom_metadata_map`,
so reading it costs one session instead of importing the `onnx` package (1.6 s of start-up) and
parsing the protobuf a second time.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["PLAIN_KEYS", "PREFIX", "default_threads", "open_session", "parse_metadata", "physical_cores",
           "read_metadata"]

PREFIX = "posekit."
PLAIN_KEYS = ("version", "task", "kind", "source_sha256")  # metadata stored as plain strings, not JSON


def physical_cores() -> int:
    """Physical cores this process may use: distinct (package, core) pairs of /proc/cpuinfo among the
    CPUs in its affinity mask (hyper-threads share a core's arithmetic units); the logical count
    where that cannot be read."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    try:
        cores, cpu, package = set(), None, "0"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                cpu, package = int(value), "0"
            elif key == "physical id":
                package = value
            elif key == "core id" and cpu in allowed:
                cores.add((package, value))
        if cores:
            return len(cores)
    except (OSError, ValueError):
        pass
    return max(1, len(allowed))


def default_threads(threads: int | None) -> int:
    """The intra-op thread count to use: `threads` when given (>= 1), else the physical cores."""
    if threads is None:
        return physical_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1 (or None for the {physical_cores()} physical "
                         f"cores), got {threads!r}")
    return threads


def open_session(path: str | Path, *, device: str = "cpu", threads: int | None = None):
    """An onnxruntime InferenceSession on `path` with `threads` intra-op threads (default: the
    physical cores; onnxruntime's own default is slower on a shared machine) and one inter-op
    thread. device "cuda..." adds the CUDA provider when onnxruntime has it."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("running an .onnx file needs onnxruntime: pip install 'posekit[runtime]'") from e
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = default_threads(threads)
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own types for a file that is not an ONNX model
        message = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read ONNX file {path}: {message}") from None


def parse_metadata(props: dict[str, str], source: str) -> dict:
    """posekit's `metadata_props` (a key -> string map) -> its entries without the `posekit.`
    prefix, JSON values decoded; one ValueError naming the file for anything else."""
    out = {}
    for key, value in props.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):]
        try:
            out[name] = json.loads(value) if name not in PLAIN_KEYS else value
        except json.JSONDecodeError:
            raise ValueError(f"{source}: metadata {key} is not valid JSON; re-export the checkpoint with "
                             "`posekit export`") from None
    if "config" not in out:
        raise ValueError(f"{source}: not a posekit export (no posekit.config metadata); re-export it with "
                         "`posekit export`")
    return out


def read_metadata(session, source: str) -> dict:
    """The posekit metadata of an open session's model (see `parse_metadata`)."""
    return parse_metadata(dict(session.get_modelmeta().custom_metadata_map), source)


REEXPORT = "re-export the checkpoint with `posekit export`"


def stored_buffer(buffers: dict | None, name: str, shape: tuple, source: str):
    """`posekit.buffers[name]` ({shape, dtype, data}, as `engine.onnx_backend.state_outside_graph`
    writes a model's data-dependent state) as finite float64 values of `shape`; None when the file
    has no such entry; one ValueError naming the file when the entry is not that."""
    import numpy as np
    entry = (buffers or {}).get(name)
    if entry is None:
        return None
    if isinstance(entry, dict) and entry.get("dtype") in ("float32", "float64") and \
            list(entry.get("shape") or []) == list(shape) and isinstance(entry.get("data"), list):
        try:
            values = np.asarray(entry["data"], dtype=np.float64)
        except (TypeError, ValueError):
            values = None
        if values is not None and values.size == int(np.prod(shape)) and np.isfinite(values).all():
            return values.reshape(shape)
    count = int(np.prod(shape))
    raise ValueError(f"{source}: metadata posekit.buffers[{name!r}] is not {count} finite float number"
                     f"{'s' if count != 1 else ''} of shape {list(shape)} ({{shape, dtype, data}}); {REEXPORT}")
