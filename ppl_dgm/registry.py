"""The one place that knows every model, guide and estimator name.

A new estimator is one module under ``ppl_dgm/estimators/`` plus one line in
``ESTIMATORS``; a new model or guide is one module plus one line here.  A user's own
class needs no registration: ``"path/to/file.py:ClassName"`` is accepted wherever a
name is.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

from .errors import UnknownNameError
from .estimators import (
    AAVAE,
    ELBO,
    GAN,
    IWAE,
    IWGAN,
    MMD,
    NSGAN,
    NVIL,
    REINFORCE,
    VIMCO,
    WGANGP,
    ContrastiveDivergence,
    DRegRWS,
    GreedyLayerwise,
    MeanFieldPCD,
    PersistentCD,
    PredictabilityMinimization,
    ReweightedWakeSleep,
    UpDown,
    WakeSleep,
)
from .guides import (
    DBMMeanField,
    DBNGuide,
    DCGANDiscriminator,
    Discriminator,
    EmptyGuide,
    GaussianEncoder,
    HelmholtzGuide,
    HierarchicalGuide,
    UnitPredictors,
)
from .models import (
    DBM,
    DBN,
    RBM,
    VAE,
    ConjugateGaussian,
    DCGANGenerator,
    FactorialCode,
    Generator,
    Hierarchical,
    SigmoidBeliefNet,
)
from .protocol import BuildsFromModel, default_guide_name

__all__ = ["DEFAULT_GUIDES", "ESTIMATORS", "GUIDES", "MODELS", "build_estimator", "build_guide",
           "build_model", "default_guide", "resolve"]

MODELS: dict[str, type] = {
    "vae": VAE,
    "conjugate": ConjugateGaussian,
    "sbn": SigmoidBeliefNet,
    "generator": Generator,
    "dcgan-generator": DCGANGenerator,
    "code": FactorialCode,
    "hierarchical": Hierarchical,
    "rbm": RBM,
    "dbn": DBN,
    "dbm": DBM,
}
GUIDES: dict[str, type] = {
    "gaussian": GaussianEncoder,
    "helmholtz": HelmholtzGuide,
    "discriminator": Discriminator,
    "dcgan-discriminator": DCGANDiscriminator,
    "predictors": UnitPredictors,
    "hierarchical": HierarchicalGuide,
    "empty": EmptyGuide,
    "dbn": DBNGuide,
    "dbm-mean-field": DBMMeanField,
}
ESTIMATORS: dict[str, type] = {
    "elbo": ELBO,
    "iwae": IWAE,
    "ws": WakeSleep,
    "rws": ReweightedWakeSleep,
    "rws-dreg": DRegRWS,
    "reinforce": REINFORCE,
    "nvil": NVIL,
    "vimco": VIMCO,
    "gan": GAN,
    "nsgan": NSGAN,
    "iwgan": IWGAN,
    "wgan-gp": WGANGP,
    "mmd": MMD,
    "pm": PredictabilityMinimization,
    "aavae": AAVAE,
    "cd": ContrastiveDivergence,
    "pcd": PersistentCD,
    "mf-pcd": MeanFieldPCD,
    "greedy": GreedyLayerwise,
    "updown": UpDown,
}
# The guide a model is usually trained with (``--guide`` may be omitted).
DEFAULT_GUIDES: dict[str, str] = {
    "vae": "gaussian",
    "conjugate": "gaussian",
    "sbn": "helmholtz",
    "generator": "discriminator",
    "dcgan-generator": "dcgan-discriminator",
    "code": "predictors",
    "hierarchical": "hierarchical",
    "rbm": "empty",
    "dbn": "dbn",
    "dbm": "dbm-mean-field",
}

_TABLES = {"model": MODELS, "guide": GUIDES, "estimator": ESTIMATORS}


def _load_from_file(kind: str, spec: str) -> type:
    path_str, _, cls_name = spec.rpartition(":")
    path = Path(path_str)
    if not path.is_file():
        raise UnknownNameError(f"{kind} file {path_str!r} does not exist (from {spec!r}; the "
                               f"form is path/to/file.py:ClassName)")
    mod_name = f"ppl_dgm_user_{abs(hash(str(path.resolve())))}"
    module = sys.modules.get(mod_name)
    if module is None:
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        loader_spec.loader.exec_module(module)
    if not hasattr(module, cls_name):
        public = sorted(n for n, v in vars(module).items()
                        if inspect.isclass(v) and not n.startswith("_"))
        raise UnknownNameError(f"{path_str} defines no {cls_name!r}; classes there: {public}")
    return getattr(module, cls_name)


def resolve(kind: str, spec: str | type) -> type:
    """The class for a registered name, a ``file.py:Class`` spec, or a class itself."""
    if inspect.isclass(spec):
        return spec
    table = _TABLES[kind]
    if spec in table:
        return table[spec]
    if ":" in spec and spec.rpartition(":")[0].endswith(".py"):
        return _load_from_file(kind, spec)
    raise UnknownNameError(f"unknown {kind} {spec!r}; registered {kind}s: "
                           f"{', '.join(sorted(table))} (or give path/to/file.py:ClassName)")


def _accepts(cls, name: str) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build_model(spec, *, x_dim: int | None = None, options: dict | None = None):
    """Instantiate a model, passing the data width as ``x_dim`` when it takes one."""
    cls = resolve("model", spec)
    options = dict(options or {})
    if x_dim is not None and "x_dim" not in options and _accepts(cls, "x_dim"):
        options["x_dim"] = x_dim
    return cls(**options)


def default_guide(model_spec) -> str:
    if isinstance(model_spec, str) and model_spec in DEFAULT_GUIDES:
        return DEFAULT_GUIDES[model_spec]
    cls = resolve("model", model_spec)
    guide = default_guide_name(cls)
    if guide is None:
        raise UnknownNameError(f"model {model_spec!r} has no default guide; pass --guide "
                               f"(registered guides: {', '.join(sorted(GUIDES))})")
    return guide


def build_guide(spec, model, *, options: dict | None = None):
    """Instantiate a guide that fits ``model`` (via ``from_model`` when it has one)."""
    cls = resolve("guide", spec)
    options = dict(options or {})
    if isinstance(cls, BuildsFromModel):
        return cls.from_model(model, **options)
    return cls(**options)


def build_estimator(spec, *, options: dict | None = None):
    cls = resolve("estimator", spec)
    try:
        return cls(**dict(options or {}))
    except TypeError as e:
        sig = inspect.signature(cls)
        raise ValueError(f"estimator {spec!r} does not accept options {sorted(options or {})}: "
                         f"{e}; its options are {list(sig.parameters)}") from e
