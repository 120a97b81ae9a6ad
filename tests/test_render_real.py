"""Every catalogue style renders lexicon words with real ink (skips only without fetched fonts outside CI)."""

import numpy as np

from synth.fonts.catalogue import load_catalogue
from synth.fonts.charsets import SCRIPT_LANGS
from synth.fonts.coverage import can_render
from synth.lexicon import load_lexicon
from synth.render.config import load_render_config
from synth.render.recipe import Renderer, SampleTask

CATALOGUE = load_catalogue()


def test_every_style_and_language_draws_ink(installed_fonts):
    lexicon = load_lexicon()
    plain, default = Renderer(load_render_config("none")), Renderer(load_render_config("default"))
    rng = np.random.default_rng(0)
    for style in CATALOGUE.styles:
        for script in style.scripts:
            for lang in SCRIPT_LANGS[script]:
                for semantic_id in rng.choice(len(lexicon), 3, replace=False):
                    text = lexicon.entries[semantic_id].text(lang)
                    assert can_render(installed_fonts[style.id], text)
                    task = SampleTask(int(semantic_id), lang, text, style, 0, int(semantic_id))
                    image, _ = plain.render(task)
                    ink = (image < 128).mean()
                    assert 0.02 < ink < 0.6, f"{style.id}/{lang} {text!r}: ink share {ink:.3f}"
                    image, _ = default.render(task)
                    assert image.shape == (64, 256) and image.min() < 120
