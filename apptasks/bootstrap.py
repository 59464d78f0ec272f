"""First start: the admin token, and a `demo` app with a screen and a task.

Both secrets are kept in the data folder (readable by its owner only), so that
the dev command can print them again on every start.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from apptasks.apps import create_app
from apptasks.models import App
from apptasks.pages import create_page, publish_page
from apptasks.settings import Settings
from apptasks.tasks import TaskInput, create_task

DEMO_APP = "demo"
DEMO_TASK = "hello"
DEMO_SCREEN = """<!doctype html>
<html>
<body>
<script>
  Fliplet.Page.onRemoteExecution(function (payload, context) {
    console.log('demo task ran', context.runId);
    return { greeting: 'Hello, ' + ((payload && payload.name) || 'world') + '!',
             ranAt: new Date() };
  });
</script>
</body>
</html>
"""


@dataclass(frozen=True)
class DemoApp:
    app_id: int
    token: str | None


def admin_token(settings: Settings) -> str:
    """The admin token from the settings, or the one kept in the data folder."""
    if settings.admin_token:
        return settings.admin_token
    return _kept_secret(settings.data_dir / "admin-token", "apt_admin_")


async def ensure_demo_app(settings: Settings) -> DemoApp:
    """The demo app, created with a published screen and a task on first start."""
    token_file = settings.data_dir / "demo-token"
    existing = await App.filter(name=DEMO_APP).order_by("id").first()
    if existing is not None:
        token = token_file.read_text().strip() if token_file.exists() else None
        return DemoApp(app_id=existing.id, token=token)

    app, new_token = await create_app(DEMO_APP, token_name="demo")
    page = await create_page(app.id, "Hello screen", DEMO_SCREEN)
    await publish_page(app.id, page.id)
    await create_task(app.id, TaskInput(name=DEMO_TASK, page_id=page.id), settings)
    _write_private(token_file, new_token.secret)
    return DemoApp(app_id=app.id, token=new_token.secret)


def _kept_secret(path: Path, prefix: str) -> str:
    if path.exists():
        return path.read_text().strip()
    secret = prefix + secrets.token_urlsafe(32)
    _write_private(path, secret)
    return secret


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text + "\n")
