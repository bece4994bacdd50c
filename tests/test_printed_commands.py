"""Every ``add3d`` command the README and docs print, and ``add3d config``, parse and load as printed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from add3d.cli import main, parse_args
from add3d.engine.config import load_config

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def printed_commands(path: Path) -> list[str]:
    """``add3d ...`` lines of the fenced code blocks (comments dropped, continuation lines joined)."""
    commands, in_block = [], False
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if line.startswith("```"):
            in_block = not in_block
            continue
        text = line.strip()
        while in_block and text.endswith("\\"):
            text = text[:-1] + " " + next(lines).strip()
        text = re.sub(r"^(\.venv/bin/python -m |python -m |torchrun .* -m )", "", text)
        text = re.sub(r"^add3d\s+", "add3d ", text)
        if in_block and text.startswith("add3d ") and "..." not in text:
            commands.append(text.split("  #")[0].split(" # ")[0].strip())
    return commands


def dry_run(command: str, cwd: Path) -> None:
    """Parse as the command line would and load its config with its overrides (no training)."""
    argv = shlex.split(command)[1:]
    args = parse_args(argv)
    if getattr(args, "config", None) is not None and str(args.config).endswith(".yaml"):
        config = args.config if Path(args.config).is_absolute() else cwd / args.config
        if config.is_file():
            load_config(config, args.overrides, training=args.command == "train")


CASES = [(path.name, command) for path in DOCS for command in printed_commands(path)]


def test_the_docs_print_many_commands():
    assert len(CASES) >= 20 and {"train", "eval", "eval-kitti", "predict"} <= {c.split()[1] for _, c in CASES}


@pytest.mark.parametrize("source, command", CASES, ids=[f"{s}: {c[:60]}" for s, c in CASES])
def test_printed_command_parses_as_printed(source, command):
    dry_run(command, REPO)


def test_config_show_prints_the_resolved_validated_config(capsys):
    config = REPO / "configs" / "monodle" / "synthetic_teacher.yaml"  # has a _base_
    assert main(["config", "show", str(config), "train.epochs=3", "optim.lr=0.002"]) == 0
    printed = capsys.readouterr().out
    from add3d.engine.config import config_to_yaml

    assert printed == config_to_yaml(load_config(config, ["train.epochs=3", "optim.lr=0.002"]))
    assert "epochs: 3" in printed and "in_channels: 5" in printed and "backbone: dla34_tiny" in printed  # base merged
    assert main(["config", "show", str(config), "train.epochs=0"]) == 2
    assert capsys.readouterr().err.strip() == ("add3d config: error: command-line override 'train.epochs=0': "
                                               "train.epochs must be >= 1, got 0")


def test_config_list_names_every_shipped_config_once(capsys):
    assert main(["config", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    shipped = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*/*.yaml"))
    assert [line.split()[0] for line in lines] == shipped
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # each with its one-line summary
    assert any(line.startswith("configs/monodle/kitti.yaml ") and "MonoDLE on KITTI" in line for line in lines)
