"""`make lab` as a reader starts it: as root on a headless server, its URL and token printed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.browser.lab import ROOT, free_port

pytestmark = pytest.mark.browser


def test_make_lab_starts_headless_with_a_token_on_localhost():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}  # a server has no screen
    lab = subprocess.Popen(["make", "lab", f"PYTHON={sys.executable}", f"PORT={port}"], cwd=ROOT,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    seen, url = [], None
    try:
        deadline = time.monotonic() + 300
        while url is None and time.monotonic() < deadline and lab.poll() is None:
            line = lab.stdout.readline()
            seen.append(line)
            found = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=\w+", line)
            url = found.group(0) if found else None
        assert url, "make lab printed no URL with a token:\n" + "".join(seen[-30:])
        for _ in range(60):  # the URL can be printed a moment before the port answers
            try:
                with urllib.request.urlopen(url, timeout=30) as reply:
                    assert reply.status == 200
                break
            except urllib.error.URLError:
                time.sleep(0.5)
        else:
            raise AssertionError("".join(seen[-30:]))
        with pytest.raises(urllib.error.HTTPError) as refused:  # no token, no API
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=30)
        assert refused.value.code == 403
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
