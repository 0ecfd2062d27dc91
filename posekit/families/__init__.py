"""Model families: one file each, wired on the contract in `base.py`. Importing this package
registers them; adding a family is its own file plus one name in the import line below."""
from .base import (Evaluator, ExportSpec, Task, build_task, get_task_class, list_tasks,  # noqa: F401
                   register_task)
from . import dogs, fse, gmh_mdn, hourglass, openpose  # noqa: F401,E402  (each registers its Task)
from . import keypoints  # noqa: F401,E402  (the generic top-down family: your own skeleton and files)
