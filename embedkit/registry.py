"""Backbone discovery through the `embedkit.backbones` entry-point group.

Each entry point names a *family*, a `embedkit.backbone.BackboneFamily`: `name`, `modality`,
`models()` (the names it lists, cheaply), `handles(name)` (a cheap test, no heavy imports, of
whether it builds `name`, listed or not: ``timm/<any>``, a vectors file path) and
`create(name, **options)` (a Backbone).  The built-in families in `embedkit.plugins` register
exactly as a third-party package would.  A family is checked against that interface when it is
loaded, and a broken one is listed with its error, never breaking the others.
"""

from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass
from importlib import metadata

from .backbone import Backbone, BackboneFamily
from .errors import NotFoundError, PluginError, UsageError, WeightsUnavailable

__all__ = ["GROUP", "FoundPlugin", "LoadedFamily", "backbone_from_meta", "broken_plugins",
           "chosen_model", "create_backbone", "default_model", "families", "found_plugins",
           "list_models", "resolve_family"]

GROUP = "embedkit.backbones"


@dataclass(frozen=True)
class FoundPlugin:
    """An entry point seen in package metadata, not yet imported."""

    name: str
    value: str
    package: str


@dataclass
class LoadedFamily:
    """A plugin after import: the family object, or the error that stopped it."""

    plugin: FoundPlugin
    family: BackboneFamily | None = None
    error: str | None = None


def found_plugins() -> list[FoundPlugin]:
    """Entry points of the group, deduplicated (one distribution can be seen twice on sys.path)."""
    seen: dict[str, FoundPlugin] = {}
    for ep in metadata.entry_points(group=GROUP):
        package = ep.dist.name if ep.dist is not None else "?"
        seen.setdefault(ep.name, FoundPlugin(ep.name, ep.value, package))
    return sorted(seen.values(), key=lambda p: p.name)


def _load(plugin: FoundPlugin) -> LoadedFamily:
    try:
        family = metadata.EntryPoint(plugin.name, plugin.value, GROUP).load()
    except Exception as exc:  # a broken plugin is reported, it never breaks the others
        return LoadedFamily(plugin, error=f"{type(exc).__name__}: {exc}")
    if not isinstance(family, BackboneFamily):
        return LoadedFamily(plugin, error=f"{type(family).__name__} is not an embedkit "
                                          "BackboneFamily (subclass embedkit.backbone."
                                          "BackboneFamily)")
    if not family.name or family.modality not in ("image", "text", "any"):
        return LoadedFamily(plugin, error="a family needs a name and a modality (image, text "
                                          "or any)")
    return LoadedFamily(plugin, family)


@functools.lru_cache(maxsize=1)
def families() -> tuple[LoadedFamily, ...]:
    return tuple(_load(p) for p in found_plugins())


def list_models(modality: str | None = None) -> list[tuple[str, BackboneFamily]]:
    """(name, family) for every listed backbone of the working plugins."""
    rows = []
    for lf in families():
        if lf.family is None:
            continue
        if modality and lf.family.modality not in (modality, "any"):
            continue
        rows.extend((name, lf.family) for name in lf.family.models())
    return rows


def broken_plugins() -> list[LoadedFamily]:
    return [lf for lf in families() if lf.family is None]


def resolve_family(name: str):
    """The family that builds `name`: first the cheap `handles(name)` of every family (no heavy
    imports), then the full listings."""
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"the model name {name!r} is empty: give a name from `embedkit "
                         "models`, or none at all for the default")
    working = [lf.family for lf in families() if lf.family is not None]
    for family in working:
        try:
            if family.handles(name):
                return family
        except OSError:  # a family that looks for a file or folder of this name, and the name
            continue     # cannot be one (too long, say): that family does not build it
    for model_name, family in list_models():
        if model_name == name:
            return family
    names = [n for n, _ in list_models()]
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    broken = "".join(f" (plugin '{b.plugin.name}' from {b.plugin.package} failed to load: "
                     f"{b.error})" for b in broken_plugins())
    raise NotFoundError(f"unknown model '{name}'.{hint} See all with: embedkit models{broken}")


def create_backbone(name: str, **options) -> Backbone:
    """Build a backbone by name (cheap: weights load on the first `embed`).

    Args:
        name: a registered name (`embedkit models`), ``timm/<model>``, a vectors file, or a
            fine-tuned folder.
        options: passed to the plugin that builds it: `layer`, `pool`, `normalize`, `weights`
            (a file) for every image family, plus the family's own (e.g. `limit` for word
            vectors); None values are left out.  A plugin refuses options it does not take.

    Raises:
        NotFoundError: no plugin builds `name` (the message lists close matches).
        WeightsUnavailable: `weights` is not a file.
    """
    options = {k: v for k, v in options.items() if v is not None}
    weights = options.get("weights")
    if weights is not None and not os.path.isfile(weights):
        raise WeightsUnavailable(f"{weights}: weights file not found (--weights takes an "
                                 "existing .pth / .safetensors / vectors file)")
    backbone = resolve_family(name).create(name, **options)
    if not isinstance(backbone, Backbone):
        raise PluginError(f"the plugin for '{name}' returned {type(backbone).__name__}, "
                          "not an embedkit Backbone")
    backbone.creation = {"name": name, "options": options}
    return backbone


def backbone_from_meta(meta: dict) -> Backbone:
    """Rebuild exactly the backbone that made an EmbeddingSet, from its meta: the registry
    recipe (`meta["backbone"]`: name and every option it was created with), else the older
    separate fields (model, layer, pool, normalize, weights)."""
    recipe = meta.get("backbone")
    if recipe:
        return create_backbone(recipe["name"], **recipe.get("options", {}))
    if not meta.get("model"):
        raise NotFoundError("these embeddings do not say which model made them; give --model")
    return create_backbone(meta["model"], layer=meta.get("layer"), pool=meta.get("pool"),
                           normalize=meta.get("normalize") or None, weights=meta.get("weights"))


def default_model(modality: str) -> str:
    """The backbone used when none is named: the bundled EfficientNet-Lite0 for images, the
    bundled GloVe 6B 50-d for texts."""
    return {"image": "efficientnet_lite0", "text": "glove-6b-50d"}[modality]


def chosen_model(model: str | None, modality: str) -> str:
    """The model a caller named, or the default for the modality when it named none (None).
    An empty name is passed on, to be refused, rather than read as 'none'."""
    return default_model(modality) if model is None else model
