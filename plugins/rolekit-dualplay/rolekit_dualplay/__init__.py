"""rolekit-dualplay: proposer-solver self-play, one model in both seats.

A rolekit plugin (entry point ``dualplay`` in group ``rolekit``). It registers the games
``azr_code`` (Absolute Zero Reasoner's deduction / abduction / induction tasks on small
Python programs, validated in ``rolekit.sandbox``) and ``pasodoble_math`` (PasoDoble's
proposer and solvers on math problems, judged by the ``math`` verifier).
"""

from __future__ import annotations

from rolekit.hookspecs import hookimpl
from rolekit_dualplay.azr import AzrCode
from rolekit_dualplay.pasodoble import PasoDobleMath

__all__ = ["AzrCode", "PasoDobleMath"]


@hookimpl
def rolekit_register_games(registry):
    registry.add(AzrCode)
    registry.add(PasoDobleMath)
