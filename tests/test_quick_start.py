"""The README's first command starts everything; Ctrl-C stops all of it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from apptasks.settings import Settings
from tests.support.paths import REPO
from tests.support.services import LOOPBACK_ONLY, free_port, wait_until

STARTUP_TIMEOUT = 120


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (e.g. the data folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in command:
            found.append(f"{entry.name}: {command}")
    return found


@pytest.mark.slow
def test_make_run_serves_the_demo_task_and_ctrl_c_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    output = tmp_path / "serve.log"
    env = dict(os.environ)
    env.update(
        {
            "APPTASKS_DATA_DIR": str(data_dir),
            "APPTASKS_PORT": str(port),
            # Nothing listens on port 1, so serve must start its private Redis.
            "APPTASKS_REDIS_URL": "redis://127.0.0.1:1",
            "APPTASKS_REDIS_PREFIX": "quickstart:",
        }
    )
    # Browser profiles go to the temporary folder: a folder of this test's own
    # tells its processes apart from other tests'. It is kept short because
    # Chromium's singleton socket lives there and socket paths are limited.
    browser_tmp = Path(tempfile.mkdtemp(prefix="qs-", dir="/tmp"))
    env["TMPDIR"] = str(browser_tmp)
    env["APPTASKS_CHROME_ARGUMENTS"] = LOOPBACK_ONLY
    env.pop("APPTASKS_ADMIN_TOKEN", None)
    with output.open("wb") as log:
        serve = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        text = wait_until(
            lambda: _ready_output(output, serve), STARTUP_TIMEOUT, "make run start"
        )
        demo_token = re.search(r"demo app token:\s+(\S+)", text)[1]  # type: ignore[index]
        admin_token = re.search(r"admin token:\s+(\S+)", text)[1]  # type: ignore[index]
        assert (data_dir / "admin-token").read_text().strip() == admin_token
        assert str(data_dir.resolve()) in text, "the database path is printed"

        response = httpx.post(
            f"http://127.0.0.1:{port}/graphql",
            json={
                "query": 'mutation { runTaskWithResult(name: "hello", '
                'payload: {name: "tester"}) }'
            },
            headers={"Authorization": f"Bearer {demo_token}"},
            timeout=60,
        )
        body = response.json()
        assert body.get("errors") is None, body
        assert body["data"]["runTaskWithResult"]["greeting"] == "Hello, tester!"
        assert _processes_mentioning(str(browser_tmp)), "a browser runs"
        assert _processes_mentioning(str(data_dir)), "a private Redis runs"
    finally:
        stopping = time.monotonic()
        os.killpg(serve.pid, signal.SIGINT)
        serve.wait(timeout=60)
        stopped_in = time.monotonic() - stopping

    assert stopped_in < 15, f"Ctrl-C took {stopped_in:.0f} s to stop everything"
    time.sleep(1)
    assert _processes_mentioning(str(tmp_path)) == []
    assert _processes_mentioning(str(browser_tmp)) == []
    shutil.rmtree(browser_tmp, ignore_errors=True)


def _ready_output(output: Path, serve: subprocess.Popen[bytes]) -> str | None:
    text = output.read_text(errors="replace")
    if serve.poll() is not None:
        raise AssertionError(f"make run exited with {serve.returncode}:\n{text}")
    if "worker ready" in text and "Uvicorn running" in text:
        return text
    return None


def test_the_readme_lists_every_setting() -> None:
    readme = (REPO / "README.md").read_text()

    missing = [name for name, _, _ in Settings.describe() if f"`{name}`" not in readme]

    assert missing == []
