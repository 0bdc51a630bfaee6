"""What the tests must know of the installed releases: the one place they branch on a version."""

import diffusers
from packaging.version import Version

# diffusers 0.40 named `from_pretrained`'s dtype argument `dtype` (later releases still take `torch_dtype`, with a
# FutureWarning); 0.36–0.39 take only `torch_dtype`, and pass an unknown `dtype` on to the model's __init__.
DTYPE_ARGUMENT = "dtype" if Version(diffusers.__version__).release >= (0, 40) else "torch_dtype"
