"""Named configs (presets): loading the YAML files and resolving names.

Each file in ``presets/`` holds the named configs of one system (``vlc.yaml``, ``vilt.yaml``,
``vlkit.yaml``, ...). A preset is a mapping of config keys to values plus two optional entries:
``_doc`` (one line shown by ``vlkit presets``) and ``_base`` (presets of the same file applied
first). ``loss_names`` in a preset names the tasks switched on; the others are 0.

Names resolve as ``system.name`` or plain ``name``. A plain name defined by several systems with
different values (``step200k``: VLC keeps ``max_epoch=100``, ViLT sets 200) resolves to the system
of the nearest earlier preset on the command line that only one system defines, else to the first
system in ``SYSTEM_ORDER``; so ``with task_mlm_itm step200k`` is ViLT's command and
``with task_mlm_itm_mae step200k`` VLC's.
"""
from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Sequence

import yaml

from vlkit.config.schema import loss_names

SYSTEM_ORDER = ("vlc", "vilt", "vlkit", "grit", "meter", "elip", "clipvil")
"""Systems whose presets are known, in the order that breaks ties between equal plain names."""
META_KEYS = ("_doc", "_base")


@dataclass(frozen=True)
class Preset:
    """One named config: ``values`` are its own settings, ``base`` the presets applied before."""

    system: str
    name: str
    values: dict[str, Any]
    doc: str = ""
    base: tuple[str, ...] = field(default_factory=tuple)

    @property
    def qualified(self) -> str:
        return f"{self.system}.{self.name}"


class UnknownPresetError(KeyError):
    """A preset name that no preset file defines."""

    def __str__(self) -> str:
        return str(self.args[0])


def _system_rank(system: str) -> int:
    return SYSTEM_ORDER.index(system) if system in SYSTEM_ORDER else len(SYSTEM_ORDER)


@functools.lru_cache(maxsize=1)
def all_presets() -> dict[str, Preset]:
    """Every preset by qualified name (``vlc.step25k``), systems in ``SYSTEM_ORDER``."""
    files = [f for f in resources.files("vlkit.config").joinpath("presets").iterdir() if f.name.endswith(".yaml")]
    presets: dict[str, Preset] = {}
    for file in sorted(files, key=lambda f: (_system_rank(f.name[:-5]), f.name)):
        system = file.name[: -len(".yaml")]
        for name, entry in (yaml.safe_load(file.read_text()) or {}).items():
            entry = dict(entry or {})
            base = entry.get("_base", [])
            preset = Preset(
                system=system,
                name=name,
                values={k: v for k, v in entry.items() if k not in META_KEYS},
                doc=entry.get("_doc", ""),
                base=tuple([base] if isinstance(base, str) else base),
            )
            presets[preset.qualified] = preset
    return presets


def plain_names() -> list[str]:
    """Every plain preset name, each once."""
    return sorted({preset.name for preset in all_presets().values()})


def _definitions(name: str) -> list[Preset]:
    return [preset for preset in all_presets().values() if preset.name == name]


def _unknown(name: str) -> UnknownPresetError:
    choices = plain_names() + list(all_presets())
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.0)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UnknownPresetError(
        f"unknown preset {name!r}{hint} (`vlkit presets` lists them all)"
    )


def find_preset(name: str, context: str | None = None) -> Preset:
    """The preset ``name`` (plain or ``system.name``); ``context`` is the system that breaks ties."""
    if name in all_presets():
        return all_presets()[name]
    definitions = _definitions(name)
    if not definitions:
        raise _unknown(name)
    if len(definitions) == 1 or all(expand(p) == expand(definitions[0]) for p in definitions):
        return definitions[0]
    for preset in definitions:
        if preset.system == context:
            return preset
    return definitions[0]


def resolve_names(names: Sequence[str]) -> list[Preset]:
    """The presets of a command line in order, each plain name resolved as the module doc says."""
    resolved, context = [], None
    for name in names:
        preset = find_preset(name, context)
        if len(_definitions(preset.name)) == 1:
            context = preset.system
        resolved.append(preset)
    return resolved


def expand(preset: Preset, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """All values the preset sets, its ``_base`` presets first; ``loss_names`` made complete."""
    if preset.qualified in _seen:
        raise ValueError(f"preset {preset.qualified} includes itself through _base {list(_seen)}")
    values: dict[str, Any] = {}
    for base_name in preset.base:
        qualified = base_name if "." in base_name else f"{preset.system}.{base_name}"
        if qualified not in all_presets():
            raise _unknown(base_name)
        values.update(expand(all_presets()[qualified], _seen + (preset.qualified,)))
    own = dict(preset.values)
    if "loss_names" in own:
        own["loss_names"] = loss_names(**own["loss_names"])
    values.update(own)
    return values
