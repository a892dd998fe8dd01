"""The systemd unit as shipped (systemd-analyze verify and security) and deploy/install.sh and
uninstall.sh end to end into temporary directories, systemctl left out (--no-start)."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from proxy.config.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "sluice.service"
SHIPPED_BINARY = "/opt/sluice/venv/bin/sluice"
# `systemd-analyze security` scores exposure 0-10 (shown with one decimal, thresholds in
# tenths); 2.0 is still "OK". The unit scores 1.2: a weakened sandbox fails here.
MAX_EXPOSURE_TENTHS = 20


def _analyze() -> str:
    """systemd-analyze, which `make test` installs (Debian's systemd package) when missing."""
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze not found: run the tests with `make test`, which installs "
                    "Debian's systemd package (tests/services/install-packages)", pytrace=False)
    return found


def _run(*args: str | Path, check: bool = False, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=150,
                          check=check, env=env)


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    # Unknown keys and bad values are only warnings (exit 0), so the output must be empty too.
    return _run(_analyze(), "verify", "--man=no", unit)


def _skip_unless_verify_runs(tmp_path: Path) -> None:
    """verify needs no running systemd, but a sandbox may still stop it from loading units:
    then, and only then, skip; a trivially valid unit tells the two cases apart."""
    probe = tmp_path / "probe" / "sluice-probe.service"
    probe.parent.mkdir()
    probe.write_text("[Service]\nExecStart=/bin/true\n")
    done = _verify(probe)
    if done.returncode or done.stdout or done.stderr:
        pytest.skip(f"systemd-analyze verify cannot run here: {done.stdout}{done.stderr}")


def _unit_with_stub_binary(tmp_path: Path) -> Path:
    """The shipped unit, its ExecStart binary (which verify requires to exist) swapped for an
    executable stub: the only change."""
    stub = tmp_path / "venv" / "bin" / "sluice"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    shipped = UNIT.read_text()
    assert shipped.count(SHIPPED_BINARY) == 1
    unit = tmp_path / "units" / "sluice.service"
    unit.parent.mkdir()
    unit.write_text(shipped.replace(SHIPPED_BINARY, str(stub)))
    return unit


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_shipped_unit_verifies(tmp_path: Path) -> None:
    _skip_unless_verify_runs(tmp_path)
    done = _verify(_unit_with_stub_binary(tmp_path))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """What the test above relies on: a misspelled key, or a missing binary, is reported."""
    _skip_unless_verify_runs(tmp_path)
    unit = _unit_with_stub_binary(tmp_path)
    text = unit.read_text()
    unit.write_text(text.replace("ProtectHome=yes", "ProtectHomes=yes"))
    assert "Unknown key" in _verify(unit).stderr
    unit.write_text(text.replace("/bin/kill", "/nonexistent/kill"))
    assert _verify(unit).returncode != 0


def test_the_sandbox_stays_tight(tmp_path: Path) -> None:
    _skip_unless_verify_runs(tmp_path)
    done = _run(_analyze(), "security", "--offline=yes", "--no-pager",
                f"--threshold={MAX_EXPOSURE_TENTHS}", _unit_with_stub_binary(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


def test_the_unit_matches_the_gateway() -> None:
    d = _directives(UNIT.read_text())
    # READY=1 comes from proxy/notify.py; RELOADING=1/READY=1 bracket a SIGHUP reload.
    assert d["Type"] == ["notify"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["ExecStart"] == [f"{SHIPPED_BINARY} serve --config /etc/sluice/config.yaml"]
    # The stop timeout must cover the default drain, or systemd kills a draining gateway.
    stop = d["TimeoutStopSec"][0]
    assert stop.endswith("s") and float(stop[:-1]) > ServerSettings().drain_timeout
    assert d["WatchdogSec"] == ["30s"]
    # The gateway's data dir is $STATE_DIRECTORY only while SLUICE_DATA_DIR is not set.
    assert d["StateDirectory"] == ["sluice"]
    assert "SLUICE_DATA_DIR" in d["UnsetEnvironment"][0].split()
    assert d["EnvironmentFile"] == ["/etc/sluice/sluice.env"]
    assert d["RestartPreventExitStatus"] == ["2"]  # an invalid config: sluice exits 2


def test_the_scripts_parse() -> None:
    for script in ("install.sh", "uninstall.sh"):
        path = DEPLOY / script
        assert os.access(path, os.X_OK), f"{script} is not executable"
        _run("bash", "-n", path, check=True)
        if shutil.which("shellcheck"):  # optional: not installed by `make test`
            done = _run("shellcheck", path)
            assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--prefix", "opt/sluice"], "--prefix must be an absolute path"),
    (["--config-dir=/etc/my sluice"], "--config-dir must be an absolute path"),
    (["--unit-dir"], "--unit-dir needs a value"),
    (["--start-now"], "unknown option '--start-now'"),
])
def test_install_refuses_bad_options(args: list[str], message: str) -> None:
    done = _run(DEPLOY / "install.sh", *args)
    assert done.returncode == 1
    assert message in done.stderr


# --- install.sh end to end ---------------------------------------------------------------------

PT_DYNAMIC, PT_GNU_STACK, PF_X = 2, 0x6474E551, 1
DT_NULL, DT_TEXTREL, DT_FLAGS, DF_TEXTREL = 0, 22, 30, 4


def _w_x_needs(path: Path) -> list[str]:
    """Why this shared object cannot load under MemoryDenyWriteExecute=yes: an executable stack
    (PT_GNU_STACK with PF_X, or none at all) or text relocations."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return []
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(order + ("Q" if wide else "I"), data, 0x20 if wide else 0x1C)
    phentsize, phnum = struct.unpack_from(order + "HH", data, 0x36 if wide else 0x2A)
    needs, stack_seen = [], False
    for i in range(phnum):
        at = phoff + i * phentsize
        if wide:
            p_type, p_flags, p_offset, _, _, p_filesz = struct.unpack_from(order + "IIQQQQ", data, at)
        else:
            p_type, p_offset, _, _, p_filesz, _, p_flags = struct.unpack_from(order + "7I", data, at)
        if p_type == PT_GNU_STACK:
            stack_seen = True
            if p_flags & PF_X:
                needs.append("executable stack")
        elif p_type == PT_DYNAMIC:
            entry = order + ("qQ" if wide else "iI")
            size = struct.calcsize(entry)
            table = data[p_offset:p_offset + p_filesz - p_filesz % size]
            for tag, value in struct.iter_unpack(entry, table):
                if tag == DT_NULL:
                    break
                if tag == DT_TEXTREL or (tag == DT_FLAGS and value & DF_TEXTREL):
                    needs.append("text relocations")
    if not stack_seen:
        needs.append("no PT_GNU_STACK (an executable stack)")
    return needs


def test_the_elf_check_sees_an_executable_stack(tmp_path: Path) -> None:
    library = Path(msgspec._core.__file__)  # a compiled extension, as the venv's are
    assert _w_x_needs(library) == []
    data = bytearray(library.read_bytes())
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(order + ("Q" if wide else "I"), data, 0x20 if wide else 0x1C)
    phentsize, phnum = struct.unpack_from(order + "HH", data, 0x36 if wide else 0x2A)
    for i in range(phnum):
        at = phoff + i * phentsize
        if struct.unpack_from(order + "I", data, at)[0] == PT_GNU_STACK:
            flags_at = at + 4 if wide else at + 24
            struct.pack_into(order + "I", data, flags_at, 7)  # RWX
    bad = tmp_path / "bad.so"
    bad.write_bytes(data)
    assert _w_x_needs(bad) == ["executable stack"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run(DEPLOY / "install.sh", "--prefix", root / "opt", "--config-dir", root / "etc",
                "--unit-dir", root / "units", "--python", sys.executable, "--no-start", *extra)


@pytest.mark.slow
@pytest.mark.timeout(240)  # about 30 s with pip's cache warm; a cold one downloads the wheels
def test_install_then_upgrade_then_uninstall(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("install.sh runs as root only (it installs root-owned files)")
    first = _install(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "--no-start: systemctl not run." in first.stdout

    prefix, etc, units = tmp_path / "opt", tmp_path / "etc", tmp_path / "units"
    sluice = prefix / "venv" / "bin" / "sluice"
    assert _run(sluice, "version", check=True).stdout.startswith("sluice ")
    env_file, config, unit = etc / "sluice.env", etc / "config.yaml", units / "sluice.service"
    assert (_mode(env_file), env_file.stat().st_uid, env_file.stat().st_gid) == (0o600, 0, 0)
    assert _mode(config) == 0o644  # the dynamic user reads it; it holds env:NAME only
    assert _mode(unit) == 0o644
    assert "#OPENAI_API_KEY=" in env_file.read_text()

    # The unit as installed: the shipped one with the chosen dirs, and it verifies as is.
    expected = UNIT.read_text().replace("/opt/sluice/", f"{prefix}/")
    assert unit.read_text() == expected.replace("/etc/sluice/", f"{etc}/")
    if shutil.which("systemd-analyze"):
        done = _verify(unit)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")

    # The example config is valid once its key is set, and names the key it lacks otherwise.
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = _run(sluice, "check-config", config, env=env)
    assert done.returncode == 2 and "OPENAI_API_KEY is not set" in done.stderr
    _run(sluice, "check-config", config, check=True, env={**env, "OPENAI_API_KEY": "sk-x"})

    # MemoryDenyWriteExecute=yes: no installed extension may need W+X memory to load.
    needs = {str(p.relative_to(prefix)): _w_x_needs(p)
             for p in (prefix / "venv").rglob("*.so*") if p.is_file()}
    assert needs and not {p: n for p, n in needs.items() if n}

    # An upgrade keeps what the admin edited.
    config.write_text(config.read_text() + "# edited\n")
    env_file.write_text("OPENAI_API_KEY=sk-edited\n")
    again = _install(tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"kept {config}" in again.stdout and f"kept {env_file}" in again.stdout
    assert config.read_text().endswith("# edited\n")
    assert env_file.read_text() == "OPENAI_API_KEY=sk-edited\n"
    assert _mode(env_file) == 0o600

    # Uninstall: the unit and the venv go; the config, the secrets and the data stay.
    state = tmp_path / "state" / "sluice"
    state.mkdir(parents=True)
    where: list[str | Path] = ["--prefix", prefix, "--config-dir", etc, "--unit-dir", units, "--state-dir", state]
    _run(DEPLOY / "uninstall.sh", *where, check=True)
    assert not prefix.exists() and not unit.exists()
    assert config.exists() and env_file.exists() and state.exists()
    _run(DEPLOY / "uninstall.sh", *where, "--purge", check=True)
    assert not etc.exists() and not state.exists()


def test_uninstall_leaves_a_directory_it_did_not_make(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("uninstall.sh runs as root only")
    other = tmp_path / "usr"
    (other / "bin").mkdir(parents=True)
    done = _run(DEPLOY / "uninstall.sh", "--prefix", other, "--config-dir", tmp_path / "etc",
                "--unit-dir", tmp_path / "units", "--state-dir", tmp_path / "state")
    assert done.returncode == 1 and "has no .sluice-install" in done.stderr
    assert (other / "bin").is_dir()
