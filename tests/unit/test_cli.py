"""`sluice` and each of its commands answer --help with what they do and take."""

from __future__ import annotations

import pytest

from proxy.__main__ import main


@pytest.mark.parametrize(("command", "words"), [
    ((), ["serve", "check-config", "usage", "version"]),
    (("serve",), ["--config", "--host", "--port", "--log-level"]),
    (("check-config",), ["file", "secrets redacted"]),
    (("usage",), ["--from", "--to", "--group-by", "--json"]),
    (("version",), ["Print the version"]),
])
def test_every_command_has_help(command: tuple[str, ...], words: list[str],
                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for word in words:
        assert word in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("sluice ")
