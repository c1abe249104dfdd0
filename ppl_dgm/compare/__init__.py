"""Compare estimators on one model, fairly, and report a tidy table.

One module per job:

* :mod:`~ppl_dgm.compare.spec`: the estimator list (``"elbo,iwae:num_particles=5"``);
* :mod:`~ppl_dgm.compare.config`: the comparison's settings, one frozen
  :class:`CompareConfig`;
* :mod:`~ppl_dgm.compare.inputs`: model and guide factories, the checked data;
* :mod:`~ppl_dgm.compare.run`: :func:`compare` and the run of each (estimator, seed);
* :mod:`~ppl_dgm.compare.measure`: peak memory and forked random numbers;
* :mod:`~ppl_dgm.compare.result`: :class:`ComparisonResult`, its summary and files;
* :mod:`~ppl_dgm.compare.plots`: the PNG plots.

Example::

    from ppl_dgm.compare import compare
    from ppl_dgm.data import load_digits

    result = compare("vae", None, ["elbo", "iwae:num_particles=5"], load_digits(),
                     steps=1000, seeds=2, eval_samples=1000)
    print(result.to_markdown())
    result.save("runs/cmp")   # CSV, JSON, markdown and PNG plots
"""

from .config import CompareConfig
from .result import OUTPUT_FILES, SNAPSHOTS, TIMING_COLUMNS, ComparisonResult
from .run import compare
from .spec import EstimatorSpec, parse_estimators

__all__ = ["OUTPUT_FILES", "SNAPSHOTS", "TIMING_COLUMNS", "CompareConfig", "ComparisonResult",
           "EstimatorSpec", "compare", "parse_estimators"]
