"""Model families, one file each. Importing this package registers every builder."""
from .registry import ModelEntry, count_parameters, create_model, get_entry, list_models, register_model  # noqa: F401

# one import per family file; each file registers its builders with @register_model
from importlib import import_module as _import

for _family in ("dogs", "hourglass", "gmh_mdn", "openpose", "fse"):
    try:
        _import(f"{__name__}.{_family}")
    except ModuleNotFoundError as _e:  # a family not written yet
        if _e.name != f"{__name__}.{_family}":
            raise
