"""Every rendered shell script parses (`bash -n`) and passes shellcheck (Debian package
`shellcheck`)."""

from __future__ import annotations

from pathlib import Path

from deepfleet.deploy.bundle import Bundle
from tests.deploy.conftest import Case, run, tool


def test_scripts_parse_and_pass_shellcheck(rendered: tuple[Case, Bundle, Path]) -> None:
    case, bundle, folder = rendered
    one_host = case.data()["cluster"]["nodes"] == 1
    if case.target == "k8s" or (case.target == "compose" and one_host):
        assert not bundle.scripts
        return
    assert bundle.scripts, case.name
    paths = [str(folder / s) for s in sorted(bundle.scripts)]
    for path in paths:
        parsed = run(["bash", "-n", path])
        assert parsed.returncode == 0, parsed.stderr
        assert Path(path).stat().st_mode & 0o111
    checked = run([tool("shellcheck"), "--shell=bash", "--severity=style", *paths])
    assert checked.returncode == 0, checked.stdout
