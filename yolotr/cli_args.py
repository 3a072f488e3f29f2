"""Command-line habits of the ``yolo`` command: ``key=value`` arguments and "did you mean" for unknown flags.

``yolotr train model=yolov8n.yaml data=my.yaml epochs=50`` reads as ``yolotr train --model yolov8n.yaml
--data my.yaml --epochs 50``: a ``key=value`` token becomes the sub-command's own flag when it has one
(``save=True`` -> ``--save``, ``val=False`` -> ``--no-val``), otherwise a ``--set key=value`` setting of
``cfg/default.yaml`` for the sub-commands that take ``--set``. Anything else, and an unknown ``--flag``, is
an error printed with the sub-command's usage and the nearest names.
"""

from __future__ import annotations

import argparse
import re

import yaml

from yolotr.errors import ConfigError, did_you_mean, is_number, setting_hint

KEY_VALUE = re.compile(r"^([A-Za-z_][\w-]*)=(.*)$", re.S)


def subparser_of(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.ArgumentParser, int]:
    """The innermost sub-command parser named in ``argv`` (``caption train`` too) and the index after its name."""
    current, start = parser, 0
    i = 0
    while i < len(argv):
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and argv[i] in subs[0].choices:
            current, start = subs[0].choices[argv[i]], i + 1
        i += 1
        if not subs:
            break
    return current, start


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def _settings() -> list[str]:
    from yolotr.engine.config import default_config

    return list(default_config())


def _takes_set(parser: argparse.ArgumentParser) -> bool:
    return "--set" in _options(parser)


def _flag_for(parser: argparse.ArgumentParser, key: str) -> argparse.Action | None:
    """The action of ``--key`` (hyphens or underscores) or the one whose ``dest`` is ``key``."""
    options = _options(parser)
    for flag in (f"--{key}", f"--{key.replace('_', '-')}"):
        if flag in options:
            return options[flag]
    dests = [a for a in parser._actions if a.dest == key.replace("-", "_") and a.option_strings]
    return dests[0] if dests else None


def _as_tokens(action: argparse.Action, key: str, text: str) -> list[str]:
    """The flag tokens that say ``key=text`` for ``action`` (empty when ``text`` is the default)."""
    flag = action.option_strings[-1]
    if action.nargs == 0:  # store_true / store_false: key=true|false
        value = yaml.safe_load(text) if text else True
        if not isinstance(value, bool):
            raise ValueError(f"{key}={text}: expected true or false")
        return [flag] if value == action.const else []
    value = yaml.safe_load(text) if text else text
    if action.choices and {"on", "off"} <= set(action.choices) and isinstance(value, bool):
        return [flag, "on" if value else "off"]
    if action.nargs in ("+", "*") and isinstance(value, list):
        return [flag, *(str(v) for v in value)]
    return [flag, text]


def expand_key_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with each ``key=value`` argument of the sub-command turned into flags (see the module doc).

    Values given to a flag (``--set lr0=0.1``, ``--weights-rename a=b``) are left alone.

    Raises:
        SystemExit: (through ``parser.error``) for a key that is neither a flag nor a setting.
    """
    sub, start = subparser_of(parser, argv)
    if sub is parser:
        return argv
    options = _options(sub)
    out, settings = list(argv[:start]), []
    pending: int | str = 0  # values still owed to the last flag: a count, or "+" for a list
    for token in argv[start:]:
        if token.startswith("-") and not is_number(token):
            flag = token.split("=", 1)[0]
            action = options.get(flag)
            nargs = action.nargs if action is not None else None
            pending = 0 if action is None or nargs == 0 or "=" in token else ("+" if nargs in ("+", "*") else 1)
            out.append(token)
            continue
        if pending == "+" or (isinstance(pending, int) and pending > 0):
            pending = pending - 1 if isinstance(pending, int) else pending
            out.append(token)
            continue
        match = KEY_VALUE.match(token)
        if match is None:
            out.append(token)
            continue
        key, text = match.groups()
        action = _flag_for(sub, key)
        if action is not None and action.dest not in ("set", "help"):
            try:
                out += _as_tokens(action, key, text)
            except (ValueError, yaml.YAMLError) as e:
                sub.error(str(e))
        elif _takes_set(sub) and key.replace("-", "_") in _settings():
            settings.append(f"{key.replace('-', '_')}={text}")
        else:
            sub.error(f"unknown argument {token!r}{setting_hint(key, _key_names(sub))}")
    return out + (["--set", *settings] if settings else [])


def _key_names(sub: argparse.ArgumentParser) -> list[str]:
    """What ``key=`` may be for ``sub``: its flags' names, and the settings when it takes ``--set``."""
    names = [a.dest for a in sub._actions if a.option_strings and a.dest not in ("help", "set")]
    return names + (_settings() if _takes_set(sub) else [])


def reject_unknown(parser: argparse.ArgumentParser, argv: list[str], extras: list[str]) -> None:
    """Print the sub-command's usage with the unknown arguments and the nearest flags (or settings), exit 2."""
    sub, _ = subparser_of(parser, argv)
    flags = [s for s in _options(sub) if s.startswith("--")]
    hints = []
    for extra in extras:
        if not extra.startswith("-"):
            continue
        name = extra.split("=", 1)[0]
        key = name.lstrip("-").replace("-", "_")
        action = _flag_for(sub, key)  # --save_period: the flag --save-period
        if action is not None:
            hints.append(f"{name}; did you mean {action.option_strings[-1]}?")
            continue
        if _takes_set(sub) and key in _settings():  # a setting without a flag of its own (YOLOv5's --cos-lr)
            hints.append(f"{name}: a setting; write --set {key}=VALUE (or {key}=VALUE)")
            continue
        hint = did_you_mean(name, flags)
        if not hint and _takes_set(sub):
            near = did_you_mean(key, _settings(), prefix="--set ")
            hint = near.replace("?", "=VALUE?") if near else ""
        if hint:
            hints.append(f"{name}{hint}")
    message = f"unrecognized arguments: {' '.join(extras)}"
    sub.error(message + ("\n" + "\n".join(hints) if hints else ""))


def yaml_value(text: str):
    """``--set key=value`` values parse as YAML scalars (numbers, booleans, lists)."""
    return yaml.safe_load(text)


def set_overrides(items: list[str] | None) -> dict:
    """``--set KEY=VALUE ...`` as a dict of settings (values parsed by :func:`yaml_value`)."""
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected KEY=VALUE")
        # a path or folder name is the text as typed (YAML would read name=010 as the octal number 8), but for
        # null and true/false, which say "none" and are refused as paths
        parsed = yaml_value(value)
        named = key in ("model", "data", "weights", "project", "name")
        overrides[key] = value if named and not (parsed is None or isinstance(parsed, bool)) else parsed
    return overrides


def any_case(*choices: str):
    """An argparse ``type`` that reads a word in any case as its spelling in ``choices`` (``musgd`` ->
    ``MuSGD``), as the same setting reads in a YAML and as the ``yolo`` command takes it; another word
    passes through unchanged for ``choices=`` to refuse."""
    spelling = {c.lower(): c for c in choices}

    def convert(value: str) -> str:
        return spelling.get(value.lower(), value)

    return convert


def imgsz_arg(text: str) -> int | tuple[int, int]:
    """``--imgsz`` as the command line gives it: one side (``640``) or ``h,w`` (``480,640``; ``[480, 640]`` and
    ``480x640`` read the same). Whether the sides suit the model is :func:`yolotr.data.imgsz.check_imgsz`'s call.
    """
    parts = [p for p in re.split(r"[,x\s]+", text.strip().strip("[]()").lower()) if p]
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if not 1 <= len(sides) <= 2:
        raise argparse.ArgumentTypeError(f"{text!r}: one side (640) or h,w (480,640)")
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def number_arg(kind: type, rule: str):
    """An argparse ``type`` reading ``kind`` (int or float) that satisfies ``rule`` (``">= 1"``, ``"> 0"``,
    ``"[0, 1)"``; :func:`yolotr.engine.config.in_range`), else argparse's error naming the flag and the rule."""

    def parse(text: str):
        from yolotr.engine.config import in_range

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if not in_range(value, rule):
            raise argparse.ArgumentTypeError(f"must be {'in ' + rule if rule[0] in '[(' else rule}, got {text!r}")
        return value

    return parse
