"""The console scripts end the process without the interpreter's teardown, losing nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120)


def test_exit_handlers_run_and_buffered_output_is_flushed() -> None:
    # stdout is a pipe here, so it is block-buffered: nothing reaches it unless flushed
    done = _python("""
        import atexit, logging, sys, tempfile, pathlib
        from reenact.cli import exit_now
        folder = tempfile.TemporaryDirectory()  # removed by its exit-time finaliser
        print(folder.name)
        atexit.register(lambda: print("exit handler ran"))
        sys.stderr.write("to stderr")
        exit_now(3)
        print("never")
    """)
    assert done.returncode == 3
    folder, handler = done.stdout.splitlines()
    assert handler == "exit handler ran"
    assert not Path(folder).exists()
    assert done.stderr == "to stderr"


def test_a_running_thread_is_waited_for() -> None:
    done = _python("""
        import threading, time
        from reenact.cli import exit_now
        def work():
            time.sleep(0.5)
            print("thread finished", flush=True)
        threading.Thread(target=work).start()
        exit_now(0)
    """)
    assert done.returncode == 0
    assert done.stdout == "thread finished\n"


def test_sys_exit_meanings_of_the_status() -> None:
    for status, code, err in (("None", 0, ""), ("'no input given'", 1, "no input given\n"), ("256 + 7", 7, "")):
        done = _python(f"from reenact.cli import exit_now; exit_now({status})")
        assert (done.returncode, done.stderr) == (code, err), status


def test_the_scripts_keep_argparse_statuses_and_output() -> None:
    version = _python("import sys; sys.argv = ['deidentify', '--version']; "
                      "from reenact.cli import deidentify_script; deidentify_script()")
    assert version.returncode == 0 and version.stdout.startswith("reenact ")
    bad = _python("import sys; sys.argv = ['reenact', 'a.mp4', '--identity', 'b.jpg', '--no-such-flag']; "
                  "from reenact.cli import reenact_script; reenact_script()")
    assert bad.returncode == 2 and "--no-such-flag" in bad.stderr
    missing = _python("import sys; sys.argv = ['deidentify', '/no/such/clip.mp4']; "
                      "from reenact.cli import deidentify_script; deidentify_script()")
    assert missing.returncode != 0 and "/no/such/clip.mp4" in missing.stderr
