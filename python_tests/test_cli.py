"""Every subcommand's --help works, and a wrong argument is refused with argparse's message."""

from __future__ import annotations

import pytest

from uvireid_ext.__main__ import main


@pytest.mark.parametrize("command", ["info", "bench", "make-data", "train", "eval", "demo"])
def test_help_of_every_command(command, capsys):
    try:
        rc = main([command, "--help"])
    except SystemExit as e:  # argparse's own --help exits
        rc = e.code
    assert rc == 0
    assert "usage:" in capsys.readouterr().out


def test_unknown_argument_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["info", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
