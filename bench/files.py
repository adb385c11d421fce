"""Benchmark: file upload throughput (MiB/s) for 1 MiB and 20 MiB images on Flowstage (which
hashes, inspects with Pillow, makes a WebP thumbnail and commits a row) against a bare aiohttp
handler that only streams the bytes to disk, measured in the same run; plus the server-side
thumbnail time and each server's peak RSS. Finally an oversize upload (3x the limit) shows
that refusing it does not buffer it: peak RSS stays flat.

Usage: .venv/bin/python bench/files.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import free_port
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowstage.simulation.inspection import inspect_file  # noqa: E402

MiB = 1024 * 1024




def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def noise_image(target_bytes: int, fmt: str) -> bytes:
    """Noise does not compress, so the file size follows the pixel count."""
    side = int((target_bytes / (3 if fmt == "PNG" else 1.1)) ** 0.5)
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, fmt, quality=95)
    return buf.getvalue()


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(150):
            try:
                form = aiohttp.FormData()
                form.add_field("file", b"ping", filename="ping.txt")
                async with session.post(url, data=form) as resp:
                    await resp.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


async def upload_once(session: aiohttp.ClientSession, url: str, data: bytes, name: str) -> tuple[float, int]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    start = time.perf_counter()
    async with session.post(url, data=form) as resp:
        await resp.read()
        return time.perf_counter() - start, resp.status


async def measure(urls: dict[str, str], payloads: dict[str, bytes], rounds: int) -> dict[tuple[str, str], list[float]]:
    results: dict[tuple[str, str], list[float]] = {}
    async with aiohttp.ClientSession() as session:
        for _ in range(rounds):
            for label, data in payloads.items():
                for server, url in urls.items():  # alternate servers inside each round
                    seconds, status = await upload_once(session, url, data, f"{label}.bin")
                    assert status == 201, (server, status)
                    results.setdefault((server, label), []).append(len(data) / MiB / seconds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flowstage-bench-files-"))
    payloads = {"1 MiB JPEG": noise_image(1 * MiB, "JPEG"), "20 MiB PNG": noise_image(20 * MiB, "PNG")}
    fs_port, bare_port = free_port(), free_port()
    limit = 64 * MiB
    env = {**os.environ, "FLOWSTAGE_RATE_LIMIT_PER_SECOND": "0", "FLOWSTAGE_SEED_DEMO_DATA": "false",
           "FLOWSTAGE_LOG_LEVEL": "warning", "FLOWSTAGE_MAX_UPLOAD_BYTES": str(limit)}
    fs = subprocess.Popen([sys.executable, "-m", "flowstage", "serve", "--port", str(fs_port),
                           "--data-dir", str(tmp / "data")], cwd=ROOT, env=env)
    bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_bare_upload.py"), str(bare_port),
                             str(tmp / "bare")])
    urls = {"flowstage": f"http://127.0.0.1:{fs_port}/api/files/upload",
            "bare stream-to-disk": f"http://127.0.0.1:{bare_port}/api/files/upload"}
    try:
        for url in urls.values():
            asyncio.run(wait_up(url))
        results = asyncio.run(measure(urls, payloads, args.rounds))
        rss_before = peak_rss_mib(fs.pid)

        async def oversize() -> int:
            async with aiohttp.ClientSession() as session:
                _, status = await upload_once(session, urls["flowstage"], os.urandom(3 * limit), "big.bin")
                return status

        oversize_status = asyncio.run(oversize())
        rss_after = peak_rss_mib(fs.pid)
        peaks = {"flowstage": rss_before, "bare stream-to-disk": peak_rss_mib(bare.pid)}
    finally:
        fs.terminate()
        bare.terminate()
        fs.wait()
        bare.wait()

    thumb_times: dict[str, float] = {}
    for label, data in payloads.items():
        path = tmp / "probe"
        path.write_bytes(data)
        samples = []
        for _ in range(3):
            start = time.perf_counter()
            inspect_file(path)
            samples.append(time.perf_counter() - start)
        thumb_times[label] = statistics.median(samples) * 1000
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nUpload throughput, MiB/s (median of {args.rounds}; one upload at a time):")
    print(f"{'payload':<14}{'flowstage':>12}{'bare':>12}{'ratio':>8}{'inspect+thumb ms':>18}")
    for label in payloads:
        ours = statistics.median(results[("flowstage", label)])
        base = statistics.median(results[("bare stream-to-disk", label)])
        print(f"{label:<14}{ours:>12.1f}{base:>12.1f}{ours / base:>8.2f}{thumb_times[label]:>18.1f}")
    print(f"\nPeak RSS after the uploads: flowstage {peaks['flowstage']:.0f} MiB, "
          f"bare {peaks['bare stream-to-disk']:.0f} MiB")
    print(f"Oversize upload ({3 * limit // MiB} MiB against a {limit // MiB} MiB limit): HTTP {oversize_status}, "
          f"flowstage peak RSS {rss_before:.0f} -> {rss_after:.0f} MiB")


if __name__ == "__main__":
    main()
