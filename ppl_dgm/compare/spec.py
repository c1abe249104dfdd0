"""The estimator list of a comparison: a small spec language, parsed to :class:`EstimatorSpec`.

``"elbo,iwae:num_particles=5:dreg=True"`` names two estimators, the second with options;
``"all"`` names every registered estimator and ``"path/est.py:MyEst:k=3"`` a user's class.
Option values are Python literals where they parse as one (``5``, ``True``, ``(1, 2)``)
and strings otherwise.  The comparison-wide ``particles`` fills in ``num_particles``
for every estimator that takes it and was not given its own; :func:`skip_reason` says
when such a filled-in value (or the estimator itself) does not suit a comparison.
"""

from __future__ import annotations

import ast
import copy
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .. import registry
from ..estimators.base import Estimator

__all__ = ["EstimatorSpec", "parse_estimators", "skip_reason"]


@dataclass(frozen=True)
class EstimatorSpec:
    """One estimator of a comparison: a label, a class or registered name, options.

    ``particles_from_default`` is True when ``num_particles`` was filled in from the
    comparison-wide ``particles`` rather than given for this estimator.
    """

    label: str
    estimator: str | type | Estimator
    options: Mapping[str, object] = field(default_factory=dict)
    particles_from_default: bool = False

    @property
    def cls(self) -> type:
        if isinstance(self.estimator, Estimator):
            return type(self.estimator)
        return registry.resolve("estimator", self.estimator)

    def build(self) -> Estimator:
        if isinstance(self.estimator, Estimator):
            est = copy.deepcopy(self.estimator)
            if self.options:
                raise ValueError(f"estimator {self.label!r} is an instance; options "
                                 f"{dict(self.options)} cannot be applied to it")
            return est
        return registry.build_estimator(self.estimator, options=dict(self.options))


def _parse_value(text: str):
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return list(value) if isinstance(value, tuple) else value


def _split_item(item: str) -> tuple[str, list[str]]:
    """``"iwae:num_particles=5:dreg=True"`` -> ``("iwae", ["num_particles=5", "dreg=True"])``;
    a user file ``"path/est.py:MyEst:k=3"`` keeps ``path/est.py:MyEst`` as the name."""
    if ".py:" in item:
        path, _, rest = item.partition(".py:")
        cls_name, *opts = rest.split(":")
        return f"{path}.py:{cls_name}", opts
    name, *opts = item.split(":")
    return name, opts


def _accepts_particles(cls: type) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return "num_particles" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def parse_estimators(spec: str | Sequence, *, particles: int | None = None) -> list[EstimatorSpec]:
    """Turn an estimator list into :class:`EstimatorSpec` objects.

    ``spec`` is a comma-separated string or a sequence whose items are

    * a registered name, ``"all"`` (every registered estimator), or a user's
      ``"path/to/file.py:ClassName"``, optionally followed by options
      ``:key=value[:key=value...]``, e.g. ``"iwae:num_particles=5:dreg=True"``;
    * an :class:`~ppl_dgm.estimators.base.Estimator` subclass or instance;
    * an :class:`EstimatorSpec`.

    ``particles`` sets ``num_particles`` for every estimator whose constructor takes
    it, unless that estimator's options give it.  Labels (the item as written) must be
    unique: to compare one estimator with two settings, give the options, e.g.
    ``"iwae:num_particles=5,iwae:num_particles=50"``.
    """
    if isinstance(spec, str):
        items: list = [s.strip() for s in spec.split(",")] if spec.strip() else []
        if any(not s for s in items):
            raise ValueError(f"estimator list {spec!r} has an empty entry; give names separated "
                             f"by commas, e.g. 'elbo,iwae' (options after a colon: "
                             f"'iwae:num_particles=5')")
    elif isinstance(spec, (type, Estimator, EstimatorSpec)):
        items = [spec]
    else:
        items = list(spec)
    if particles is not None and (not isinstance(particles, int) or particles < 1):
        raise ValueError(f"particles must be a positive integer, got {particles!r}")
    if not items:
        raise ValueError("the estimator list is empty; name at least one estimator, e.g. "
                         f"'elbo,iwae' (registered: {', '.join(registry.ESTIMATORS)})")
    out: list[EstimatorSpec] = []
    for item in items:
        if isinstance(item, EstimatorSpec):
            out.append(item)
            continue
        if isinstance(item, Estimator):
            out.append(EstimatorSpec(item.name, item))
            continue
        if isinstance(item, type):
            registry.resolve("estimator", item)
            out.append(_with_particles(EstimatorSpec(item.__name__, item), particles))
            continue
        if not isinstance(item, str):
            raise TypeError(f"estimator entries are names, Estimator classes or instances; "
                            f"got {type(item).__name__}")
        if item == "all":
            out.extend(_with_particles(EstimatorSpec(n, n), particles)
                       for n in registry.ESTIMATORS)
            continue
        name, opt_items = _split_item(item)
        registry.resolve("estimator", name)  # unknown names fail here, before any work
        options = {}
        for opt in opt_items:
            key, sep, value = opt.partition("=")
            if not sep or not key:
                raise ValueError(f"estimator option {opt!r} in {item!r} is not key=value; "
                                 f"write e.g. 'iwae:num_particles=5:dreg=True'")
            options[key] = _parse_value(value)
        label = item if ".py:" not in item else item.partition(".py:")[2]
        out.append(_with_particles(EstimatorSpec(label, name, options), particles))
    labels = [s.label for s in out]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"estimator(s) {dupes} listed more than once; give distinct options "
                         f"to compare settings, e.g. 'iwae:num_particles=5,iwae:num_particles=50'")
    return out


def _with_particles(spec: EstimatorSpec, particles: int | None) -> EstimatorSpec:
    if particles is None or "num_particles" in spec.options or not _accepts_particles(spec.cls):
        return spec
    return EstimatorSpec(spec.label, spec.estimator, {**spec.options, "num_particles": particles},
                         particles_from_default=True)


def skip_reason(spec: EstimatorSpec) -> str | None:
    """Why ``spec`` cannot take part in a bound comparison, or None when it can.

    GAN-type estimators (``needs_likelihood = False``) have no bound to compare; an
    estimator whose ``num_particles`` came from the comparison-wide ``particles`` is
    skipped (not failed) when that value is below its ``min_particles``."""
    cls = spec.cls
    if not getattr(cls, "needs_likelihood", True):
        return (f"{cls.__name__} does not use the likelihood (needs_likelihood=False, a GAN-type "
                f"objective), so it has no bound to compare; compare it with sample-based "
                f"metrics instead")
    k = spec.options.get("num_particles")
    if spec.particles_from_default and isinstance(k, int) and k < cls.min_particles:
        return (f"{cls.__name__} needs num_particles >= {cls.min_particles}; the "
                f"comparison-wide particles={k} does not suit it (give it its own, e.g. "
                f"'{spec.label}:num_particles={cls.min_particles}')")
    return None
