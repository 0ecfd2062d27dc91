"""Model families, one file each. Importing this package registers every builder."""
from . import gmh_mdn, hourglass, mobilenetv2_regressor  # noqa: F401  (each registers its builders)
from . import fse  # noqa: F401  (FSE unsupervised landmarks)
from . import openpose  # noqa: F401  (OpenPose / PAF)
from .registry import (ModelEntry, count_parameters, create_model, get_entry, list_models,  # noqa: F401
                       register_model, unwrap)
