"""Every catalogue style renders lexicon words with real ink (skips only without fetched fonts outside CI)."""

import os

import numpy as np
import pytest

from synth.catalogue import load_catalogue
from synth.charsets import SCRIPT_LANGS
from synth.coverage import can_render
from synth.fetch import read_installed
from synth.lexicon import load_lexicon
from synth.recipe import Renderer, SampleTask
from synth.render_config import load_render_config

CATALOGUE = load_catalogue()


@pytest.fixture(scope="module")
def installed():
    found = {s.id: read_installed(s) for s in CATALOGUE.styles}
    if not all(found.values()) and not os.environ.get("CI"):
        pytest.skip("fonts not fetched (run `make setup`)")
    missing = [sid for sid, done in found.items() if done is None]
    assert not missing, f"styles not installed: {missing}"
    return {sid: done.covered for sid, done in found.items()}


def test_every_style_and_language_draws_ink(installed):
    lexicon = load_lexicon()
    plain, default = Renderer(load_render_config("none")), Renderer(load_render_config("default"))
    rng = np.random.default_rng(0)
    for style in CATALOGUE.styles:
        for script in style.scripts:
            for lang in SCRIPT_LANGS[script]:
                for semantic_id in rng.choice(len(lexicon), 3, replace=False):
                    text = lexicon.entries[semantic_id].text(lang)
                    assert can_render(installed[style.id], text)
                    task = SampleTask(int(semantic_id), lang, text, style, 0, int(semantic_id))
                    image, _ = plain.render(task)
                    ink = (image < 128).mean()
                    assert 0.02 < ink < 0.6, f"{style.id}/{lang} {text!r}: ink share {ink:.3f}"
                    image, _ = default.render(task)
                    assert image.shape == (64, 256) and image.min() < 120
