"""Model families, one file each. Importing this package registers every builder."""
from . import dogs, gmh_mdn, hourglass  # noqa: F401  (each registers its builders)
from .registry import ModelEntry, count_parameters, create_model, get_entry, list_models, register_model  # noqa: F401
