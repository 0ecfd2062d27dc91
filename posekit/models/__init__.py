"""Models, one file each (timm style). Importing this package imports every module in it, which
registers its `@register_model` builders: a new model is its file, nothing else to edit."""
import importlib
import pkgutil

from .registry import (ModelArgumentError, ModelEntry, check_model_args, count_parameters,  # noqa: F401
                       create_model, get_entry, list_families, list_models, model_table, register_model, unwrap)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")
