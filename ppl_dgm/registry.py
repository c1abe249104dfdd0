"""The one place that knows every model, guide and estimator name.

A new estimator is one module under ``ppl_dgm/estimators/`` plus one line in
``ESTIMATORS``; a new model or guide is one module plus one line here.  A user's own
class needs no registration: ``"path/to/file.py:ClassName"`` is accepted wherever a
name is.
"""

from __future__ import annotations

import hashlib
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
from .estimators.base import Estimator
from .guides import (
    DBMMeanField,
    DBNGuide,
    DCGANDiscriminator,
    Discriminator,
    EmptyGuide,
    GaussianEncoder,
    HelmholtzGuide,
    HierarchicalGuide,
    SentenceEncoder,
    UnitPredictors,
)
from .models import (
    DBM,
    DBN,
    MADE,
    MADEVAE,
    NADE,
    NADEVAE,
    RBM,
    VAE,
    ConjugateGaussian,
    DCGANGenerator,
    FactorialCode,
    Generator,
    Hierarchical,
    SentenceVAE,
    SigmoidBeliefNet,
)
from .protocol import BuildsFromModel, default_guide_name

__all__ = ["DEFAULT_GUIDES", "ESTIMATORS", "GUIDES", "MODELS", "absolute_spec",
           "build_estimator", "build_guide", "build_model", "default_guide", "file_spec",
           "resolve"]

MODELS: dict[str, type] = {
    "vae": VAE,
    "conjugate": ConjugateGaussian,
    "sbn": SigmoidBeliefNet,
    "generator": Generator,
    "dcgan-generator": DCGANGenerator,
    "code": FactorialCode,
    "hierarchical": Hierarchical,
    "nade": NADE,
    "made": MADE,
    "made-vae": MADEVAE,
    "nade-vae": NADEVAE,
    "sentence-vae": SentenceVAE,
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
    "sentence": SentenceEncoder,
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
    "nade": "empty",
    "made": "empty",
    "made-vae": "gaussian",
    "nade-vae": "gaussian",
    "sentence-vae": "sentence",
    "rbm": "empty",
    "dbn": "dbn",
    "dbm": "dbm-mean-field",
}

_TABLES = {"model": MODELS, "guide": GUIDES, "estimator": ESTIMATORS}


def _load_from_file(kind: str, spec: str):
    path_str, _, attr = spec.rpartition(":")
    path = Path(path_str).expanduser().resolve()
    if not path.is_file():
        raise UnknownNameError(f"{kind} file {path_str!r} does not exist (from {spec!r}; the "
                               f"form is path/to/file.py:Name, Name a class or a function)")
    mod_name = f"ppl_dgm_user_{hashlib.sha256(str(path).encode()).hexdigest()[:16]}"
    module = sys.modules.get(mod_name)
    if module is None:
        folder = str(path.parent)
        if folder not in sys.path:  # the file's own imports of its neighbours work
            sys.path.insert(0, folder)
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as e:  # the user's file: say which and what it raised
            del sys.modules[mod_name]
            raise UnknownNameError(f"importing {kind} file {str(path)!r} failed: "
                                   f"{type(e).__name__}: {e}") from e
    if not hasattr(module, attr):
        public = sorted(n for n, v in vars(module).items() if callable(v)
                        and not n.startswith("_") and getattr(v, "__module__", None) == mod_name)
        raise UnknownNameError(f"{path_str} defines no {attr!r}; classes and functions there: "
                               f"{public}")
    found = getattr(module, attr)
    if not callable(found):
        raise UnknownNameError(f"{spec!r} names a {type(found).__name__}, not a class or a "
                               f"function")
    return found


def file_spec(spec: str) -> bool:
    """Whether ``spec`` has the form ``path/to/file.py:Name``."""
    return isinstance(spec, str) and ":" in spec and spec.rpartition(":")[0].endswith(".py")


def absolute_spec(spec):
    """A ``file.py:Name`` spec with the file's absolute path (names are kept as they are),
    so that a run directory works from any working directory."""
    if not file_spec(spec):
        return spec
    path, _, attr = spec.rpartition(":")
    return f"{Path(path).expanduser().resolve()}:{attr}"


def resolve(kind: str, spec):
    """The class (or, for models and guides, the program function) for a registered name,
    a ``file.py:Name`` spec, or a class or function itself."""
    if inspect.isclass(spec) or (kind != "estimator" and callable(spec)
                                 and not isinstance(spec, str)):
        return spec
    table = _TABLES[kind]
    if spec in table:
        return table[spec]
    if file_spec(spec):
        return _load_from_file(kind, spec)
    raise UnknownNameError(f"unknown {kind} {spec!r}; registered {kind}s: "
                           f"{', '.join(sorted(table))} (or give path/to/file.py:Name)")


def _program(kind: str, found, options: dict):
    # a plain function is the program itself; options configure classes only
    if inspect.isclass(found):
        return None
    if options:
        raise ValueError(f"{kind} {getattr(found, '__name__', found)!r} is a function, so it "
                         f"takes no {kind} options (got {sorted(options)}); options are "
                         f"passed to classes")
    return found


def _accepts(cls, name: str) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build_model(spec, *, x_dim: int | None = None, options: dict | None = None,
                data_options: dict | None = None):
    """Instantiate a model, passing the data width as ``x_dim`` and the data set's
    ``data_options`` (e.g. a text corpus's ``vocab_size``) where it takes them and
    ``options`` does not set them."""
    cls = resolve("model", spec)
    options = dict(options or {})
    program = _program("model", cls, options)
    if program is not None:
        return program
    given = {"x_dim": x_dim, **dict(data_options or {})}
    for key, value in given.items():
        if value is not None and key not in options and _accepts(cls, key):
            options[key] = value
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
    program = _program("guide", cls, options)
    if program is not None:
        return program
    if isinstance(cls, BuildsFromModel):
        return cls.from_model(model, **options)
    return cls(**options)


def build_estimator(spec, *, options: dict | None = None):
    cls = resolve("estimator", spec)
    try:
        est = cls(**dict(options or {}))
    except TypeError as e:
        sig = inspect.signature(cls)
        raise ValueError(f"estimator {spec!r} does not accept options {sorted(options or {})}: "
                         f"{e}; its options are {list(sig.parameters)}") from e
    if not isinstance(est, Estimator):
        raise ValueError(f"estimator {spec!r} built a {type(est).__name__}, not an estimator: "
                         f"subclass ppl_dgm.estimators.base.Estimator (see README, "
                         f"'Adding an estimator')")
    return est
