"""Cell search in the paper's space (Zoph et al., 2018, Sec. 3): the PPO-trained LSTM controller,
random search, regularized evolution and weight-sharing (ENAS) search, with children trained as
Ray tasks and, optionally, a latency-aware reward measured in onnxruntime.

>>> from search import SearchSpace, create_strategy
>>> space = SearchSpace()                      # B = 5, the 13 ops, addition
>>> strategy = create_strategy("evolution", space, seed=0)
>>> proposal = strategy.propose()
>>> genotype = space.decode(proposal.decisions)  # a nasnet_backbones.Genotype
>>> strategy.observe(proposal, reward=0.91)

``nasnet search`` drives a whole search (:class:`SearchRun`): resumable, logged, deduplicated, and
writing ``best_genotype.json`` for ``nasnet_backbones.build_nasnet`` / ``nasnet info --genotype``.
"""

from .child import CHILD_PRESETS, ChildSettings, evaluate_child
from .driver import run_search
from .latency import LatencyModel, LatencySettings
from .run import SearchConfig, SearchError, SearchRun
from .space import Decision, SearchSpace, SearchSpaceError
from .strategies import (STRATEGIES, ENASStrategy, PPOController, Proposal, RandomSearch, RegularizedEvolution, Strategy,
                         create_strategy, register_strategy)
from .supernet import Supernet

__all__ = ["CHILD_PRESETS", "ChildSettings", "Decision", "ENASStrategy", "LatencyModel", "LatencySettings",
           "PPOController", "Proposal", "RandomSearch", "RegularizedEvolution", "STRATEGIES", "SearchConfig",
           "SearchError", "SearchRun", "SearchSpace", "SearchSpaceError", "Strategy", "Supernet", "create_strategy",
           "evaluate_child", "register_strategy", "run_search"]
