import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    for name in ("Q_SYNC", "DJANGO_ALLOW_ASYNC_UNSAFE"):
        full_env.pop(name, None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy():
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY="x" * 64 + "-a-long-random-production-key-for-the-test",
        ALLOWED_HOSTS="audit.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    result = run_manage("check", DEBUG="false", SECRET_KEY="", ALLOWED_HOSTS="audit.example.com")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_database_connection_options_come_from_the_environment():
    show = (
        "from django.db import connection as c; d = c.settings_dict; "
        "print(d['CONN_HEALTH_CHECKS'], d['DISABLE_SERVER_SIDE_CURSORS'])"
    )
    default = run_manage("shell", "--no-imports", "-c", show)
    assert default.stdout.split() == ["False", "False"], default.stderr
    chosen = run_manage(
        "shell",
        "--no-imports",
        "-c",
        show,
        DB_CONN_HEALTH_CHECKS="true",
        DB_DISABLE_SERVER_SIDE_CURSORS="true",
    )
    assert chosen.stdout.split() == ["True", "True"], chosen.stderr
