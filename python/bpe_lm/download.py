"""`bpe-lm download`: the standard TinyStories and OpenWebText-sample text files, resumable, with a progress
bar, size check against the server, a .sha256 written beside each file, and atomic completion."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bpe_lm.errors import BpeLmError

HF = "https://huggingface.co/datasets"


@dataclass(frozen=True)
class Remote:
    name: str  # file name on the server and on disk
    path: str  # path under the base URL


DATASETS: dict[str, dict[str, Remote]] = {
    "tinystories": {
        "train": Remote(
            "TinyStoriesV2-GPT4-train.txt", "roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-train.txt"
        ),
        "valid": Remote(
            "TinyStoriesV2-GPT4-valid.txt", "roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-valid.txt"
        ),
    },
    "owt": {
        "train": Remote("owt_train.txt.gz", "stanford-cs336/owt-sample/resolve/main/owt_train.txt.gz"),
        "valid": Remote("owt_valid.txt.gz", "stanford-cs336/owt-sample/resolve/main/owt_valid.txt.gz"),
    },
}


class DownloadError(BpeLmError, OSError):
    pass


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(
        url, headers={"User-Agent": "bpe-lm", **({"Range": f"bytes={start}-"} if start else {})}
    )
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the partial file is already complete
            return None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"cannot reach {urllib.parse.urlsplit(url).netloc} ({reason}); are you offline? "
            f"Partial downloads resume when you run the command again."
        ) from None


def fetch(url: str, dest: Path, *, progress: bool = True, timeout: float = 60.0, chunk: int = 1 << 20) -> Path:
    """Downloads `url` to `dest` through `dest.part`, resuming a previous partial download."""
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    response = _open(url, start, timeout)
    total: int | None
    if response is None:
        total = start
    else:
        with response:
            if start and response.status != 206:
                start = 0  # the server ignored the range: start over
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name)
            try:
                with open(part, "ab" if start else "wb") as f:
                    while True:
                        data = response.read(chunk)
                        if not data:
                            break
                        f.write(data)
                        if bar is not None:
                            bar.update(len(data))
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
                raise DownloadError(f"{url}: connection lost ({e}); run again to resume") from None
            finally:
                if bar is not None:
                    bar.close()
    got = part.stat().st_size
    if total is not None and got != total:
        raise DownloadError(f"{dest.name}: got {got:,} bytes, expected {total:,}; run again to resume")
    digest = hashlib.sha256()
    with open(part, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    os.replace(part, dest)
    dest.with_name(dest.name + ".sha256").write_text(f"{digest.hexdigest()}  {dest.name}\n")
    return dest


def download(
    dataset: str, out_dir: str | os.PathLike[str], splits: list[str], *, base_url: str = HF, progress: bool = True
) -> list[Path]:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        fetch(f"{base_url.rstrip('/')}/{DATASETS[dataset][s].path}", out / DATASETS[dataset][s].name, progress=progress)
        for s in splits
    ]
