"""The Django example project's own test suite (the README's story) passes on the test server.

It runs as ``python manage.py test`` in a subprocess, as a user would: Django creates its
test database on the harness's server, ``migrate`` deploys cowsync and enables the tables,
and the scripted agent's calls go through Django's test client.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "example_projects" / "django_inventory"


def test_example_project_tests_pass(pg_admin_dsn: str) -> None:
    # A name of its own: Django's test database is "test_<name>", so runs never collide.
    name = f"inventory_{secrets.token_hex(4)}"
    params = conninfo_to_dict(pg_admin_dsn)
    params["dbname"] = name
    env = {
        **os.environ,
        "DATABASE_URL": make_conninfo(**params),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_DEBUG": "0",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "test", "--noinput", "-v", "2"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ran 5 tests" in result.stderr
    assert "cowsync: enabled inventory_stock" in result.stdout
