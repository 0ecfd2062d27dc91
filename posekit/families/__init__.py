"""One Task per model family; importing this package registers them."""
from importlib import import_module as _import

for _family in ("dogs", "hourglass", "gmh_mdn", "openpose", "fse"):
    try:
        _import(f"{__name__}.{_family}")
    except ModuleNotFoundError as _e:  # a family not written yet
        if _e.name != f"{__name__}.{_family}":
            raise
