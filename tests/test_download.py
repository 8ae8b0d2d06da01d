"""`bpe-lm download` against a local HTTP server on 127.0.0.1: resume, size check, atomic result, offline error."""

from __future__ import annotations

import http.server
import threading

import pytest

from bpe_lm.cli import main
from bpe_lm.download import DATASETS, DownloadError, fetch

PAYLOAD = b"Once upon a time there was a tiny story.\n<|endoftext|>\n" * 2000


class RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_after: int | None = None  # send only this many bytes of a full response, to simulate a dropped connection

    def do_GET(self):  # noqa: N802
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].rstrip("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None and start == 0:
            self.wfile.write(body[: self.cut_after])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    RangeHandler.files = {f"/{r.path}": PAYLOAD for r in DATASETS["tinystories"].values()}
    RangeHandler.cut_after = None
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_download_command(tmp_path, server, capsys):
    assert main(["download", "tinystories", "-o", str(tmp_path), "--base-url", server, "--quiet"]) == 0
    for remote in DATASETS["tinystories"].values():
        assert (tmp_path / remote.name).read_bytes() == PAYLOAD
        assert (tmp_path / f"{remote.name}.sha256").exists()
        assert not (tmp_path / f"{remote.name}.part").exists()


def test_resume_after_a_dropped_connection(tmp_path, server):
    url = f"{server}/{DATASETS['tinystories']['valid'].path}"
    RangeHandler.cut_after = 10_000
    with pytest.raises(DownloadError, match="run again to resume"):
        fetch(url, tmp_path / "v.txt", progress=False)
    assert (tmp_path / "v.txt.part").stat().st_size == 10_000 and not (tmp_path / "v.txt").exists()
    RangeHandler.cut_after = None
    fetch(url, tmp_path / "v.txt", progress=False)
    assert (tmp_path / "v.txt").read_bytes() == PAYLOAD


def test_missing_file_and_offline(tmp_path, server, capsys):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{server}/nope", tmp_path / "x", progress=False)
    assert main(["download", "owt", "-o", str(tmp_path), "--base-url", "http://127.0.0.1:9", "--quiet"]) == 1
    assert "are you offline?" in capsys.readouterr().err
