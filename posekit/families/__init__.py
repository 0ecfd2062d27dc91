"""One Task per model family; importing this package registers them."""
from . import dogs, gmh_mdn, hourglass  # noqa: F401  (each registers its Task)
