"""Plain-PyTorch versions of every uvireid_ext op: the test oracle, and the documentation of what
each op computes. Written for clarity, not speed; small inputs only."""

from .cluster import *  # noqa: F403
from .distance import *  # noqa: F403
from .memory import *  # noqa: F403
from .mmd import *  # noqa: F403
