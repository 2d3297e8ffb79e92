"""The GitHub simulator: `from tests.sim.github import Simulator`.

Modules are imported by their absolute name (tests.sim.github.*) so that
pytest's rootdir-relative import of this package does not load a second copy.
"""

from tests.sim.github.simulator import Simulator  # noqa: F401
from tests.sim.github.webhooks import signature_1, signature_256  # noqa: F401

__all__ = ["Simulator", "signature_256", "signature_1"]
