"""One schema of settings: every option of the command line that sets a setting has the setting's
default, choices and range, and accepts and refuses the same values as the Python API."""
from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np
import pytest

from btunet import BTUnetError, FinetuneConfig, PredictConfig, PretrainConfig
from btunet.base.settings_schema import Limits, limits, names
from btunet.cli.cli_args import AT_LEAST, OPTIONS, OWN_DEFAULTS, build_parser, check_numbers, option_limits, parse
from btunet.cli.commands import main
from btunet.core.metadata import check_threshold

CONFIGS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "predict": PredictConfig}
BASE = {"pretrain": ["pretrain", "imgs", "--out", "e.safetensors"],
        "finetune": ["finetune", "--images", "imgs", "--masks", "masks", "--out", "m.safetensors"],
        "predict": ["predict", "m.safetensors", "imgs", "--out", "out"]}
EXTRA = {"chunk": ["--depth", "0"], "depth": ["--chunk", str(10**7)]}  # the other one, out of the way
ROWS = [(command, dest) for command, table in OPTIONS.items() for dest in table]


def edges(lim: Limits) -> tuple[list, list]:
    """(values just inside the range, values just outside it) of a whole number or a number."""
    whole = lim.kind == "whole"
    step = 1 if whole else 1e-6
    inside = [lim.lo + step if lim.lo_open else lim.lo]
    outside = [lim.lo if lim.lo_open else lim.lo - step]
    if lim.hi is None:
        inside.append(lim.lo + 10**6)
    else:
        inside.append(lim.hi - step if lim.hi_open else lim.hi)
        outside.append(lim.hi if lim.hi_open else lim.hi + step)
    if not whole:
        outside += [math.nan, math.inf]
    return inside, outside


def _actions(command: str) -> dict[str, argparse.Action]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[command]._actions}


def _argv(command: str, dest: str, value) -> list[str]:
    """The command with ``--dest=value`` (the ``=`` keeps a negative value a value)."""
    text = repr(value) if isinstance(value, float) and math.isfinite(value) else str(value)
    return [*BASE[command], *EXTRA.get(dest, []), f"--{dest.replace('_', '-')}={text}"]


@pytest.mark.parametrize("command,dest", ROWS, ids=[f"{c}--{d}" for c, d in ROWS])
def test_an_option_has_its_settings_default_choices_and_range(command, dest):
    action = _actions(command)[dest]
    config, name = OPTIONS[command][dest]
    lim = limits(config, name)
    if (command, dest) in OWN_DEFAULTS:
        assert action.default is None  # the command decides (OWN_DEFAULTS says how)
    else:
        assert action.default == lim.default
    if lim.kind == "choice":
        assert tuple(action.choices) == lim.choices
    if lim.kind in ("whole", "number"):  # the help says the range
        assert option_limits(command, dest).bounds_text() in " ".join(action.help.split())
    if (command, dest) in AT_LEAST:
        assert option_limits(command, dest) == dataclasses.replace(lim, lo=AT_LEAST[command, dest], lo_open=False)
    else:
        assert option_limits(command, dest) == lim


@pytest.mark.parametrize("command,dest", ROWS, ids=[f"{c}--{d}" for c, d in ROWS])
def test_an_option_accepts_and_refuses_what_its_setting_does(command, dest, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, name = OPTIONS[command][dest]
    lim = option_limits(command, dest)
    if lim.kind == "choice":
        for value in lim.choices:
            assert getattr(parse(_argv(command, dest, value)), dest) == value
        assert parse(_argv(command, dest, "nonsense")) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "--" + dest.replace("_", "-") in err
        return
    if lim.kind not in ("whole", "number"):
        return
    inside, outside = edges(lim)
    for value in inside:
        args = parse(_argv(command, dest, value))
        check_numbers(args)
        assert getattr(args, dest) == value
        if config in CONFIGS.values():  # the API takes it too
            config(**{name: value})
    for value in outside:
        args = parse(_argv(command, dest, value))
        with pytest.raises(BTUnetError) as refused:
            check_numbers(args)
        assert str(refused.value).startswith(f"--{dest.replace('_', '-')} must be ")
        assert main(_argv(command, dest, value)) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"--{dest.replace('_', '-')}" in err
    if config in CONFIGS.values():
        for value in edges(limits(config, name))[1]:  # the setting's own range in the API
            with pytest.raises(BTUnetError, match=rf"^{name} must be "):
                config(**{name: value})


@pytest.mark.parametrize("command", list(CONFIGS))
def test_every_option_named_like_a_setting_reads_the_schema(command):
    """An option that takes a value and is named like one of its command's settings is in
    ``OPTIONS`` (so it cannot keep a range of its own)."""
    valued = {dest for dest, action in _actions(command).items() if action.nargs != 0}
    valued -= {"axes", "class_names"}  # not ranges: letters (axes.check_letters), a comma-separated list
    assert valued & set(names(CONFIGS[command])) <= set(OPTIONS[command])
    for dest, (config, name) in OPTIONS[command].items():
        assert name in names(config) and dest in _actions(command)


@pytest.mark.parametrize("config", list(CONFIGS.values()))
def test_every_setting_declares_what_it_accepts(config):
    """Each setting's declaration says its kind and, for numbers, a lower bound; its default passes."""
    for name in names(config):
        lim = limits(config, name)
        assert lim.kind in ("whole", "number", "flag", "text", "choice", "list"), name
        if lim.kind in ("whole", "number"):
            assert lim.lo is not None, name
        assert lim.default in lim, name


def test_numbers_are_not_bools_and_wholes_are_not_floats():
    for bad in (True, 16.0, "16"):
        with pytest.raises(BTUnetError, match="^patch_size must be a whole number from 16 to 2048, got "):
            FinetuneConfig(patch_size=bad)
    with pytest.raises(BTUnetError, match="^lr must be a finite number above 0 and at most 1, got True"):
        PretrainConfig(lr=True)
    assert FinetuneConfig(batch_size=np.int64(3), lr=np.float32(0.5)).batch_size == 3


def test_the_threshold_has_one_range():
    """The configs' threshold and the checkpoints' (``metadata.check_threshold``) agree."""
    for config in (FinetuneConfig, PredictConfig):
        lim = limits(config, "threshold")
        inside, outside = edges(lim)
        for value in inside:
            assert value in lim and check_threshold("threshold", value) == value
        for value in outside:
            with pytest.raises(BTUnetError) as refused:
                check_threshold("threshold", value)
            assert value not in lim
            with pytest.raises(BTUnetError, match=str(refused.value).split(", got")[0]):
                config(threshold=value)


def test_check_sees_a_value_set_after_construction():
    cfg = FinetuneConfig()
    cfg.weight_average = 1.0
    with pytest.raises(BTUnetError, match="^weight_average must be a finite number from 0 to 0.999, got 1.0$"):
        cfg.check()
    cfg.weight_average = 0.97
    cfg.check()
    assert dataclasses.replace(cfg, lr=0.5).lr == 0.5 and [f.name for f in dataclasses.fields(cfg)] == names(
        FinetuneConfig)
