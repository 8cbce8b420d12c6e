"""The sacred-style command line: ``with NAME... key=value...`` → a checked ``DictConfig``.

Presets apply left to right, then every ``key=value`` on top, as sacred did. Values are Python
literals (``1e-4``, ``[\"coco\"]``, ``None``, ``True``) or YAML (``true``, ``null``, ``[coco, vg]``);
anything else is a string. ``loss_names.mae=1`` sets one task weight, ``img_prune.keep_ratio=[0.9]``
one ELIP entry. Every key and value is checked
against the schema before anything runs; unknown keys and presets name the closest valid one.
"""
from __future__ import annotations

import ast
import difflib
import typing
from typing import Any, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf

from vlkit.config.named_configs import expand, resolve_names
from vlkit.config.schema import DICT_KEYS, LOSS_NAMES, check_allowed_value, defaults, field_types


class ConfigError(ValueError):
    """A key, value or preset on the command line that the schema does not accept."""


def parse_value(text: str) -> Any:
    """A command-line value as a Python literal, else YAML, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def split_arguments(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(preset names, (key, raw value) overrides) from the words after ``with``."""
    words = list(argv)
    if words and words[0] == "with":
        words = words[1:]
    names, overrides = [], []
    for word in words:
        if "=" in word:
            key, _, value = word.partition("=")
            overrides.append((key.strip(), value))
        elif word:
            names.append(word)
    return names, overrides


def _closest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.0)
    return f"; did you mean {close[0]!r}?" if close else ""


def _entry(key: str) -> tuple[str, str] | None:
    """(``loss_names``, ``mlm``) for ``loss_names.mlm``; None for a plain key."""
    parent, _, entry = key.partition(".")
    return (parent, entry) if entry and parent in DICT_KEYS else None


def _check_entries(key: str, entries: Sequence[str]) -> None:
    valid = DICT_KEYS[key]
    for entry in entries:
        if entry not in valid:
            what = "task" if key == "loss_names" else "entry"
            raise ConfigError(f"unknown {what} {entry!r} in {key}{_closest(entry, valid)}; valid: {list(valid)}")


def check_key(key: str) -> None:
    """Fail unless ``key`` is a schema key or an entry of a mapping key (``loss_names.<task>``)."""
    types = field_types()
    if _entry(key):
        parent, entry = _entry(key)
        _check_entries(parent, [entry])
        return
    if key not in types:
        raise ConfigError(f"unknown config key {key!r}{_closest(key, list(types))}")


def _accepts(kind: Any, value: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the declared type ``kind``, and the value converted to it."""
    if kind is Any:
        return True, value
    origin = typing.get_origin(kind)
    if origin is typing.Union:
        for option in typing.get_args(kind):
            ok, converted = _accepts(option, value)
            if ok:
                return True, converted
        return False, value
    if kind is type(None):
        return value is None, value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return numeric, float(value) if numeric else value
    if kind is str:
        return isinstance(value, str), value
    base = origin or kind
    return isinstance(value, base), value


def type_name(kind: Any) -> str:
    """``int``, ``int or None``, ``list``: a declared type as a user reads it."""
    if typing.get_origin(kind) is typing.Union:
        return " or ".join(type_name(option) for option in typing.get_args(kind))
    return "None" if kind is type(None) else getattr(kind, "__name__", str(kind))


def check_value(key: str, value: Any) -> Any:
    """``value`` converted to the declared type of ``key``; a ConfigError when it does not fit."""
    if _entry(key):
        kind = float if key.startswith("loss_names.") else list
    else:
        kind = field_types()[key]
    ok, converted = _accepts(kind, value)
    if not ok:
        raise ConfigError(
            f"config key {key}={value!r} ({type(value).__name__}) must be {type_name(kind)}"
        )
    try:
        check_allowed_value(key, converted)
    except ValueError as err:
        raise ConfigError(f"config key {err}") from None
    if key in DICT_KEYS:
        _check_entries(key, sorted(converted))
    if key == "loss_names":
        converted = {name: float(converted.get(name, 0)) for name in LOSS_NAMES}
    return converted


def apply_values(config: dict[str, Any], values: dict[str, Any], source: str) -> None:
    """Check every key and value of ``values`` and write them into ``config``."""
    for key, value in values.items():
        try:
            check_key(key)
            checked = check_value(key, value)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        if _entry(key):
            parent, entry = _entry(key)
            config[parent] = {**config[parent], entry: checked}
        else:
            config[key] = checked


def resolve_config(
    argv: Sequence[str], values: dict[str, Any] | None = None, source: str = "", base: Sequence[str] = ()
) -> DictConfig:
    """The run config of ``with NAME... key=value...`` (defaults, presets, then overrides).

    ``base`` presets and then ``values`` (checked like the rest, named ``source`` in errors) apply
    before ``argv``: how a reference yaml file (``--config``) enters, on top of its system's
    presets and under the command line's presets and overrides.
    """
    names, overrides = split_arguments(argv)
    base_presets = resolve_names(list(base))
    presets = resolve_names(names)  # unknown names fail here, before any value is applied
    for key, _ in overrides:
        check_key(key)
    config = defaults()
    for preset in base_presets:
        apply_values(config, expand(preset), f"preset {preset.qualified}")
    if values:
        apply_values(config, values, source or "values")
    for preset in presets:
        apply_values(config, expand(preset), f"preset {preset.qualified}")
    for key, raw in overrides:
        value = raw if field_types().get(key) is str else parse_value(raw)
        apply_values(config, {key: value}, "command line")
    return OmegaConf.create(config)
