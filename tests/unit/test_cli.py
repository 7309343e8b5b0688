"""The ``elemta`` command line: parsing, exit statuses and messages."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from elemta_smtp.cli import EXIT_CONFIG, build_parser, main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    """A valid file is reported OK with exit status 0."""
    path = tmp_path / "elemta.toml"
    path.write_text('[server]\nhostname = "mail.example.com"\n')
    code, out, _ = run("config", "check", "-c", str(path))
    assert code == 0
    assert f"{path}: OK" in out


def test_config_check_lists_every_problem(tmp_path: Path) -> None:
    """A bad file exits EX_CONFIG and prints one line per problem with line and key."""
    path = tmp_path / "elemta.toml"
    path.write_text('[server]\nhostnme = "x.y"\nmax_errors = 0\n')
    code, _, err = run("config", "check", "-c", str(path))
    assert code == EXIT_CONFIG
    assert f'error: {path}:2: [server.hostnme] unknown key "hostnme"; did you mean "hostname"?' in err
    assert f"error: {path}:3: [server.max_errors] must be from 1 to" in err
    assert "2 problem(s)" in err
    assert "did not start" not in err  # only serve starts anything


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without -c the file named by $ELEMTA_CONFIG is used."""
    path = tmp_path / "env.toml"
    path.write_text("[server]\nmax_errors = 0\n")
    monkeypatch.setenv("ELEMTA_CONFIG", str(path))
    code, _, err = run("config", "check")
    assert code == EXIT_CONFIG
    assert str(path) in err


def test_serve_refuses_a_bad_config_before_starting(tmp_path: Path) -> None:
    """``serve`` with a bad file prints the problems and exits without binding anything."""
    path = tmp_path / "elemta.toml"
    path.write_text('[server]\nlisten_addr = "localhost:25"\n')
    code, _, err = run("serve", "-c", str(path))
    assert code == EXIT_CONFIG
    assert "is not an IP address" in err
    assert "elemta did not start" in err


def test_serve_dev_refuses_a_config_file(tmp_path: Path) -> None:
    """--dev and -c contradict each other and are refused."""
    code, _, err = run("serve", "--dev", "-c", str(tmp_path / "x.toml"))
    assert code == EXIT_CONFIG
    assert "--dev" in err


@pytest.mark.parametrize("argv", [[], ["bogus"], ["cert"], ["cert", "info", "--nope"], ["config"]],
                         ids=lambda a: " ".join(a) or "nothing")
def test_bad_arguments_exit_2_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown or missing subcommands and options exit 2 with a usage message."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: elemta" in capsys.readouterr().err


def _command_paths(parser: argparse.ArgumentParser,
                   prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str | None]]:
    """Every subcommand path under ``parser`` with its one-line help in the parent's list."""
    paths: list[tuple[tuple[str, ...], str | None]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                paths.append(((*prefix, name), helps.get(name)))
                paths += _command_paths(child, (*prefix, name))
    return paths


def test_every_subcommand_and_action_has_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    """`elemta X --help` starts with a sentence saying what X does, for every subcommand and
    action, and each is listed with a one-line help in its parent's --help."""
    paths = _command_paths(build_parser())
    assert {" ".join(p) for p, _ in paths} == {"serve", "config", "config check", "cert", "cert info",
                                               "cert renew", "cert test", "dns", "dns records",
                                               "dane", "dane status", "dane rollover",
                                               "dane rollover start", "dane rollover finish"}
    for path, summary in paths:
        assert summary, path
        with pytest.raises(SystemExit) as info:
            main([*path, "--help"])
        assert info.value.code == 0
        text = capsys.readouterr().out
        description = text.split("\n\n")[1]
        assert description[:1].isupper() and not description.startswith(("options:", "positional")), (
            path, text)
