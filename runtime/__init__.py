"""parlour: an actor-model conversation runtime.

The flow language and its pure interpreter are in :mod:`parlour.flow`; the exception tree is in
:mod:`parlour.errors`; the command line is :mod:`parlour.cli`.
"""

from .errors import FlowError, FlowNotFound, ParlourError, Problem, StateError

__version__ = "0.1.0"
__all__ = ["FlowError", "FlowNotFound", "ParlourError", "Problem", "StateError", "__version__"]
