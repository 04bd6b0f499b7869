"""The tabular threat channel: constraints from a schema, constrained attacks and training.

* :mod:`~bastion.tabular.constraints`: :func:`check_feasible` and :class:`ConstraintSet`
  (checking, relaxed projection and snapping in encoded unit space).
* :mod:`~bastion.tabular.threat`: :class:`TabularThreat`, a cost-weighted threat model
  restricted to a schema's constraints.
* :mod:`~bastion.tabular.whitebox`: :class:`ConstrainedPGD`, :class:`ConstrainedAPGD`.
* :mod:`~bastion.tabular.blackbox`: :class:`ConstrainedRandomSearch` (scores),
  :class:`ConstrainedHopSkipJump` (labels).
* :mod:`~bastion.tabular.training`: constrained adversarial training with the shared Trainer.
* :mod:`~bastion.tabular.experiment`: the ``tabular:`` evaluation section and
  :func:`run_tabular_experiment`.
"""

# the white-box attacks first: the registry lists the tabular attacks in this order
from bastion.tabular.whitebox import ConstrainedAPGD, ConstrainedPGD  # isort: split

from bastion.tabular.blackbox import ConstrainedHopSkipJump, ConstrainedRandomSearch
from bastion.tabular.constraints import ConstraintSet, Feasibility, check_feasible
from bastion.tabular.threat import TabularThreat

__all__ = [
    "ConstrainedAPGD",
    "ConstrainedHopSkipJump",
    "ConstrainedPGD",
    "ConstrainedRandomSearch",
    "ConstraintSet",
    "Feasibility",
    "TabularThreat",
    "check_feasible",
]
