"""Speed benchmark of the peer word-image renderers people use today: TRDG and SynthTIGER.

Run with the project's Python:

    .venv/bin/python tests/benchmarks/peers.py --words 200 --seconds 20 --json /tmp/peers.json

or import it:

    from tests.benchmarks.peers import load_words, default_fonts, measure_peers
    results = measure_peers(load_words(200), default_fonts(), seconds=20)

What is measured, for every setting: one image of one word, 64 px high, rendered by the peer's own
code from one of the same TTF files, then encoded to PNG in memory with Pillow's defaults
(``Image.save(BytesIO(), "PNG")``). Word ``i`` always uses font ``i % len(fonts)``. A warm-up pass is
excluded; then the loop runs for ``seconds`` of wall time in ONE process pinned to ONE core
(``sched_setaffinity``) with every thread pool set to one thread (OMP/OpenBLAS/MKL/numexpr env vars,
``cv2.setNumThreads(1)``), so the figure is images/s per core.

Peers need Pillow < 10 and NumPy < 2, so each one runs in its own virtual environment under
``tests/benchmarks/.venvs/<peer>`` (git-ignored), created on first use by this script and reused
afterwards (a stamp file records the install spec; a second run only re-checks the import). The
project itself is never pinned to their versions. Both peers declare ``opencv-python`` (the GUI build);
it is swapped for ``opencv-python-headless`` (same ``cv2`` module, no X11/GL libraries) by installing
the peer with ``--no-deps`` and its other requirements explicitly. SynthTIGER's unused ``pygame`` and
``fonttools`` requirements are left out; nothing it imports needs them.

Settings (see ``SETTINGS`` below for the exact text stored in the JSON):

* ``trdg-default``      TRDG 1.8.0 ``GeneratorFromStrings`` with its defaults (Gaussian-noise "paper"
                        background, no skew, no distortion, no blur, 5 px margins) and ``size=64``;
                        Pillow's default layout engine (libraqm when present).
* ``trdg-basic-layout`` the same, with ``ImageFont.truetype`` patched to force ``Layout.BASIC``.
* ``trdg-heavy``        the heaviest combination its API offers: random skew in +-10 deg, distortion
                        type 3 ("random") on both axes, random Gaussian blur up to radius 2,
                        Gaussian-noise background. (The quasicrystal background is a texture, not a
                        distortion, and a pure-Python per-pixel loop; it is left out.)
* ``synthtiger-plain``  SynthTIGER 1.2.1 components as its own template uses them: one ``TextLayer``
                        per character, ``FlowLayout``, ``Group.merge``, ``Gray`` text colour, ``Pad``,
                        ``RectLayer`` background, ``utils.blend_image``; font size set so
                        ascent+descent = 54 px, 5 px pad -> 64 px high.
* ``synthtiger-heavy``  the stages and parameter ranges of SynthTIGER's published horizontal config
                        (examples/synthtiger/config_horizontal.yaml) with every ``Switch`` forced on:
                        ``ElasticDistortion`` on every character (strong alpha 15-30/sigma 4-12 or weak
                        0-2/0-0.6, 1:1), FlowLayout or CurveLayout (4:1, curve 20-40), one of
                        TextBorder/TextShadow/TextExtrusion (1:2:2, grey), one of
                        Perspective/Trapezoidate/Skew/Rotate, ``Fit``, ``Pad`` 0-10 px, then
                        AdditiveGaussianNoise + GaussianBlur + Resample(0.4) + MedianBlur, and a resize
                        to 64 px high. Left out: texture images and the mid-ground second word (need
                        resource files / render a second word), random blend modes and the per-pixel
                        visibility check that guards them (blend is "normal").

Every peer that cannot be installed or run is reported as unavailable with a one-line reason; the
script still exits 0 with the others measured.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent.parent
DEFAULT_VENV_ROOT = BENCH_DIR / ".venvs"
DEFAULT_LEXICON = REPO_ROOT / "lexicon" / "lexicon.tsv"
DEFAULT_FONT_IDS = (
    "caveat-400",
    "kalam-400",
    "indie-flower-400",
    "dancing-script-400",
    "patrick-hand-400",
)
HEIGHT = 64
PIP_TIMEOUT_S = 900

# Install spec of each peer venv: pip steps, run in order. The first installs the peer itself without
# its declared requirements; the second installs what it imports, with the GUI OpenCV swapped for the
# headless build and the Pillow/NumPy majors it still needs.
PEER_VENVS: dict[str, dict] = {
    "trdg": {
        "steps": [
            ["--no-deps", "trdg==1.8.0"],
            [
                "pillow>=9.1,<10",  # trdg 1.8 uses Image.Resampling (9.1+) and FreeTypeFont.getsize (<10)
                "numpy<2",
                "opencv-python-headless<4.12",  # 4.12+ wheels need NumPy 2
                "arabic-reshaper==2.1.3",
                "python-bidi==0.4.2",
                "wikipedia",  # imported by trdg.string_generator at package import
                "requests",
                "tqdm",
                "diffimg==0.2.3",
            ],
        ],
        "check": "import trdg.generators, PIL, numpy, cv2",
    },
    "synthtiger": {
        "steps": [
            ["--no-deps", "synthtiger==1.2.1", "imgaug==0.4.0"],
            [
                "pillow>=8.2,<10",  # TextLayer uses FreeTypeFont.getsize (removed in 10)
                "numpy<2",
                "opencv-python-headless<4.12",
                "scipy",
                "scikit-image",
                "imageio",
                "matplotlib",
                "shapely",
                "six",
                "arabic-reshaper",
                "python-bidi",
                "blend-modes",
                "pyyaml",
                "regex",
                "pytweening",
            ],
        ],
        "check": "import synthtiger, imgaug.augmenters, PIL, numpy, cv2",
    },
}

SETTINGS: dict[str, dict] = {
    "trdg-default": {
        "venv": "trdg",
        "settings": "TRDG 1.8.0 GeneratorFromStrings defaults, size=64: Gaussian-noise background, "
        "no skew/distortion/blur, margins 5 px; Pillow default layout engine (raqm if present)",
    },
    "trdg-basic-layout": {
        "venv": "trdg",
        "settings": "as trdg-default, with ImageFont.truetype forced to layout_engine=Layout.BASIC",
    },
    "trdg-heavy": {
        "venv": "trdg",
        "settings": "TRDG size=64, skewing_angle=10 random_skew, distorsion_type=3 (random) "
        "distorsion_orientation=2 (both axes), blur=2 random_blur, background_type=0 (Gaussian noise); "
        "default layout engine",
    },
    "synthtiger-plain": {
        "venv": "synthtiger",
        "settings": "SynthTIGER 1.2.1 components: TextLayer per char, FlowLayout, Group.merge, Gray(0) "
        "text, Pad 5 px, white RectLayer, blend normal; ascent+descent=54 px -> 64 px high",
    },
    "synthtiger-heavy": {
        "venv": "synthtiger",
        "settings": "SynthTIGER config_horizontal stages, every Switch on: ElasticDistortion per char "
        "(alpha 15-30/sigma 4-12 | 0-2/0-0.6), FlowLayout|CurveLayout(20-40) 4:1, "
        "TextBorder|TextShadow|TextExtrusion, Perspective|Trapezoidate|Skew|Rotate, Fit, Pad 0-10, "
        "AdditiveGaussianNoise(4-8) + GaussianBlur(0-2) + Resample(0.4) + MedianBlur(1), blend normal, "
        "resize to 64 px high; no texture/midground/visibility check",
    },
}

# --------------------------------------------------------------------------------------------------
# Worker code, written to a temporary folder and run by the peer's interpreter. It never imports the
# project. Protocol: argv[1] = job JSON path, argv[2] = result JSON path.

_WORKER_COMMON = r'''
import io, json, os, sys, time

def _pin_threads():
    try:
        import cv2
        cv2.setNumThreads(1)
    except Exception:
        pass

def run(make_render, versions):
    job = json.load(open(sys.argv[1], encoding="utf-8"))
    words, fonts, seconds = job["words"], job["fonts"], float(job["seconds"])
    _pin_threads()
    import random
    random.seed(0)
    try:
        import numpy
        numpy.random.seed(0)
        import imgaug
        imgaug.random.seed(0)
    except ImportError:
        pass
    from PIL import Image
    render = make_render(job)
    def one(i):
        img = render(i, words[i % len(words)], fonts[i % len(fonts)])
        if img is None:
            return None
        if not isinstance(img, Image.Image):
            img = Image.fromarray(img)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return img.size, buf.tell()
    # warm-up: every font once and at least 0.5 s (font loading, imports, caches), excluded
    t0 = time.perf_counter(); i = 0
    while i < max(len(fonts), 10) or time.perf_counter() - t0 < min(0.5, seconds):
        one(i); i += 1
    sample_dir = job.get("sample_dir")
    if sample_dir:
        os.makedirs(sample_dir, exist_ok=True)
        for k in range(min(len(words), 6)):
            img = render(k, words[k], fonts[k % len(fonts)])
            if img is not None:
                if not isinstance(img, Image.Image):
                    img = Image.fromarray(img)
                img.save(os.path.join(sample_dir, "%s-%d.png" % (job["name"], k)))
    n = skipped = off_height = png_bytes = 0; width_sum = 0
    i = 0
    c0 = time.process_time(); t0 = time.perf_counter()
    while True:
        r = one(i); i += 1
        if r is None:
            skipped += 1
        else:
            n += 1
            (w, h), nbytes = r
            width_sum += w; png_bytes += nbytes
            if h != job["height"]:
                off_height += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    cpu = time.process_time() - c0
    out = {
        "images_per_s": n / elapsed,
        "n": n,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "skipped": skipped,
        "off_height": off_height,
        "mean_width": width_sum / max(n, 1),
        "mean_png_bytes": png_bytes / max(n, 1),
        "affinity": sorted(os.sched_getaffinity(0)),
        "versions": versions(),
    }
    json.dump(out, open(sys.argv[2], "w", encoding="utf-8"))
'''

_WORKER_TRDG = _WORKER_COMMON + r'''
def versions():
    import PIL, numpy, cv2
    from PIL import features
    from importlib.metadata import version
    return {"trdg": version("trdg"), "Pillow": PIL.__version__, "numpy": numpy.__version__,
            "opencv": cv2.__version__, "raqm": bool(features.check("raqm"))}

def make_render(job):
    name = job["name"]
    from PIL import ImageFont
    if name == "trdg-basic-layout":
        basic = getattr(ImageFont, "Layout", None)
        basic = basic.BASIC if basic is not None else ImageFont.LAYOUT_BASIC
        original = ImageFont.truetype
        def truetype(*args, **kwargs):
            kwargs["layout_engine"] = basic
            return original(*args, **kwargs)
        ImageFont.truetype = truetype
    from trdg.generators import GeneratorFromStrings
    kw = dict(size=job["height"])
    if name == "trdg-heavy":
        kw.update(skewing_angle=10, random_skew=True, distorsion_type=3, distorsion_orientation=2,
                  blur=2, random_blur=True, background_type=0)
    # One generator per font keeps "word i -> font i % n_fonts" identical across peers;
    # each call is TRDG's own FakeTextDataGenerator.generate through GeneratorFromStrings.next().
    import contextlib
    cache = {}
    def render(i, word, font):
        g = cache.get(font)
        if g is None:
            g = cache[font] = GeneratorFromStrings(["x"], fonts=[font], **kw)
        g.strings = [word]
        with contextlib.redirect_stdout(io.StringIO()):  # it prints when it drops an image
            img, _ = g.next()
        return img
    return render

run(make_render, versions)
'''

_WORKER_SYNTHTIGER = _WORKER_COMMON + r'''
def versions():
    import PIL, numpy, cv2
    from PIL import features
    from importlib.metadata import version
    return {"synthtiger": version("synthtiger"), "imgaug": version("imgaug"), "Pillow": PIL.__version__,
            "numpy": numpy.__version__, "opencv": cv2.__version__, "raqm": bool(features.check("raqm"))}

def make_render(job):
    import numpy as np, cv2
    from PIL import ImageFont
    from synthtiger import components, layers, utils
    height = job["height"]
    heavy = job["name"] == "synthtiger-heavy"
    pad_px = 5
    # font size at which ascent+descent = height - 2*pad (the same text scale TRDG ends up with)
    sizes = {}
    for path in job["fonts"]:
        a, d = ImageFont.truetype(path, 100).getmetrics()
        sizes[path] = max(8, int(round(100.0 * (height - 2 * pad_px) / (a + d))))
    font = components.BaseFont(paths=job["fonts"], weights=[1] * len(job["fonts"]), size=(32, 32))
    fg_color = components.Gray(gray=(0, 0))
    bg_color = components.Gray(gray=(255, 255))
    if not heavy:
        layout = components.FlowLayout(space=(0, 0), line_align=("middle",))
        pad = components.Pad(pxs=[[pad_px, pad_px]])
    else:
        fg_color = components.Gray(gray=(0, 64))
        bg_color = components.Gray(gray=(192, 255))
        # examples/synthtiger/config_horizontal.yaml, with every Switch at prob 1
        shape = components.Switch(components.Selector(
            [components.ElasticDistortion(alpha=(15, 30), sigma=(4, 12)),
             components.ElasticDistortion(alpha=(0, 2), sigma=(0, 0.6))],
            weights=[1, 1]), prob=1)
        layout = components.Selector(
            [components.FlowLayout(space=(-2, 5), line_align=("middle",)),
             components.CurveLayout(curve=(20, 40), space=(-2, 5), convex=0.5, upward=0.5)],
            weights=[4, 1])
        style = components.Switch(components.Selector(
            [components.TextBorder(size=(1, 12), alpha=(1, 1), grayscale=1),
             components.TextShadow(distance=(1, 6), angle=(0, 360), alpha=(0.3, 0.7), grayscale=1),
             components.TextExtrusion(length=(1, 12), angle=(0, 360), alpha=(1, 1), grayscale=1)],
            weights=[1, 2, 2]), prob=1)
        transform = components.Switch(components.Selector(
            [components.Perspective(percents=[[0.5, 1], [1, 1]], aligns=[[0, 0], [0, 0]]),
             components.Perspective(percents=[[1, 1], [0.5, 1]], aligns=[[0, 0], [0, 0]]),
             components.Trapezoidate(weights=[1, 0, 1, 0], percent=(0.75, 1), align=(-1, 1)),
             components.Trapezoidate(weights=[0, 1, 0, 1], percent=(0.5, 1), align=(-1, 1)),
             components.Skew(weights=[1, 0], angle=(0, 30), ccw=0.5),
             components.Skew(weights=[0, 1], angle=(0, 10), ccw=0.5),
             components.Rotate(angle=(0, 10), ccw=0.5)],
            weights=[1, 1, 1, 1, 1, 1, 2]), prob=1)
        fit = components.Fit()
        pad = components.Switch(components.Pad(pxs=[[0, 10]] * 4), prob=1)
        post = components.Iterator([
            components.Switch(components.AdditiveGaussianNoise(scale=(4, 8), per_channel=0), prob=1),
            components.Switch(components.GaussianBlur(sigma=(0, 2)), prob=1),
            components.Switch(components.Resample(size=(0.4, 0.4)), prob=1),
            components.Switch(components.MedianBlur(k=(1, 1)), prob=1),
        ])

    def render(i, word, path):
        meta = font.sample({"path": path, "size": sizes[path], "bold": False})
        chars = utils.split_text(word, reorder=True)
        char_layers = [layers.TextLayer(c, **meta) for c in chars]
        if heavy:
            shape.apply(char_layers)
        layout.apply(char_layers)
        text_layer = layers.Group(char_layers).merge()
        fg_color.apply([text_layer])
        if heavy:
            style.apply([text_layer])
            transform.apply([text_layer])
            fit.apply([text_layer])
        pad.apply([text_layer])
        fg = text_layer.output()
        bg_layer = layers.RectLayer(fg.shape[:2][::-1])
        bg_color.apply([bg_layer])
        image = utils.blend_image(fg, bg_layer.output(), mode="normal")
        if heavy:
            layer = layers.Layer(image)
            post.apply([layer])
            image = layer.output()
        image = image[..., :3].astype(np.uint8)
        h, w = image.shape[:2]
        if h != height:
            new_w = max(1, int(round(w * height / h)))
            image = cv2.resize(image, (new_w, height),
                               interpolation=cv2.INTER_AREA if h > height else cv2.INTER_LINEAR)
        return image
    return render

run(make_render, versions)
'''

_WORKERS = {"trdg": _WORKER_TRDG, "synthtiger": _WORKER_SYNTHTIGER}


# --------------------------------------------------------------------------------------------------
# Inputs


def default_fonts(cache: str | os.PathLike | None = None, ids=DEFAULT_FONT_IDS) -> list[str]:
    """TTF paths of the default Latin handwriting fonts in the project's font cache (synth.paths.cache_dir)."""
    if cache is None:
        try:
            from synth.paths import cache_dir
        except ImportError:  # a peer's own venv, without synth: the same rule
            def cache_dir() -> Path:
                xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
                return Path(os.environ.get("SYNTH_CACHE") or Path(xdg) / "synth")
        cache = cache_dir()
    root = Path(cache) / "fonts"
    return [str(root / f"{i}.ttf") for i in ids if (root / f"{i}.ttf").is_file()]


def _font_coverage(font_paths):
    """Per font: the set of characters that map to a glyph with a non-empty outline (None: unknown)."""
    try:
        from fontTools.ttLib import TTFont
    except ImportError:
        return None
    out = []
    for path in font_paths:
        font = TTFont(path, lazy=True)
        cmap = font.getBestCmap() or {}
        glyf = font["glyf"] if "glyf" in font else None
        ok = set()
        for cp, name in cmap.items():
            if glyf is not None:
                g = glyf[name]
                if getattr(g, "numberOfContours", 0) == 0:
                    continue
            ok.add(chr(cp))
        out.append(ok)
    return out


def load_words(n: int, lexicon: str | os.PathLike = DEFAULT_LEXICON, font_paths=None) -> list[str]:
    """First ``n`` distinct es/en words of the lexicon (es, en, es, en... in lexicon order), keeping
    only words every font draws with real outlines (no tofu, no blank glyphs)."""
    coverage = _font_coverage(font_paths) if font_paths else None
    words, seen = [], set()
    with open(lexicon, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            for col in ("es", "en"):
                w = (row.get(col) or "").strip()
                if not w or w in seen:
                    continue
                if coverage is not None and not all(set(w) <= c for c in coverage):
                    continue
                seen.add(w)
                words.append(w)
                if len(words) >= n:
                    return words
    return words


# --------------------------------------------------------------------------------------------------
# Virtual environments


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _spec_hash(spec: dict) -> str:
    blob = json.dumps({"steps": spec["steps"], "py": sys.version_info[:2]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("ERROR") or "Error" in ln]
    return (errs[-1] if errs else lines[-1] if lines else "no output")[:300]


def ensure_venv(peer: str, root: Path = DEFAULT_VENV_ROOT, log=print) -> tuple[Path | None, str | None, float]:
    """Create or reuse the peer's venv. Returns (python, error, seconds spent)."""
    spec = PEER_VENVS[peer]
    venv = Path(root) / peer
    stamp = venv / ".peers-stamp"
    py = _venv_python(venv)
    want = _spec_hash(spec)
    t0 = time.perf_counter()
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        r = subprocess.run([str(py), "-c", spec["check"]], capture_output=True, text=True, env=env)
        if r.returncode == 0:
            return py, None, time.perf_counter() - t0
        log(f"[{peer}] venv present but import check failed ({_last_line(r.stderr)}); reinstalling")
    Path(root).mkdir(parents=True, exist_ok=True)
    _write_gitignore()
    try:
        if not py.exists():
            log(f"[{peer}] creating venv {venv}")
            r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
            if r.returncode != 0:
                return None, f"venv creation failed: {_last_line(r.stderr or r.stdout)}", time.perf_counter() - t0
        if stamp.exists():
            stamp.unlink()
        for step in spec["steps"]:
            log(f"[{peer}] pip install {' '.join(step)}")
            r = subprocess.run(
                [str(py), "-m", "pip", "install", "-q", *step],
                capture_output=True, text=True, env=env, timeout=PIP_TIMEOUT_S,
            )
            if r.returncode != 0:
                return None, f"pip install failed: {_last_line(r.stderr or r.stdout)}", time.perf_counter() - t0
        r = subprocess.run([str(py), "-c", spec["check"]], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            return None, f"import check failed: {_last_line(r.stderr)}", time.perf_counter() - t0
    except subprocess.TimeoutExpired as exc:
        return None, f"timed out after {exc.timeout:.0f} s: {' '.join(map(str, exc.cmd))[:200]}", time.perf_counter() - t0
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0
    stamp.write_text(want + "\n")
    return py, None, time.perf_counter() - t0


def _write_gitignore() -> None:
    gi = BENCH_DIR / ".gitignore"
    if not gi.exists() or ".venvs/" not in gi.read_text().split():
        with open(gi, "a", encoding="utf-8") as fh:
            fh.write(".venvs/\n")


# --------------------------------------------------------------------------------------------------
# Measurement


def _one_core_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS"):
        env[var] = "1"
    return env


def _cpu_idle(sample_s: float = 0.5) -> dict[int, float]:
    """Idle fraction of each core over ``sample_s`` seconds, from /proc/stat ({} if unreadable)."""
    def read():
        out = {}
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("cpu") and line[3].isdigit():
                    f = line.split()
                    vals = [int(v) for v in f[1:]]
                    out[int(f[0][3:])] = (vals[3] + (vals[4] if len(vals) > 4 else 0), sum(vals))
        return out
    try:
        a = read()
        time.sleep(sample_s)
        b = read()
    except (OSError, ValueError, IndexError):
        return {}
    return {c: (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in a if c in b}


def _pick_cpu(cpu: int | None) -> int:
    """The given core, else the idlest core this process may use (another job pinned to core 0
    would otherwise halve the figure)."""
    if cpu is not None:
        return cpu
    allowed = sorted(os.sched_getaffinity(0))
    idle = _cpu_idle()
    return max(allowed, key=lambda c: (idle.get(c, 0.0), -c))


def run_setting(name: str, python: Path, words, font_paths, seconds: float, cpu: int,
                height: int = HEIGHT, sample_dir: str | None = None, timeout: float | None = None) -> dict:
    peer = SETTINGS[name]["venv"]
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        worker = Path(tmp) / f"worker_{peer}.py"
        worker.write_text(_WORKERS[peer], encoding="utf-8")
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({
            "name": name, "words": list(words), "fonts": [str(f) for f in font_paths],
            "seconds": seconds, "height": height, "sample_dir": sample_dir,
        }, ensure_ascii=False), encoding="utf-8")
        result = Path(tmp) / "result.json"
        try:
            r = subprocess.run(
                [str(python), str(worker), str(job), str(result)],
                capture_output=True, text=True, env=_one_core_env(), cwd=tmp,
                preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
                timeout=timeout or (seconds * 3 + 180),
            )
        except subprocess.TimeoutExpired:
            return {"error": f"worker timed out after {timeout or (seconds * 3 + 180):.0f} s"}
        if r.returncode != 0 or not result.exists():
            return {"error": f"worker failed (rc={r.returncode}): {_last_line(r.stderr or r.stdout)}"}
        return json.loads(result.read_text(encoding="utf-8"))


def measure_peers(words, font_paths, seconds: float, names=None, *, repeats: int = 1,
                  cpu: int | None = None, venv_root: str | os.PathLike = DEFAULT_VENV_ROOT,
                  height: int = HEIGHT, sample_dir: str | None = None, log=print) -> dict:
    """Measure every peer setting in ``names`` (default: all of ``SETTINGS``).

    Returns ``{name: {"images_per_s": float | None, "n": int, "settings": str, ...}}``; an
    unavailable peer has ``images_per_s`` None and an ``"error"`` line. With ``repeats`` > 1 the
    settings are run round-robin that many times and the best run is kept (the least disturbed by
    other processes); every run's figure is in ``runs``. Extra keys: ``cpu_s`` and ``elapsed_s`` of
    the timed loop, ``cpu_share`` (cpu_s / elapsed_s: below 0.9 another process shared the core and a
    ``warning`` is added), ``cpu`` (the core), ``versions``, ``env_setup_s`` (venv creation or reuse
    check), ``skipped`` (images the peer itself dropped), ``off_height`` (images not ``height`` high).
    """
    names = list(names or SETTINGS)
    font_paths = [str(f) for f in font_paths]
    missing = [f for f in font_paths if not Path(f).is_file()]
    results: dict = {name: {"images_per_s": None, "n": 0, "settings": SETTINGS[name]["settings"]}
                     for name in names}
    venvs: dict = {}
    for rep in range(max(1, repeats)):
        for name in names:
            entry = results[name]
            if "error" in entry:
                continue
            if missing or not font_paths or not words:
                entry["error"] = "no words" if not words else f"font files missing: {missing or 'none given'}"
                continue
            peer = SETTINGS[name]["venv"]
            if peer not in venvs:
                venvs[peer] = ensure_venv(peer, Path(venv_root), log=log)
                log(f"[{peer}] environment ready in {venvs[peer][2]:.1f} s" if venvs[peer][0]
                    else f"[{peer}] unavailable: {venvs[peer][1]}")
            python, err, setup_s = venvs[peer]
            entry["env_setup_s"] = round(setup_s, 1)
            if python is None:
                entry["error"] = err
                continue
            core = _pick_cpu(cpu)
            tag = f" (run {rep + 1}/{repeats})" if repeats > 1 else ""
            log(f"[{name}] measuring for {seconds:g} s on cpu {core}{tag} ...")
            r = run_setting(name, python, words, font_paths, seconds, core, height,
                            sample_dir if rep == 0 else None)
            if "error" in r:
                entry["error"] = r["error"]
                entry["images_per_s"], entry["n"] = None, 0
                log(f"[{name}] unavailable: {r['error']}")
                continue
            share = r["cpu_s"] / r["elapsed_s"] if r.get("elapsed_s") else 1.0
            r["cpu_share"] = round(share, 3)
            r["cpu"] = core
            log(f"[{name}] {r['images_per_s']:.1f} images/s (n={r['n']}, cpu/wall {share:.2f})")
            entry.setdefault("runs", []).append(round(r["images_per_s"], 2))
            if entry["images_per_s"] is None or r["images_per_s"] > entry["images_per_s"]:
                entry.pop("warning", None)
                entry.update(r)
                if share < 0.9:
                    entry["warning"] = (f"the worker got only {share:.0%} of core {core}: another "
                                        "process shares it, so this figure understates the peer")
    for name, entry in results.items():
        if "warning" in entry:
            log(f"[{name}] WARNING: {entry['warning']}")
    return results


def format_table(results: dict, reference: str | None = None) -> str:
    """Plain-text table; with ``reference`` (a key of ``results``), the column reference/peer."""
    ref = results.get(reference, {}).get("images_per_s") if reference else None
    head = f"{'setting':<20} {'images/s/core':>13} {'n':>7} {'cpu/wall':>8}"
    if ref:
        head += f" {reference + '/peer':>16}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        ips = r.get("images_per_s")
        if ips is None:
            lines.append(f"{name:<20} {'unavailable':>13}  {r.get('error', '')}")
            continue
        util = r.get("cpu_s", 0) / r["elapsed_s"] if r.get("elapsed_s") else float("nan")
        line = f"{name:<20} {ips:>13.1f} {r['n']:>7d} {util:>8.2f}"
        if ref:
            line += f" {ref / ips:>16.2f}"
        if len(r.get("runs", [])) > 1:
            line += f"  runs {min(r['runs']):.1f}-{max(r['runs']):.1f}"
        if util < 0.9:
            line += "  (core shared with another process: understated)"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--words", type=int, default=200, help="number of es/en lexicon words (default 200)")
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per setting (default 20)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the settings round-robin this many times and keep each one's best run")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--only", nargs="+", choices=list(SETTINGS), help="measure only these settings")
    ap.add_argument("--fonts", nargs="+", help="TTF files (default: the five cached handwriting fonts)")
    ap.add_argument("--cpu", type=int, help="core to pin the workers to (default: the idlest allowed core, "
                    "picked before each setting)")
    ap.add_argument("--venv-root", default=str(DEFAULT_VENV_ROOT))
    ap.add_argument("--samples", help="also save a few rendered images per setting to this folder")
    args = ap.parse_args(argv)

    fonts = args.fonts or default_fonts()
    words = load_words(args.words, font_paths=fonts) if fonts else []
    print(f"{len(words)} words, {len(fonts)} fonts: {', '.join(Path(f).stem for f in fonts)}")
    results = measure_peers(words, fonts, args.seconds, args.only, repeats=args.repeats, cpu=args.cpu,
                            venv_root=args.venv_root, sample_dir=args.samples)
    print()
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
